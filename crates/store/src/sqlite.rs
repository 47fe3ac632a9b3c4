//! The embedded SQLite store: opening (and refusing) database files, applying
//! the embedded migrations, and mapping scans and audits to rows and back.
//!
//! Durability: the database runs in WAL mode with `synchronous = NORMAL`. Every
//! write is one transaction, so a killed process loses at most the transaction
//! it was in; a power cut can also lose the last few committed transactions, but
//! never corrupts the file (SQLite's documented WAL guarantees). That trade buys
//! the insert throughput a large scan needs. The WAL stays when the store is
//! closed (checkpointed as it grows, not at every close), so a run that records
//! one audit makes no fsync.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use perimeter_model::{
    Finding, HostSnapshot, Netns, Ownership, PackageRef, PortResult, PortState, Problem, ScanInfo,
    ServiceInfo, Severity, TlsInfo,
};
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use time::OffsetDateTime;

use crate::ScanStatus;
use crate::audit::{AuditRecord, AuditSummary, ListenerRecord, OwnerRecord};
use crate::codec::{
    decode_address, decode_auth, decode_bool, decode_count, decode_map, decode_pids, decode_port,
    decode_port_state, decode_protocol, decode_resolved, decode_scope, decode_severity,
    decode_strings, decode_time, decode_u32, encode_count, encode_map, encode_resolved,
    encode_strings, encode_time, u64_from_bits,
};
use crate::diff_audits::diff_audits;
use crate::error::StoreError;
use crate::spans;
use crate::target_key::TargetKey;
use crate::{AuditSince, RecordedAudit, ScanSummary, Store};

/// The migrations, in order: `MIGRATIONS[i]` takes a database from schema
/// version `i` to `i + 1`. Released migrations are never edited, only appended
/// to, since databases in the field have already run them.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_scan_writer.sql"),
    include_str!("../migrations/0003_audit_spans.sql"),
    include_str!("../migrations/0004_monitor.sql"),
];

/// The schema version this binary writes and the newest it can read.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// SQLite's `application_id` header field for perimeter databases ("PRMT"), so
/// that `file(1)` and perimeter itself can tell its history from another
/// program's SQLite file.
const APPLICATION_ID: i32 = 0x5052_4d54;

/// How long a writer waits for another perimeter process (a scan still
/// recording, say) to release the database before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Switches a database to WAL mode, waiting out another connection doing the
/// same. The switch takes a shared lock and then the exclusive one; two
/// connections switching a new file at once each hold the first and want the
/// second, and SQLite answers one of them SQLITE_BUSY at once instead of
/// calling its busy handler (waiting could never end). Once the other has
/// switched, the file is in WAL mode and the switch is a no-op: it is tried
/// again until the busy timeout.
pub(crate) fn switch_to_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(err, _))
                if err.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(err) => return Err(err),
        }
    }
}

/// The history in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    pub(crate) conn: Connection,
    path: PathBuf,
    /// The schema version of the file as opened. A read-only store cannot
    /// migrate, so it reads an older schema as it is (columns added later
    /// read as absent).
    pub(crate) schema_version: i64,
}

impl SqliteStore {
    /// Opens (or creates) the history at `path`: missing parent directories are
    /// created with mode 0700 and a new file with mode 0600, since findings
    /// describe how to attack the hosts they are about. The schema is migrated
    /// to [`SCHEMA_VERSION`]; a file that is not SQLite, belongs to another
    /// program, or has a newer schema is refused without being written to.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        prepare_file(path)?;
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        SqliteStore::set_up(conn, path.to_owned())
    }

    /// Opens an existing history only to read it: nothing is created (a
    /// missing file or directory is [`StoreError::Missing`], so a typo in
    /// `--db` is never a new empty database) and nothing is written, so a
    /// database this user may read but not write is still read. A newer
    /// schema is refused as by [`SqliteStore::open`]; an older one is read as
    /// it is.
    pub fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                return Err(StoreError::NotADatabase {
                    path: path.to_owned(),
                });
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing {
                    path: path.to_owned(),
                });
            }
            Err(source) => {
                return Err(StoreError::CreateFile {
                    path: path.to_owned(),
                    source,
                });
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let open = |uri: &str| {
            Connection::open_with_flags(uri, flags).map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })
        };
        let conn = open(&file_uri(path, ""))?;
        // A database in WAL mode needs its -shm file to be read, and whoever
        // closed it last removed that file: a user who may read the database
        // but not write its directory cannot create it again. Such a reader
        // opens the file as immutable instead (no locks, no -shm): fine for
        // one command's look at history, which a writer changing it meanwhile
        // can at worst make a moment stale.
        let conn = match read_header(&conn, path) {
            Err(StoreError::Sqlite { source, .. })
                if matches!(
                    source.sqlite_error_code(),
                    Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen)
                ) =>
            {
                drop(conn);
                open(&file_uri(path, "immutable=1"))?
            }
            _ => conn,
        };
        conn.set_prepared_statement_cache_capacity(32);
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|source| StoreError::Sqlite {
                path: path.to_owned(),
                action: "set the busy timeout".to_owned(),
                source,
            })?;
        let header = read_header(&conn, path)?;
        check_header(&header, path)?;
        if header.application_id != APPLICATION_ID {
            // An empty SQLite file (what perimeter creates before its first
            // migration) holds no history yet.
            return Err(StoreError::Missing {
                path: path.to_owned(),
            });
        }
        Ok(SqliteStore {
            conn,
            path: path.to_owned(),
            schema_version: header.user_version,
        })
    }

    /// A history that lives as long as the value: for tests, and for runs
    /// asked not to keep history.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        SqliteStore::set_up(conn, path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn set_up(mut conn: Connection, path: PathBuf) -> Result<SqliteStore, StoreError> {
        let sql_error = |action: &str| {
            let path = path.clone();
            let action = action.to_owned();
            move |source| StoreError::Sqlite {
                path,
                action,
                source,
            }
        };
        // Every distinct statement the store runs fits, so none is prepared twice.
        conn.set_prepared_statement_cache_capacity(32);
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql_error("set the busy timeout"))?;
        // Everything up to the header check only reads, so a refused file is
        // left exactly as it was.
        let header = read_header(&conn, &path)?;
        check_header(&header, &path)?;
        switch_to_wal(&conn).map_err(sql_error("switch to WAL mode"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql_error("set synchronous mode"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql_error("turn on foreign keys"))?;
        // Closing the last connection copies the WAL into the database and
        // removes it (SQLite's default, kept on purpose). Leaving the WAL in
        // place would save a checkpoint's fsyncs per run, but a user allowed
        // to read the database and not its WAL (the WAL keeps the mode the
        // database had when the WAL was made; `chmod 644` on the database
        // later does not reach it) would then read an empty or stale
        // history without knowing it.
        if header.user_version < SCHEMA_VERSION {
            migrate(&mut conn, &path)?;
        }
        Ok(SqliteStore {
            conn,
            path,
            schema_version: SCHEMA_VERSION,
        })
    }

    pub(crate) fn sql_error<A: Into<String>>(
        &self,
        action: A,
    ) -> impl FnOnce(rusqlite::Error) -> StoreError + use<A> {
        let path = self.path.clone();
        let action = action.into();
        move |source| StoreError::Sqlite {
            path,
            action,
            source,
        }
    }

    /// How audit `audit_id` is stored: 1, its own rows (before schema
    /// version 3); 2, spans of its host's rows.
    fn audit_layout(&self, audit_id: i64) -> Result<i64, StoreError> {
        if self.schema_version < 3 {
            return Ok(1);
        }
        self.conn
            .query_row(
                "SELECT layout FROM audits WHERE id = ?1",
                [audit_id],
                |row| row.get(0),
            )
            .optional()
            .map(|layout| layout.unwrap_or(1))
            .map_err(self.sql_error(format!("load audit {audit_id}")))
    }

    pub(crate) fn corrupt(&self, context: &str, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail: format!("{context}: {detail}"),
        }
    }

    pub(crate) fn write_transaction(
        &mut self,
        action: &str,
    ) -> Result<Transaction<'_>, StoreError> {
        // IMMEDIATE takes the write lock up front: a deferred transaction that
        // reads first and then writes fails at once with SQLITE_BUSY, without
        // waiting out the busy timeout, when another writer committed between.
        let on_error = self.sql_error(action);
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(on_error)
    }

    fn query_scans(
        &self,
        sql_tail: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<ScanSummary>, StoreError> {
        // `writer` came with schema version 2; an older file opened read-only
        // has none.
        let writer = if self.schema_version >= 2 {
            "writer"
        } else {
            "NULL"
        };
        let sql = format!("SELECT {SCAN_COLUMNS}, {writer} FROM scans {sql_tail}");
        let mut statement = self
            .conn
            .prepare_cached(&sql)
            .map_err(self.sql_error("list scans"))?;
        let raw_scans = statement
            .query_map(params, RawScan::from_row)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(self.sql_error("list scans"))?;
        raw_scans.into_iter().map(|raw| raw.decode(self)).collect()
    }

    fn query_audits(
        &self,
        sql_tail: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<AuditSummary>, StoreError> {
        let sql = format!(
            "SELECT id, host, taken_at, hostname, n_listeners, n_findings, worst_severity FROM audits {sql_tail}"
        );
        let mut statement = self
            .conn
            .prepare_cached(&sql)
            .map_err(self.sql_error("list audits"))?;
        let raw_audits = statement
            .query_map(params, |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, Option<String>>(6)?,
                ))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(self.sql_error("list audits"))?;
        raw_audits
            .into_iter()
            .map(
                |(id, host, taken_at, hostname, n_listeners, n_findings, worst)| {
                    let context = format!("audit {id}");
                    let bad = |detail| self.corrupt(&context, detail);
                    Ok(AuditSummary {
                        id,
                        host,
                        taken_at: decode_time(&taken_at).map_err(bad)?,
                        hostname,
                        n_listeners: decode_count(n_listeners).map_err(bad)?,
                        n_findings: decode_count(n_findings).map_err(bad)?,
                        worst_severity: worst
                            .as_deref()
                            .map(decode_severity)
                            .transpose()
                            .map_err(bad)?,
                    })
                },
            )
            .collect()
    }
}

impl Store for SqliteStore {
    fn begin_scan(&mut self, info: &ScanInfo) -> Result<i64, StoreError> {
        let started = encode_time("scan start time", info.started)?;
        let n_probes = encode_count("probe count", info.n_probes)?;
        let key = TargetKey::of(info);
        self.conn
            .execute(
                "INSERT INTO scans (target_key, targets, resolved, excluded, ports, profile, seed, options, \
                 started, n_probes, writer) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    key.as_str(),
                    encode_strings(&info.targets),
                    encode_resolved(&info.resolved),
                    encode_strings(&info.excluded),
                    info.ports,
                    info.profile,
                    info.seed.to_string(),
                    encode_map(&info.options),
                    started,
                    n_probes,
                    crate::writer::current_writer(),
                ],
            )
            .map_err(self.sql_error("record the start of a scan"))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn record_results(&mut self, scan_id: i64, results: &[PortResult]) -> Result<(), StoreError> {
        // Encode first, so a value that cannot be stored refuses the batch before
        // any row is written.
        let rows = results
            .iter()
            .map(ResultRow::encode)
            .collect::<Result<Vec<_>, _>>()?;
        let n_results = encode_count("result count", results.len() as u64)?;
        let n_open = encode_count(
            "open port count",
            results
                .iter()
                .filter(|result| result.state == PortState::Open)
                .count() as u64,
        )?;
        let action = format!("record results of scan {scan_id}");
        let on_error = self.sql_error(action.clone());
        let path = self.path.clone();
        let tx = self.write_transaction(&action)?;
        if scan_is_finished(&tx, &path, scan_id)? {
            return Err(StoreError::ScanFinished { path, id: scan_id });
        }
        insert_result_rows(&tx, scan_id, &rows, n_results, n_open)
            .and_then(|()| tx.commit())
            .map_err(on_error)
    }

    fn finish_scan(
        &mut self,
        scan_id: i64,
        finished: OffsetDateTime,
        complete: bool,
        n_probes: u64,
    ) -> Result<(), StoreError> {
        let finished = encode_time("scan finish time", finished)?;
        let n_probes = encode_count("probe count", n_probes)?;
        let n_changed = self
            .conn
            .execute(
                "UPDATE scans SET finished = ?2, complete = ?3, n_probes = ?4 WHERE id = ?1 AND finished IS NULL",
                params![scan_id, finished, complete, n_probes],
            )
            .map_err(self.sql_error(format!("finish scan {scan_id}")))?;
        if n_changed == 0 {
            // Either there is no such scan or it was finished already; the
            // lookup says which.
            scan_is_finished(&self.conn, &self.path, scan_id)?;
            return Err(StoreError::ScanFinished {
                path: self.path.clone(),
                id: scan_id,
            });
        }
        Ok(())
    }

    fn list_scans(&self, limit: usize) -> Result<Vec<ScanSummary>, StoreError> {
        self.query_scans("ORDER BY id DESC LIMIT ?1", [sql_limit(limit)])
    }

    fn load_scan(&self, scan_id: i64) -> Result<(ScanInfo, Vec<PortResult>), StoreError> {
        let action = format!("load scan {scan_id}");
        // One read transaction, so a scan still recording cannot add results
        // between the queries below. It ends (a rollback, having written
        // nothing) when `tx` drops, after the statements that borrow it.
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(self.sql_error(action.clone()))?;
        let summary = self
            .query_scans("WHERE id = ?1", [scan_id])?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NoSuchScan {
                path: self.path.clone(),
                id: scan_id,
            })?;

        let mut statement = tx
            .prepare_cached(
                "SELECT id, address, port, protocol, state, service_name, product, version, banner, auth, extra, \
                 tls_subject, tls_issuer, tls_not_after, tls_sans FROM port_results WHERE scan_id = ?1 ORDER BY id",
            )
            .map_err(self.sql_error(action.clone()))?;
        let raw_results = statement
            .query_map([scan_id], RawResult::from_row)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(self.sql_error(action.clone()))?;
        let mut results = Vec::with_capacity(raw_results.len());
        let mut result_idx_by_id = HashMap::with_capacity(raw_results.len());
        for raw in raw_results {
            let context = format!("scan {scan_id}, result {}", raw.id);
            result_idx_by_id.insert(raw.id, results.len());
            results.push(
                raw.decode()
                    .map_err(|detail| self.corrupt(&context, detail))?,
            );
        }

        let mut statement = tx
            .prepare_cached(
                "SELECT f.result_id, f.id, f.rule, f.severity, f.subject, f.message, f.evidence, f.remedy \
                 FROM port_findings f JOIN port_results r ON r.id = f.result_id \
                 WHERE r.scan_id = ?1 ORDER BY f.result_id, f.id",
            )
            .map_err(self.sql_error(action.clone()))?;
        let raw_findings = statement
            .query_map([scan_id], |row| {
                Ok((row.get::<_, i64>(0)?, RawFinding::from_row(row, 1)?))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(self.sql_error(action.clone()))?;
        for (result_id, raw) in raw_findings {
            let context = format!("scan {scan_id}, finding {}", raw.id);
            let finding = raw
                .decode()
                .map_err(|detail| self.corrupt(&context, detail))?;
            // The join guarantees the result is in this scan, and so loaded.
            if let Some(result) = result_idx_by_id
                .get(&result_id)
                .and_then(|&result_idx| results.get_mut(result_idx))
            {
                result.findings.push(finding);
            }
        }
        Ok((summary.info, results))
    }

    fn latest_complete_scan(&self) -> Result<Option<ScanSummary>, StoreError> {
        Ok(self
            .query_scans(
                "WHERE complete = 1 AND finished IS NOT NULL ORDER BY id DESC LIMIT 1",
                [],
            )?
            .into_iter()
            .next())
    }

    fn previous_scans_of(&self, key: &TargetKey, n: usize) -> Result<Vec<ScanSummary>, StoreError> {
        self.query_scans(
            "WHERE target_key = ?1 AND complete = 1 AND finished IS NOT NULL ORDER BY id DESC LIMIT ?2",
            params![key.as_str(), sql_limit(n)],
        )
    }

    fn record_audit(
        &mut self,
        host: &str,
        taken_at: OffsetDateTime,
        snapshot: &HostSnapshot,
        findings: &[Finding],
    ) -> Result<i64, StoreError> {
        self.record_audit_since(host, taken_at, snapshot, findings)
            .map(|recorded| recorded.id)
    }

    fn record_audit_since(
        &mut self,
        host: &str,
        taken_at: OffsetDateTime,
        snapshot: &HostSnapshot,
        findings: &[Finding],
    ) -> Result<RecordedAudit, StoreError> {
        // A previous audit stored before schema version 3 has no spans to
        // compare with: it is loaded whole and diffed (once per host, at the
        // first audit after the upgrade).
        let legacy_previous = match self.audits_of(host, 1)?.into_iter().next() {
            Some(previous) if self.audit_layout(previous.id)? == 1 => {
                Some(self.load_audit(previous.id)?)
            }
            _ => None,
        };
        let action = format!("record an audit of {host}");
        let taken_at_text = encode_time("audit time", taken_at)?;
        let n_listeners = encode_count("listener count", snapshot.listeners.len() as u64)?;
        let n_findings = encode_count("finding count", findings.len() as u64)?;
        let worst = findings
            .iter()
            .map(|finding| finding.severity)
            .max()
            .map(Severity::as_str);
        let path = self.path.clone();
        let on_error = self.sql_error(action.clone());
        let tx = self.write_transaction(&action)?;
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            action: action.clone(),
            source,
        };
        let corrupt = |context: String, detail: String| StoreError::Corrupt {
            path: path.clone(),
            detail: format!("{context}: {detail}"),
        };
        // The host's latest audit, read under the write lock.
        let previous: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, taken_at FROM audits WHERE host = ?1 ORDER BY id DESC LIMIT 1",
                [host],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(sql)?;
        tx.execute(
            "INSERT INTO audits (host, taken_at, hostname, n_listeners, n_findings, worst_severity, layout) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 2)",
            params![host, taken_at_text, snapshot.hostname, n_listeners, n_findings, worst],
        )
        .map_err(sql)?;
        let audit_id = tx.last_insert_rowid();
        let recorded = spans::record_spans(&tx, host, audit_id, snapshot, findings).map_err(sql)?;
        let since = match previous {
            None => None,
            Some((previous_id, previous_taken_at)) => {
                let changes = match legacy_previous.filter(|legacy| legacy.id == previous_id) {
                    Some(legacy) => diff_audits(
                        &legacy,
                        &AuditRecord::from_snapshot(host, taken_at, snapshot, findings),
                    ),
                    None => {
                        // Only the values whose identity is new and the rows
                        // whose identity went: everything else is on both
                        // sides and would diff to nothing.
                        let mut before = AuditRecord::from_snapshot(
                            host,
                            taken_at,
                            &HostSnapshot::default(),
                            &[],
                        );
                        let mut after = before.clone();
                        let mut statement = tx
                            .prepare_cached(&spans::LISTENERS.select_one_sql())
                            .map_err(sql)?;
                        for &id in &recorded.listeners.disappeared {
                            let raw = statement
                                .query_row([id], RawListener::from_row)
                                .map_err(sql)?;
                            before.listeners.push(raw.decode().map_err(|detail| {
                                corrupt(format!("audit {previous_id}, listener {id}"), detail)
                            })?);
                        }
                        let mut statement = tx
                            .prepare_cached(&spans::FINDINGS.select_one_sql())
                            .map_err(sql)?;
                        for &id in &recorded.findings.disappeared {
                            let raw = statement
                                .query_row([id], |row| RawFinding::from_row(row, 0))
                                .map_err(sql)?;
                            before.findings.push(raw.decode().map_err(|detail| {
                                corrupt(format!("audit {previous_id}, finding {id}"), detail)
                            })?);
                        }
                        for &idx in &recorded.listeners.appeared {
                            if let Some(listener) = snapshot.listeners.get(idx) {
                                after
                                    .listeners
                                    .push(ListenerRecord::from_listener(snapshot, listener));
                            }
                        }
                        for &idx in &recorded.findings.appeared {
                            after.findings.extend(findings.get(idx).cloned());
                        }
                        diff_audits(&before, &after)
                    }
                };
                let taken_at = decode_time(&previous_taken_at)
                    .map_err(|detail| corrupt(format!("audit {previous_id}"), detail))?;
                Some(AuditSince {
                    audit_id: previous_id,
                    taken_at,
                    changes,
                })
            }
        };
        tx.commit().map_err(on_error)?;
        Ok(RecordedAudit {
            id: audit_id,
            since,
        })
    }

    fn list_audits(&self, limit: usize) -> Result<Vec<AuditSummary>, StoreError> {
        self.query_audits("ORDER BY id DESC LIMIT ?1", [sql_limit(limit)])
    }

    fn audits_of(&self, host: &str, n: usize) -> Result<Vec<AuditSummary>, StoreError> {
        self.query_audits(
            "WHERE host = ?1 ORDER BY id DESC LIMIT ?2",
            params![host, sql_limit(n)],
        )
    }

    fn load_audit(&self, audit_id: i64) -> Result<AuditRecord, StoreError> {
        let action = format!("load audit {audit_id}");
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(self.sql_error(action.clone()))?;
        let summary = self
            .query_audits("WHERE id = ?1", [audit_id])?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NoSuchAudit {
                path: self.path.clone(),
                id: audit_id,
            })?;

        // Audits before schema version 3 have their own rows; later ones
        // are spans of their host's rows (see spans.rs).
        let layout = self.audit_layout(audit_id)?;
        let (host, latest) = if layout == 2 {
            let newest = self.audits_of(&summary.host, 1)?;
            let latest = newest.first().is_some_and(|newest| newest.id == audit_id);
            (Some(summary.host.as_str()), latest)
        } else {
            (None, false)
        };
        let sql = |table: spans::SpanTable, legacy: &str| match host {
            Some(_) => table.select_sql(latest),
            None => format!(
                "SELECT id, {} FROM {legacy} WHERE audit_id = ?2 AND ?1 IS NOT NULL ORDER BY id",
                table.columns
            ),
        };
        // Bound either way; the legacy tables need only the audit id.
        let params = params![host.unwrap_or(""), audit_id];

        let mut statement = tx
            .prepare_cached(&sql(spans::LISTENERS, "audit_listeners"))
            .map_err(self.sql_error(action.clone()))?;
        let raw_listeners = statement
            .query_map(params, RawListener::from_row)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(self.sql_error(action.clone()))?;
        let mut listeners = raw_listeners
            .into_iter()
            .map(|raw| {
                let context = format!("audit {audit_id}, listener {}", raw.id);
                raw.decode()
                    .map_err(|detail| self.corrupt(&context, detail))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The order the audit listed them in (host::listeners sorts so),
        // which rows stored in that order mostly have already.
        let order = |a: &ListenerRecord, b: &ListenerRecord| {
            (&a.netns, a.protocol, a.port, a.address, a.inode)
                .cmp(&(&b.netns, b.protocol, b.port, b.address, b.inode))
        };
        if !listeners.is_sorted_by(|a, b| order(a, b).is_le()) {
            listeners.sort_by(order);
        }

        let mut statement = tx
            .prepare_cached(&sql(spans::FINDINGS, "audit_findings"))
            .map_err(self.sql_error(action.clone()))?;
        let raw_findings = statement
            .query_map(params, |row| RawFinding::from_row(row, 0))
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(self.sql_error(action.clone()))?;
        let mut findings = raw_findings
            .into_iter()
            .map(|raw| {
                let context = format!("audit {audit_id}, finding {}", raw.id);
                raw.decode()
                    .map_err(|detail| self.corrupt(&context, detail))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Worst first, as reports list them; otherwise as stored.
        findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.rule.cmp(&b.rule))
                .then_with(|| a.subject.cmp(&b.subject))
        });

        let mut statement = tx
            .prepare_cached(&sql(spans::PROBLEMS, "audit_problems"))
            .map_err(self.sql_error(action.clone()))?;
        let problems = statement
            .query_map(params, |row| {
                Ok(Problem {
                    subject: row.get(1)?,
                    message: row.get(2)?,
                    hint: row.get(3)?,
                })
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(self.sql_error(action))?;

        Ok(AuditRecord {
            id: summary.id,
            host: summary.host,
            taken_at: summary.taken_at,
            hostname: summary.hostname,
            listeners,
            findings,
            problems,
        })
    }

    fn previous_audit(&self, host: &str) -> Result<Option<AuditRecord>, StoreError> {
        match self.audits_of(host, 1)?.into_iter().next() {
            Some(summary) => self.load_audit(summary.id).map(Some),
            None => Ok(None),
        }
    }
}

/// `path` as an SQLite `file:` URI with `query` (`immutable=1`, or empty):
/// every byte but unreserved ASCII percent-encoded, so any path (spaces, `?`,
/// `#`, bytes that are not UTF-8) names exactly that file.
fn file_uri(path: &Path, query: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'-' | b'_' | b'.' | b'~') {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(query);
    }
    uri
}

/// Creates missing parent directories (0700) and the file itself (0600), so
/// SQLite never creates either with the umask's looser defaults. Directories
/// that already exist keep their modes: `/tmp` is not ours to tighten.
pub(crate) fn prepare_file(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| StoreError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::CreateFile {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The database header fields that say whose file this is and which schema
/// it has.
struct Header {
    application_id: i32,
    user_version: i64,
    n_schema_objects: i64,
}

fn read_header(conn: &Connection, path: &Path) -> Result<Header, StoreError> {
    // One read transaction: the three reads see one state of the file, never
    // a first migration another process commits between them (its tables
    // without the application id read a moment before).
    let read = || -> rusqlite::Result<Header> {
        let tx = conn.unchecked_transaction()?;
        let header = Header {
            application_id: tx.pragma_query_value(None, "application_id", |row| row.get(0))?,
            user_version: tx.pragma_query_value(None, "user_version", |row| row.get(0))?,
            n_schema_objects: tx
                .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))?,
        };
        tx.finish()?;
        Ok(header)
    };
    read().map_err(|source| match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase {
            path: path.to_owned(),
        },
        _ => StoreError::Sqlite {
            path: path.to_owned(),
            action: "read the database header".to_owned(),
            source,
        },
    })
}

fn check_header(header: &Header, path: &Path) -> Result<(), StoreError> {
    let not_perimeter = |reason: String| StoreError::NotPerimeter {
        path: path.to_owned(),
        reason,
    };
    if header.application_id == APPLICATION_ID {
        if header.user_version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: header.user_version,
                known: SCHEMA_VERSION,
            });
        }
        if header.user_version < 0 {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail: format!("negative schema version {}", header.user_version),
            });
        }
        return Ok(());
    }
    if header.application_id != 0 {
        return Err(not_perimeter(format!(
            "its application id is {:#010x}, perimeter's is {APPLICATION_ID:#010x}",
            header.application_id
        )));
    }
    // No application id: only an empty database can become perimeter's. A file
    // with tables, or with a schema version, belongs to someone else.
    if header.user_version != 0 || header.n_schema_objects != 0 {
        return Err(not_perimeter(format!(
            "it has {} tables and indexes and schema version {} but no perimeter application id",
            header.n_schema_objects, header.user_version
        )));
    }
    Ok(())
}

/// Applies the migrations the database lacks, all in one transaction: a
/// migration that fails leaves the database at the version it had.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sql_error = |action: &str| {
        let path = path.to_owned();
        let action = action.to_owned();
        move |source| StoreError::Sqlite {
            path,
            action,
            source,
        }
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error("start the schema migration"))?;
    // Read again under the write lock: another perimeter may have migrated the
    // file since the header was first read.
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql_error("read the schema version"))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    for (version_idx, sql) in MIGRATIONS.iter().enumerate() {
        let target_version = version_idx as i64 + 1;
        if target_version <= version {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(|source| StoreError::Migration {
                path: path.to_owned(),
                version: target_version,
                source,
            })?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(sql_error("set the application id"))?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sql_error("set the schema version"))?;
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_written_by', ?1)",
        [concat!("perimeter ", env!("CARGO_PKG_VERSION"))],
    )
    .map_err(sql_error("record the schema writer"))?;
    tx.commit()
        .map_err(sql_error("commit the schema migration"))
}

/// Whether scan `scan_id` exists and is finished; `NoSuchScan` otherwise.
fn scan_is_finished(conn: &Connection, path: &Path, scan_id: i64) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT finished IS NOT NULL FROM scans WHERE id = ?1",
        [scan_id],
        |row| row.get::<_, bool>(0),
    )
    .optional()
    .map_err(|source| StoreError::Sqlite {
        path: path.to_owned(),
        action: format!("look up scan {scan_id}"),
        source,
    })?
    .ok_or_else(|| StoreError::NoSuchScan {
        path: path.to_owned(),
        id: scan_id,
    })
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

const SCAN_COLUMNS: &str = "id, target_key, targets, resolved, excluded, ports, profile, seed, options, started, \
                            finished, complete, n_probes, n_results, n_open";

/// A `scans` row as read, before decoding.
struct RawScan {
    id: i64,
    target_key: String,
    targets: String,
    resolved: String,
    excluded: String,
    ports: String,
    profile: String,
    seed: String,
    options: String,
    started: String,
    finished: Option<String>,
    complete: i64,
    n_probes: i64,
    n_results: i64,
    n_open: i64,
    writer: Option<String>,
}

impl RawScan {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawScan> {
        Ok(RawScan {
            id: row.get(0)?,
            target_key: row.get(1)?,
            targets: row.get(2)?,
            resolved: row.get(3)?,
            excluded: row.get(4)?,
            ports: row.get(5)?,
            profile: row.get(6)?,
            seed: row.get(7)?,
            options: row.get(8)?,
            started: row.get(9)?,
            finished: row.get(10)?,
            complete: row.get(11)?,
            n_probes: row.get(12)?,
            n_results: row.get(13)?,
            n_open: row.get(14)?,
            writer: row.get(15)?,
        })
    }

    fn decode(self, store: &SqliteStore) -> Result<ScanSummary, StoreError> {
        let context = format!("scan {}", self.id);
        let bad = |detail| store.corrupt(&context, detail);
        let info = ScanInfo {
            id: self.id,
            targets: decode_strings(&self.targets).map_err(bad)?,
            resolved: decode_resolved(&self.resolved).map_err(bad)?,
            excluded: decode_strings(&self.excluded).map_err(bad)?,
            ports: self.ports,
            profile: self.profile,
            seed: self
                .seed
                .parse()
                .map_err(|_| bad(format!("`{}` is not a seed", self.seed.escape_debug())))?,
            options: decode_map(&self.options).map_err(bad)?,
            started: decode_time(&self.started).map_err(bad)?,
            finished: self
                .finished
                .as_deref()
                .map(decode_time)
                .transpose()
                .map_err(bad)?,
            complete: decode_bool(self.complete).map_err(bad)?,
            n_probes: decode_count(self.n_probes).map_err(bad)?,
        };
        let status = match (info.finished, info.complete) {
            (Some(_), true) => ScanStatus::Complete,
            (Some(_), false) => ScanStatus::Incomplete,
            // No finish time: running while its writer lives. A writer that
            // cannot be named or checked counts as gone: a scan that may be
            // dead must never pass for a running one, which later becomes the
            // newest complete scan.
            (None, _) => match self.writer.as_deref().and_then(crate::writer::writer_alive) {
                Some(true) => ScanStatus::Running,
                _ => ScanStatus::Interrupted,
            },
        };
        Ok(ScanSummary {
            info,
            status,
            target_key: TargetKey::from_stored(self.target_key),
            n_results: decode_count(self.n_results).map_err(bad)?,
            n_open: decode_count(self.n_open).map_err(bad)?,
        })
    }
}

/// A port result encoded for its row; its findings follow it.
struct ResultRow<'a> {
    result: &'a PortResult,
    extra: Option<String>,
    tls_not_after: Option<String>,
    tls_sans: Option<String>,
    findings_evidence: Vec<String>,
}

impl<'a> ResultRow<'a> {
    fn encode(result: &'a PortResult) -> Result<ResultRow<'a>, StoreError> {
        let service = result.service.as_ref();
        let tls = service.and_then(|service| service.tls.as_ref());
        Ok(ResultRow {
            result,
            extra: service.map(|service| encode_map(&service.extra)),
            tls_not_after: tls
                .and_then(|tls| tls.not_after)
                .map(|at| encode_time("certificate expiry", at))
                .transpose()?,
            tls_sans: tls.map(|tls| encode_strings(&tls.subject_alt_names)),
            findings_evidence: result
                .findings
                .iter()
                .map(|finding| encode_strings(&finding.evidence))
                .collect(),
        })
    }
}

fn insert_result_rows(
    tx: &Transaction<'_>,
    scan_id: i64,
    rows: &[ResultRow<'_>],
    n_results: i64,
    n_open: i64,
) -> rusqlite::Result<()> {
    let mut insert_result = tx.prepare_cached(
        "INSERT INTO port_results (scan_id, address, port, protocol, state, service_name, product, version, banner, \
         auth, extra, tls_subject, tls_issuer, tls_not_after, tls_sans) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    let mut insert_finding = tx.prepare_cached(
        "INSERT INTO port_findings (result_id, rule, severity, subject, message, evidence, remedy) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for row in rows {
        let result = row.result;
        let service = result.service.as_ref();
        let tls = service.and_then(|service| service.tls.as_ref());
        let result_id = insert_result.insert(params![
            scan_id,
            result.address.to_string(),
            result.port,
            result.protocol.as_str(),
            result.state.as_str(),
            service.map(|service| service.name.as_str()),
            service.and_then(|service| service.product.as_deref()),
            service.and_then(|service| service.version.as_deref()),
            service.and_then(|service| service.banner.as_deref()),
            service.map(|service| service.auth.as_str()),
            row.extra,
            tls.map(|tls| tls.subject.as_str()),
            tls.map(|tls| tls.issuer.as_str()),
            row.tls_not_after,
            row.tls_sans,
        ])?;
        for (finding, evidence) in result.findings.iter().zip(&row.findings_evidence) {
            insert_finding.execute(params![
                result_id,
                finding.rule,
                finding.severity.as_str(),
                finding.subject,
                finding.message,
                evidence,
                finding.remedy,
            ])?;
        }
    }
    tx.execute(
        "UPDATE scans SET n_results = n_results + ?2, n_open = n_open + ?3 WHERE id = ?1",
        params![scan_id, n_results, n_open],
    )?;
    Ok(())
}

/// A `port_results` row as read, before decoding.
struct RawResult {
    id: i64,
    address: String,
    port: i64,
    protocol: String,
    state: String,
    service_name: Option<String>,
    product: Option<String>,
    version: Option<String>,
    banner: Option<String>,
    auth: Option<String>,
    extra: Option<String>,
    tls_subject: Option<String>,
    tls_issuer: Option<String>,
    tls_not_after: Option<String>,
    tls_sans: Option<String>,
}

impl RawResult {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawResult> {
        Ok(RawResult {
            id: row.get(0)?,
            address: row.get(1)?,
            port: row.get(2)?,
            protocol: row.get(3)?,
            state: row.get(4)?,
            service_name: row.get(5)?,
            product: row.get(6)?,
            version: row.get(7)?,
            banner: row.get(8)?,
            auth: row.get(9)?,
            extra: row.get(10)?,
            tls_subject: row.get(11)?,
            tls_issuer: row.get(12)?,
            tls_not_after: row.get(13)?,
            tls_sans: row.get(14)?,
        })
    }

    fn decode(self) -> Result<PortResult, String> {
        let tls = match self.tls_subject {
            None => None,
            Some(subject) => Some(TlsInfo {
                subject,
                issuer: self.tls_issuer.unwrap_or_default(),
                not_after: self.tls_not_after.as_deref().map(decode_time).transpose()?,
                subject_alt_names: self
                    .tls_sans
                    .as_deref()
                    .map(decode_strings)
                    .transpose()?
                    .unwrap_or_default(),
            }),
        };
        let service = match self.service_name {
            None => None,
            Some(name) => Some(ServiceInfo {
                name,
                product: self.product,
                version: self.version,
                banner: self.banner,
                tls,
                auth: decode_auth(self.auth.as_deref().unwrap_or("unknown"))?,
                extra: self
                    .extra
                    .as_deref()
                    .map(decode_map)
                    .transpose()?
                    .unwrap_or_default(),
            }),
        };
        Ok(PortResult {
            address: decode_address(&self.address)?,
            port: decode_port(self.port)?,
            protocol: decode_protocol(&self.protocol)?,
            state: decode_port_state(&self.state)?,
            service,
            findings: Vec::new(),
        })
    }
}

/// A finding row (of a port or of an audit) as read, before decoding.
struct RawFinding {
    id: i64,
    rule: String,
    severity: String,
    subject: String,
    message: String,
    evidence: String,
    remedy: String,
}

impl RawFinding {
    /// Reads `id, rule, severity, subject, message, evidence, remedy` starting
    /// at column `first`.
    fn from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<RawFinding> {
        Ok(RawFinding {
            id: row.get(first)?,
            rule: row.get(first + 1)?,
            severity: row.get(first + 2)?,
            subject: row.get(first + 3)?,
            message: row.get(first + 4)?,
            evidence: row.get(first + 5)?,
            remedy: row.get(first + 6)?,
        })
    }

    fn decode(self) -> Result<Finding, String> {
        Ok(Finding {
            rule: self.rule,
            severity: decode_severity(&self.severity)?,
            subject: self.subject,
            message: self.message,
            evidence: decode_strings(&self.evidence)?,
            remedy: self.remedy,
        })
    }
}

/// An `audit_listeners` row as read, before decoding.
struct RawListener {
    id: i64,
    protocol: String,
    address: String,
    port: i64,
    scope: String,
    v6only: Option<i64>,
    interface: Option<String>,
    inode: i64,
    socket_uid: i64,
    netns_inode: i64,
    netns_name: String,
    pids: String,
    process_name: Option<String>,
    uid: Option<i64>,
    user: Option<String>,
    exe: Option<Vec<u8>>,
    exe_deleted: i64,
    unit: Option<String>,
    container: Option<String>,
    ownership: String,
    ownership_detail: Option<String>,
    package_manager: Option<String>,
    package_name: Option<String>,
    package_arch: Option<String>,
}

impl RawListener {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawListener> {
        Ok(RawListener {
            id: row.get(0)?,
            protocol: row.get(1)?,
            address: row.get(2)?,
            port: row.get(3)?,
            scope: row.get(4)?,
            v6only: row.get(5)?,
            interface: row.get(6)?,
            inode: row.get(7)?,
            socket_uid: row.get(8)?,
            netns_inode: row.get(9)?,
            netns_name: row.get(10)?,
            pids: row.get(11)?,
            process_name: row.get(12)?,
            uid: row.get(13)?,
            user: row.get(14)?,
            exe: row.get(15)?,
            exe_deleted: row.get(16)?,
            unit: row.get(17)?,
            container: row.get(18)?,
            ownership: row.get(19)?,
            ownership_detail: row.get(20)?,
            package_manager: row.get(21)?,
            package_name: row.get(22)?,
            package_arch: row.get(23)?,
        })
    }

    fn decode(self) -> Result<ListenerRecord, String> {
        let ownership = match self.ownership.as_str() {
            "package" => Ownership::Package(PackageRef {
                manager: self.package_manager.unwrap_or_default(),
                name: self
                    .package_name
                    .ok_or("ownership `package` without a package name")?,
                arch: self.package_arch,
            }),
            "unpackaged" => Ownership::Unpackaged,
            "unknown" => Ownership::Unknown(self.ownership_detail.unwrap_or_default()),
            "not-checked" => Ownership::NotChecked,
            other => return Err(format!("`{}` is not an ownership", other.escape_debug())),
        };
        let process = match self.process_name {
            None => None,
            Some(name) => Some(OwnerRecord {
                name,
                uid: decode_u32(self.uid.ok_or("owner without a uid")?)?,
                user: self.user,
                exe: self
                    .exe
                    .map(|bytes| PathBuf::from(OsString::from_vec(bytes))),
                exe_deleted: decode_bool(self.exe_deleted)?,
                unit: self.unit,
                container: self.container,
                ownership,
            }),
        };
        Ok(ListenerRecord {
            protocol: decode_protocol(&self.protocol)?,
            address: decode_address(&self.address)?,
            port: decode_port(self.port)?,
            scope: decode_scope(&self.scope)?,
            v6only: self.v6only.map(decode_bool).transpose()?,
            interface: self.interface,
            inode: u64_from_bits(self.inode),
            socket_uid: decode_u32(self.socket_uid)?,
            netns: Netns {
                inode: u64_from_bits(self.netns_inode),
                name: self.netns_name,
            },
            pids: decode_pids(&self.pids)?,
            process,
        })
    }
}
