@replay
Feature: Replay, resume and the hand-off to live events
  A late joiner gets the whole log, a returning client resumes from its cursor, and
  nothing falls between replay and live (spec section 8.2).

  @must @RW-RESUME-1 @RW-RESUME-3 @RW-EVENT-1 @RW-EVENT-5 @RW-EVENT-7 @RW-SUB-2
  Scenario: a late joiner receives the whole log
    Given the producer appends 20 events to run "A"
    And client "a" is connected
    When client "a" subscribes to run "A"
    Then client "a" receives subscribed for run "A" with after_seq 0 and head_seq 20
    And client "a" receives events 1 to 20 of run "A"
    And the events of run "A" delivered to client "a" have distinct event ids

  @must @RW-RESUME-2 @RW-RESUME-1 @RW-ORDER-1 @RW-ORDER-2
  Scenario: events appended while the subscription opens are delivered exactly once
    Given the producer appends 10 events to run "A"
    And client "a" is connected
    When client "a" subscribes to run "A"
    And 4 producers append 5 events each to run "A" concurrently
    Then client "a" receives subscribed for run "A"
    And client "a" receives events 1 to 30 of run "A"
    And client "a" receives no event of run "A"

  @must @RW-RESUME-1 @RW-RESUME-7 @RW-SUB-2
  Scenario: resume with zero events seen
    Given the producer appends 4 events to run "A"
    And client "a" is connected
    When client "a" subscribes to run "A" after seq 0 with epoch "current"
    Then client "a" receives subscribed for run "A" with after_seq 0 and head_seq 4
    And client "a" receives events 1 to 4 of run "A"

  @must @RW-RESUME-1 @RW-RESUME-7 @RW-SUB-2
  Scenario: resume from the middle of the log
    Given the producer appends 10 events to run "A"
    And client "a" is connected
    When client "a" subscribes to run "A" after seq 7 with epoch "current"
    Then client "a" receives subscribed for run "A" with after_seq 7 and head_seq 10
    And client "a" receives events 8 to 10 of run "A"

  @must @RW-RESUME-1 @RW-RESUME-7 @RW-SUB-2
  Scenario: resume at the head gets only live events
    Given the producer appends 5 events to run "A"
    And client "a" is connected
    When client "a" subscribes to run "A" after seq 5 with epoch "current"
    Then client "a" receives subscribed for run "A" with after_seq 5 and head_seq 5
    And client "a" receives no event of run "A"
    When the producer appends 2 events to run "A"
    Then client "a" receives events 6 to 7 of run "A"

  @must @RW-RESUME-1 @RW-CONN-10 @RW-SUB-2
  Scenario: a client that reconnects resumes from its cursor without loss or repeat
    Given the producer appends 5 events to run "A"
    And client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    And client "a" receives events 1 to 5 of run "A"
    When client "a" closes the connection
    And the producer appends 5 events to run "A"
    And client "a" reconnects and resumes run "A" from its cursor
    Then client "a" receives subscribed for run "A" with after_seq 5 and head_seq 10
    And client "a" receives events 6 to 10 of run "A"

  @must @RW-RESUME-1 @RW-SUB-2
  Scenario: resubscribing on the same connection continues from the cursor
    Given the producer appends 3 events to run "A"
    And client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    And client "a" receives events 1 to 3 of run "A"
    And client "a" unsubscribes from run "A"
    And client "a" receives unsubscribed for run "A"
    When the producer appends 3 events to run "A"
    And client "a" resubscribes to run "A" from its cursor
    Then client "a" receives subscribed for run "A" with after_seq 3 and head_seq 6
    And client "a" receives events 4 to 6 of run "A"

  @must @RW-EVENT-8 @RW-ORDER-2 @RW-SUB-2
  Scenario: replayed events equal live events and the history read
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When the producer appends 12 events to run "A"
    And client "a" receives events 1 to 12 of run "A"
    And client "b" is connected
    And client "b" subscribes to run "A"
    Then client "b" receives subscribed for run "A" with after_seq 0 and head_seq 12
    And client "b" receives events 1 to 12 of run "A"
    And clients "a" and "b" received identical events of run "A"
    And the events of run "A" delivered to client "a" equal the history read over HTTP

  @must @RW-RESUME-1 @RW-ORDER-2 @RW-SUB-4
  Scenario: subscriptions opened while the producer appends hand off to live events exactly once
    Given client "a" is connected
    When client "a" subscribes to run "A" and unsubscribes 40 times while the producer appends to it without pause
    Then client "a" stays connected
