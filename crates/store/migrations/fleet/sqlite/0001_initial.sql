-- The fleet's memory (FleetStore), beside the scan history in the same file
-- when they share one: every table is named fleet_*, and the fleet's schema
-- version lives in fleet_schema, not in user_version (the history's).
-- Timestamps are unix nanoseconds (UTC); sequence numbers start at 1.

CREATE TABLE fleet_schema (
    version INTEGER NOT NULL
);
INSERT INTO fleet_schema (version) VALUES (0);

-- row_id orders listings by enrolment; agents are known by id and key.
CREATE TABLE fleet_agents (
    row_id INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    public_key BLOB NOT NULL UNIQUE,
    hostname TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'revoked')),
    enrolled_at INTEGER NOT NULL,
    environment TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    last_digest TEXT NOT NULL DEFAULT '',
    last_seen INTEGER
);

CREATE TABLE fleet_states (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES fleet_agents (id),
    seq INTEGER NOT NULL,
    taken_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX fleet_states_by_agent ON fleet_states (agent_id, id);

-- AUTOINCREMENT: an event id is never reused, even after the newest row is
-- gone, so a reader's `after` cursor never skips a later event.
CREATE TABLE fleet_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL REFERENCES fleet_agents (id),
    seq INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX fleet_events_by_agent ON fleet_events (agent_id, id);

CREATE TABLE fleet_approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('fleet', 'environment', 'host')),
    scope_name TEXT NOT NULL,
    selector TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    approved_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    expires INTEGER,
    revoked_by TEXT,
    revoked_at INTEGER,
    revoked_reason TEXT
);

CREATE TABLE fleet_users (
    row_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'approver', 'admin')),
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);

CREATE TABLE fleet_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash TEXT NOT NULL UNIQUE,
    user_name TEXT NOT NULL REFERENCES fleet_users (name),
    label TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
);

-- Append-only: nothing updates or deletes a row.
CREATE TABLE fleet_trail (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    reason TEXT NOT NULL
);
