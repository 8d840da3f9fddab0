@batching
Feature: Batching
  Batches may coalesce events, but never hold them past the announced window, and
  terminal statuses and todo updates flush at once (spec section 10).

  @must @RW-BATCH-1
  Scenario: live events arrive within the announced batch window
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When the producer appends 1 events to run "A"
    And the producer appends 3 events to run "A"
    Then every event of run "A" reached client "a" within the announced batch window
    And client "a" receives events 1 to 4 of run "A"

  @must @RW-BATCH-3 @RW-TYPE-2
  Scenario: a terminal status is flushed at once
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When the producer appends 2 events to run "A"
    And the producer appends status "completed" to run "A"
    Then event 3 of run "A" reached client "a" at once
    And client "a" receives events 1 to 3 of run "A"

  @must @RW-BATCH-3
  Scenario: a todo update is flushed at once
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When the producer appends a "todo.updated" event with data {"items":[{"id":"t1","text":"write tests","status":"pending"}]} to run "A"
    Then event 1 of run "A" reached client "a" at once
    And client "a" receives events 1 to 1 of run "A"

  @must @RW-BATCH-2 @RW-BATCH-5 @RW-SUB-2
  Scenario: a long replay stays ordered whatever the batch boundaries
    Given the producer appends 900 events to run "A"
    And client "a" is connected
    When client "a" subscribes to run "A"
    Then client "a" receives subscribed for run "A" with after_seq 0 and head_seq 900
    And client "a" receives events 1 to 900 of run "A"
