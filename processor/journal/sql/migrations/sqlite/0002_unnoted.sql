-- Notes owed: rows in a state whose note goes to the request's conversation (NOTED_STATES in
-- processor/journal/base.py) whose posting is not recorded yet (Connect failed, or the process died
-- between the Connect action and the note). A posted note takes its row out of the index, so the
-- index holds the owed notes only, whatever the journal's size. The `unnoted` query repeats this
-- predicate word for word: SQLite uses a partial index only for a query whose WHERE implies it.
CREATE INDEX requests_unnoted ON requests (updated_at, request_id)
 WHERE noted IS NOT state
   AND state IN ('approved', 'failed', 'revoked', 'closed', 'parked', 'scheduled', 'suspended', 'waiting_human');
