//! The embedded fleet store: [`FleetStore`] in one SQLite file, the default of
//! `perimeter server`.
//!
//! The file may be the scan history's too ([`crate::SqliteStore`]): the fleet's
//! tables are all named `fleet_*`, and the fleet's schema version lives in its
//! own table (`fleet_schema`), since `PRAGMA user_version` is the history's.
//! Both share the application id that marks a perimeter database, so a file
//! either of them made is accepted by the other. Durability is the history's:
//! WAL with `synchronous = NORMAL`, every change one `IMMEDIATE` transaction.
//! Host states are stored compressed since fleet schema 2 (packed.rs); older
//! rows stay as the JSON text they were.

use std::convert::Infallible;
use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use time::OffsetDateTime;

use super::codec::{
    decode_opt_time, decode_role, decode_scope, decode_seq, decode_status, decode_time,
    encode_opt_time, encode_scope, encode_seq, encode_time, enrol_reason, environment_reason,
    exists_agent, judge_report, new_agent_row, not_found, status_action,
};
use super::codec::{
    decode_scan_args, decode_seed, decode_shard_state, decode_token_scope, decode_u32,
    encode_scan_args, encode_seed, held_check, judge_lease, lease_of, new_scan_job_row,
    scan_job_reason,
};
use super::packed::{pack, unpack};
use super::{
    Abandon, AgentRow, AgentStatus, EventRow, FleetApproval, FleetError, FleetStore, NewAgent,
    NewFleetApproval, NewReport, NewTrailEntry, ReportOutcome, Revocation, Role, StateBuilder,
    StateRow, TokenRow, TokenScope, TrailEntry, UserRow,
};
use super::{Lease, LeaseCheck, NewScanJob, ScanJobRow, ShardRow};

const BACKEND: &str = "sqlite";

/// The fleet's migrations, in order: `MIGRATIONS[i]` takes the fleet tables
/// from version `i` to `i + 1`, each in its own transaction. Released
/// migrations are never edited, only appended to.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/fleet/sqlite/0001_initial.sql"),
    include_str!("../../migrations/fleet/sqlite/0002_packed_states_and_pruning.sql"),
    include_str!("../../migrations/fleet/sqlite/0003_events_by_time.sql"),
    include_str!("../../migrations/fleet/sqlite/0004_scan_jobs.sql"),
];

/// SQLite's `application_id` of a perimeter database ("PRMT"), as
/// [`crate::SqliteStore`] writes it.
const APPLICATION_ID: i32 = 0x5052_4d54;

/// How long a writer waits for another process holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// [`FleetStore`] in one SQLite file.
#[derive(Debug)]
pub struct SqliteFleet {
    conn: Connection,
    /// The path, for errors (`:memory:` for an in-memory store).
    target: String,
}

/// Why an operation failed, before the backend and database are named.
#[derive(Debug)]
enum Failure {
    Sql(rusqlite::Error),
    /// A complete error (`Exists`, `NotFound`).
    Fleet(FleetError),
    /// A stored value that does not decode.
    Corrupt(String),
    /// A value given that cannot be stored (a time outside the range).
    Unstorable(String),
}

impl From<rusqlite::Error> for Failure {
    fn from(err: rusqlite::Error) -> Failure {
        Failure::Sql(err)
    }
}

impl SqliteFleet {
    /// The newest fleet schema version this binary knows.
    pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

    /// Opens (or creates) the fleet database at `path`: missing parent
    /// directories are created with mode 0700 and a new file with mode 0600.
    /// A file that belongs to another program, or whose fleet schema is newer
    /// than this binary's ([`FleetError::TooNew`]), is refused without being
    /// written to.
    pub fn open(path: &Path) -> Result<SqliteFleet, FleetError> {
        let target = path.display().to_string();
        crate::sqlite::prepare_file(path).map_err(|err| FleetError::Backend {
            backend: BACKEND,
            target: target.clone(),
            action: "create the database file".to_owned(),
            message: err.to_string(),
        })?;
        let conn = Connection::open(path).map_err(|err| FleetError::Backend {
            backend: BACKEND,
            target: target.clone(),
            action: "open the database".to_owned(),
            message: err.to_string(),
        })?;
        SqliteFleet::set_up(conn, target)
    }

    /// A fleet database that lives as long as the value, for tests.
    pub fn open_in_memory() -> Result<SqliteFleet, FleetError> {
        let target = ":memory:".to_owned();
        let conn = Connection::open_in_memory().map_err(|err| FleetError::Backend {
            backend: BACKEND,
            target: target.clone(),
            action: "open the database".to_owned(),
            message: err.to_string(),
        })?;
        SqliteFleet::set_up(conn, target)
    }

    fn set_up(conn: Connection, target: String) -> Result<SqliteFleet, FleetError> {
        let mut fleet = SqliteFleet { conn, target };
        fleet.run("open the database", |fleet| {
            fleet.conn.set_prepared_statement_cache_capacity(32);
            fleet.conn.busy_timeout(BUSY_TIMEOUT)?;
            // Until the version is known to be one this binary may write, only
            // read: a refused file is left exactly as it was.
            check_header(&fleet.conn)?;
            let version = fleet_version(&fleet.conn)?;
            if version > SqliteFleet::SCHEMA_VERSION {
                return Err(fleet.too_new(version));
            }
            crate::sqlite::switch_to_wal(&fleet.conn)?;
            fleet.conn.pragma_update(None, "synchronous", "NORMAL")?;
            fleet.conn.pragma_update(None, "foreign_keys", true)?;
            Ok(())
        })?;
        fleet.migrate()?;
        Ok(fleet)
    }

    /// Applies the migrations the file lacks, one transaction each, each
    /// reading the version again under the write lock (another process may
    /// have migrated meanwhile).
    fn migrate(&mut self) -> Result<(), FleetError> {
        loop {
            let done = self.write("migrate the fleet schema", |tx| {
                let version = fleet_version(tx)?;
                let Some(sql) = usize::try_from(version)
                    .ok()
                    .and_then(|idx| MIGRATIONS.get(idx))
                else {
                    return Ok(Some(version));
                };
                tx.execute_batch(sql)?;
                tx.execute("UPDATE fleet_schema SET version = ?1", [version + 1])?;
                let application_id: i32 =
                    tx.pragma_query_value(None, "application_id", |row| row.get(0))?;
                if application_id != APPLICATION_ID {
                    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
                }
                Ok(None)
            })?;
            match done {
                None => continue,
                Some(version) if version == SqliteFleet::SCHEMA_VERSION => return Ok(()),
                Some(version) if version > SqliteFleet::SCHEMA_VERSION => {
                    return Err(self.failed("migrate the fleet schema", self.too_new(version)));
                }
                Some(version) => {
                    return Err(self.failed(
                        "migrate the fleet schema",
                        Failure::Corrupt(format!("negative fleet schema version {version}")),
                    ));
                }
            }
        }
    }

    fn too_new(&self, found: i64) -> Failure {
        Failure::Fleet(FleetError::TooNew {
            backend: BACKEND,
            target: self.target.clone(),
            found,
            known: SqliteFleet::SCHEMA_VERSION,
        })
    }

    fn failed(&self, action: &str, failure: Failure) -> FleetError {
        match failure {
            Failure::Sql(err) => FleetError::Backend {
                backend: BACKEND,
                target: self.target.clone(),
                action: action.to_owned(),
                message: err.to_string(),
            },
            Failure::Fleet(err) => err,
            Failure::Corrupt(detail) => FleetError::Corrupt {
                backend: BACKEND,
                target: self.target.clone(),
                detail,
            },
            Failure::Unstorable(message) => FleetError::Backend {
                backend: BACKEND,
                target: self.target.clone(),
                action: action.to_owned(),
                message,
            },
        }
    }

    /// Runs `op` outside any transaction (reads, pragmas).
    fn run<T>(
        &mut self,
        action: &str,
        op: impl FnOnce(&mut SqliteFleet) -> Result<T, Failure>,
    ) -> Result<T, FleetError> {
        op(self).map_err(|failure| self.failed(action, failure))
    }

    /// Runs `op` against the connection, for reads.
    fn read<T>(
        &self,
        action: &str,
        op: impl FnOnce(&Connection) -> Result<T, Failure>,
    ) -> Result<T, FleetError> {
        op(&self.conn).map_err(|failure| self.failed(action, failure))
    }

    /// Runs `op` in one write transaction, committed when `op` succeeds and
    /// rolled back otherwise. `IMMEDIATE` takes the write lock first, so the
    /// rows `op` reads cannot change before it writes.
    fn write<T>(
        &mut self,
        action: &str,
        op: impl FnOnce(&Transaction<'_>) -> Result<T, Failure>,
    ) -> Result<T, FleetError> {
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = op(&tx)?;
            tx.commit()?;
            Ok(value)
        })();
        result.map_err(|failure| self.failed(action, failure))
    }

    /// Stores a report in one `IMMEDIATE` transaction: the chain judged on
    /// the agent's row, then (when it is to be stored) `next_state` given the
    /// latest stored state (read only when `want_latest`), then the writes.
    /// `next_state` runs before anything is written, so giving up (`Err`)
    /// writes nothing.
    fn record<E>(
        &mut self,
        report: &NewReport,
        want_latest: bool,
        mut next_state: impl FnMut(Option<StateRow>) -> Result<Option<String>, E>,
    ) -> Result<Result<ReportOutcome, E>, FleetError> {
        let action = format!("record report {} of agent {}", report.seq, report.agent_id);
        self.write(&action, |tx| {
            let agent: Option<(String, i64, String)> = tx
                .prepare_cached(
                    "SELECT status, last_seq, last_digest FROM fleet_agents WHERE id = ?1",
                )?
                .query_row([&report.agent_id], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?;
            let agent = agent
                .map(|(status, last_seq, last_digest)| {
                    let corrupt = |detail| {
                        Failure::Corrupt(format!("agent {}: {detail}", report.agent_id))
                    };
                    Ok::<_, Failure>((
                        decode_status(&status).map_err(corrupt)?,
                        decode_seq(last_seq).map_err(corrupt)?,
                        last_digest,
                    ))
                })
                .transpose()?;
            let judged = judge_report(
                agent
                    .as_ref()
                    .map(|(status, seq, digest)| (*status, *seq, digest.as_str())),
                report.seq,
                &report.digest,
            );
            if let Some(outcome) = judged {
                return Ok(Ok(outcome));
            }
            let seq = encode_seq(report.seq).map_err(Failure::Unstorable)?;
            let taken_at = time_column("taken time", report.taken_at)?;
            let received_at = time_column("received time", report.received_at)?;
            let latest = if want_latest {
                first(tx, LATEST_STATE, [&report.agent_id], state_from_row)?
            } else {
                None
            };
            let state = match next_state(latest) {
                Ok(state) => state,
                // Nothing written yet: committing the transaction is
                // rolling it back.
                Err(abandoned) => return Ok(Err(abandoned)),
            };
            if let Some(state) = &state {
                let packed = pack(state).map_err(Failure::Unstorable)?;
                tx.prepare_cached(
                    "INSERT INTO fleet_states (agent_id, seq, taken_at, received_at, state) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![report.agent_id, seq, taken_at, received_at, packed])?;
            }
            let mut insert_event = tx.prepare_cached(
                "INSERT INTO fleet_events (agent_id, seq, received_at, event) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for event in &report.events {
                insert_event.execute(params![report.agent_id, seq, received_at, event])?;
            }
            tx.prepare_cached(
                "UPDATE fleet_agents SET last_seq = ?2, last_digest = ?3, hostname = ?4, \
                 last_seen = ?5 WHERE id = ?1",
            )?
            .execute(params![
                report.agent_id,
                seq,
                report.digest,
                report.hostname,
                received_at
            ])?;
            Ok(Ok(ReportOutcome::Stored))
        })
    }
}

/// Refuses a file that is not perimeter's: one with another application id,
/// or with tables or a history version but no application id at all.
fn check_header(conn: &Connection) -> Result<(), Failure> {
    // One read transaction: the reads below see one state of the file, never
    // a first migration another process commits between them (its tables
    // without the application id read a moment before).
    let tx = conn.unchecked_transaction()?;
    let conn: &Connection = &tx;
    let application_id: i32 = conn.pragma_query_value(None, "application_id", |row| row.get(0))?;
    if application_id == APPLICATION_ID {
        return Ok(());
    }
    if application_id != 0 {
        return Err(Failure::Corrupt(format!(
            "not a perimeter database: its application id is {application_id:#010x}, \
             perimeter's is {APPLICATION_ID:#010x}"
        )));
    }
    let user_version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let n_objects: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))?;
    if user_version != 0 || n_objects != 0 {
        return Err(Failure::Corrupt(format!(
            "not a perimeter database: it has {n_objects} tables and indexes and schema version \
             {user_version} but no perimeter application id"
        )));
    }
    Ok(())
}

/// The fleet schema version: 0 before the first migration.
fn fleet_version(conn: &Connection) -> Result<i64, Failure> {
    let has_table: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'fleet_schema'",
        [],
        |row| row.get(0),
    )?;
    if !has_table {
        return Ok(0);
    }
    let (n_rows, version): (i64, Option<i64>) = conn.query_row(
        "SELECT count(*), max(version) FROM fleet_schema",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    match (n_rows, version) {
        (1, Some(version)) => Ok(version),
        _ => Err(Failure::Corrupt(format!(
            "fleet_schema has {n_rows} rows, not one"
        ))),
    }
}

fn time_column(what: &str, at: OffsetDateTime) -> Result<i64, Failure> {
    encode_time(what, at).map_err(Failure::Unstorable)
}

fn opt_time_column(what: &str, at: Option<OffsetDateTime>) -> Result<Option<i64>, Failure> {
    encode_opt_time(what, at).map_err(Failure::Unstorable)
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn insert_trail(
    tx: &Transaction<'_>,
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    subject: &str,
    reason: &str,
) -> Result<i64, Failure> {
    let at = time_column("trail time", at)?;
    tx.execute(
        "INSERT INTO fleet_trail (at, actor, action, subject, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, actor, action, subject, reason],
    )?;
    Ok(tx.last_insert_rowid())
}

const AGENT_COLUMNS: &str =
    "id, public_key, hostname, status, enrolled_at, environment, last_seq, last_digest, last_seen";

fn agent_from_row(row: &Row<'_>) -> Result<AgentRow, Failure> {
    let id: String = row.get(0)?;
    let corrupt = |detail: String| Failure::Corrupt(format!("agent {id}: {detail}"));
    let agent = AgentRow {
        public_key: row.get(1)?,
        hostname: row.get(2)?,
        status: decode_status(&row.get::<_, String>(3)?).map_err(corrupt)?,
        enrolled_at: decode_time(row.get(4)?).map_err(corrupt)?,
        environment: row.get(5)?,
        last_seq: decode_seq(row.get(6)?).map_err(corrupt)?,
        last_digest: row.get(7)?,
        last_seen: decode_opt_time(row.get(8)?).map_err(corrupt)?,
        id,
    };
    Ok(agent)
}

const STATE_COLUMNS: &str = "agent_id, seq, taken_at, received_at, state";

fn state_from_row(row: &Row<'_>) -> Result<StateRow, Failure> {
    let agent_id: String = row.get(0)?;
    let corrupt = |detail: String| Failure::Corrupt(format!("state of agent {agent_id}: {detail}"));
    // TEXT: a row from before schema 2, the JSON as it came; BLOB: packed.
    let text = match row.get_ref(4)? {
        ValueRef::Text(bytes) => String::from_utf8(bytes.to_vec())
            .map_err(|err| corrupt(format!("a state that is not UTF-8: {err}")))?,
        ValueRef::Blob(packed) => unpack(packed).map_err(corrupt)?,
        other => {
            return Err(corrupt(format!(
                "a state stored as {:?}",
                other.data_type()
            )));
        }
    };
    let state = StateRow {
        seq: decode_seq(row.get(1)?).map_err(corrupt)?,
        taken_at: decode_time(row.get(2)?).map_err(corrupt)?,
        received_at: decode_time(row.get(3)?).map_err(corrupt)?,
        state: text,
        agent_id,
    };
    Ok(state)
}

const LATEST_STATE: &str = "SELECT agent_id, seq, taken_at, received_at, state FROM fleet_states \
                            WHERE agent_id = ?1 ORDER BY id DESC LIMIT 1";

fn event_from_row(row: &Row<'_>) -> Result<EventRow, Failure> {
    let id: i64 = row.get(0)?;
    let corrupt = |detail: String| Failure::Corrupt(format!("event {id}: {detail}"));
    Ok(EventRow {
        id,
        agent_id: row.get(1)?,
        seq: decode_seq(row.get(2)?).map_err(corrupt)?,
        received_at: decode_time(row.get(3)?).map_err(corrupt)?,
        event: row.get(4)?,
    })
}

const APPROVAL_COLUMNS: &str = "id, scope_kind, scope_name, selector, approved_by, approved_at, \
                                reason, expires, revoked_by, revoked_at, revoked_reason";

fn approval_from_row(row: &Row<'_>) -> Result<FleetApproval, Failure> {
    let id: i64 = row.get(0)?;
    let corrupt = |detail: String| Failure::Corrupt(format!("approval {id}: {detail}"));
    let revoked_by: Option<String> = row.get(8)?;
    let revoked_at: Option<i64> = row.get(9)?;
    let revoked_reason: Option<String> = row.get(10)?;
    let revoked = match (revoked_by, revoked_at, revoked_reason) {
        (None, None, None) => None,
        (Some(by), Some(at), Some(reason)) => Some(Revocation {
            by,
            at: decode_time(at).map_err(corrupt)?,
            reason,
        }),
        _ => return Err(corrupt("a revocation with missing parts".to_owned())),
    };
    Ok(FleetApproval {
        id,
        scope: decode_scope(&row.get::<_, String>(1)?, row.get(2)?).map_err(corrupt)?,
        selector: row.get(3)?,
        approved_by: row.get(4)?,
        approved_at: decode_time(row.get(5)?).map_err(corrupt)?,
        reason: row.get(6)?,
        expires: decode_opt_time(row.get(7)?).map_err(corrupt)?,
        revoked,
    })
}

const USER_COLUMNS: &str = "name, role, password_hash, created_at, disabled";

fn user_from_row(row: &Row<'_>) -> Result<UserRow, Failure> {
    let name: String = row.get(0)?;
    let corrupt = |detail: String| Failure::Corrupt(format!("user {name}: {detail}"));
    let user = UserRow {
        role: decode_role(&row.get::<_, String>(1)?).map_err(corrupt)?,
        password_hash: row.get(2)?,
        created_at: decode_time(row.get(3)?).map_err(corrupt)?,
        disabled: row.get(4)?,
        name,
    };
    Ok(user)
}

const TOKEN_COLUMNS: &str =
    "t.id, t.user_name, u.role, t.label, t.created_at, t.expires, t.revoked, t.scope";

fn token_from_row(row: &Row<'_>) -> Result<TokenRow, Failure> {
    let id: i64 = row.get(0)?;
    let corrupt = |detail: String| Failure::Corrupt(format!("token {id}: {detail}"));
    Ok(TokenRow {
        id,
        user: row.get(1)?,
        role: decode_role(&row.get::<_, String>(2)?).map_err(corrupt)?,
        label: row.get(3)?,
        created_at: decode_time(row.get(4)?).map_err(corrupt)?,
        expires: decode_opt_time(row.get(5)?).map_err(corrupt)?,
        revoked: row.get(6)?,
        scope: decode_token_scope(&row.get::<_, String>(7)?).map_err(corrupt)?,
    })
}

fn trail_from_row(row: &Row<'_>) -> Result<TrailEntry, Failure> {
    let id: i64 = row.get(0)?;
    Ok(TrailEntry {
        id,
        at: decode_time(row.get(1)?)
            .map_err(|detail| Failure::Corrupt(format!("trail entry {id}: {detail}")))?,
        actor: row.get(2)?,
        action: row.get(3)?,
        subject: row.get(4)?,
        reason: row.get(5)?,
    })
}

/// Every row of a query, decoded.
fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&Row<'_>) -> Result<T, Failure>,
) -> Result<Vec<T>, Failure> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut decoded = Vec::new();
    while let Some(row) = rows.next()? {
        decoded.push(decode(row)?);
    }
    Ok(decoded)
}

const JOB_COLUMNS: &str = "j.id, j.created_by, j.created_at, j.scan_args, j.seed, j.shards, \
     j.vantage, j.lease_seconds, \
     (SELECT count(*) FROM fleet_scan_shards s WHERE s.job_id = j.id AND s.state = 'done'), \
     (SELECT count(*) FROM fleet_scan_shards s WHERE s.job_id = j.id AND s.state = 'leased')";

fn job_from_row(row: &Row<'_>) -> Result<ScanJobRow, Failure> {
    let id: i64 = row.get(0)?;
    let corrupt = |detail: String| Failure::Corrupt(format!("scan job {id}: {detail}"));
    Ok(ScanJobRow {
        id,
        created_by: row.get(1)?,
        created_at: decode_time(row.get(2)?).map_err(corrupt)?,
        scan_args: decode_scan_args(&row.get::<_, String>(3)?).map_err(corrupt)?,
        seed: decode_seed(row.get(4)?),
        shards: decode_u32("shard count", row.get(5)?).map_err(corrupt)?,
        vantage: row.get(6)?,
        lease_seconds: decode_u32("lease time", row.get(7)?).map_err(corrupt)?,
        done: decode_u32("done parts", row.get(8)?).map_err(corrupt)?,
        leased: decode_u32("leased parts", row.get(9)?).map_err(corrupt)?,
    })
}

const SHARD_COLUMNS: &str =
    "job_id, idx, state, node, leased_at, lease_expires, attempts, finished_at";

fn shard_from_row(row: &Row<'_>) -> Result<ShardRow, Failure> {
    let job_id: i64 = row.get(0)?;
    let index: i64 = row.get(1)?;
    let corrupt =
        |detail: String| Failure::Corrupt(format!("scan job {job_id} shard {index}: {detail}"));
    Ok(ShardRow {
        job_id,
        index: decode_u32("part", index).map_err(corrupt)?,
        state: decode_shard_state(&row.get::<_, String>(2)?).map_err(corrupt)?,
        node: row.get(3)?,
        leased_at: decode_opt_time(row.get(4)?).map_err(corrupt)?,
        lease_expires: decode_opt_time(row.get(5)?).map_err(corrupt)?,
        attempts: decode_u32("attempts", row.get(6)?).map_err(corrupt)?,
        finished_at: decode_opt_time(row.get(7)?).map_err(corrupt)?,
    })
}

/// The part a lease token holds, if it still holds one: `Err` says why not.
fn held_lease(tx: &Transaction<'_>, token: &str) -> Result<Result<(i64, i64), String>, Failure> {
    let found: Option<(i64, i64, String)> = tx
        .prepare_cached("SELECT job_id, idx, state FROM fleet_scan_shards WHERE lease_token = ?1")?
        .query_row([token], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    Ok(judge_lease(found))
}

/// The first row of a query, decoded.
fn first<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&Row<'_>) -> Result<T, Failure>,
) -> Result<Option<T>, Failure> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    rows.next()?.map(decode).transpose()
}

impl FleetStore for SqliteFleet {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn concurrent_handle(&self) -> Option<Box<dyn FleetStore>> {
        None
    }

    fn enrol_agent(&mut self, agent: &NewAgent) -> Result<AgentRow, FleetError> {
        self.write(&format!("enrol agent {}", agent.id), |tx| {
            let enrolled_at = time_column("enrolment time", agent.enrolled_at)?;
            let existing: Option<String> = tx
                .query_row(
                    "SELECT id FROM fleet_agents WHERE id = ?1 OR public_key = ?2 LIMIT 1",
                    params![agent.id, agent.public_key],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(existing) = existing {
                return Err(Failure::Fleet(exists_agent(&agent.id, &existing)));
            }
            tx.execute(
                "INSERT INTO fleet_agents (id, public_key, hostname, status, enrolled_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    agent.id,
                    agent.public_key,
                    agent.hostname,
                    agent.status.as_str(),
                    enrolled_at
                ],
            )?;
            insert_trail(
                tx,
                agent.enrolled_at,
                &format!("agent:{}", agent.id),
                "agent.enrol",
                &agent.id,
                &enrol_reason(agent),
            )?;
            Ok(new_agent_row(agent))
        })
    }

    fn agent(&self, id: &str) -> Result<Option<AgentRow>, FleetError> {
        self.read(&format!("look up agent {id}"), |conn| {
            first(
                conn,
                &format!("SELECT {AGENT_COLUMNS} FROM fleet_agents WHERE id = ?1"),
                [id],
                agent_from_row,
            )
        })
    }

    fn agents(&self) -> Result<Vec<AgentRow>, FleetError> {
        self.read("list agents", |conn| {
            collect(
                conn,
                &format!("SELECT {AGENT_COLUMNS} FROM fleet_agents ORDER BY row_id"),
                [],
                agent_from_row,
            )
        })
    }

    fn set_agent_status(
        &mut self,
        id: &str,
        status: AgentStatus,
        by: &str,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<(), FleetError> {
        self.write(&format!("set the status of agent {id}"), |tx| {
            let current: Option<String> = tx
                .query_row(
                    "SELECT status FROM fleet_agents WHERE id = ?1",
                    [id],
                    |row| row.get(0),
                )
                .optional()?;
            let Some(current) = current else {
                return Err(Failure::Fleet(not_found(format!("agent {id}"))));
            };
            let current = decode_status(&current)
                .map_err(|detail| Failure::Corrupt(format!("agent {id}: {detail}")))?;
            if current == AgentStatus::Revoked {
                return Err(Failure::Fleet(not_found(format!(
                    "agent {id} that is not revoked"
                ))));
            }
            if current == status {
                return Ok(());
            }
            tx.execute(
                "UPDATE fleet_agents SET status = ?2 WHERE id = ?1",
                params![id, status.as_str()],
            )?;
            insert_trail(tx, at, by, status_action(status), id, reason)?;
            Ok(())
        })
    }

    fn set_agent_environment(
        &mut self,
        id: &str,
        environment: Option<&str>,
        by: &str,
        at: OffsetDateTime,
    ) -> Result<(), FleetError> {
        self.write(&format!("set the environment of agent {id}"), |tx| {
            let current: Option<Option<String>> = tx
                .query_row(
                    "SELECT environment FROM fleet_agents WHERE id = ?1",
                    [id],
                    |row| row.get(0),
                )
                .optional()?;
            let Some(current) = current else {
                return Err(Failure::Fleet(not_found(format!("agent {id}"))));
            };
            if current.as_deref() == environment {
                return Ok(());
            }
            tx.execute(
                "UPDATE fleet_agents SET environment = ?2 WHERE id = ?1",
                params![id, environment],
            )?;
            insert_trail(
                tx,
                at,
                by,
                "agent.environment",
                id,
                &environment_reason(environment),
            )?;
            Ok(())
        })
    }

    fn record_report(&mut self, report: &NewReport) -> Result<ReportOutcome, FleetError> {
        let recorded = self.record(report, false, |_| Ok::<_, Infallible>(report.state.clone()))?;
        match recorded {
            Ok(outcome) => Ok(outcome),
            Err(never) => match never {},
        }
    }

    fn record_report_with(
        &mut self,
        report: &NewReport,
        next_state: &mut StateBuilder<'_>,
    ) -> Result<Result<ReportOutcome, Abandon>, FleetError> {
        self.record(report, true, next_state)
    }

    fn prune_states(&mut self, before: OffsetDateTime, limit: usize) -> Result<usize, FleetError> {
        self.write("prune old states", |tx| {
            let before = time_column("cutoff", before)?;
            // A state goes when the one that followed it (the next id of its
            // agent) was received before the cutoff: it stopped being its
            // host's state before then. Each agent's latest has no follower.
            let n_deleted = tx
                .prepare_cached(
                    "DELETE FROM fleet_states WHERE id IN ( \
                     SELECT s.id FROM fleet_states s WHERE s.received_at < ?1 \
                     AND (SELECT n.received_at FROM fleet_states n \
                          WHERE n.agent_id = s.agent_id AND n.id > s.id \
                          ORDER BY n.id LIMIT 1) < ?1 \
                     ORDER BY s.received_at LIMIT ?2)",
                )?
                .execute(params![before, sql_limit(limit)])?;
            Ok(n_deleted)
        })
    }

    fn latest_state(&self, agent_id: &str) -> Result<Option<StateRow>, FleetError> {
        self.read(&format!("load the state of agent {agent_id}"), |conn| {
            first(conn, LATEST_STATE, [agent_id], state_from_row)
        })
    }

    fn states(&self, agent_id: &str, limit: usize) -> Result<Vec<StateRow>, FleetError> {
        self.read(&format!("list the states of agent {agent_id}"), |conn| {
            collect(
                conn,
                &format!(
                    "SELECT {STATE_COLUMNS} FROM fleet_states WHERE agent_id = ?1 \
                     ORDER BY id DESC LIMIT ?2"
                ),
                params![agent_id, sql_limit(limit)],
                state_from_row,
            )
        })
    }

    fn events(
        &self,
        agent_id: Option<&str>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<EventRow>, FleetError> {
        self.read("list events", |conn| {
            collect(
                conn,
                "SELECT id, agent_id, seq, received_at, event FROM fleet_events \
                 WHERE id > ?1 AND (?2 IS NULL OR agent_id = ?2) ORDER BY id LIMIT ?3",
                params![after, agent_id, sql_limit(limit)],
                event_from_row,
            )
        })
    }

    fn events_received(
        &self,
        window: std::ops::Range<OffsetDateTime>,
        limit: usize,
    ) -> Result<Vec<EventRow>, FleetError> {
        self.read("list events by time", |conn| {
            let from = time_column("window start", window.start)?;
            let to = time_column("window end", window.end)?;
            collect(
                conn,
                "SELECT id, agent_id, seq, received_at, event FROM fleet_events \
                 WHERE received_at >= ?1 AND received_at < ?2 ORDER BY id LIMIT ?3",
                params![from, to, sql_limit(limit)],
                event_from_row,
            )
        })
    }

    fn add_approval(&mut self, approval: &NewFleetApproval) -> Result<FleetApproval, FleetError> {
        self.write("add an approval", |tx| {
            let (kind, name) = encode_scope(&approval.scope);
            let approved_at = time_column("approval time", approval.approved_at)?;
            let expires = opt_time_column("expiry", approval.expires)?;
            tx.execute(
                "INSERT INTO fleet_approvals (scope_kind, scope_name, selector, approved_by, \
                 approved_at, reason, expires) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    kind,
                    name,
                    approval.selector,
                    approval.approved_by,
                    approved_at,
                    approval.reason,
                    expires
                ],
            )?;
            let id = tx.last_insert_rowid();
            insert_trail(
                tx,
                approval.approved_at,
                &approval.approved_by,
                "approval.add",
                &id.to_string(),
                &approval.reason,
            )?;
            Ok(FleetApproval {
                id,
                scope: approval.scope.clone(),
                selector: approval.selector.clone(),
                approved_by: approval.approved_by.clone(),
                approved_at: approval.approved_at,
                reason: approval.reason.clone(),
                expires: approval.expires,
                revoked: None,
            })
        })
    }

    fn revoke_approval(
        &mut self,
        id: i64,
        by: &str,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<(), FleetError> {
        self.write(&format!("revoke approval {id}"), |tx| {
            let revoked: Option<bool> = tx
                .query_row(
                    "SELECT revoked_at IS NOT NULL FROM fleet_approvals WHERE id = ?1",
                    [id],
                    |row| row.get(0),
                )
                .optional()?;
            match revoked {
                None => return Err(Failure::Fleet(not_found(format!("approval {id}")))),
                Some(true) => {
                    return Err(Failure::Fleet(not_found(format!(
                        "approval {id} that is not revoked"
                    ))));
                }
                Some(false) => {}
            }
            let at_column = time_column("revocation time", at)?;
            tx.execute(
                "UPDATE fleet_approvals SET revoked_by = ?2, revoked_at = ?3, revoked_reason = ?4 \
                 WHERE id = ?1",
                params![id, by, at_column, reason],
            )?;
            insert_trail(tx, at, by, "approval.revoke", &id.to_string(), reason)?;
            Ok(())
        })
    }

    fn approvals(&self, include_revoked: bool) -> Result<Vec<FleetApproval>, FleetError> {
        self.read("list approvals", |conn| {
            collect(
                conn,
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM fleet_approvals \
                     WHERE ?1 OR revoked_at IS NULL ORDER BY id"
                ),
                [include_revoked],
                approval_from_row,
            )
        })
    }

    fn add_user(
        &mut self,
        name: &str,
        role: Role,
        password_hash: &str,
        by: &str,
        at: OffsetDateTime,
    ) -> Result<(), FleetError> {
        self.write(&format!("add user {name}"), |tx| {
            let created_at = time_column("creation time", at)?;
            let taken: bool = tx.query_row(
                "SELECT count(*) > 0 FROM fleet_users WHERE name = ?1",
                [name],
                |row| row.get(0),
            )?;
            if taken {
                return Err(Failure::Fleet(FleetError::Exists {
                    what: format!("user {name}"),
                }));
            }
            tx.execute(
                "INSERT INTO fleet_users (name, role, password_hash, created_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![name, role.as_str(), password_hash, created_at],
            )?;
            insert_trail(
                tx,
                at,
                by,
                "user.add",
                name,
                &format!("role {}", role.as_str()),
            )?;
            Ok(())
        })
    }

    fn set_user_disabled(
        &mut self,
        name: &str,
        disabled: bool,
        by: &str,
        at: OffsetDateTime,
    ) -> Result<(), FleetError> {
        self.write(&format!("disable or enable user {name}"), |tx| {
            let now: Option<bool> = tx
                .query_row(
                    "SELECT disabled FROM fleet_users WHERE name = ?1",
                    [name],
                    |row| row.get(0),
                )
                .optional()?;
            match now {
                None => return Err(Failure::Fleet(not_found(format!("user {name}")))),
                Some(now) if now == disabled => return Ok(()),
                Some(_) => {}
            }
            tx.execute(
                "UPDATE fleet_users SET disabled = ?2 WHERE name = ?1",
                params![name, disabled],
            )?;
            let action = if disabled {
                "user.disable"
            } else {
                "user.enable"
            };
            insert_trail(tx, at, by, action, name, "")?;
            Ok(())
        })
    }

    fn user(&self, name: &str) -> Result<Option<UserRow>, FleetError> {
        self.read(&format!("look up user {name}"), |conn| {
            first(
                conn,
                &format!("SELECT {USER_COLUMNS} FROM fleet_users WHERE name = ?1"),
                [name],
                user_from_row,
            )
        })
    }

    fn users(&self) -> Result<Vec<UserRow>, FleetError> {
        self.read("list users", |conn| {
            collect(
                conn,
                &format!("SELECT {USER_COLUMNS} FROM fleet_users ORDER BY row_id"),
                [],
                user_from_row,
            )
        })
    }

    fn add_scoped_token(
        &mut self,
        token_hash: &str,
        user: &str,
        label: &str,
        at: OffsetDateTime,
        expires: Option<OffsetDateTime>,
        scope: TokenScope,
    ) -> Result<TokenRow, FleetError> {
        self.write(&format!("add a token of user {user}"), |tx| {
            let created_at = time_column("creation time", at)?;
            let expires_column = opt_time_column("expiry", expires)?;
            let role: Option<String> = tx
                .query_row(
                    "SELECT role FROM fleet_users WHERE name = ?1",
                    [user],
                    |row| row.get(0),
                )
                .optional()?;
            let Some(role) = role else {
                return Err(Failure::Fleet(not_found(format!("user {user}"))));
            };
            let role = decode_role(&role)
                .map_err(|detail| Failure::Corrupt(format!("user {user}: {detail}")))?;
            let taken: bool = tx.query_row(
                "SELECT count(*) > 0 FROM fleet_tokens WHERE token_hash = ?1",
                [token_hash],
                |row| row.get(0),
            )?;
            if taken {
                return Err(Failure::Fleet(FleetError::Exists {
                    what: "a token with this hash".to_owned(),
                }));
            }
            tx.execute(
                "INSERT INTO fleet_tokens \
                 (token_hash, user_name, label, created_at, expires, scope) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    token_hash,
                    user,
                    label,
                    created_at,
                    expires_column,
                    scope.as_str()
                ],
            )?;
            let id = tx.last_insert_rowid();
            let action = match scope {
                TokenScope::Full => "token.add",
                TokenScope::Scanner => "token.add-scanner",
            };
            insert_trail(tx, at, user, action, &id.to_string(), label)?;
            Ok(TokenRow {
                id,
                user: user.to_owned(),
                role,
                label: label.to_owned(),
                created_at: at,
                expires,
                revoked: false,
                scope,
            })
        })
    }

    fn token(&self, token_hash: &str) -> Result<Option<TokenRow>, FleetError> {
        self.read("look up a token", |conn| {
            first(
                conn,
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM fleet_tokens t \
                     JOIN fleet_users u ON u.name = t.user_name WHERE t.token_hash = ?1"
                ),
                [token_hash],
                token_from_row,
            )
        })
    }

    fn revoke_token(&mut self, id: i64, by: &str, at: OffsetDateTime) -> Result<(), FleetError> {
        self.write(&format!("revoke token {id}"), |tx| {
            let revoked: Option<bool> = tx
                .query_row(
                    "SELECT revoked FROM fleet_tokens WHERE id = ?1",
                    [id],
                    |row| row.get(0),
                )
                .optional()?;
            match revoked {
                None => return Err(Failure::Fleet(not_found(format!("token {id}")))),
                Some(true) => {
                    return Err(Failure::Fleet(not_found(format!(
                        "token {id} that is not revoked"
                    ))));
                }
                Some(false) => {}
            }
            tx.execute("UPDATE fleet_tokens SET revoked = 1 WHERE id = ?1", [id])?;
            insert_trail(tx, at, by, "token.revoke", &id.to_string(), "")?;
            Ok(())
        })
    }

    fn append_trail(&mut self, entry: &NewTrailEntry) -> Result<i64, FleetError> {
        self.write("append to the trail", |tx| {
            insert_trail(
                tx,
                entry.at,
                &entry.actor,
                &entry.action,
                &entry.subject,
                &entry.reason,
            )
        })
    }

    fn trail(&self, limit: usize) -> Result<Vec<TrailEntry>, FleetError> {
        self.read("read the trail", |conn| {
            collect(
                conn,
                "SELECT id, at, actor, action, subject, reason FROM fleet_trail \
                 ORDER BY id DESC LIMIT ?1",
                [sql_limit(limit)],
                trail_from_row,
            )
        })
    }

    fn add_scan_job(&mut self, job: &NewScanJob) -> Result<ScanJobRow, FleetError> {
        self.write("store a scan job", |tx| {
            let created_at = time_column("creation time", job.created_at)?;
            tx.execute(
                "INSERT INTO fleet_scan_jobs \
                 (created_by, created_at, scan_args, seed, shards, vantage, lease_seconds) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    job.created_by,
                    created_at,
                    encode_scan_args(&job.scan_args),
                    encode_seed(job.seed),
                    job.shards,
                    job.vantage,
                    job.lease_seconds
                ],
            )?;
            let id = tx.last_insert_rowid();
            let mut insert =
                tx.prepare_cached("INSERT INTO fleet_scan_shards (job_id, idx) VALUES (?1, ?2)")?;
            for index in 0..job.shards {
                insert.execute(params![id, index])?;
            }
            insert_trail(
                tx,
                job.created_at,
                &job.created_by,
                "scan.submit",
                &id.to_string(),
                &scan_job_reason(job),
            )?;
            Ok(new_scan_job_row(id, job))
        })
    }

    fn scan_jobs(&self, limit: usize) -> Result<Vec<ScanJobRow>, FleetError> {
        self.read("read the scan jobs", |conn| {
            collect(
                conn,
                &format!("SELECT {JOB_COLUMNS} FROM fleet_scan_jobs j ORDER BY j.id DESC LIMIT ?1"),
                [sql_limit(limit)],
                job_from_row,
            )
        })
    }

    fn scan_job(&self, id: i64) -> Result<Option<(ScanJobRow, Vec<ShardRow>)>, FleetError> {
        self.read(&format!("read scan job {id}"), |conn| {
            let Some(job) = first(
                conn,
                &format!("SELECT {JOB_COLUMNS} FROM fleet_scan_jobs j WHERE j.id = ?1"),
                [id],
                job_from_row,
            )?
            else {
                return Ok(None);
            };
            let shards = collect(
                conn,
                &format!(
                    "SELECT {SHARD_COLUMNS} FROM fleet_scan_shards WHERE job_id = ?1 ORDER BY idx"
                ),
                [id],
                shard_from_row,
            )?;
            Ok(Some((job, shards)))
        })
    }

    fn lease_shard(
        &mut self,
        node: &str,
        vantage: Option<&str>,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Lease>, FleetError> {
        self.write(&format!("lease a scan shard to {node}"), |tx| {
            let now_column = time_column("lease time", now)?;
            // The write lock IMMEDIATE takes is all the concurrency control
            // SQLite needs: no other writer runs until this commits.
            let next: Option<(i64, i64)> = tx
                .prepare_cached(
                    "SELECT s.job_id, s.idx FROM fleet_scan_shards s \
                     JOIN fleet_scan_jobs j ON j.id = s.job_id \
                     WHERE (s.state = 'pending' OR (s.state = 'leased' AND s.lease_expires <= ?1)) \
                     AND (j.vantage IS NULL OR j.vantage = ?2) \
                     ORDER BY s.job_id, s.idx LIMIT 1",
                )?
                .query_row(params![now_column, vantage], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            let Some((job_id, index)) = next else {
                return Ok(None);
            };
            let (expires, attempts): (i64, i64) = tx
                .prepare_cached(
                    "UPDATE fleet_scan_shards SET state = 'leased', node = ?3, lease_token = ?4, \
                     leased_at = ?5, attempts = attempts + 1, lease_expires = ?5 + \
                     (SELECT lease_seconds FROM fleet_scan_jobs WHERE id = ?1) * 1000000000 \
                     WHERE job_id = ?1 AND idx = ?2 RETURNING lease_expires, attempts",
                )?
                .query_row(params![job_id, index, node, token, now_column], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            let job = first(
                tx,
                &format!("SELECT {JOB_COLUMNS} FROM fleet_scan_jobs j WHERE j.id = ?1"),
                [job_id],
                job_from_row,
            )?
            .ok_or_else(|| Failure::Corrupt(format!("scan job {job_id} vanished")))?;
            lease_of(job, index, token, expires, attempts)
                .map(Some)
                .map_err(Failure::Corrupt)
        })
    }

    fn renew_lease(&mut self, token: &str, now: OffsetDateTime) -> Result<LeaseCheck, FleetError> {
        self.write("renew a scan shard's lease", |tx| {
            let held = match held_lease(tx, token)? {
                Ok(held) => held,
                Err(lost) => return Ok(LeaseCheck::Lost(lost)),
            };
            let now_column = time_column("renewal time", now)?;
            let expires: i64 = tx
                .prepare_cached(
                    "UPDATE fleet_scan_shards SET lease_expires = ?2 + \
                     (SELECT lease_seconds FROM fleet_scan_jobs j WHERE j.id = job_id) \
                     * 1000000000 WHERE lease_token = ?1 RETURNING lease_expires",
                )?
                .query_row(params![token, now_column], |row| row.get(0))?;
            held_check(held, expires).map_err(Failure::Corrupt)
        })
    }

    fn finish_shard(
        &mut self,
        token: &str,
        now: OffsetDateTime,
        run: &str,
    ) -> Result<LeaseCheck, FleetError> {
        self.write("store a scan shard's run", |tx| {
            let held = match held_lease(tx, token)? {
                Ok(held) => held,
                Err(lost) => return Ok(LeaseCheck::Lost(lost)),
            };
            let now_column = time_column("finish time", now)?;
            let packed = pack(run).map_err(Failure::Unstorable)?;
            let expires: i64 = tx
                .prepare_cached(
                    "UPDATE fleet_scan_shards SET state = 'done', finished_at = ?2, run = ?3 \
                     WHERE lease_token = ?1 RETURNING lease_expires",
                )?
                .query_row(params![token, now_column, packed], |row| row.get(0))?;
            held_check(held, expires).map_err(Failure::Corrupt)
        })
    }

    fn shard_runs(&self, job_id: i64) -> Result<Vec<(u32, String)>, FleetError> {
        self.read(&format!("read the runs of scan job {job_id}"), |conn| {
            collect(
                conn,
                "SELECT idx, run FROM fleet_scan_shards \
                 WHERE job_id = ?1 AND state = 'done' ORDER BY idx",
                [job_id],
                |row| {
                    let index: i64 = row.get(0)?;
                    let corrupt = |detail: String| {
                        Failure::Corrupt(format!("scan job {job_id} shard {index}: {detail}"))
                    };
                    let index = decode_u32("part", index).map_err(corrupt)?;
                    let run = match row.get_ref(1)? {
                        ValueRef::Blob(packed) => unpack(packed).map_err(corrupt)?,
                        other => {
                            return Err(corrupt(format!(
                                "a run stored as {:?}, not a packed BLOB",
                                other.data_type()
                            )));
                        }
                    };
                    Ok((index, run))
                },
            )
        })
    }
}
