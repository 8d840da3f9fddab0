@reconnect
Feature: Reconnect policy
  Exponential backoff with full jitter, retry_after, max attempts and stable sessions (spec section 12).
  Each scenario plays one fixture of fixtures/client/ to the client under test.

  @must @RW-RECONNECT-1
  Scenario: backoff-envelope: Refused attempts back off inside a growing full-jitter envelope
    When the client under test plays fixture "backoff-envelope"
    Then the client passes the fixture

  @must @RW-RECONNECT-8 @RW-RESUME-10
  Scenario: drop-after-terminal-multi: After one run ends and the connection drops, the client resumes only the run still open
    When the client under test plays fixture "drop-after-terminal-multi"
    Then the client passes the fixture

  @must @RW-TYPE-2 @RW-CONN-11
  Scenario: drop-after-terminal: A drop right after the terminal status does not make the client reconnect
    When the client under test plays fixture "drop-after-terminal"
    Then the client passes the fixture

  @must @RW-RESUME-10 @RW-RECONNECT-7 @RW-RECONNECT-8
  Scenario: drop-after-welcome: After a drop mid-stream the client resumes from the last delivered seq
    When the client under test plays fixture "drop-after-welcome"
    Then the client passes the fixture

  @must @RW-RECONNECT-7 @RW-RECONNECT-1
  Scenario: drop-before-welcome: A TCP drop before welcome is a failed attempt; the client backs off and retries
    When the client under test plays fixture "drop-before-welcome"
    Then the client passes the fixture

  @must @RW-BATCH-4 @RW-RESUME-10
  Scenario: drop-mid-batch: A connection cut in the middle of a batch frame delivers nothing of that batch; resume re-sends it
    When the client under test plays fixture "drop-mid-batch"
    Then the client passes the fixture

  @must @RW-RECONNECT-7 @RW-RESUME-10
  Scenario: drop-with-reset: A TCP reset (RST) is handled like any lost connection
    When the client under test plays fixture "drop-with-reset"
    Then the client passes the fixture

  @must @RW-HEART-5 @RW-RESUME-10 @RW-RECONNECT-9
  Scenario: hang-after-welcome: A server that accepts and then never answers is given up after interval plus grace
    When the client under test plays fixture "hang-after-welcome"
    Then the client passes the fixture

  @must @RW-RECONNECT-3 @RW-RECONNECT-4
  Scenario: max-attempts-exhausted: After max attempts consecutive failures the client stops with a terminal error
    When the client under test plays fixture "max-attempts-exhausted"
    Then the client passes the fixture

  @must @RW-RECONNECT-1
  Scenario: refused-http-503: An upgrade answered with HTTP 503 is a failed attempt
    When the client under test plays fixture "refused-http-503"
    Then the client passes the fixture

  @must @RW-RECONNECT-4 @RW-RECONNECT-1
  Scenario: resume-stable-session: A session that outlived the stable-session time resets the attempt count
    When the client under test plays fixture "resume-stable-session"
    Then the client passes the fixture

  @must @RW-RECONNECT-2
  Scenario: retry-after-backoff: rate_limited with retry_after_ms: the client waits at least retry_after_ms
    When the client under test plays fixture "retry-after-backoff"
    Then the client passes the fixture

  @must @RW-RECONNECT-6
  Scenario: server-restart-no-retry-after: Close 4200 without retry_after_ms: reconnect after a draw from 0..base, no exponential backoff
    When the client under test plays fixture "server-restart-no-retry-after"
    Then the client passes the fixture

  @must @RW-RECONNECT-6 @RW-CLOSE-2
  Scenario: server-restart-retry-after: server_shutdown with a jittered retry_after_ms + 4200: reconnect after exactly that delay
    When the client under test plays fixture "server-restart-retry-after"
    Then the client passes the fixture

  @must @RW-RECONNECT-1
  Scenario: backoff-distribution: Eleven refused attempts: the delays spread over their envelopes, neither all at the top nor all near 0
    When the client under test plays fixture "backoff-distribution"
    Then the client passes the fixture

  @must @RW-AUTH-9 @RW-AUTH-10 @RW-RECONNECT-4
  Scenario: token-after-stable-session: After a session longer than the stable-session time, the reconnect still asks the token provider
    When the client under test plays fixture "token-after-stable-session"
    Then the client passes the fixture

  @must @RW-RECONNECT-11 @RW-ERROR-7
  Scenario: welcome-timeout: No welcome after hello: the client gives up on the attempt and reconnects with backoff
    When the client under test plays fixture "welcome-timeout"
    Then the client passes the fixture

  @must @RW-RECONNECT-3
  Scenario: max-attempts-last-error: Giving up after the last allowed attempt reports the last close code and error code
    When the client under test plays fixture "max-attempts-last-error"
    Then the client passes the fixture
