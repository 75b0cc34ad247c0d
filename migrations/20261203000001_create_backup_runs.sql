-- One row per successful backup, written by backup/backup.sh after the dump is checked and renamed; /readyz and
-- the metrics read the newest. The dump itself cannot carry its own row: it is taken before the row is written.
CREATE TABLE backup_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file        text        NOT NULL,
    size_bytes  bigint      NOT NULL,
    app_version text        NOT NULL,
    seconds     integer     NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX backup_runs_finished_at_idx ON backup_runs (finished_at DESC);
