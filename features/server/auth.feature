@auth
Feature: Authentication and per-run authorization
  Tokens travel in hello (or an Authorization header), never in the URL; a token that
  does not allow a run fails that subscription alone (spec section 7).

  Background:
    Given the server requires authentication

  @must @RW-AUTH-4 @RW-SEC-1
  Scenario: a hello without a token is unauthorized
    Given client "a" connects
    When client "a" sends hello without a token
    Then client "a" receives error "unauthorized" and is closed with code 4003
    And the last error of client "a" has retryable false

  @must @RW-AUTH-4 @RW-SEC-1
  Scenario: an invalid token is unauthorized and never echoed
    Given client "a" connects
    When client "a" sends hello with token "rwc-bogus-secret-4711"
    Then client "a" receives error "unauthorized" and is closed with code 4003
    And nothing client "a" received contains the token "rwc-bogus-secret-4711"

  @must @RW-AUTH-2
  Scenario: a token in the query string is not accepted
    Given client "a" connects with the token in the query string
    When client "a" sends hello without a token
    Then client "a" receives error "unauthorized" and is closed with code 4003

  @must @RW-AUTH-3
  Scenario: the hello token wins over the Authorization header
    Given client "a" connects with an Authorization header
    When client "a" sends hello with token "rwc-bogus-secret-4712"
    Then client "a" receives error "unauthorized" and is closed with code 4003

  @must @RW-AUTH-6 @RW-SUB-9 @RW-SEC-5 @RW-SUB-2
  Scenario: a run the token does not allow fails alone
    Given the server gives the limited token only runs named "rwc-allowed-*"
    And the producer appends 2 events to run "allowed1"
    And the producer appends 2 events to run "B"
    And client "a" is connected with the limited token
    When client "a" subscribes to runs "allowed1,B"
    Then client "a" receives subscribed for run "allowed1" with after_seq 0 and head_seq 2
    And client "a" receives error "forbidden" for run "B"
    And client "a" receives events 1 to 2 of run "allowed1"
    And client "a" receives no event of run "B"
    And client "a" stays connected

  @must @RW-SEC-4
  Scenario: forbidden is answered whether or not the run exists
    Given the server gives the limited token only runs named "rwc-allowed-*"
    And client "a" is connected with the limited token
    When client "a" subscribes to run "never-created"
    Then client "a" receives error "forbidden" for run "never-created"

  @must @RW-AUTH-7
  Scenario: authorization is checked for cursors resumed in hello
    Given the server gives the limited token only runs named "rwc-allowed-*"
    And the producer appends 3 events to run "B"
    And client "a" connects
    When client "a" sends the frame {"type":"hello","versions":["1.0"],"token":"${limited_token}","subscriptions":[{"run_id":"${B}","after_seq":1}]}
    Then client "a" receives welcome
    And client "a" receives error "forbidden" for run "B"
    And client "a" receives no event of run "B"

  @must @RW-AUTH-11
  Scenario: an append without a token is answered 401
    When the producer posts to run "A" without a token:
      """
      {"events":[{"type":"run.status","data":{"status":"running"}}]}
      """
    Then the answer is 401 with code "unauthorized"
    When the producer sends GET /v1/runs/${A}/events without a token
    Then the answer is 401 with code "unauthorized"

  @must @RW-AUTH-11 @RW-INGEST-20
  Scenario: a token without the producer role cannot append
    Given the server gives the limited token only runs named "rwc-allowed-*"
    When the producer appends 1 events to run "allowed2" with the limited token
    Then the answer is 403 with code "forbidden"

  @must @RW-SEC-4 @RW-AUTH-11
  Scenario: reading a run the token does not allow is forbidden over HTTP
    Given the server gives the limited token only runs named "rwc-allowed-*"
    And the producer appends 1 events to run "B"
    When the producer sends GET /v1/runs/${B} with the limited token
    Then the answer is 403 with code "forbidden"
    When the producer sends GET /v1/runs/${nothing-here} with the limited token
    Then the answer is 403 with code "forbidden"

  @should @RW-AUTH-13
  Scenario: tokens that may subscribe may read snapshot and history
    Given the server gives the limited token only runs named "rwc-allowed-*"
    And the producer appends 2 events to run "allowed3"
    When the producer sends GET /v1/runs/${allowed3}/events with the limited token
    Then the answer is 200

  @must @RW-AUTH-8
  Scenario: a connection whose token expires is closed with token_expired
    Given client "a" is connected with a token that expires in 1000 ms
    Then client "a" receives token_expired no later than 1000 ms after its token expired

  @should @RW-AUTH-5
  Scenario: an expired token is answered with token_expired, not unauthorized
    Given client "a" connects
    When client "a" sends hello with an expired token
    Then client "a" receives error "token_expired" and is closed with code 4103

  @must @RW-INGEST-23 @RW-AUTH-11
  Scenario: authentication is judged before the body
    When the producer posts to run "A" without a token:
      """
      {"events": "not a list"}
      """
    Then the answer is 401 with code "unauthorized"

  @must @RW-AUTH-14 @RW-AUTH-4 @RW-AUTH-11 @RW-INGEST-20
  Scenario: a token that is not valid yet is unauthorized
    Given the producer appends 1 events to run "A"
    When client "a" connects and sends hello with a token that is valid only from an hour ahead
    Then client "a" receives error "unauthorized" and is closed with code 4003
    When the producer sends GET /v1/runs/${A} with a token that is valid only from an hour ahead
    Then the answer is 401 with code "unauthorized"

  @should @RW-AUTH-15 @RW-INGEST-20
  Scenario: an expired token over HTTP is answered 401 token_expired, retryable
    When the producer appends 1 events to run "A" with an expired token
    Then the answer is 401 with code "token_expired"
    And the answer has "error.retryable" equal to true
