@restart
Feature: Restart and graceful shutdown
  Clients are told to reconnect, acknowledged events survive, and cursors resume
  across a restart (spec section 16). These scenarios restart the server, so they run
  alone after the others.

  Background:
    Given the server can be restarted

  @must @serial @RW-SHUTDOWN-2 @RW-SHUTDOWN-3 @RW-INGEST-3 @RW-EVENT-10 @RW-SUB-2
  Scenario: a client resumes across a server restart without loss
    Given the producer appends 5 events to run "A"
    And client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    And client "a" receives events 1 to 5 of run "A"
    When the server restarts
    Then client "a" receives error "server_shutdown" and is closed with code 4200
    And the last error of client "a" carries retry_after_ms
    When the producer appends 5 events to run "A"
    And client "a" reconnects and resumes run "A" from its cursor
    Then client "a" receives subscribed for run "A" with after_seq 5 and head_seq 10
    And client "a" receives events 6 to 10 of run "A"
    And run "A" has 10 events over HTTP

  @must @serial @RW-SHUTDOWN-2 @RW-CLOSE-1
  Scenario: shutdown tells every client to reconnect
    Given client "a" is connected
    And client "b" is connected
    When the server restarts
    Then client "a" receives error "server_shutdown" and is closed with code 4200
    And client "b" receives error "server_shutdown" and is closed with code 4200
    And the last error of client "b" has retryable true

  @must @serial @RW-SHUTDOWN-3 @RW-RESUME-1 @RW-SUB-2
  Scenario: a late joiner after a restart receives every acknowledged event
    Given the producer appends 30 events to run "A"
    When the server restarts
    And client "a" is connected
    And client "a" subscribes to run "A"
    Then client "a" receives subscribed for run "A" with after_seq 0 and head_seq 30
    And client "a" receives events 1 to 30 of run "A"

  @must @serial @RW-SHUTDOWN-1 @RW-SHUTDOWN-3
  Scenario: once shutdown begins no session is welcomed and no append accepted
    Given client "slow" is connected
    And client "a" is connected
    And client "slow" stops reading
    When the server begins restarting
    Then client "a" receives error "server_shutdown" and is closed with code 4200
    And a new connection gets no welcome while the server shuts down
    And an append to run "A" while the server shuts down is refused
    When the server is back
    And client "slow" resumes reading
    And client "b" is connected
    Then client "b" stays connected

  @should @serial @RW-SHUTDOWN-4 @RW-SHUTDOWN-1
  Scenario: every acknowledged event reaches a subscriber before server_shutdown
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When the producer appends 40 events to run "A" one at a time while the server begins restarting
    Then client "a" received every acknowledged event of run "A" before its server_shutdown error
    When the server is back
