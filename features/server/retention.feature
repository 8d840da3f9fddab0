@retention
Feature: Retention: trimmed history and trimmed cursors
  A server may keep only the last events of a run (spec sections 4.4 and 8.3). Then a
  history read from a trimmed cursor is 410 cursor_too_old, a subscription from a
  trimmed cursor inside the replay window is reset with the whole folded state, and
  cursors whose events are retained still replay event by event. These scenarios need a
  server that declares a short retention for some runs (`runwire conform server
  --short-retention PREFIX=N`: runs named PREFIX… keep at least their last N events and
  are trimmed eventually once they hold more); without it they are not implemented.
  The run "retained" is named with that prefix; it gets a status and a phase first, so
  that a snapshot that lost the trimmed events' effects shows, then events until its
  first two events are trimmed (bounded: 20 N + 1000 events and 3 s of polling, since a
  server may trim in the background).

  Background:
    Given the server declares a short retention for the runs named "retained*"
    And the producer appends status "running" to run "retained"
    And the producer appends a "run.phase" event with data {"phase":"build"} to run "retained"
    And the producer appends events to run "retained" until a history read after seq 1 answers 410

  @must @RW-INGEST-17
  Scenario: a history read from a trimmed cursor is 410 cursor_too_old
    When the producer sends GET /v1/runs/${retained}/events?after_seq=0
    Then the answer is 410 with code "cursor_too_old"
    And the answer has "error.retryable" equal to false
    When the producer sends GET /v1/runs/${retained}/events?after_seq=1&limit=5
    Then the answer is 410 with code "cursor_too_old"

  @must @RW-INGEST-16 @RW-INGEST-17 @RW-INGEST-18
  Scenario: the retained events are still read in order
    Then the history of run "retained" after its head minus the short retention is every retained event in order
    When the producer sends GET /v1/runs/${retained}/events?after_seq=${head:retained}
    Then the answer is 200
    And the answer has "events" equal to []
    And the answer has "head_seq" equal to ${head:retained}

  @must @RW-INGEST-15 @RW-SNAP-1 @RW-SNAP-2
  Scenario: the snapshot of a trimmed run still folds every event
    When the producer sends GET /v1/runs/${retained}
    Then the answer is 200
    And the answer has "as_of_seq" equal to ${head:retained}
    And the answer has "status" equal to "running"
    And the answer has "phase" equal to "build"

  @must @RW-RESUME-5 @RW-RESUME-8 @RW-SNAP-2 @RW-SNAP-5
  Scenario: a trimmed cursor inside the replay window is reset with the whole state, then live events follow
    Given client "a" is connected
    And the head of run "retained" is within the replay window announced to client "a"
    When client "a" subscribes to run "retained" after seq 1 with epoch "current"
    Then client "a" receives reset for run "retained" with reason "cursor_too_old" as of its head
    And the reset snapshot of client "a" has status "running"
    And the reset snapshot of client "a" has phase "build"
    And the reset snapshot of client "a" equals the snapshot of run "retained" read over HTTP
    When the producer appends 3 events to run "retained"
    Then client "a" receives every event of run "retained"

  @must @RW-RESUME-5 @RW-RESUME-8
  Scenario: a late joiner of a trimmed run is reset with the whole state
    Given client "a" is connected
    And the head of run "retained" is within the replay window announced to client "a"
    When client "a" subscribes to run "retained"
    Then client "a" receives reset for run "retained" with reason "cursor_too_old" as of its head
    And the reset snapshot of client "a" has status "running"
    And the reset snapshot of client "a" has phase "build"
    When the producer appends 1 events to run "retained"
    Then client "a" receives every event of run "retained"

  @must @RW-RESUME-7 @RW-RESUME-1
  Scenario: a cursor whose events are retained is replayed, not reset
    Given client "b" is connected
    When client "b" subscribes to run "retained" half the short retention before its head with epoch "current"
    Then client "b" receives subscribed for run "retained" from that cursor to its head
    And client "b" receives every event of run "retained"
    When the producer appends 2 events to run "retained"
    Then client "b" receives every event of run "retained"
