@connection
Feature: Connection and authentication
  The client says hello first, offers its versions and token, and stops on terminal errors (spec sections 5-7).
  Each scenario plays one fixture of fixtures/client/ to the client under test.

  @must @RW-AUTH-1 @RW-RECONNECT-5
  Scenario: auth-failure: A rejected token: unauthorized + 4003 is terminal
    When the client under test plays fixture "auth-failure"
    Then the client passes the fixture

  @must @RW-CONN-4 @RW-ORDER-6 @RW-CONN-11
  Scenario: happy-path: A fresh client subscribes, receives a whole run in order and closes with 1000
    When the client under test plays fixture "happy-path"
    Then the client passes the fixture

  @should @RW-RECONNECT-10
  Scenario: state-reporting: The client reports its connection states: connecting, connected, reconnecting, closed
    When the client under test plays fixture "state-reporting"
    Then the client passes the fixture

  @must @RW-AUTH-9 @RW-AUTH-10 @RW-AUTH-1
  Scenario: token-expiry-mid-stream: token_expired + 4103: reconnect with a fresh token and resume from the cursor
    When the client under test plays fixture "token-expiry-mid-stream"
    Then the client passes the fixture

  @must @RW-LIMIT-5 @RW-CONN-8 @RW-ORDER-5
  Scenario: limits-announced-rate: The client keeps to the message rate welcome announces, not the default: a gap resubscribe waits for its token
    When the client under test plays fixture "limits-announced-rate"
    Then the client passes the fixture
