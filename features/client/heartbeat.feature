@heartbeat
Feature: Heartbeat and liveness
  The client answers pings and declares a silent connection dead (spec section 11).
  Each scenario plays one fixture of fixtures/client/ to the client under test.

  @must @RW-HEART-6 @RW-VERSION-5
  Scenario: liveness-any-frame: Frames of unknown types count as signs of liveness
    When the client under test plays fixture "liveness-any-frame"
    Then the client passes the fixture

  @must @RW-HEART-6 @RW-HEART-4
  Scenario: liveness-kept-by-pings: Pings keep a quiet connection alive
    When the client under test plays fixture "liveness-kept-by-pings"
    Then the client passes the fixture

  @must @RW-HEART-5 @RW-RECONNECT-7 @RW-CONN-8
  Scenario: liveness-timeout: A silent connection is declared dead after heartbeat interval plus grace; the client reconnects
    When the client under test plays fixture "liveness-timeout"
    Then the client passes the fixture

  @must @RW-HEART-4
  Scenario: ping-during-stream: A ping between events is answered promptly while events keep flowing
    When the client under test plays fixture "ping-during-stream"
    Then the client passes the fixture

  @must @RW-HEART-4
  Scenario: ping-pong: Every ping is answered with a pong echoing its id
    When the client under test plays fixture "ping-pong"
    Then the client passes the fixture

  @must @RW-HEART-4 @RW-HEART-6 @RW-CONN-11
  Scenario: open-run-keeps-streaming: While a run is open the client stays connected: it answers pings and does not close
    When the client under test plays fixture "open-run-keeps-streaming"
    Then the client passes the fixture

  @must @RW-HEART-9
  Scenario: unsolicited-pong: A pong matching no ping is ignored without error
    When the client under test plays fixture "unsolicited-pong"
    Then the client passes the fixture
