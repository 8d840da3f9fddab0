@connection
Feature: Connection handshake
  The upgrade, the hello deadline, and the welcome that opens every session.

  @must @RW-CONN-1 @RW-CONN-6 @RW-CONN-5
  Scenario: welcome is the first frame after a valid hello
    Given client "a" connects
    When client "a" sends hello
    Then the first frame client "a" receives is welcome
    And client "a" receives welcome
    And the welcome of client "a" announces version "1.0"
