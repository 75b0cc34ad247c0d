-- Task records: PostgreSQL is the source of truth for a task's state; Redis only carries the work to the workers.
CREATE TABLE tasks (
    id           uuid PRIMARY KEY,
    kind         text        NOT NULL,
    payload      jsonb       NOT NULL,
    state        text        NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'retrying', 'done', 'dead')),
    attempts     integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL,
    result       jsonb,
    error        text,
    request_id   text,
    -- The Redis stream entry that currently carries the task; lets the reconciler tell whether Redis still has it.
    stream_id    text,
    -- Which worker runs it and until when its lease holds: a second worker may only start it after the lease ends.
    worker       text,
    lease_until  timestamptz,
    -- When the task is due (now for new tasks, later for retries).
    run_at       timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz
);

CREATE INDEX tasks_created_at_idx ON tasks (created_at DESC);
-- The reconciler scans unfinished tasks only.
CREATE INDEX tasks_unfinished_idx ON tasks (run_at) WHERE state IN ('queued', 'running', 'retrying');
-- Purging scans finished tasks by age.
CREATE INDEX tasks_finished_idx ON tasks (finished_at) WHERE state IN ('done', 'dead');
