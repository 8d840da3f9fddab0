@version
Feature: Version negotiation
  The client offers every version it speaks and refuses a welcome it cannot speak (spec section 6).
  Each scenario plays one fixture of fixtures/client/ to the client under test.

  @must @RW-VERSION-1 @RW-VERSION-2
  Scenario: version-highest-common: The client offers every version it speaks and accepts the highest common one
    When the client under test plays fixture "version-highest-common"
    Then the client passes the fixture

  @must @RW-VERSION-6 @RW-CLOSE-2
  Scenario: version-mismatch: unsupported_version + 4002: a terminal error, no reconnect
    When the client under test plays fixture "version-mismatch"
    Then the client passes the fixture

  @must @RW-VERSION-7 @RW-CLOSE-8 @RW-ERROR-7
  Scenario: welcome-version-not-offered: A welcome naming a version the client did not offer: close 4000, terminal error
    When the client under test plays fixture "welcome-version-not-offered"
    Then the client passes the fixture
