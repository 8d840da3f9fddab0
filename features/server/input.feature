@input
Feature: Bad input
  Every kind of bad input has a defined error and outcome, and nothing a client sends
  disturbs another connection (spec section 14.2).

  @must @RW-INPUT-1
  Scenario: a frame that is not JSON is invalid_json
    Given client "a" is connected
    When client "a" sends the frame {"type": "ping", "id":
    Then client "a" receives error "invalid_json" and is closed with code 4000

  @must @RW-INPUT-1
  Scenario: a text frame that is not UTF-8 is invalid_json
    Given client "a" is connected
    When client "a" sends a text frame that is not UTF-8
    Then client "a" receives error "invalid_json" and is closed with code 4000

  @must @RW-INPUT-2
  Scenario: JSON that is not an object is invalid_message
    Given client "a" is connected
    When client "a" sends the frame [1, 2, 3]
    Then client "a" receives error "invalid_message" and is closed with code 4000

  @must @RW-INPUT-2
  Scenario: an object without a string type is invalid_message
    Given client "a" is connected
    When client "a" sends the frame {"type": 7, "id": "x"}
    Then client "a" receives error "invalid_message" and is closed with code 4000

  @must @RW-INPUT-3
  Scenario: an unknown message type after hello is reported and ignored
    Given the producer appends 1 events to run "A"
    And client "a" is connected
    And client "a" subscribes to run "A"
    And client "a" receives subscribed for run "A"
    When client "a" sends the frame {"type":"acme.teleport","where":"moon"}
    Then client "a" receives error "unknown_message_type"
    And the last error of client "a" has retryable false
    And client "a" receives events 1 to 1 of run "A"
    When the producer appends 1 events to run "A"
    Then client "a" receives events 2 to 2 of run "A"

  @must @RW-INPUT-4 @RW-ERROR-6
  Scenario: a known message that breaks its schema is invalid_message with a pointer
    Given client "a" is connected
    When client "a" sends the frame {"type":"subscribe","subscriptions":"all of them"}
    Then client "a" receives error "invalid_message" and is closed with code 4000
    And the last error of client "a" has a message containing "/subscriptions"

  @must @RW-INPUT-4
  Scenario: nothing of an invalid message is acted on
    Given the producer appends 2 events to run "A"
    And client "a" is connected
    When client "a" sends the frame {"type":"subscribe","subscriptions":[{"run_id":"${A}"},{"run_id":17}]}
    Then client "a" receives error "invalid_message" and is closed with code 4000
    And client "a" receives no event of run "A"

  @must @RW-INPUT-5 @RW-CONV-1
  Scenario: a binary frame is binary_frame
    Given client "a" is connected
    When client "a" sends a binary frame
    Then client "a" receives error "binary_frame" and is closed with code 4000

  @must @RW-INPUT-7
  Scenario: a message before hello is hello_required
    Given client "a" connects
    When client "a" sends the frame {"type":"subscribe","subscriptions":[{"run_id":"x"}]}
    Then client "a" receives error "hello_required" and is closed with code 4001

  @must @RW-INPUT-7 @RW-INPUT-6
  Scenario: an unknown type before hello is hello_required, not unknown_message_type
    Given client "a" connects
    When client "a" sends the frame {"type":"acme.hi"}
    Then client "a" receives error "hello_required" and is closed with code 4001

  @must @RW-INPUT-6
  Scenario: broken JSON before hello is reported as invalid_json first
    Given client "a" connects
    When client "a" sends the frame {"type":"ping"
    Then client "a" receives error "invalid_json" and is closed with code 4000

  @must @RW-CONV-5 @RW-INPUT-7
  Scenario: message types are case-sensitive
    Given client "a" connects
    When client "a" sends the frame {"type":"Hello","versions":["1.0"],"token":"${token}"}
    Then client "a" receives error "hello_required" and is closed with code 4001

  @must @RW-INPUT-8
  Scenario: a second hello is duplicate_hello
    Given client "a" is connected
    When client "a" sends hello
    Then client "a" receives error "duplicate_hello" and is closed with code 4000

  @must @RW-INPUT-10 @RW-COMPAT-1 @RW-SUB-2
  Scenario: unknown members of known messages are ignored
    Given the producer appends 1 events to run "A"
    And client "a" connects
    When client "a" sends the frame {"type":"hello","versions":["1.0"],"token":"${token}","x_color":"blue","client":{"name":"t","version":"1","x":1}}
    Then client "a" receives welcome
    When client "a" sends the frame {"type":"subscribe","subscriptions":[{"run_id":"${A}","x_hint":true}],"x_trace":"abc"}
    Then client "a" receives subscribed for run "A" with after_seq 0 and head_seq 1
    And client "a" receives events 1 to 1 of run "A"

  @must @RW-CONV-2
  Scenario: an integer beyond 2^53-1 is rejected, not rounded
    Given client "a" is connected
    When client "a" sends the frame {"type":"subscribe","subscriptions":[{"run_id":"${A}","after_seq":9007199254740993}]}
    Then client "a" receives error "invalid_message" and is closed with code 4000

  @must @RW-CONV-2
  Scenario: a negative integer is rejected
    Given client "a" is connected
    When client "a" sends the frame {"type":"subscribe","subscriptions":[{"run_id":"${A}","after_seq":-1}]}
    Then client "a" receives error "invalid_message" and is closed with code 4000

  @must @RW-EVENT-2
  Scenario: an invalid run id in a subscription is invalid_message
    Given client "a" is connected
    When client "a" sends the frame {"type":"subscribe","subscriptions":[{"run_id":"has space/and slash"}]}
    Then client "a" receives error "invalid_message" and is closed with code 4000

  @must @RW-INPUT-9
  Scenario: a misbehaving client does not disturb another
    Given client "b" is connected
    And client "b" subscribes to run "A"
    And client "b" receives subscribed for run "A"
    And client "a" is connected
    When the producer appends 5 events to run "A"
    And client "a" sends the frame {{{{{
    And the producer appends 5 events to run "A"
    Then client "a" receives error "invalid_json" and is closed with code 4000
    And client "b" receives events 1 to 10 of run "A"

  @must @RW-CONV-6 @RW-INPUT-4
  Scenario: an integer written with a fraction is invalid_message
    Given the producer appends 2 events to run "A"
    And client "a" is connected
    When client "a" sends the frame {"type":"subscribe","subscriptions":[{"run_id":"${A}","after_seq":1.0}]}
    Then client "a" receives error "invalid_message" and is closed with code 4000
    And client "a" receives no event of run "A"

  @must @RW-CONV-7
  Scenario: an optional member that is null counts as absent
    Given the producer appends 2 events to run "A"
    And client "a" is connected
    When client "a" sends the frame {"type":"subscribe","subscriptions":[{"run_id":"${A}","after_seq":null,"epoch":null}]}
    Then client "a" receives subscribed for run "A" with after_seq 0 and head_seq 2
    And client "a" receives events 1 to 2 of run "A"

  @must @RW-CLOSE-12
  Scenario: a client that breaks the WebSocket protocol is closed with 1002
    Then a raw connection that sends an unmasked frame after the upgrade is closed with code 1002

  @must @RW-INPUT-6 @RW-INPUT-5
  Scenario: a binary frame is binary_frame even when the message rate is used up
    Then a raw connection that uses up its message rate and then sends a binary frame receives error "binary_frame" and is closed with code 4000

  @must @RW-CLOSE-12
  Scenario: reserved opcodes and bits, stray continuations and fragmented control frames are closed with 1002
    Then a raw connection that sends "a frame with reserved opcode 0x3" after hello is closed with code 1002
    And a raw connection that sends "a frame with reserved opcode 0xB" after hello is closed with code 1002
    And a raw connection that sends "a continuation frame that continues nothing" after hello is closed with code 1002
    And a raw connection that sends "a text frame with RSV1 set" after hello is closed with code 1002
    And a raw connection that sends "a fragmented ping" after hello is closed with code 1002
    And a raw connection that sends "a text frame inside a fragmented message" after hello is closed with code 1002
