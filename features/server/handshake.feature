@connection
Feature: Connection handshake
  The upgrade on GET /v1/stream, the hello deadline, and the welcome that opens every
  session (spec section 5).

  @must @RW-CONN-1 @RW-CONN-6 @RW-CONN-5 @RW-COMPAT-2 @RW-COMPAT-5 @RW-CONV-1 @RW-CONV-3
  Scenario: welcome is the first frame after a valid hello
    Given client "a" connects
    When client "a" sends hello
    Then the first frame client "a" receives is welcome
    And client "a" receives welcome
    And the welcome of client "a" announces version "1.0"

  @must @RW-CONN-7
  Scenario: welcome announces every timer and limit
    Given client "a" is connected
    Then the welcome of client "a" announces a session id, timers and limits

  @should @RW-CONN-9
  Scenario: every connection gets its own session id
    Given client "a" is connected
    And client "b" is connected
    Then clients "a" and "b" have different session ids

  @must @RW-CONN-3 @RW-CLOSE-1 @RW-ERROR-2 @RW-ERROR-3 @RW-CLOSE-4 @RW-CLOSE-5
  Scenario: a connection without hello is closed at the hello deadline
    Given client "a" connects
    Then client "a" receives error "hello_timeout" and is closed with code 4108
    And the last error of client "a" has retryable true

  @should @RW-CLOSE-6
  Scenario: the close reason is the error code
    Given client "a" connects
    Then client "a" receives error "hello_timeout" and is closed with code 4108
    And client "a" was closed with reason "hello_timeout"

  @must @RW-CONN-5 @RW-SUB-1 @RW-SUB-2
  Scenario: subscriptions in hello open right after welcome
    Given the producer appends 3 events to run "A"
    And client "a" connects
    When client "a" sends hello subscribing to run "A"
    Then client "a" receives welcome
    And client "a" receives subscribed for run "A" with after_seq 0 and head_seq 3
    And client "a" receives events 1 to 3 of run "A"

  @must @RW-CONN-5 @RW-RESUME-1 @RW-SUB-2
  Scenario: a cursor in hello resumes after it
    Given the producer appends 6 events to run "A"
    And client "a" connects
    When client "a" sends hello subscribing to run "A" after seq 4
    Then client "a" receives welcome
    And client "a" receives subscribed for run "A" with after_seq 4 and head_seq 6
    And client "a" receives events 5 to 6 of run "A"

  @must @RW-CONN-10
  Scenario: a new connection starts without the subscriptions of an earlier one
    Given the producer appends 2 events to run "A"
    And client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    And client "a" receives events 1 to 2 of run "A"
    When client "a" closes the connection
    And client "b" is connected
    And the producer appends 2 events to run "A"
    Then client "b" receives no event of run "A"

  @must @RW-HEART-7
  Scenario: the server answers a client ping with a pong of the same id
    Given client "a" is connected
    When client "a" sends ping "rtt-1"
    Then client "a" receives pong "rtt-1"

  @must @RW-HEART-9
  Scenario: a pong that matches no ping is ignored
    Given client "a" is connected
    When client "a" sends the frame {"type":"pong","id":"never-sent"}
    Then client "a" stays connected

  @must @RW-INGEST-22 @RW-INGEST-1
  Scenario: the health endpoint answers without authentication
    When the producer sends GET /healthz without a token
    Then the answer is 200
    And the answer has "status" equal to "ok"

  @must @RW-CLOSE-9
  Scenario: a client that never completes the close handshake is dropped
    Given client "a" is connected
    Then a raw connection that never answers the close handshake is dropped within the pong timeout announced to client "a"
