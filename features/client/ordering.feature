@ordering
Feature: Ordering, duplicates and gaps
  The client drops repeats, holds back out-of-order events and resubscribes on gaps (spec section 9).
  Each scenario plays one fixture of fixtures/client/ to the client under test.

  @must @RW-ORDER-4 @RW-BATCH-4
  Scenario: duplicate-batch: A batch repeated verbatim is delivered once
    When the client under test plays fixture "duplicate-batch"
    Then the client passes the fixture

  @must @RW-ORDER-4
  Scenario: duplicate-frame: The same event frame twice is delivered once
    When the client under test plays fixture "duplicate-frame"
    Then the client passes the fixture

  @must @RW-ORDER-5
  Scenario: gap-filled-in-time: A gap filled before the gap timeout needs no resubscribe
    When the client under test plays fixture "gap-filled-in-time"
    Then the client passes the fixture

  @must @RW-BATCH-4 @RW-ORDER-5
  Scenario: gap-in-batch: A gap inside a batch is handled like a gap between frames
    When the client under test plays fixture "gap-in-batch"
    Then the client passes the fixture

  @must @RW-ORDER-5 @RW-ORDER-7
  Scenario: gap-resubscribe: A gap that does not fill makes the client unsubscribe and resubscribe from its cursor
    When the client under test plays fixture "gap-resubscribe"
    Then the client passes the fixture

  @must @RW-ORDER-3 @RW-ORDER-6
  Scenario: multi-run-interleaved: Two runs interleaved: each is ordered on its own, neither waits for the other
    When the client under test plays fixture "multi-run-interleaved"
    Then the client passes the fixture

  @must @RW-ORDER-6
  Scenario: out-of-order-pair: Seq 4 before seq 3: the client holds 4 back until 3 arrives
    When the client under test plays fixture "out-of-order-pair"
    Then the client passes the fixture

  @must @RW-ORDER-5 @RW-ORDER-6
  Scenario: reorder-within-window: Events reordered within the gap window are delivered in seq order without a resubscribe
    When the client under test plays fixture "reorder-within-window"
    Then the client passes the fixture

  @must @RW-ORDER-4
  Scenario: replay-overlaps-live: Replay that overlaps live events: repeats are dropped
    When the client under test plays fixture "replay-overlaps-live"
    Then the client passes the fixture

  @must @RW-SUB-6
  Scenario: foreign-run-events: Events of a run the client did not subscribe to are never delivered
    When the client under test plays fixture "foreign-run-events"
    Then the client passes the fixture

  @must @RW-EVENT-9
  Scenario: time-not-ordering: Events are ordered by seq alone, even when their times go backwards
    When the client under test plays fixture "time-not-ordering"
    Then the client passes the fixture
