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
