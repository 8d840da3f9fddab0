@close
Feature: Errors and close codes
  Close codes are grouped by what the client must do, so even unknown codes are handled (spec section 13).
  Each scenario plays one fixture of fixtures/client/ to the client under test.

  @must @RW-INPUT-12
  Scenario: binary-frame-from-server: A binary frame: report an error, close 4000, reconnect with backoff
    When the client under test plays fixture "binary-frame-from-server"
    Then the client passes the fixture

  @must @RW-CLOSE-2
  Scenario: close-1000-by-server: A server close with 1000 while runs are open means reconnect with backoff
    When the client under test plays fixture "close-1000-by-server"
    Then the client passes the fixture

  @must @RW-CLOSE-2
  Scenario: close-1011-internal-error: internal_error + close 1011 means reconnect with backoff
    When the client under test plays fixture "close-1011-internal-error"
    Then the client passes the fixture

  @must @RW-CLOSE-2
  Scenario: close-1012-service-restart: Close 1012 (service restart) means reconnect now
    When the client under test plays fixture "close-1012-service-restart"
    Then the client passes the fixture

  @must @RW-CLOSE-2
  Scenario: close-3000-range: A code in 3000-3999 means reconnect with backoff
    When the client under test plays fixture "close-3000-range"
    Then the client passes the fixture

  @must @RW-CLOSE-2 @RW-RECONNECT-1
  Scenario: close-slow-consumer: slow_consumer + close 4100: reconnect with backoff and resume, nothing lost
    When the client under test plays fixture "close-slow-consumer"
    Then the client passes the fixture

  @must @RW-CLOSE-2
  Scenario: close-terminal-1008: Close 1008 (policy violation) is terminal
    When the client under test plays fixture "close-terminal-1008"
    Then the client passes the fixture

  @must @RW-RECONNECT-5 @RW-CLOSE-2 @RW-ERROR-8
  Scenario: close-terminal-unauthorized: unauthorized + close 4003 is terminal: no reconnect, terminal error
    When the client under test plays fixture "close-terminal-unauthorized"
    Then the client passes the fixture

  @must @RW-CLOSE-2 @RW-ERROR-4
  Scenario: close-terminal-unknown-4050: An unknown code in 4000-4099 is terminal
    When the client under test plays fixture "close-terminal-unknown-4050"
    Then the client passes the fixture

  @must @RW-CLOSE-2
  Scenario: close-unknown-4150: An unknown code in 4100-4199 means reconnect with backoff
    When the client under test plays fixture "close-unknown-4150"
    Then the client passes the fixture

  @must @RW-CLOSE-2 @RW-RECONNECT-6
  Scenario: close-unknown-4250: An unknown code in 4200-4299 means reconnect now
    When the client under test plays fixture "close-unknown-4250"
    Then the client passes the fixture

  @must @RW-CLOSE-2
  Scenario: close-unknown-4300: A code in 4300-4999 means reconnect with backoff
    When the client under test plays fixture "close-unknown-4300"
    Then the client passes the fixture

  @must @RW-CLOSE-3 @RW-RECONNECT-5
  Scenario: error-close-code-then-drop: An error announcing a terminal close, then a drop without close frame, is terminal
    When the client under test plays fixture "error-close-code-then-drop"
    Then the client passes the fixture

  @must @RW-INPUT-12 @RW-CLOSE-8
  Scenario: invalid-json-from-server: An undecodable frame: report an error, close 4000, reconnect with backoff
    When the client under test plays fixture "invalid-json-from-server"
    Then the client passes the fixture

  @must @RW-ERROR-4 @RW-ERROR-5
  Scenario: unknown-error-code-no-close: An unknown retryable error without close_code is reported; the connection stays
    When the client under test plays fixture "unknown-error-code-no-close"
    Then the client passes the fixture

  @must @RW-CLOSE-7 @RW-CLOSE-2
  Scenario: close-reason-ignored: The close reason text changes nothing: 4100 with a reason that reads terminal still reconnects
    When the client under test plays fixture "close-reason-ignored"
    Then the client passes the fixture

  @must @RW-SUB-5 @RW-ERROR-5
  Scenario: run-error-keeps-subscription: An error with a run_id answers one entry; the open subscription goes on
    When the client under test plays fixture "run-error-keeps-subscription"
    Then the client passes the fixture

  @must @RW-INPUT-12 @RW-CLOSE-10 @RW-CLOSE-8
  Scenario: invalid-utf8-text-frame: A text frame that is not valid UTF-8: report an error, deliver nothing, close 4000 (browsers: their WebSocket layer closes)
    When the client under test plays fixture "invalid-utf8-text-frame"
    Then the client passes the fixture
