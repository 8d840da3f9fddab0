@limits
Feature: Limits
  Frame size, event size, subscriptions per connection and message rate, each with its
  error (spec section 14.1).

  @must @RW-LIMIT-1
  Scenario: a frame over max_frame_bytes is frame_too_large
    Given client "a" is connected
    When client "a" sends a frame larger than the announced max_frame_bytes
    Then client "a" receives error "frame_too_large" and is closed with code 4009

  @should @RW-CLOSE-11
  Scenario: the closing frames survive the client's unread input (lingering close)
    Given client "a" is connected
    When client "a" sends a frame larger than the announced max_frame_bytes
    Then client "a" receives error "frame_too_large" and is closed with code 4009

  @must @RW-LIMIT-1
  Scenario: a frame of exactly max_frame_bytes is accepted
    Given client "a" is connected
    When client "a" sends a ping frame of exactly the announced max_frame_bytes
    Then client "a" receives pong "big"

  @must @RW-LIMIT-3 @RW-SUB-9
  Scenario: the subscription over the limit fails alone
    Given client "a" is connected
    When client "a" subscribes to one run more than the announced max_subscriptions
    Then client "a" stays connected

  @must @RW-SUB-11 @RW-SUB-7 @RW-LIMIT-3
  Scenario: at the subscription limit a repeated entry is already_subscribed
    Given client "a" is connected
    When client "a" subscribes to one run more than the announced max_subscriptions
    And client "a" subscribes to run "lim0"
    Then client "a" receives error "already_subscribed" for run "lim0"
    And client "a" stays connected

  @must @RW-LIMIT-4
  Scenario: a client over the message rate is rate_limited
    Given client "a" is connected
    When client "a" sends more pings at once than the announced max_messages_per_second
    Then client "a" receives error "rate_limited" and is closed with code 4101

  @should @RW-LIMIT-6
  Scenario: rate_limited says when to retry
    Given client "a" is connected
    When client "a" sends more pings at once than the announced max_messages_per_second
    Then client "a" receives error "rate_limited" and is closed with code 4101
    And the last error of client "a" carries retry_after_ms

  @must @RW-LIMIT-2 @RW-INGEST-8
  Scenario: an event over max_event_bytes is refused at ingest with nothing appended
    Given client "a" is connected
    And the producer appends 1 events to run "A"
    When the producer posts an event larger than the max_event_bytes announced to client "a" to run "A"
    Then the answer is 413 with code "event_too_large" and pointer "/events/1"
    And run "A" has 1 events over HTTP
