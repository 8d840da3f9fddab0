@ingest
Feature: Producer ingest
  The HTTP API appends atomically, acknowledges only durable events, de-duplicates
  retries and closes terminal runs (spec section 4.2).

  @must @RW-INGEST-5 @RW-INGEST-14
  Scenario: a retried append with the same idempotency keys appends nothing new
    When the producer appends 3 events with idempotency keys "k" to run "A"
    And the producer retries the last append
    Then the retry was answered with the original assignments
    And run "A" has 3 events over HTTP

  @must @RW-INGEST-5 @RW-EVENT-3
  Scenario: a retry that adds one more event keeps the log gapless
    Given the producer appends 3 events with idempotency keys "k" to run "A"
    When the producer retries the last append with one more event
    Then the last append was assigned seqs 1 to 4
    And run "A" has 4 events over HTTP

  @must @RW-INGEST-6
  Scenario: the same key with different data is a conflict
    Given the producer appends a "run.progress" event with data {"percent":10} and idempotency key "same" to run "A"
    When the producer appends a "run.progress" event with data {"percent":20} and idempotency key "same" to run "A"
    Then the answer is 409 with code "idempotency_conflict"
    And run "A" has 1 events over HTTP

  @must @RW-INGEST-7
  Scenario: two events with one key in one request are refused
    When the producer posts to run "A":
      """
      {"events":[{"type":"log.line","data":{"level":"info","message":"a"},"idempotency_key":"dup"},{"type":"log.line","data":{"level":"info","message":"b"},"idempotency_key":"dup"}]}
      """
    Then the answer is 400 with code "invalid_request"

  @must @RW-INGEST-8 @RW-TYPE-1 @RW-INGEST-4
  Scenario: a request with one invalid event appends nothing
    Given client "a" is connected
    And the producer appends 2 events to run "A"
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When the producer posts to run "A":
      """
      {"events":[{"type":"log.line","data":{"level":"info","message":"ok"}},{"type":"run.progress","data":{"percent":"half"}}]}
      """
    Then the answer is 400 with code "invalid_request" and pointer "/events/1"
    And run "A" has 2 events over HTTP
    And client "a" receives events 1 to 2 of run "A"
    And client "a" receives no event of run "A"

  @must @RW-INGEST-9
  Scenario: an append without events is refused with pointer /events
    When the producer posts to run "A":
      """
      {"events":[]}
      """
    Then the answer is 400 with code "invalid_request" and pointer "/events"

  @must @RW-INGEST-9
  Scenario: a body that is not an append request is refused
    When the producer posts to run "A":
      """
      {"events": "soon"}
      """
    Then the answer is 400 with code "invalid_request"

  @must @RW-INGEST-10 @RW-TYPE-2
  Scenario: nothing can be appended after a terminal status
    Given the producer appends 2 events to run "A"
    And the producer appends status "completed" to run "A"
    When the producer posts to run "A":
      """
      {"events":[{"type":"log.line","data":{"level":"info","message":"too late"}}]}
      """
    Then the answer is 409 with code "run_terminal"
    And run "A" has 3 events over HTTP

  @must @RW-INGEST-10
  Scenario: a request with events after its own terminal status is refused
    When the producer posts to run "A":
      """
      {"events":[{"type":"run.status","data":{"status":"failed","reason":"x"}},{"type":"log.line","data":{"level":"info","message":"after"}}]}
      """
    Then the answer is 409 with code "run_terminal"

  @must @RW-INGEST-11
  Scenario: retrying the append that ended a run returns its assignments
    Given the producer appends 1 events to run "A"
    When the producer posts to run "A":
      """
      {"events":[{"type":"run.status","data":{"status":"completed"},"idempotency_key":"end"}]}
      """
    And the producer posts to run "A":
      """
      {"events":[{"type":"run.status","data":{"status":"completed"},"idempotency_key":"end"}]}
      """
    Then the answer is 200
    And run "A" has 2 events over HTTP

  @must @RW-INGEST-12
  Scenario: the producer's time is kept
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When the producer posts to run "A":
      """
      {"events":[{"type":"log.line","data":{"level":"info","message":"then"},"time":"2020-01-02T03:04:05.678Z"}]}
      """
    Then the answer is 200
    And client "a" receives events 1 to 1 of run "A"
    When the producer sends GET /v1/runs/${A}/events
    Then the answer has "events.0.time" equal to "2020-01-02T03:04:05.678Z"

  @must @RW-INGEST-13 @RW-EVENT-10 @RW-SUB-2
  Scenario: the first append creates the run with an epoch that subscriptions report
    Given the producer appends 1 events to run "A"
    And client "a" is connected
    When client "a" subscribes to run "A"
    Then client "a" receives subscribed for run "A" with after_seq 0 and head_seq 1

  @must @RW-TYPE-23 @RW-COMPAT-3
  Scenario: events of unknown types are stored and delivered unchanged
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When the producer appends a "acme.deploy.started" event with data {"target":"prod","n":[1,2,{"deep":null}]} to run "A"
    Then client "a" receives events 1 to 1 of run "A"
    And event 1 of run "A" delivered to client "a" has type "acme.deploy.started" and data {"target":"prod","n":[1,2,{"deep":null}]}

  @must @RW-SEC-6
  Scenario: idempotency keys are scoped to one run
    When the producer appends 1 events with idempotency keys "shared" to run "A"
    And the producer appends 1 events with idempotency keys "shared" to run "B"
    Then run "A" has 1 events over HTTP
    And run "B" has 1 events over HTTP

  @must @RW-INGEST-3 @RW-INGEST-4
  Scenario: an acknowledged append is readable at once
    When the producer appends 7 events to run "A"
    Then run "A" has 7 events over HTTP

  @must @RW-INGEST-1 @RW-EVENT-2
  Scenario: an invalid run id in the path is invalid_request
    When the producer sends GET /v1/runs/-bad!id/events
    Then the answer is 400 with code "invalid_request"

  @must @RW-INGEST-20 @RW-TYPE-1
  Scenario: an event whose data breaks its type is refused with a pointer
    When the producer posts to run "A":
      """
      {"events":[{"type":"run.status","data":{"status":"sleeping"}}]}
      """
    Then the answer is 400 with code "invalid_request" and pointer "/events/0"
    And the answer has "error.retryable" equal to false

  @must @RW-EVENT-6
  Scenario: an invalid event type is refused
    When the producer posts to run "A":
      """
      {"events":[{"type":"NoDots","data":{}}]}
      """
    Then the answer is 400 with code "invalid_request"

  @must @RW-EVENT-7
  Scenario: event data that is not an object is refused
    When the producer posts to run "A":
      """
      {"events":[{"type":"acme.thing","data":[1,2]}]}
      """
    Then the answer is 400 with code "invalid_request"

  @must @RW-TYPE-17 @RW-TYPE-18 @RW-TYPE-19
  Scenario: an output split into ordered chunks is delivered complete and in order
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When the producer posts to run "A":
      """
      {"events":[
        {"type":"output.chunk","data":{"output_id":"report","index":0,"encoding":"base64","data":"aGVsbG8g","media_type":"text/plain"}},
        {"type":"output.chunk","data":{"output_id":"report","index":1,"encoding":"base64","data":"d29ybGQ="}},
        {"type":"output.chunk","data":{"output_id":"report","index":2,"encoding":"base64","data":"IQ==","last":true}}
      ]}
      """
    Then the answer is 200
    And client "a" receives events 1 to 3 of run "A"
    And event 3 of run "A" delivered to client "a" has type "output.chunk" and data {"output_id":"report","index":2,"encoding":"base64","data":"IQ==","last":true}

  @must @RW-TYPE-12
  Scenario: streamed agent message deltas end with done and arrive in order
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When the producer posts to run "A":
      """
      {"events":[
        {"type":"agent.message","data":{"message_id":"m1","delta":"Hel"}},
        {"type":"agent.message","data":{"message_id":"m1","delta":"lo","done":true}}
      ]}
      """
    Then the answer is 200
    And client "a" receives events 1 to 2 of run "A"
    And event 2 of run "A" delivered to client "a" has type "agent.message" and data {"message_id":"m1","delta":"lo","done":true}

  @must @RW-TYPE-21 @RW-TYPE-22
  Scenario: a producer's own types use its own namespace and pass through
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When the producer appends a "acme.ci.cache.hit" event with data {"key":"deps"} to run "A"
    Then client "a" receives events 1 to 1 of run "A"
    And event 1 of run "A" delivered to client "a" has type "acme.ci.cache.hit" and data {"key":"deps"}

  @must @RW-TYPE-24 @RW-CONV-2
  Scenario: an integer a JavaScript reader would round is refused in custom data
    When the producer posts to run "A":
      """
      {"events": [{"type": "rwc.custom-counter", "data": {"ok": -5, "nested": {"count": 9007199254740993}}}]}
      """
    Then the answer is 400 with code "invalid_request" and pointer "/events/0/data/nested/count"
    When the producer appends a "rwc.custom-counter" event with data {"count":9007199254740991,"ok":-5,"ratio":0.5} to run "A"
    Then run "A" has 1 events over HTTP

  @must @RW-INGEST-23 @RW-INGEST-10
  Scenario: stored events plus a new one for an ended run are refused whole
    Given the producer appends 1 events to run "A"
    When the producer posts to run "A":
      """
      {"events":[{"type":"run.status","data":{"status":"completed"},"idempotency_key":"end"}]}
      """
    And the producer posts to run "A":
      """
      {"events":[{"type":"run.status","data":{"status":"completed"},"idempotency_key":"end"},{"type":"log.line","data":{"level":"info","message":"late"},"idempotency_key":"late"}]}
      """
    Then the answer is 409 with code "run_terminal"
    And run "A" has 2 events over HTTP

  @must @RW-TYPE-25 @RW-COMPAT-1
  Scenario: the data of a known type is relayed as the producer sent it
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When the producer appends a "run.progress" event with data {"percent":1,"message":"tick","sent_us":123} to run "A"
    Then client "a" receives events 1 to 1 of run "A"
    And event 1 of run "A" delivered to client "a" has type "run.progress" and data {"percent":1,"message":"tick","sent_us":123}
    And the events of run "A" delivered to client "a" equal the history read over HTTP
