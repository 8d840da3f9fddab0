@reset
Feature: Reset with a snapshot
  A cursor that cannot be replayed gets the folded state instead, then live events
  (spec section 8.3).

  @must @RW-RESUME-6 @RW-RESUME-8
  Scenario: a cursor ahead of the head is reset
    Given the producer appends 3 events to run "A"
    And client "a" is connected
    When client "a" subscribes to run "A" after seq 50 with epoch "current"
    Then client "a" receives reset for run "A" with reason "cursor_ahead" as of seq 3
    When the producer appends 1 events to run "A"
    Then client "a" receives events 4 to 4 of run "A"

  @must @RW-RESUME-4 @RW-RESUME-8
  Scenario: a cursor from another epoch is reset whatever its seq
    Given the producer appends 4 events to run "A"
    And client "a" is connected
    When client "a" subscribes to run "A" after seq 2 with epoch "rwc-some-other-epoch"
    Then client "a" receives reset for run "A" with reason "epoch_mismatch" as of seq 4

  @must @RW-RESUME-5 @RW-RESUME-8 @RW-RESUME-12
  Scenario: a cursor older than the replay window is reset, then live events follow
    Given client "a" is connected
    And the producer appends more events than the replay window announced to client "a" to run "A"
    When client "a" subscribes to run "A" after seq 1 with epoch "current"
    Then client "a" receives reset for run "A" with reason "cursor_too_old" as of its head
    When the producer appends 2 events to run "A"
    Then client "a" receives every event of run "A"

  @must @RW-SNAP-5 @RW-SNAP-1 @RW-SNAP-2
  Scenario: the reset snapshot equals the snapshot read over HTTP
    Given the producer appends status "running" to run "A"
    And the producer appends a "run.phase" event with data {"phase":"build"} to run "A"
    And the producer appends 2 events to run "A"
    And client "a" is connected
    When client "a" subscribes to run "A" after seq 99 with epoch "current"
    Then client "a" receives reset for run "A" with reason "cursor_ahead" as of seq 4
    And the reset snapshot of client "a" has status "running"
    And the reset snapshot of client "a" equals the snapshot of run "A" read over HTTP

  @must @RW-SNAP-1 @RW-SNAP-2 @RW-SNAP-4 @RW-SNAP-5 @RW-RESUME-8 @RW-INGEST-15
  Scenario: snapshots are the fold of a random log of every event type by the spec's table
    Given the producer appends 300 random events of every type to run "A"
    Then the snapshot of run "A" over HTTP is the fold of its history by the spec's table
    Given client "a" is connected
    When client "a" subscribes to run "A" after seq 100000
    Then client "a" receives reset for run "A" with reason "cursor_ahead" as of its head
    And the reset snapshot of client "a" is the fold of the history of run "A" by the spec's table
