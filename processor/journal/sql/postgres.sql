-- Queries of the PostgreSQL journal (run by processor/journal/store.py through the connector in
-- processor/journal/postgres.py). Parameters are %(named)s.
-- Leases are timed by the database clock (now()), so replicas whose clocks disagree still agree on
-- who holds a lease; due-ness (next_attempt_at) and recorded times come from the caller's clock.

-- name: migration_lock
-- Two replicas migrating at once take turns; the second then finds nothing left to do.
SELECT pg_advisory_xact_lock(hashtext(%(lock)s));

-- name: schema_version_exists
SELECT to_regclass('schema_version') IS NOT NULL AS present;

-- name: create_schema_version
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL
);

-- name: schema_version
SELECT max(version) AS version FROM schema_version;

-- name: record_schema_version
INSERT INTO schema_version (version, name, applied_at) VALUES (%(version)s, %(name)s, %(applied_at)s);

-- name: get
SELECT * FROM requests WHERE request_id = %(request_id)s;

-- name: get_for_update
SELECT * FROM requests WHERE request_id = %(request_id)s FOR UPDATE;

-- name: insert
-- Returns the id only when this statement inserted the row.
INSERT INTO requests (
    request_id, state, idempotency_key, subscription_id, asset_id, product_id, marketplace_id,
    environment, customer_id, created_at, updated_at
) VALUES (
    %(request_id)s, %(state)s, %(idempotency_key)s, %(subscription_id)s, %(asset_id)s, %(product_id)s,
    %(marketplace_id)s, %(environment)s, %(customer_id)s, %(now)s, %(now)s
)
ON CONFLICT (request_id) DO NOTHING
RETURNING request_id;

-- name: claim
-- One statement: concurrent claimers queue on the row lock and re-check the WHERE clause after the
-- winner commits, so exactly one gets the lease. An expired lease, or our own, does not block.
UPDATE requests
   SET fence = fence + 1, lease_owner = %(owner)s,
       lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
 WHERE request_id = %(request_id)s
   AND state <> ALL (%(final_states)s::text[])
   AND (lease_owner IS NULL OR lease_owner = %(owner)s OR lease_expires_at <= now())
   AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s)
RETURNING *;

-- name: claim_due
-- SKIP LOCKED: a row another replica is claiming right now is passed over, not waited for. Any live
-- lease blocks, our own included: re-claiming would bump the fence under one of our own workers.
WITH due AS (
    SELECT request_id FROM requests
     WHERE next_attempt_at <= %(now)s
       AND (%(states)s::text[] IS NULL OR state = ANY (%(states)s::text[]))
       AND (lease_owner IS NULL OR lease_expires_at <= now())
     ORDER BY next_attempt_at, request_id
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE requests AS r
   SET fence = r.fence + 1, lease_owner = %(owner)s,
       lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
  FROM due
 WHERE r.request_id = due.request_id
RETURNING r.*;

-- name: claimed
-- The row, locked, if the claim still holds it (same fence, same owner).
SELECT * FROM requests
 WHERE request_id = %(request_id)s AND fence = %(fence)s AND lease_owner = %(owner)s
   FOR UPDATE;

-- name: save
-- A null :data keeps the stored data (NOT NULL: never a value of its own), so a write that does
-- not change it neither encodes nor sends it. Returns the id only: the caller builds the record.
UPDATE requests
   SET state = %(state)s, attempts = %(attempts)s, next_attempt_at = %(next_attempt_at)s,
       outcome = %(outcome)s, reason = %(reason)s, last_error = %(last_error)s, noted = %(noted)s,
       data = COALESCE(%(data)s, data), subscription_id = %(subscription_id)s,
       updated_at = %(updated_at)s
 WHERE request_id = %(request_id)s AND fence = %(fence)s AND lease_owner = %(owner)s
RETURNING request_id;

-- name: renew
UPDATE requests SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
 WHERE request_id = %(request_id)s AND fence = %(fence)s AND lease_owner = %(owner)s
RETURNING *;

-- name: release
UPDATE requests SET lease_owner = NULL, lease_expires_at = NULL
 WHERE request_id = %(request_id)s AND fence = %(fence)s AND lease_owner = %(owner)s;

-- name: force
-- An operator's hand: a new step from scratch, and every outstanding claim is void. A null
-- data keeps the stored data (resume --release-held writes the operator's choice into it, and
-- makes the row due at once with next_attempt_at; retry and park clear the timer).
UPDATE requests
   SET state = %(state)s, fence = fence + 1, lease_owner = NULL, lease_expires_at = NULL,
       next_attempt_at = %(next_attempt_at)s, attempts = 0, data = COALESCE(%(data)s, data), updated_at = %(updated_at)s
 WHERE request_id = %(request_id)s
RETURNING *;

-- name: log_transition
INSERT INTO transitions (request_id, from_state, to_state, fence, owner, at, detail)
VALUES (%(request_id)s, %(from_state)s, %(to_state)s, %(fence)s, %(owner)s, %(at)s, %(detail)s);

-- name: restore_insert
-- journal import: a row this journal does not hold, as exported; no lease (its holder belonged
-- to the journal the export came from).
INSERT INTO requests (
    request_id, state, idempotency_key, subscription_id, asset_id, product_id, marketplace_id, environment, customer_id,
    attempts, fence, next_attempt_at, outcome, reason, last_error, noted, data, created_at, updated_at
) VALUES (
    %(request_id)s, %(state)s, %(idempotency_key)s, %(subscription_id)s, %(asset_id)s, %(product_id)s, %(marketplace_id)s, %(environment)s, %(customer_id)s,
    %(attempts)s, %(fence)s, %(next_attempt_at)s, %(outcome)s, %(reason)s, %(last_error)s, %(noted)s, %(data)s, %(created_at)s, %(updated_at)s
);

-- name: restore_replace
-- journal import over an older row: every claim on it is void (the fence moves past both). A
-- live lease (timed as the store times leases) keeps the row: its holder is at work.
UPDATE requests
   SET state = %(state)s,
       idempotency_key = %(idempotency_key)s,
       subscription_id = %(subscription_id)s,
       asset_id = %(asset_id)s,
       product_id = %(product_id)s,
       marketplace_id = %(marketplace_id)s,
       environment = %(environment)s,
       customer_id = %(customer_id)s,
       attempts = %(attempts)s,
       fence = %(fence)s,
       next_attempt_at = %(next_attempt_at)s,
       outcome = %(outcome)s,
       reason = %(reason)s,
       last_error = %(last_error)s,
       noted = %(noted)s,
       data = %(data)s,
       created_at = %(created_at)s,
       updated_at = %(updated_at)s,
       lease_owner = NULL, lease_expires_at = NULL
 WHERE request_id = %(request_id)s
   AND (lease_owner IS NULL OR lease_expires_at <= now())
RETURNING request_id;

-- name: transitions
SELECT * FROM transitions WHERE request_id = %(request_id)s ORDER BY id;

-- name: counts
SELECT state, count(*) AS n FROM requests GROUP BY state;

-- name: records
-- Read through a server-side cursor: rows arrive in batches, never all at once.
SELECT * FROM requests
 WHERE (%(states)s::text[] IS NULL OR state = ANY (%(states)s::text[]))
   AND (%(updated_since)s::timestamptz IS NULL OR updated_at >= %(updated_since)s)
   AND (%(updated_until)s::timestamptz IS NULL OR updated_at < %(updated_until)s)
 ORDER BY request_id
 LIMIT %(limit)s;

-- name: unnoted
-- Notes owed, oldest change first. The predicate is the partial index's (migration 0002), so the
-- planner reads that small index rather than the table. A live lease (database clock, as for
-- claims) means a worker is on the row and posts the note itself.
SELECT * FROM requests
 WHERE noted IS DISTINCT FROM state
   AND state IN ('approved', 'failed', 'revoked', 'closed', 'parked', 'scheduled', 'suspended', 'waiting_human')
   AND updated_at < %(updated_until)s
   AND (%(updated_since)s::timestamptz IS NULL OR updated_at >= %(updated_since)s)
   AND (lease_owner IS NULL OR lease_expires_at <= now())
 ORDER BY updated_at, request_id
 LIMIT %(limit)s;

-- name: stranded
-- Claims a process left behind: it died or froze holding the lease, which then ran out (database
-- clock, as for claims). A released row has no owner; a live lease is being renewed. Only rows of
-- the states asked for (open ones: few at any time), read through the state index, oldest expiry
-- first, and only those a claim would take now (not waiting for a retry: the caller's clock).
SELECT * FROM requests
 WHERE state = ANY (%(states)s::text[])
   AND lease_owner IS NOT NULL
   AND lease_expires_at <= now()
   AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s)
 ORDER BY lease_expires_at, request_id
 LIMIT %(limit)s;

-- name: mark_noted
-- No claim: the state named is the one the note was posted for; a row that moved on keeps its debt.
UPDATE requests SET noted = %(state)s, updated_at = %(updated_at)s
 WHERE request_id = %(request_id)s AND state = %(state)s
RETURNING request_id;

-- name: take_rate_slot
-- One call's slot of an adapter's shared rate limit (processor/journal/rate_slots.py), in one
-- statement: the least recently used of the adapter's first `calls` slots, taken only when its
-- last use is a whole window old by the database clock (every replica reads the same clock). A
-- slot another replica is taking right now is passed over, not waited for (SKIP LOCKED); after a
-- lock wait the row would be re-checked anyway. `slot` is the slot taken, NULL when none was free;
-- then `wait` is the seconds until the oldest slot frees (read before this statement's own
-- update, which does not matter: it is read only when nothing was updated), and `slots` how many
-- the adapter has (fewer than `calls`: add them, then take again).
WITH free AS (
    SELECT slot FROM rate_slots
     WHERE adapter = %(adapter)s AND slot < %(calls)s
       AND taken_at <= clock_timestamp() - make_interval(secs => %(window)s)
     ORDER BY taken_at
     LIMIT 1
       FOR UPDATE SKIP LOCKED
), taken AS (
    UPDATE rate_slots AS s SET taken_at = clock_timestamp()
      FROM free
     WHERE s.adapter = %(adapter)s AND s.slot = free.slot
    RETURNING s.slot
)
SELECT (SELECT slot FROM taken) AS slot,
       count(*) AS slots,
       extract(epoch FROM min(taken_at) + make_interval(secs => %(window)s) - clock_timestamp())::float8
           AS wait
  FROM rate_slots
 WHERE adapter = %(adapter)s AND slot < %(calls)s;

-- name: add_rate_slots
-- An adapter's slots 0..calls-1, free at once; those another replica added first are kept as they
-- are (their last use still counts).
INSERT INTO rate_slots (adapter, slot, taken_at)
SELECT %(adapter)s, n, 'epoch'::timestamptz FROM generate_series(0, %(calls)s - 1) AS n
ON CONFLICT (adapter, slot) DO NOTHING;
