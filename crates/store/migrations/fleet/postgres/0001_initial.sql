-- The fleet's memory (FleetStore) in PostgreSQL: the same tables as the SQLite
-- backend's, with PostgreSQL types. Timestamps are unix nanoseconds (UTC) in
-- BIGINT, as in SQLite, so both backends round-trip them identically; sequence
-- numbers start at 1.

CREATE TABLE fleet_schema (
    version BIGINT NOT NULL
);
INSERT INTO fleet_schema (version) VALUES (0);

CREATE TABLE fleet_agents (
    row_id BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    public_key BYTEA NOT NULL UNIQUE,
    hostname TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'revoked')),
    enrolled_at BIGINT NOT NULL,
    environment TEXT,
    last_seq BIGINT NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    last_digest TEXT NOT NULL DEFAULT '',
    last_seen BIGINT
);

CREATE TABLE fleet_states (
    id BIGSERIAL PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES fleet_agents (id),
    seq BIGINT NOT NULL,
    taken_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX fleet_states_by_agent ON fleet_states (agent_id, id);

-- Ids come from a sequence; reports with events take an advisory lock before
-- inserting them (see postgres.rs), so events become visible in id order and a
-- reader's `after` cursor never skips one committed late.
CREATE TABLE fleet_events (
    id BIGSERIAL PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES fleet_agents (id),
    seq BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX fleet_events_by_agent ON fleet_events (agent_id, id);

CREATE TABLE fleet_approvals (
    id BIGSERIAL PRIMARY KEY,
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('fleet', 'environment', 'host')),
    scope_name TEXT NOT NULL,
    selector TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    approved_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    expires BIGINT,
    revoked_by TEXT,
    revoked_at BIGINT,
    revoked_reason TEXT
);

CREATE TABLE fleet_users (
    row_id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'approver', 'admin')),
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    disabled BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE fleet_tokens (
    id BIGSERIAL PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_name TEXT NOT NULL REFERENCES fleet_users (name),
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires BIGINT,
    revoked BOOLEAN NOT NULL DEFAULT FALSE
);

-- Append-only: nothing updates or deletes a row.
CREATE TABLE fleet_trail (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    reason TEXT NOT NULL
);
