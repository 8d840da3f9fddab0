@listing
Feature: Listing runs over HTTP
  Finding runs by the prefix of their ids, without knowing the ids (spec section 4.7).
  The listing is optional (a SHOULD); what a listing holds binds servers that serve it.

  @should @RW-INGEST-25
  Scenario: the server lists runs by prefix
    Given the producer appends 1 events to run "A"
    Then the server serves the run listing

  @must @RW-INGEST-26
  Scenario: a listing pages through the runs of a prefix in byte order
    Given the producer appends 2 events to run "b"
    And the producer appends 1 events to run "a"
    And the producer appends 3 events to run "a:1"
    And the producer appends 1 events to run "B"
    When the producer lists runs with "prefix=${prefix}"
    Then the listing holds the runs "B", "a", "a:1", "b"
    And the answer has "has_more" equal to false
    And the answer has "runs.2.head_seq" equal to 3
    And the answer has "runs.2.epoch" equal to "${epoch:a:1}"
    When the producer lists runs with "prefix=${prefix}&limit=2"
    Then the listing holds the runs "B", "a"
    And the answer has "has_more" equal to true
    When the producer lists runs with "prefix=${prefix}&limit=2&after=${a}"
    Then the listing holds the runs "a:1", "b"
    And the answer has "has_more" equal to false
    When the producer lists runs with "prefix=${prefix}&after=${b}"
    Then the listing holds no runs
    And the answer has "has_more" equal to false

  @must @RW-INGEST-26
  Scenario: a prefix that is itself a run id lists that run and the longer ids
    Given the producer appends 1 events to run "a"
    And the producer appends 2 events to run "a:1"
    And the producer appends 1 events to run "b"
    When the producer lists runs with "prefix=${a}"
    Then the listing holds the runs "a", "a:1"
    When the producer lists runs with "prefix=${a:1}"
    Then the listing holds the runs "a:1"
    When the producer lists runs with "prefix=${prefix}c"
    Then the listing holds no runs

  @must @RW-INGEST-26
  Scenario: a listing shows runs appended to after the previous page
    Given the producer appends 1 events to run "a"
    When the producer lists runs with "prefix=${prefix}"
    Then the listing holds the runs "a"
    When the producer appends 1 events to run "c"
    And the producer appends 1 events to run "a"
    And the producer lists runs with "prefix=${prefix}&after=${a}"
    Then the listing holds the runs "c"
    When the producer lists runs with "prefix=${prefix}"
    Then the answer has "runs.0.head_seq" equal to 2

  @must @RW-INGEST-27
  Scenario: bad listing parameters are invalid_request
    When the producer lists runs with "limit=0"
    Then the answer is 400 with code "invalid_request"
    When the producer lists runs with "limit=1001"
    Then the answer is 400 with code "invalid_request"
    When the producer lists runs with "limit=many"
    Then the answer is 400 with code "invalid_request"
    When the producer lists runs with "prefix=a%2Fb"
    Then the answer is 400 with code "invalid_request"
    When the producer lists runs with "after=-x"
    Then the answer is 400 with code "invalid_request"

  @must @RW-INGEST-28
  Scenario: a listing shows only the runs the token may read
    Given the server gives the limited token only runs named "rwc-allowed-*"
    And the producer appends 1 events to run "allowed1"
    And the producer appends 1 events to run "B"
    When the producer lists runs with "prefix=rwc-&limit=1000" with the limited token
    Then the listing holds only runs the limited token allows
    When the producer lists runs with "prefix=${prefix}" with the limited token
    Then the listing holds no runs
    When the producer lists runs with "prefix=${allowed1}" with the limited token
    Then the listing holds the runs "allowed1"
