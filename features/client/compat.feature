@compat
Feature: Must-ignore and payloads
  Unknown members, types and messages are ignored; chunks and batches are delivered in order (spec sections 3, 10, 18).
  Each scenario plays one fixture of fixtures/client/ to the client under test.

  @must @RW-BATCH-4
  Scenario: happy-path-batch: Events arriving in batch frames are delivered one by one, in order
    When the client under test plays fixture "happy-path-batch"
    Then the client passes the fixture

  @must @RW-TYPE-20 @RW-BATCH-4
  Scenario: output-chunks: A large output split into ordered chunks arrives complete and in order
    When the client under test plays fixture "output-chunks"
    Then the client passes the fixture

  @must @RW-SUB-10 @RW-ERROR-5
  Scenario: subscription-forbidden: A forbidden run fails alone; the other run streams to the end
    When the client under test plays fixture "subscription-forbidden"
    Then the client passes the fixture

  @must @RW-VERSION-4
  Scenario: unknown-event-type: An event of an unknown type is ordered and de-duplicated like any other, never an error
    When the client under test plays fixture "unknown-event-type"
    Then the client passes the fixture

  @must @RW-COMPAT-1
  Scenario: unknown-fields: Unknown members in welcome, subscribed, envelopes and payloads are ignored
    When the client under test plays fixture "unknown-fields"
    Then the client passes the fixture

  @must @RW-VERSION-5
  Scenario: unknown-server-message: A server message of an unknown type is ignored without closing
    When the client under test plays fixture "unknown-server-message"
    Then the client passes the fixture

  @must @RW-TYPE-4 @RW-TYPE-11 @RW-TYPE-8
  Scenario: status-order-tolerance: Non-terminal statuses in any order, a tool.finished without its start: accepted and delivered
    When the client under test plays fixture "status-order-tolerance"
    Then the client passes the fixture

  @must @RW-COMPAT-4 @RW-TYPE-8 @RW-ERROR-5
  Scenario: unknown-enum-values: Unknown phase names, artifact kinds and error codes are accepted and presented as given
    When the client under test plays fixture "unknown-enum-values"
    Then the client passes the fixture

  @must @RW-CONV-2 @RW-INPUT-12
  Scenario: invalid-unsafe-integer: An event whose seq is above 2^53 - 1 is rejected, not rounded
    When the client under test plays fixture "invalid-unsafe-integer"
    Then the client passes the fixture

  @must @RW-CONV-2 @RW-INPUT-12
  Scenario: invalid-negative-integer: A subscribed frame with a negative head_seq is rejected
    When the client under test plays fixture "invalid-negative-integer"
    Then the client passes the fixture

  @must @RW-EVENT-2 @RW-INPUT-12
  Scenario: invalid-run-id: An event whose run_id breaks the run id pattern is undecodable
    When the client under test plays fixture "invalid-run-id"
    Then the client passes the fixture

  @must @RW-EVENT-5 @RW-INPUT-12
  Scenario: invalid-event-time: An event whose time has a numeric offset is undecodable
    When the client under test plays fixture "invalid-event-time"
    Then the client passes the fixture

  @must @RW-EVENT-6 @RW-INPUT-12
  Scenario: invalid-event-type: An event whose type is one segment is undecodable
    When the client under test plays fixture "invalid-event-type"
    Then the client passes the fixture

  @must @RW-EVENT-7 @RW-INPUT-12
  Scenario: invalid-event-data: An event whose data is an array is undecodable
    When the client under test plays fixture "invalid-event-data"
    Then the client passes the fixture

  @must @RW-HEART-2 @RW-INPUT-12
  Scenario: invalid-ping-id: A ping whose id is 65 characters long is undecodable
    When the client under test plays fixture "invalid-ping-id"
    Then the client passes the fixture

  @must @RW-CONV-1 @RW-INPUT-12 @RW-CLOSE-8 @RW-CLOSE-4
  Scenario: invalid-two-objects: A text frame holding two JSON objects is undecodable
    When the client under test plays fixture "invalid-two-objects"
    Then the client passes the fixture

  @must @RW-CONV-1 @RW-INPUT-12
  Scenario: invalid-json-array: A text frame holding a JSON array is undecodable
    When the client under test plays fixture "invalid-json-array"
    Then the client passes the fixture

  @must @RW-CONV-5 @RW-VERSION-5
  Scenario: case-sensitive-types: Message types are case-sensitive: "Ping" is an unknown message type
    When the client under test plays fixture "case-sensitive-types"
    Then the client passes the fixture

  @must @RW-COMPAT-5 @RW-CONV-3 @RW-CONV-1 @RW-CLOSE-4
  Scenario: client-messages-valid: Every message the client sends is one valid JSON object with no member named twice
    When the client under test plays fixture "client-messages-valid"
    Then the client passes the fixture

  @must @RW-CONV-6 @RW-INPUT-12
  Scenario: invalid-fraction-integer: A subscribed frame with head_seq written as 2.0 is rejected
    When the client under test plays fixture "invalid-fraction-integer"
    Then the client passes the fixture

  @must @RW-CONV-7
  Scenario: null-optional-members: Optional members sent as null count as absent
    When the client under test plays fixture "null-optional-members"
    Then the client passes the fixture
