@resume
Feature: Resume and reset
  The client resumes from its cursor and rebuilds state from a reset snapshot (spec section 8).
  Each scenario plays one fixture of fixtures/client/ to the client under test.

  @must @RW-ORDER-4 @RW-RESUME-10
  Scenario: duplicates-after-resume: Events at or below the resumed cursor are dropped after a reconnect
    When the client under test plays fixture "duplicates-after-resume"
    Then the client passes the fixture

  @must @RW-ORDER-6 @RW-SUB-3
  Scenario: late-join-replay: A late joiner gets the replay up to head_seq, then live events, without a seam
    When the client under test plays fixture "late-join-replay"
    Then the client passes the fixture

  @must @RW-RESUME-11 @RW-RECONNECT-8
  Scenario: persisted-cursor-resume: A cursor the application persisted is sent with its epoch and only later events are delivered
    When the client under test plays fixture "persisted-cursor-resume"
    Then the client passes the fixture

  @must @RW-RESUME-9
  Scenario: reset-cursor-too-old: A cursor older than the replay window gets a reset with a snapshot
    When the client under test plays fixture "reset-cursor-too-old"
    Then the client passes the fixture

  @must @RW-RESUME-9 @RW-ORDER-5
  Scenario: reset-discards-buffer: A reset discards events buffered behind a gap
    When the client under test plays fixture "reset-discards-buffer"
    Then the client passes the fixture

  @must @RW-RESUME-9 @RW-SUB-3
  Scenario: reset-epoch-change: A persisted cursor from an older epoch gets a reset; the client restarts from the snapshot
    When the client under test plays fixture "reset-epoch-change"
    Then the client passes the fixture

  @must @RW-RESUME-14 @RW-RESUME-9
  Scenario: reset-mid-stream: A reset on an open subscription (log re-created) replaces the state and continues in the new epoch
    When the client under test plays fixture "reset-mid-stream"
    Then the client passes the fixture

  @must @RW-RESUME-9 @RW-RESUME-10
  Scenario: resume-after-reset: After a reset the cursor continues from the snapshot's as_of_seq
    When the client under test plays fixture "resume-after-reset"
    Then the client passes the fixture

  @must @RW-SUB-3 @RW-RESUME-10
  Scenario: resume-no-events-yet: A client that has seen no event resumes with the epoch of subscribed
    When the client under test plays fixture "resume-no-events-yet"
    Then the client passes the fixture

  @must @RW-RESUME-10 @RW-RESUME-11
  Scenario: resume-persisted-no-new-events: A resumed subscription with nothing new keeps the persisted cursor across a drop
    When the client under test plays fixture "resume-persisted-no-new-events"
    Then the client passes the fixture

  @must @RW-RESUME-9 @RW-RESUME-10 @RW-RESUME-11 @RW-RESUME-14
  Scenario: reset-new-epoch-cursor: After a reset into a new epoch, the next hello resumes with the new epoch
    When the client under test plays fixture "reset-new-epoch-cursor"
    Then the client passes the fixture

  @must @RW-RESUME-9 @RW-RESUME-14
  Scenario: reset-new-epoch-discards-buffer: A reset into a new epoch discards buffered events above its as_of_seq
    When the client under test plays fixture "reset-new-epoch-discards-buffer"
    Then the client passes the fixture

  @must @RW-RESUME-15 @RW-RESUME-11
  Scenario: persisted-cursor-without-epoch: A persisted cursor without its epoch is not sent: the run is replayed from the start
    When the client under test plays fixture "persisted-cursor-without-epoch"
    Then the client passes the fixture
