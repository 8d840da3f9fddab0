@slow
Feature: Slow consumers
  A connection that does not read is cut off with slow_consumer and resumes later;
  nobody else waits for it (spec section 15).

  A client that stops reading first fills the kernel's socket buffers; only then do
  frames wait in the server's queue. So the producer appends until the server is
  obliged to close the client (more than the buffers plus the announced
  slow_consumer_max_bytes, or a queued frame older than slow_consumer_max_age_ms), and
  the client reads again soon after, always within 0.8 x pong_timeout_ms of stopping,
  so that the heartbeat cannot close it first (RW-SLOW-6 keeps the closing frames
  waiting that long). A machine too slow to oblige the server in that time makes the
  scenario inconclusive, never a violation.

  @must @RW-SLOW-1 @RW-SLOW-3 @RW-SLOW-4 @RW-SLOW-6
  Scenario: a client that stops reading is closed with slow_consumer, others are unaffected
    Given client "a" is connected
    And client "b" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    And client "b" subscribes to run "A"
    And client "b" receives subscribed for run "A"
    When client "a" stops reading
    And the producer appends events of 50000 bytes to run "A" until client "a" must be closed as a slow consumer
    And client "a" resumes reading
    Then client "a" receives error "slow_consumer" and is closed with code 4100
    And the last error of client "a" has retryable true
    And client "b" receives every event of run "A"

  @must @RW-SLOW-4 @RW-SLOW-6 @RW-RESUME-1
  Scenario: a slow consumer resumes from its cursor without loss
    Given client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When client "a" stops reading
    And the producer appends events of 50000 bytes to run "A" until client "a" must be closed as a slow consumer
    And client "a" resumes reading
    Then client "a" receives error "slow_consumer" and is closed with code 4100
    When client "a" reconnects and resumes run "A" from its cursor
    Then client "a" receives subscribed for run "A"
    And client "a" receives every event of run "A"

  @must @RW-SLOW-2 @RW-SUB-2
  Scenario: a long replay of large events does not trip the slow-consumer bound
    Given the producer appends 40 events of 50000 bytes to run "A"
    And client "a" is connected
    When client "a" subscribes to run "A"
    Then client "a" receives subscribed for run "A" with after_seq 0 and head_seq 40
    And client "a" receives events 1 to 40 of run "A"
    And client "a" stays connected

  @should @RW-SLOW-5
  Scenario: the slow-consumer bounds are announced in welcome
    Given client "a" is connected
    Then the welcome of client "a" announces limits "slow_consumer_max_bytes" and "slow_consumer_max_age_ms"
