-- A vendor rate limit shared by every replica on this database (processor/journal/rate_slots.py):
-- an adapter limited to N calls per window owns slots 0..N-1, each holding when the call that last
-- used it was taken (by the database clock). A call takes the slot least recently used, and only
-- when that use is a whole window old: N slots never let more than N calls start in one window.
-- Rows are added when an adapter first takes a slot; fresh slots hold the epoch (free at once).
CREATE TABLE rate_slots (
    adapter  text NOT NULL,
    slot     integer NOT NULL CHECK (slot >= 0),
    taken_at timestamptz NOT NULL,
    PRIMARY KEY (adapter, slot)
);
