@admission
Feature: Connection admission
  Deadlines and limits for connections that have not sent hello (spec section 17):
  what a raw TCP socket sees when it never finishes its handshake. The deadlines and
  the pre-hello limit are not announced; a server declares them to the kit
  (--header-timeout-ms, --body-timeout-ms, --pre-hello-limit, --max-request-bytes),
  and a scenario whose value is not declared is graded not implemented.

  @should @RW-SEC-11
  Scenario: half a request head is closed within the header deadline
    Given the server declares a header deadline
    When a raw connection sends half a request head
    Then the raw connection is closed within the header deadline

  @should @RW-SEC-13
  Scenario: an append whose body stalls is given up within the body deadline
    Given the server declares a body deadline
    When a raw connection sends an append head and only part of its body
    Then the raw connection is answered 408 or closed within the body deadline

  @must @RW-SEC-14 @RW-INGEST-20
  Scenario: a declared Content-Length over the request size limit is refused before the body
    When a raw connection sends an append head declaring a body over the request size limit
    Then the raw connection is answered 413 "invalid_request" without its body

  @should @RW-SEC-12 @RW-INGEST-21 @serial
  Scenario: over the pre-hello limit a connection is refused at once with 503
    Given the server declares a pre-hello limit per address
    When silent connections fill the pre-hello limit
    Then one more connection is refused with 503, Retry-After and "server_overloaded"
    And once the silent connections close, a new connection is served

  @should @RW-SEC-18 @RW-SEC-9 @serial
  Scenario: over the connection limit of an identity a hello is refused with server_overloaded
    Given the server declares a connection limit per identity
    When connections with the limited token fill the identity limit
    Then one more hello with the limited token is refused with "server_overloaded", retry_after_ms and close 4104
    And the connections that filled the identity limit are still open
