-- Schema version 3: an audit stores what changed since the previous audit of
-- its host, not a copy of everything. A host audited every hour holds the same
-- few thousand listeners and findings for months; version 2 wrote them all
-- again each time (about 1 MB per audit on a host with 4,000 listeners).
--
-- Each row of the three span tables is one value (a listener, a finding or a
-- problem, with all its columns) over consecutive audits of one host: from
-- `first_audit`, the audit that first had it, up to but not including
-- `gone_audit`, the first audit of that host that no longer had it (NULL while
-- the host's latest audit still has it). So audit N of host H holds the rows
-- of H with first_audit <= N and (gone_audit IS NULL OR gone_audit > N).
-- Audits are never deleted and their ids only grow, which is what makes the
-- spans exact; the rows carry their host, so audits of other hosts in between
-- do not matter. A value that changes in any column is a new row: the old row
-- is closed, never edited.
--
-- `digest` is the first 16 bytes of the SHA-256 of the row's values (see
-- store/src/spans.rs): recording a new audit matches its values against the
-- host's open rows by digest, writes only those that are new, and closes
-- those that are gone.
--
-- Audits recorded before version 3 keep their rows in audit_listeners,
-- audit_findings and audit_problems (`layout` 1) and are read from there; a
-- host's first audit recorded with version 3 writes all its values as new
-- rows (`layout` 2).

ALTER TABLE audits ADD COLUMN layout INTEGER NOT NULL DEFAULT 1 CHECK (layout IN (1, 2));

CREATE TABLE audit_listener_spans (
    id               INTEGER PRIMARY KEY,
    host             TEXT NOT NULL,
    first_audit      INTEGER NOT NULL REFERENCES audits (id),
    gone_audit       INTEGER REFERENCES audits (id),
    digest           BLOB NOT NULL,
    -- The columns of audit_listeners, with the same meanings.
    protocol         TEXT NOT NULL,
    address          TEXT NOT NULL,
    port             INTEGER NOT NULL CHECK (port BETWEEN 0 AND 65535),
    scope            TEXT NOT NULL,
    v6only           INTEGER CHECK (v6only IN (0, 1)),
    interface        TEXT,
    inode            INTEGER NOT NULL,
    socket_uid       INTEGER NOT NULL,
    netns_inode      INTEGER NOT NULL,
    netns_name       TEXT NOT NULL,
    pids             TEXT NOT NULL,
    process_name     TEXT,
    uid              INTEGER,
    user             TEXT,
    exe              BLOB,
    exe_deleted      INTEGER NOT NULL DEFAULT 0 CHECK (exe_deleted IN (0, 1)),
    unit             TEXT,
    container        TEXT,
    ownership        TEXT NOT NULL,
    ownership_detail TEXT,
    package_manager  TEXT,
    package_name     TEXT,
    package_arch     TEXT
) STRICT;

-- One index serves both questions: the host's open rows (gone_audit IS NULL)
-- and the rows of any one of its audits.
CREATE INDEX audit_listener_spans_by_host ON audit_listener_spans (host, gone_audit);

CREATE TABLE audit_finding_spans (
    id          INTEGER PRIMARY KEY,
    host        TEXT NOT NULL,
    first_audit INTEGER NOT NULL REFERENCES audits (id),
    gone_audit  INTEGER REFERENCES audits (id),
    digest      BLOB NOT NULL,
    rule        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    subject     TEXT NOT NULL,
    message     TEXT NOT NULL,
    evidence    TEXT NOT NULL,
    remedy      TEXT NOT NULL
) STRICT;

CREATE INDEX audit_finding_spans_by_host ON audit_finding_spans (host, gone_audit);

CREATE TABLE audit_problem_spans (
    id          INTEGER PRIMARY KEY,
    host        TEXT NOT NULL,
    first_audit INTEGER NOT NULL REFERENCES audits (id),
    gone_audit  INTEGER REFERENCES audits (id),
    digest      BLOB NOT NULL,
    subject     TEXT NOT NULL,
    message     TEXT NOT NULL,
    hint        TEXT
) STRICT;

CREATE INDEX audit_problem_spans_by_host ON audit_problem_spans (host, gone_audit);
