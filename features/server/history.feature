@history
Feature: Snapshot and history over HTTP
  Hydration without a socket (spec sections 4.3, 4.4).

  @must @RW-INGEST-16
  Scenario: history pages by after_seq and limit
    Given the producer appends 10 events to run "A"
    When the producer sends GET /v1/runs/${A}/events?after_seq=2&limit=3
    Then the answer is 200
    And the answer has "head_seq" equal to 10
    And the answer has "has_more" equal to true
    And the answer has "events.0.seq" equal to 3
    And the answer has "events.2.seq" equal to 5

  @must @RW-INGEST-18
  Scenario: history after the head is empty
    Given the producer appends 4 events to run "A"
    When the producer sends GET /v1/runs/${A}/events?after_seq=9
    Then the answer is 200
    And the answer has "events" equal to []
    And the answer has "has_more" equal to false
    And the answer has "head_seq" equal to 4

  @must @RW-INGEST-17
  Scenario: bad history parameters are invalid_request
    Given the producer appends 1 events to run "A"
    When the producer sends GET /v1/runs/${A}/events?limit=0
    Then the answer is 400 with code "invalid_request"
    When the producer sends GET /v1/runs/${A}/events?after_seq=abc
    Then the answer is 400 with code "invalid_request"
    When the producer sends GET /v1/runs/${A}/events?limit=10001
    Then the answer is 400 with code "invalid_request"

  @must @RW-INGEST-17 @RW-INGEST-15
  Scenario: reading a run that does not exist is run_not_found
    When the producer sends GET /v1/runs/${nobody}/events
    Then the answer is 404 with code "run_not_found"
    When the producer sends GET /v1/runs/${nobody}
    Then the answer is 404 with code "run_not_found"

  @must @RW-INGEST-15 @RW-SNAP-2 @RW-SNAP-4
  Scenario: the snapshot folds the log up to the head
    Given the producer appends status "running" to run "A"
    And the producer appends a "run.progress" event with data {"percent":40,"step":"compile"} to run "A"
    And the producer appends a "run.phase" event with data {"phase":"test"} to run "A"
    And the producer appends a "acme.custom" event with data {"ignored":true} to run "A"
    When the producer sends GET /v1/runs/${A}
    Then the answer is 200
    And the answer has "as_of_seq" equal to 4
    And the answer has "status" equal to "running"
    And the answer has "phase" equal to "test"
    And the answer has "progress.percent" equal to 40
    And the answer has "run_id" equal to "${A}"

  @must @RW-INGEST-20
  Scenario: a path no endpoint has is answered with the error body
    When the producer sends GET /v1/rwc-no-such-endpoint
    Then the answer is 404 with code "invalid_request"
