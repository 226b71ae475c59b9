-- The journal: one row per request, an append-only history of its transitions.
-- Tables are created in the first schema of the search_path (the store's `schema` option).

CREATE TABLE requests (
    request_id       text PRIMARY KEY,
    state            text NOT NULL,
    idempotency_key  text NOT NULL,
    subscription_id  text,
    asset_id         text,
    product_id       text,
    marketplace_id   text,
    environment      text,
    customer_id      text,
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    fence            bigint NOT NULL DEFAULT 0,
    lease_owner      text,
    lease_expires_at timestamptz,
    next_attempt_at  timestamptz,
    outcome          text,
    reason           text,
    last_error       text,
    noted            text,
    data             jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);

-- claim_due: due timers in order. Rows without a timer are not in the index at all.
CREATE INDEX requests_due ON requests (next_attempt_at, request_id) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX requests_state ON requests (state);
CREATE INDEX requests_updated ON requests (updated_at);

CREATE TABLE transitions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id  text NOT NULL REFERENCES requests (request_id),
    from_state  text,
    to_state    text NOT NULL,
    fence       bigint NOT NULL,
    owner       text,
    at          timestamptz NOT NULL,
    detail      text
);

CREATE INDEX transitions_request ON transitions (request_id, id);

-- History is evidence: once written, a transition is never changed or removed.
CREATE FUNCTION transitions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transitions are append-only';
END;
$$;

CREATE TRIGGER transitions_no_change BEFORE UPDATE OR DELETE ON transitions
    FOR EACH ROW EXECUTE FUNCTION transitions_append_only();

CREATE TRIGGER transitions_no_truncate BEFORE TRUNCATE ON transitions
    FOR EACH STATEMENT EXECUTE FUNCTION transitions_append_only();
