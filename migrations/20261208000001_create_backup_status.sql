-- One row, written by the backup service (backup/service.sh) when its state changes and at least once a minute:
-- how far WAL streaming and the off-host copies are behind, as the service itself judges them against
-- BACKUP_MAX_LAG. /readyz and the metrics read it; a row that stops being refreshed means the service is gone.
CREATE TABLE backup_status (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    wal_lag_seconds double precision,          -- NULL: WAL is not being streamed at all
    max_lag_seconds double precision NOT NULL, -- BACKUP_MAX_LAG
    offsite         text        NOT NULL,      -- 'ok', 'off' (no remote configured) or 'failing'
    offsite_ok_at   timestamptz,               -- the last successful off-host copy
    problem         text,                      -- NULL when healthy; else one line saying what is wrong
    checked_at      timestamptz NOT NULL DEFAULT now()
);
