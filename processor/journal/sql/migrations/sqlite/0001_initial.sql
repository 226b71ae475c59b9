-- The journal: one row per request, an append-only history of its transitions.
-- Times are UTC text of one fixed width ('YYYY-MM-DDTHH:MM:SS.ffffffZ'), so text order is time order.

CREATE TABLE requests (
    request_id       TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    subscription_id  TEXT,
    asset_id         TEXT,
    product_id       TEXT,
    marketplace_id   TEXT,
    environment      TEXT,
    customer_id      TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    fence            INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    next_attempt_at  TEXT,
    outcome          TEXT,
    reason           TEXT,
    last_error       TEXT,
    noted            TEXT,
    data             TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(data)),
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
) WITHOUT ROWID;

-- claim_due: due timers in order. Rows without a timer are not in the index at all.
CREATE INDEX requests_due ON requests (next_attempt_at, request_id) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX requests_state ON requests (state);
CREATE INDEX requests_updated ON requests (updated_at);

CREATE TABLE transitions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  TEXT NOT NULL REFERENCES requests (request_id),
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    fence       INTEGER NOT NULL,
    owner       TEXT,
    at          TEXT NOT NULL,
    detail      TEXT
);

CREATE INDEX transitions_request ON transitions (request_id, id);

-- History is evidence: once written, a transition is never changed or removed.
CREATE TRIGGER transitions_no_update BEFORE UPDATE ON transitions
BEGIN
    SELECT RAISE(ABORT, 'transitions are append-only');
END;

CREATE TRIGGER transitions_no_delete BEFORE DELETE ON transitions
BEGIN
    SELECT RAISE(ABORT, 'transitions are append-only');
END;
