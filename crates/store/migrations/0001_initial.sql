-- Schema version 1: scans with their port results and findings; audits with
-- their listeners, findings and problems.
--
-- Conventions, so that an operator reading the file with sqlite3 can follow it:
-- timestamps are RFC 3339 text; lists and maps are JSON text; enums are the
-- lowercase names perimeter prints (`open`, `tcp`, `high`); unsigned 64-bit
-- identifiers (inodes) are stored as the same 64 bits in a signed INTEGER,
-- because SQLite has no unsigned type; the scan seed is decimal text so that it
-- reads the way `--seed` takes it.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE scans (
    id         INTEGER PRIMARY KEY,
    -- The canonical target key (see TargetKey): scans with equal keys covered
    -- the same targets, excludes and ports, and are the ones diffed.
    target_key TEXT NOT NULL,
    targets    TEXT NOT NULL,
    resolved   TEXT NOT NULL,
    excluded   TEXT NOT NULL,
    ports      TEXT NOT NULL,
    profile    TEXT NOT NULL,
    seed       TEXT NOT NULL,
    options    TEXT NOT NULL,
    started    TEXT NOT NULL,
    -- NULL while the scan runs, and forever if the process died mid-scan.
    finished   TEXT,
    complete   INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1)),
    n_probes   INTEGER NOT NULL DEFAULT 0,
    -- Kept up to date in the same transaction as each batch of results, so
    -- listing scans never counts rows.
    n_results  INTEGER NOT NULL DEFAULT 0,
    n_open     INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX scans_by_target_key ON scans (target_key, id);

CREATE TABLE port_results (
    id            INTEGER PRIMARY KEY,
    scan_id       INTEGER NOT NULL REFERENCES scans (id) ON DELETE CASCADE,
    address       TEXT NOT NULL,
    port          INTEGER NOT NULL CHECK (port BETWEEN 0 AND 65535),
    protocol      TEXT NOT NULL,
    state         TEXT NOT NULL,
    -- NULL when no service was identified; every other service column is then
    -- NULL too.
    service_name  TEXT,
    product       TEXT,
    version       TEXT,
    banner        TEXT,
    auth          TEXT,
    extra         TEXT,
    -- NULL when the service presented no certificate.
    tls_subject   TEXT,
    tls_issuer    TEXT,
    tls_not_after TEXT,
    tls_sans      TEXT
) STRICT;

CREATE INDEX port_results_by_scan ON port_results (scan_id);

CREATE TABLE port_findings (
    id        INTEGER PRIMARY KEY,
    result_id INTEGER NOT NULL REFERENCES port_results (id) ON DELETE CASCADE,
    rule      TEXT NOT NULL,
    severity  TEXT NOT NULL,
    subject   TEXT NOT NULL,
    message   TEXT NOT NULL,
    evidence  TEXT NOT NULL,
    remedy    TEXT NOT NULL
) STRICT;

CREATE INDEX port_findings_by_result ON port_findings (result_id);

CREATE TABLE audits (
    id             INTEGER PRIMARY KEY,
    -- The name the audit is filed under (what `previous_audit` looks up).
    host           TEXT NOT NULL,
    taken_at       TEXT NOT NULL,
    -- What the host called itself when audited.
    hostname       TEXT NOT NULL,
    n_listeners    INTEGER NOT NULL,
    n_findings     INTEGER NOT NULL,
    worst_severity TEXT
) STRICT;

CREATE INDEX audits_by_host ON audits (host, id);

CREATE TABLE audit_listeners (
    id               INTEGER PRIMARY KEY,
    audit_id         INTEGER NOT NULL REFERENCES audits (id) ON DELETE CASCADE,
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
    -- The main owning process; NULL when no owner could be seen.
    process_name     TEXT,
    uid              INTEGER,
    user             TEXT,
    -- Raw path bytes: Linux paths need not be UTF-8.
    exe              BLOB,
    exe_deleted      INTEGER NOT NULL DEFAULT 0 CHECK (exe_deleted IN (0, 1)),
    unit             TEXT,
    container        TEXT,
    -- `package`, `unpackaged`, `unknown` (ownership_detail says why) or
    -- `not-checked`.
    ownership        TEXT NOT NULL,
    ownership_detail TEXT,
    package_manager  TEXT,
    package_name     TEXT,
    package_arch     TEXT
) STRICT;

CREATE INDEX audit_listeners_by_audit ON audit_listeners (audit_id);

CREATE TABLE audit_findings (
    id       INTEGER PRIMARY KEY,
    audit_id INTEGER NOT NULL REFERENCES audits (id) ON DELETE CASCADE,
    rule     TEXT NOT NULL,
    severity TEXT NOT NULL,
    subject  TEXT NOT NULL,
    message  TEXT NOT NULL,
    evidence TEXT NOT NULL,
    remedy   TEXT NOT NULL
) STRICT;

CREATE INDEX audit_findings_by_audit ON audit_findings (audit_id);

CREATE TABLE audit_problems (
    id       INTEGER PRIMARY KEY,
    audit_id INTEGER NOT NULL REFERENCES audits (id) ON DELETE CASCADE,
    subject  TEXT NOT NULL,
    message  TEXT NOT NULL,
    hint     TEXT
) STRICT;

CREATE INDEX audit_problems_by_audit ON audit_problems (audit_id);
