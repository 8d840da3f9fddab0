@tls
Feature: Transport security
  A server reachable beyond the local machine serves the stream only as wss:// and the
  producer API only as https:// (spec section 17). The kit judges what it can see: a
  target given with wss:// and https:// URLs must not also serve the stream or the API
  in plain text on the same address. A target given with ws:// or http:// URLs grades
  these scenarios not implemented (fine for a server on loopback). Every other scenario
  of the suite runs over TLS when the target's URLs ask for it, trusting the system's
  certificate authorities and those given with --ca-cert.

  @should @RW-SEC-3
  Scenario: the stream is not upgraded in plain text on a TLS address
    Given the target is served over TLS
    Then a plain-text WebSocket upgrade to the stream's address is not upgraded

  @should @RW-SEC-3
  Scenario: the producer API is not served in plain text on a TLS address
    Given the target is served over TLS
    Then a plain-text request to the producer API's address gets no API answer
