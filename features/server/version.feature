@version
Feature: Version negotiation
  The server picks the highest version both sides speak, or says which it speaks
  (spec section 6).

  @must @RW-VERSION-2
  Scenario: the highest common version is chosen
    Given client "a" connects
    When client "a" sends hello with versions "0.9,1.0"
    Then client "a" receives welcome
    And the welcome of client "a" announces version "1.0"

  @must @RW-VERSION-2
  Scenario: versions the server does not speak are passed over
    Given client "a" connects
    When client "a" sends hello with versions "1.0,1.99,7.0"
    Then client "a" receives welcome
    And the welcome of client "a" announces version "1.0"

  @must @RW-VERSION-3 @RW-ERROR-1 @RW-ERROR-3
  Scenario: no common version is answered with unsupported_version and 4002
    Given client "a" connects
    When client "a" sends hello with versions "9.0"
    Then client "a" receives error "unsupported_version" and is closed with code 4002
    And the last error of client "a" lists supported_versions "1.0"
    And the last error of client "a" has retryable false

  @must @RW-VERSION-3
  Scenario: an unsupported version gets no events even with subscriptions in hello
    Given the producer appends 2 events to run "A"
    And client "a" connects
    When client "a" sends the frame {"type":"hello","versions":["0.1"],"token":"${token}","subscriptions":[{"run_id":"${A}"}]}
    Then client "a" receives error "unsupported_version" and is closed with code 4002
    And client "a" receives no event of run "A"
