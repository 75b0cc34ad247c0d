-- Idempotency-Key of POST /api/tasks and of the status page's form: a key names the one task its first request
-- queued; the same request sent again with the key is answered with that task instead of queuing another.
-- request_hash tells a repeat (same kind and payload) from a different request reusing the key (refused).
-- Kept at least IDEMPOTENCY_KEY_TTL_HOURS, then deleted by the worker's periodic purge. Additive: a previous
-- version ignores the table.
CREATE TABLE idempotency_keys (
    key          text        PRIMARY KEY,
    request_hash bytea       NOT NULL,
    task_id      uuid        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
