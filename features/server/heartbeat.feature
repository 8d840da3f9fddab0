@heartbeat
Feature: Heartbeat and liveness
  The server pings at the announced interval and closes a connection that stops
  answering (spec section 11).

  @must @RW-HEART-1 @RW-HEART-2
  Scenario: pings come at the announced cadence
    Given client "a" is connected
    Then client "a" receives 3 pings, each within the announced heartbeat interval

  @must @RW-HEART-1
  Scenario: pings keep coming while events flow
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When the producer appends 50 events to run "A"
    Then client "a" receives 2 pings, each within the announced heartbeat interval
    And client "a" receives events 1 to 50 of run "A"

  @must @RW-HEART-3 @RW-CLOSE-1
  Scenario: a client that stops answering pings is closed with pong_timeout
    Given client "a" is connected
    When client "a" stops answering pings
    Then client "a" receives error "pong_timeout" and is closed with code 4102
    And the last error of client "a" has retryable true
