@folding
Feature: Folding events into run state
  The application folds delivered events onto the last reset's snapshot (or an empty
  state) by the rules of spec section 8.3; the adapter prints that state as `folded`
  lines (docs/client-adapter.md). A client whose adapter prints no `folded` line is
  graded not implemented on these scenarios.
  Each scenario plays one fixture of fixtures/client/ to the client under test.

  @must @RW-TYPE-5 @RW-SNAP-2
  Scenario: fold-progress-keeps-absent: Folding run.progress updates only the members an event carries and keeps the others
    When the client under test plays fixture "fold-progress-keeps-absent"
    Then the client passes the fixture

  @must @RW-TYPE-7 @RW-SNAP-2
  Scenario: fold-metadata-merges-labels: Folding run.metadata keeps absent members and merges labels key by key
    When the client under test plays fixture "fold-metadata-merges-labels"
    Then the client passes the fixture

  @must @RW-TYPE-16 @RW-SNAP-2
  Scenario: fold-todos-replaced: Folding todo.updated replaces the whole list
    When the client under test plays fixture "fold-todos-replaced"
    Then the client passes the fixture

  @must @RW-SNAP-3 @RW-ORDER-4
  Scenario: fold-duplicate-unchanged: Events sent again at or below the folded seq leave the folded state unchanged
    When the client under test plays fixture "fold-duplicate-unchanged"
    Then the client passes the fixture

  @must @RW-SNAP-3 @RW-SNAP-2
  Scenario: fold-from-reset-snapshot: After a reset the client folds onto the snapshot, and events it already covers change nothing
    When the client under test plays fixture "fold-from-reset-snapshot"
    Then the client passes the fixture

  @must @RW-SNAP-2 @RW-RESUME-9
  Scenario: fold-reset-replaces-state: A reset's snapshot replaces the folded state; nothing of the old state survives
    When the client under test plays fixture "fold-reset-replaces-state"
    Then the client passes the fixture

  @must @RW-SNAP-4 @RW-SNAP-2
  Scenario: fold-unknown-types-change-nothing: Events of types the folding table does not name change only as_of_seq and updated_at
    When the client under test plays fixture "fold-unknown-types-change-nothing"
    Then the client passes the fixture
