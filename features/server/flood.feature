Feature: Subscribing to runs nobody appends to
  Subscribing to a run before its first event is normal (a browser opens the run page
  before the producer's first append), and so is subscribing to run ids that never get
  one. A server may forget such runs once nobody is subscribed (RW-SEC-10), and should
  store nothing for them, but the epoch a subscription was told keeps meaning the
  run's log: a client that subscribed before the first event resumes with a replay
  from seq 1, also after many other runs without events came and went (spec sections
  2.3, 8 and 17).

  @should @RW-SEC-15 @RW-RESUME-1
  Scenario: a run subscribed before its first event resumes with a replay after a flood of unknown runs
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A" with after_seq 0 and head_seq 0
    And client "a" unsubscribes from run "A"
    And client "a" receives unsubscribed for run "A"
    When another client subscribes to and unsubscribes from 1000 runs nobody appends to
    And the producer appends 3 events to run "A"
    And client "a" resubscribes to run "A" from its cursor
    Then client "a" receives subscribed for run "A" with after_seq 0 and head_seq 3
    And client "a" receives events 1 to 3 of run "A"
