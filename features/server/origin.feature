@origin
Feature: Origins and browsers
  A browser attaches an Origin header to every WebSocket upgrade and to every
  cross-origin request, and lets any page send a text/plain POST anywhere without
  asking first. A server checks the Origin against its allowed origins and takes only
  appends declared JSON (spec section 17, section 4.2). The kit's origin is one no
  server allows: a .invalid host.

  @should @RW-SEC-2
  Scenario: an upgrade from a foreign origin is refused before the upgrade
    When a connection upgrades with Origin "https://foreign.runwire-kit.invalid"
    Then the answer is 403 with code "forbidden"

  @should @RW-SEC-17
  Scenario: an append from a foreign origin is refused and appends nothing
    Given the producer appends 1 events to run "A"
    When the producer posts to run "A" with Origin "https://foreign.runwire-kit.invalid":
      """
      {"events":[{"type":"log.line","data":{"level":"info","message":"sent by a page"}}]}
      """
    Then the answer is 403 with code "forbidden"
    And run "A" has 1 events over HTTP

  @must @RW-INGEST-24
  Scenario: an append declared text/plain is refused and appends nothing
    Given the producer appends 1 events to run "A"
    When the producer posts to run "A" with content type "text/plain":
      """
      {"events":[{"type":"log.line","data":{"level":"info","message":"a simple request"}}]}
      """
    Then the answer is 415 with code "invalid_request"
    And run "A" has 1 events over HTTP

  @must @RW-INGEST-24
  Scenario: an append declared JSON with parameters is accepted
    When the producer posts to run "A" with content type "application/json; charset=utf-8":
      """
      {"events":[{"type":"log.line","data":{"level":"info","message":"declared JSON"}}]}
      """
    Then the answer is 200
    And run "A" has 1 events over HTTP
