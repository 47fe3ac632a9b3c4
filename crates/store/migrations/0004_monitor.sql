-- Schema version 4: the monitor's memory. Its runs, the conditions each job
-- has seen (what is open now, so the next run can tell new from known and
-- known from gone), its alerts, the outbox that delivers them to every
-- channel, and the acknowledgements people gave (an append-only trail).

CREATE TABLE monitor_runs (
    id        INTEGER PRIMARY KEY,
    job       TEXT NOT NULL,
    -- scan | audit | verify
    kind      TEXT NOT NULL,
    started   TEXT NOT NULL,
    -- NULL while it runs, and forever if the monitor died mid-run (the next
    -- monitor marks such runs `abandoned` when it starts).
    finished  TEXT,
    -- running | complete | incomplete | failed | abandoned
    status    TEXT NOT NULL,
    scan_id   INTEGER REFERENCES scans (id) ON DELETE SET NULL,
    audit_id  INTEGER,
    n_changes INTEGER NOT NULL DEFAULT 0,
    error     TEXT,
    -- BOOT_ID/PID/START_TIME of the monitor running it (see scans.writer).
    writer    TEXT
) STRICT;

CREATE INDEX monitor_runs_by_job ON monitor_runs (job, id);

-- What each job sees now. One row per (job, key); replaced as a whole, in the
-- same transaction as the run that judged it.
CREATE TABLE monitor_conditions (
    id          INTEGER PRIMARY KEY,
    job         TEXT NOT NULL,
    key         TEXT NOT NULL,
    -- a change kind, as perimeter.alert/1 names it
    kind        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    subject     TEXT NOT NULL,
    expected    INTEGER NOT NULL CHECK (expected IN (0, 1)),
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    absent_runs INTEGER NOT NULL DEFAULT 0,
    acked_until TEXT,
    UNIQUE (job, key)
) STRICT;

-- One alert per run that found changes: the whole digest as perimeter.alert/1.
CREATE TABLE monitor_alerts (
    id        INTEGER PRIMARY KEY,
    run_id    INTEGER NOT NULL REFERENCES monitor_runs (id) ON DELETE CASCADE,
    job       TEXT NOT NULL,
    created   TEXT NOT NULL,
    severity  TEXT NOT NULL,
    n_changes INTEGER NOT NULL,
    document  TEXT NOT NULL
) STRICT;

-- The outbox: one row per (alert, channel), holding what that channel gets
-- (its share of the changes, under its own idempotency key). Delivered rows
-- stay as the record of what was sent.
CREATE TABLE monitor_deliveries (
    id              INTEGER PRIMARY KEY,
    alert_id        INTEGER NOT NULL REFERENCES monitor_alerts (id) ON DELETE CASCADE,
    channel         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    document        TEXT NOT NULL,
    -- pending | sent | failed (permanently: someone must act)
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt    TEXT NOT NULL,
    last_error      TEXT,
    receipt         TEXT,
    sent_at         TEXT
) STRICT;

CREATE INDEX monitor_deliveries_pending ON monitor_deliveries (state, next_attempt);

-- Acknowledgements: who silenced which condition, why, until when.
CREATE TABLE monitor_acks (
    id        INTEGER PRIMARY KEY,
    job       TEXT NOT NULL,
    key       TEXT NOT NULL,
    subject   TEXT NOT NULL,
    acked_by  TEXT NOT NULL,
    reason    TEXT NOT NULL,
    acked_at  TEXT NOT NULL,
    until     TEXT
) STRICT;
