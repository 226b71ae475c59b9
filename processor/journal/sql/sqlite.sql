-- Queries of the SQLite journal (run by processor/journal/store.py through the connector in
-- processor/journal/sqlite.py). Parameters are :named.
-- Times are fixed-width UTC text, so `<=` on text compares instants. Lists (states) arrive as
-- JSON arrays and are opened with json_each, which keeps every query a single static statement.

-- name: schema_version_exists
SELECT EXISTS (
    SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'
) AS present;

-- name: create_schema_version
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
);

-- name: schema_version
SELECT max(version) AS version FROM schema_version;

-- name: record_schema_version
INSERT INTO schema_version (version, name, applied_at) VALUES (:version, :name, :applied_at);

-- name: get
SELECT * FROM requests WHERE request_id = :request_id;

-- name: get_for_update
-- The same read: the transaction's BEGIN IMMEDIATE already holds the write lock on the whole file.
SELECT * FROM requests WHERE request_id = :request_id;

-- name: insert
-- Returns the id only when this statement inserted the row.
INSERT INTO requests (
    request_id, state, idempotency_key, subscription_id, asset_id, product_id, marketplace_id,
    environment, customer_id, created_at, updated_at
) VALUES (
    :request_id, :state, :idempotency_key, :subscription_id, :asset_id, :product_id, :marketplace_id,
    :environment, :customer_id, :now, :now
)
ON CONFLICT (request_id) DO NOTHING
RETURNING request_id;

-- name: claim
-- A live lease of another owner blocks; an expired one, or our own, does not.
UPDATE requests
   SET fence = fence + 1, lease_owner = :owner, lease_expires_at = :lease_expires_at
 WHERE request_id = :request_id
   AND state NOT IN (SELECT value FROM json_each(:final_states))
   AND (lease_owner IS NULL OR lease_owner = :owner OR lease_expires_at <= :now)
   AND (next_attempt_at IS NULL OR next_attempt_at <= :now)
RETURNING *;

-- name: claim_due
-- Any live lease blocks here, our own included: re-claiming would bump the fence under one of our
-- own workers. Writers are serialised by BEGIN IMMEDIATE, so two claimers get disjoint rows.
UPDATE requests
   SET fence = fence + 1, lease_owner = :owner, lease_expires_at = :lease_expires_at
 WHERE request_id IN (
        SELECT request_id FROM requests
         WHERE next_attempt_at <= :now
           AND (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
           AND (lease_owner IS NULL OR lease_expires_at <= :now)
         ORDER BY next_attempt_at, request_id
         LIMIT :limit)
RETURNING *;

-- name: claimed
-- The row, if the claim still holds it (same fence, same owner).
SELECT * FROM requests WHERE request_id = :request_id AND fence = :fence AND lease_owner = :owner;

-- name: save
-- A null :data keeps the stored data (NOT NULL: never a value of its own), so a write that does
-- not change it neither encodes nor sends it. Returns the id only: the caller builds the record.
UPDATE requests
   SET state = :state, attempts = :attempts, next_attempt_at = :next_attempt_at, outcome = :outcome,
       reason = :reason, last_error = :last_error, noted = :noted, data = COALESCE(:data, data),
       subscription_id = :subscription_id, updated_at = :updated_at
 WHERE request_id = :request_id AND fence = :fence AND lease_owner = :owner
RETURNING request_id;

-- name: renew
UPDATE requests SET lease_expires_at = :lease_expires_at
 WHERE request_id = :request_id AND fence = :fence AND lease_owner = :owner
RETURNING *;

-- name: release
UPDATE requests SET lease_owner = NULL, lease_expires_at = NULL
 WHERE request_id = :request_id AND fence = :fence AND lease_owner = :owner;

-- name: force
-- An operator's hand: a new step from scratch, and every outstanding claim is void. A null
-- data keeps the stored data (resume --release-held writes the operator's choice into it, and
-- makes the row due at once with next_attempt_at; retry and park clear the timer).
UPDATE requests
   SET state = :state, fence = fence + 1, lease_owner = NULL, lease_expires_at = NULL,
       next_attempt_at = :next_attempt_at, attempts = 0, data = COALESCE(:data, data), updated_at = :updated_at
 WHERE request_id = :request_id
RETURNING *;

-- name: log_transition
INSERT INTO transitions (request_id, from_state, to_state, fence, owner, at, detail)
VALUES (:request_id, :from_state, :to_state, :fence, :owner, :at, :detail);

-- name: restore_insert
-- journal import: a row this journal does not hold, as exported; no lease (its holder belonged
-- to the journal the export came from).
INSERT INTO requests (
    request_id, state, idempotency_key, subscription_id, asset_id, product_id, marketplace_id, environment, customer_id,
    attempts, fence, next_attempt_at, outcome, reason, last_error, noted, data, created_at, updated_at
) VALUES (
    :request_id, :state, :idempotency_key, :subscription_id, :asset_id, :product_id, :marketplace_id, :environment, :customer_id,
    :attempts, :fence, :next_attempt_at, :outcome, :reason, :last_error, :noted, :data, :created_at, :updated_at
);

-- name: restore_replace
-- journal import over an older row: every claim on it is void (the fence moves past both). A
-- live lease (timed as the store times leases) keeps the row: its holder is at work.
UPDATE requests
   SET state = :state,
       idempotency_key = :idempotency_key,
       subscription_id = :subscription_id,
       asset_id = :asset_id,
       product_id = :product_id,
       marketplace_id = :marketplace_id,
       environment = :environment,
       customer_id = :customer_id,
       attempts = :attempts,
       fence = :fence,
       next_attempt_at = :next_attempt_at,
       outcome = :outcome,
       reason = :reason,
       last_error = :last_error,
       noted = :noted,
       data = :data,
       created_at = :created_at,
       updated_at = :updated_at,
       lease_owner = NULL, lease_expires_at = NULL
 WHERE request_id = :request_id
   AND (lease_owner IS NULL OR lease_expires_at <= :now)
RETURNING request_id;

-- name: transitions
SELECT * FROM transitions WHERE request_id = :request_id ORDER BY id;

-- name: counts
SELECT state, count(*) AS n FROM requests GROUP BY state;

-- name: records_page
-- Keyset paging on the immutable key: a row changed mid-export is seen once, at its newest.
SELECT * FROM requests
 WHERE request_id > :after
   AND (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
   AND (:updated_since IS NULL OR updated_at >= :updated_since)
   AND (:updated_until IS NULL OR updated_at < :updated_until)
 ORDER BY request_id
 LIMIT :page;

-- name: unnoted
-- Notes owed, oldest change first. The predicate is the partial index's (migration 0002) word for
-- word, so SQLite reads that small index rather than the table. A live lease means a worker is on
-- the row and posts the note itself.
SELECT * FROM requests
 WHERE noted IS NOT state
   AND state IN ('approved', 'failed', 'revoked', 'closed', 'parked', 'scheduled', 'suspended', 'waiting_human')
   AND updated_at < :updated_until
   AND (:updated_since IS NULL OR updated_at >= :updated_since)
   AND (lease_owner IS NULL OR lease_expires_at <= :now)
 ORDER BY updated_at, request_id
 LIMIT :limit;

-- name: stranded
-- Claims a process left behind: it died or froze holding the lease, which then ran out. A released
-- row has no owner; a live lease is being renewed. Only rows of the states asked for (open ones: few
-- at any time), read through the state index, oldest expiry first, and only those a claim would
-- take now (not waiting for a retry).
SELECT * FROM requests
 WHERE state IN (SELECT value FROM json_each(:states))
   AND lease_owner IS NOT NULL
   AND lease_expires_at <= :now
   AND (next_attempt_at IS NULL OR next_attempt_at <= :now)
 ORDER BY lease_expires_at, request_id
 LIMIT :limit;

-- name: mark_noted
-- No claim: the state named is the one the note was posted for; a row that moved on keeps its debt.
UPDATE requests SET noted = :state, updated_at = :updated_at
 WHERE request_id = :request_id AND state = :state
RETURNING request_id;
