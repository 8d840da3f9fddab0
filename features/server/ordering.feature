@ordering
Feature: Ordering and no gaps
  Per run the server delivers strictly increasing seq without gap or duplicate, to
  every client the same (spec section 9).

  @must @RW-INGEST-2 @RW-EVENT-3 @RW-ORDER-1
  Scenario: concurrent producers get one gapless log
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When 5 producers append 8 events each to run "A" concurrently
    Then client "a" receives events 1 to 40 of run "A"
    And run "A" has 40 events over HTTP

  @must @RW-ORDER-1 @RW-ORDER-2 @RW-EVENT-8
  Scenario: many clients see identical sequences
    Given client "a" is connected
    And client "b" is connected
    And client "c" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    And client "b" subscribes to run "A"
    And client "b" receives subscribed for run "A"
    When 3 producers append 10 events each to run "A" concurrently
    And client "c" subscribes to run "A"
    Then client "a" receives events 1 to 30 of run "A"
    And client "b" receives events 1 to 30 of run "A"
    And client "c" receives subscribed for run "A"
    And client "c" receives every event of run "A"
    And clients "a" and "b" received identical events of run "A"
    And clients "a" and "c" received identical events of run "A"

  @must @RW-ORDER-1 @RW-SEC-5
  Scenario: interleaved runs stay ordered each on their own
    Given client "a" is connected
    And client "a" subscribes to runs "A,B"
    And client "a" receives subscribed for run "A"
    And client "a" receives subscribed for run "B"
    When the producer appends 3 events to run "A"
    And the producer appends 4 events to run "B"
    And the producer appends 3 events to run "A"
    Then client "a" receives events 1 to 6 of run "A"
    And client "a" receives events 1 to 4 of run "B"

  @must @RW-EVENT-1 @RW-EVENT-3
  Scenario: seqs are consecutive per run and event ids are unique
    Given client "a" is connected
    And client "a" subscribes to runs "A,B"
    And client "a" receives subscribed for run "A"
    And client "a" receives subscribed for run "B"
    When the producer appends 3 events to run "A"
    Then the last append was assigned seqs 1 to 3
    When the producer appends 2 events to run "A"
    Then the last append was assigned seqs 4 to 5
    When the producer appends 2 events to run "B"
    Then the last append was assigned seqs 1 to 2
    And client "a" receives events 1 to 5 of run "A"
    And client "a" receives events 1 to 2 of run "B"
    And the events of run "A" delivered to client "a" have distinct event ids
