@subscribe
Feature: Subscribing and unsubscribing
  Every subscribe entry gets exactly one answer, in order; failures stay local
  (spec section 8.1, 8.4).

  @must @RW-EVENT-11 @RW-SUB-2 @RW-EVENT-10
  Scenario: a run without events can be subscribed and delivers what comes later
    Given client "a" is connected
    When client "a" subscribes to run "A"
    Then client "a" receives subscribed for run "A" with after_seq 0 and head_seq 0
    When the producer appends 3 events to run "A"
    Then client "a" receives events 1 to 3 of run "A"

  @must @RW-SUB-2 @RW-RESUME-1 @RW-RESUME-3
  Scenario: subscribed carries the cursor and the head, then the replay follows
    Given the producer appends 5 events to run "A"
    And client "a" is connected
    When client "a" subscribes to run "A" after seq 2
    Then client "a" receives subscribed for run "A" with after_seq 2 and head_seq 5
    And client "a" receives events 3 to 5 of run "A"

  @must @RW-SUB-1 @RW-SUB-2
  Scenario: the entries of one subscribe are answered in order
    Given the producer appends 1 events to run "A"
    And the producer appends 2 events to run "B"
    And the producer appends 3 events to run "C"
    And client "a" is connected
    When client "a" subscribes to runs "C,A,B"
    Then client "a" receives subscribed for run "C" with after_seq 0 and head_seq 3
    And client "a" receives subscribed for run "A" with after_seq 0 and head_seq 1
    And client "a" receives subscribed for run "B" with after_seq 0 and head_seq 2

  @must @RW-SUB-7 @RW-SUB-9
  Scenario: subscribing twice leaves the first subscription untouched
    Given the producer appends 2 events to run "A"
    And client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    And client "a" receives events 1 to 2 of run "A"
    When client "a" subscribes to run "A" after seq 0
    Then client "a" receives error "already_subscribed" for run "A"
    When the producer appends 2 events to run "A"
    Then client "a" receives events 3 to 4 of run "A"

  @must @RW-SUB-7 @RW-SUB-9 @RW-SUB-2
  Scenario: a duplicate entry in one message fails alone
    Given the producer appends 1 events to run "A"
    And client "a" is connected
    When client "a" subscribes to runs "A,A"
    Then client "a" receives subscribed for run "A" with after_seq 0 and head_seq 1
    And client "a" receives error "already_subscribed" for run "A"
    And client "a" receives events 1 to 1 of run "A"
    And client "a" stays connected

  @must @RW-SUB-4 @RW-SEC-5
  Scenario: no event follows unsubscribed
    Given the producer appends 2 events to run "A"
    And client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    And client "a" receives events 1 to 2 of run "A"
    When client "a" unsubscribes from run "A"
    Then client "a" receives unsubscribed for run "A"
    When the producer appends 3 events to run "A"
    Then client "a" receives no event of run "A"

  @must @RW-SUB-8
  Scenario: unsubscribing a run that is not subscribed is an error for that run
    Given client "a" is connected
    When client "a" unsubscribes from run "A"
    Then client "a" receives error "not_subscribed" for run "A"
    And client "a" stays connected

  @must @RW-INPUT-11 @RW-SUB-4 @RW-SUB-2 @RW-RESUME-7
  Scenario: unsubscribe then subscribe are answered in that order
    Given the producer appends 3 events to run "A"
    And client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    And client "a" receives events 1 to 3 of run "A"
    When client "a" unsubscribes from run "A"
    And client "a" subscribes to run "A" after seq 3
    Then client "a" receives unsubscribed for run "A"
    And client "a" receives subscribed for run "A" with after_seq 3 and head_seq 3
    When the producer appends 1 events to run "A"
    Then client "a" receives events 4 to 4 of run "A"

  @must @RW-SEC-5
  Scenario: a connection receives only the runs it subscribed
    Given client "a" is connected
    And client "b" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    And client "b" subscribes to run "B"
    And client "b" receives subscribed for run "B"
    When the producer appends 3 events to run "A"
    And the producer appends 1 events to run "B"
    Then client "a" receives events 1 to 3 of run "A"
    And client "b" receives events 1 to 1 of run "B"
    And client "b" receives no event of run "A"
