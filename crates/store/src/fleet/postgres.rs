//! The fleet store in PostgreSQL, for fleets whose server wants a database of
//! its own (or several servers sharing one).
//!
//! The sync `postgres` client, like rusqlite beside it: the store is
//! synchronous by design and the server calls it through `spawn_blocking`.
//! (sqlx was not used: its SQLite driver would link a second libsqlite3-sys,
//! which cannot sit beside rusqlite's.)
//!
//! Behaviour the SQLite backend does not need:
//! - a small pool of connections ([`PostgresFleet::POOL_SIZE`]), shared by the store and the
//!   handles it gives out ([`FleetStore::concurrent_handle`]), so the
//!   server's calls run side by side; each connection prepares each statement
//!   once and keeps it, so a call costs one round trip per statement, and a
//!   read of one statement runs without `BEGIN` and `COMMIT`;
//! - migrations run under a transaction-scoped advisory lock, so two servers
//!   starting at once do not both migrate; each migration is its own
//!   transaction and reads the version again under the lock;
//! - `record_report` locks the agent's row (`SELECT ... FOR UPDATE`), so two
//!   servers (or connections) receiving the same agent's reports decide its
//!   chain one after the other; the latest state is read after the lock, in
//!   a statement of its own, so it is the one the previous report committed;
//!   the new state and the agent's row are written by one statement; a
//!   report carrying events also takes an
//!   advisory lock before inserting them, so events become visible in id
//!   order and a reader polling with `after` never skips one that committed
//!   late;
//! - a lost connection (the server restarted) is reconnected once, by the next
//!   call that takes it from the pool: when the connection is already known
//!   to be closed, or when `BEGIN` itself fails because the connection is
//!   gone, the store connects again and runs the operation on the new
//!   connection. An operation that fails after `BEGIN` is never retried (it
//!   may have committed, or half-run): its error is returned, and the call
//!   after it reconnects. A read (one statement, no transaction) that fails
//!   because the connection is gone is read again once on a new connection.
//!
//! Errors name the database by its parsed connection settings (hosts, ports,
//! user, database name), rebuilt from the parsed configuration, so a password
//! in the URL or conninfo never reaches an error message.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use ::postgres::config::Host;
use ::postgres::error::SqlState;
use ::postgres::types::ToSql;
use ::postgres::{Client, Config, GenericClient, NoTls, Row, Statement, Transaction};
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
use super::{
    Abandon, AgentRow, AgentStatus, EventRow, FleetApproval, FleetError, FleetStore, NewAgent,
    NewFleetApproval, NewReport, NewTrailEntry, ReportOutcome, Revocation, Role, StateBuilder,
    StateRow, TokenRow, TokenScope, TrailEntry, UserRow,
};
use super::{Lease, LeaseCheck, NewScanJob, ScanJobRow, ShardRow};

const BACKEND: &str = "postgresql";

/// The fleet's migrations, in order: `MIGRATIONS[i]` takes the database from
/// version `i` to `i + 1`. Released migrations are never edited, only appended
/// to.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/fleet/postgres/0001_initial.sql"),
    include_str!("../../migrations/fleet/postgres/0002_pruning.sql"),
    include_str!("../../migrations/fleet/postgres/0003_events_by_time.sql"),
    include_str!("../../migrations/fleet/postgres/0004_scan_jobs.sql"),
];

/// The advisory lock key of migrations ("prmtmigr").
const MIGRATION_LOCK: i64 = 0x7072_6d74_6d69_6772;

/// The advisory lock key taken before inserting events ("prmtevnt").
const EVENTS_LOCK: i64 = 0x7072_6d74_6576_6e74;

/// [`FleetStore`] in a PostgreSQL database: a pool of connections shared by
/// the store and every handle [`FleetStore::concurrent_handle`] gives out.
pub struct PostgresFleet {
    shared: Arc<Shared>,
}

/// What the store and its handles share.
struct Shared {
    config: Config,
    /// The database as errors name it: without any password.
    target: String,
    pool: Pool,
}

impl fmt::Debug for PostgresFleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresFleet")
            .field("target", &self.shared.target)
            .finish_non_exhaustive()
    }
}

/// A small pool of connections: the idle ones in a stack (the most recently
/// used first, so a quiet server keeps using the same warm connection and its
/// prepared statements), a count of those open, and a condition variable for
/// callers waiting for one.
///
/// Written here rather than taken from r2d2: the store's reconnection rule
/// (once, only before or at `BEGIN`, so an operation never runs twice; errors
/// that never show the password) has to decide what happens to a broken
/// connection, and each connection carries its statement cache. r2d2 would
/// test each connection with a query at checkout (a round trip per call) or
/// not at all, open connections from background threads, and turn a refused
/// connection into a wait of its `connection_timeout`; what is left for the
/// pool itself (a stack, a count, a condition variable) is short.
struct Pool {
    state: Mutex<PoolState>,
    freed: Condvar,
    max: usize,
}

struct PoolState {
    idle: Vec<Connection>,
    /// Connections that exist: idle, checked out, or being opened.
    n_open: usize,
}

/// One connection and the statements prepared on it.
struct Connection {
    client: Client,
    /// Keyed by their SQL: the store's statements are a fixed set (a few
    /// dozen), so the cache is bounded by the code, not by the data.
    statements: HashMap<String, Statement>,
}

impl Connection {
    fn new(client: Client) -> Connection {
        Connection {
            client,
            statements: HashMap::new(),
        }
    }
}

/// A connection taken from the pool, put back when dropped (a broken one too:
/// the next call that takes it reconnects it).
struct Checkout<'a> {
    pool: &'a Pool,
    connection: Option<Connection>,
}

impl Checkout<'_> {
    fn connection(&mut self) -> Option<&mut Connection> {
        self.connection.as_mut()
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        match self.connection.take() {
            Some(connection) => state.idle.push(connection),
            None => state.n_open = state.n_open.saturating_sub(1),
        }
        drop(state);
        self.pool.freed.notify_one();
    }
}

impl Drop for Pool {
    /// A `postgres::Client` closes its connection by blocking on a runtime
    /// of its own, which panics on a thread that drives async tasks (the
    /// server's, whose last reference to the store may go at shutdown). So
    /// the connections are closed on a thread of their own, waited for.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let idle = std::mem::take(&mut state.idle);
        if idle.is_empty() {
            return;
        }
        std::thread::scope(|scope| {
            // Without a thread (none can be made) they close here, as any
            // client would.
            let _closer = std::thread::Builder::new()
                .name("fleet-pg-close".to_owned())
                .spawn_scoped(scope, move || drop(idle));
        });
    }
}

impl Pool {
    fn new(first: Connection, max: usize) -> Pool {
        Pool {
            state: Mutex::new(PoolState {
                idle: vec![first],
                n_open: 1,
            }),
            freed: Condvar::new(),
            max: max.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // The state is a stack and a count, each changed in one step: a
        // panic elsewhere cannot leave it half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection, else a new one while fewer than `max` are open
    /// (`connect` opens it, outside the lock), else the first one put back.
    fn checkout(
        &self,
        connect: impl FnOnce() -> Result<Client, FleetError>,
    ) -> Result<Checkout<'_>, FleetError> {
        let mut state = self.lock();
        loop {
            if let Some(connection) = state.idle.pop() {
                return Ok(Checkout {
                    pool: self,
                    connection: Some(connection),
                });
            }
            if state.n_open < self.max {
                state.n_open += 1;
                drop(state);
                // On failure the empty checkout gives its place back.
                let mut checkout = Checkout {
                    pool: self,
                    connection: None,
                };
                checkout.connection = Some(Connection::new(connect()?));
                return Ok(checkout);
            }
            state = self
                .freed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A connection (or its open transaction) with its statement cache: every
/// statement is prepared once per connection, then only bound and executed,
/// one round trip each.
struct Session<'a, C> {
    client: &'a mut C,
    statements: &'a mut HashMap<String, Statement>,
}

/// A session inside a transaction.
type Tx<'a, 'b> = Session<'a, Transaction<'b>>;

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl<C: GenericClient> Session<'_, C> {
    fn prepared(&mut self, sql: &str) -> Result<Statement, ::postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, ::postgres::Error> {
        let statement = self.prepared(sql)?;
        self.client.query(&statement, params)
    }

    fn query_opt(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, ::postgres::Error> {
        let statement = self.prepared(sql)?;
        self.client.query_opt(&statement, params)
    }

    fn query_one(&mut self, sql: &str, params: Params<'_>) -> Result<Row, ::postgres::Error> {
        let statement = self.prepared(sql)?;
        self.client.query_one(&statement, params)
    }

    fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, ::postgres::Error> {
        let statement = self.prepared(sql)?;
        self.client.execute(&statement, params)
    }

    /// Statements without parameters, run as they are (migrations): never
    /// cached.
    fn batch_execute(&mut self, sql: &str) -> Result<(), ::postgres::Error> {
        self.client.batch_execute(sql)
    }
}

/// Why an operation failed, before the backend and database are named.
#[derive(Debug)]
enum Failure {
    Sql(::postgres::Error),
    /// A complete error (`Exists`, `NotFound`, `TooNew`).
    Fleet(FleetError),
    /// A stored value that does not decode.
    Corrupt(String),
    /// A value given that cannot be stored (a time outside the range).
    Unstorable(String),
}

impl From<::postgres::Error> for Failure {
    fn from(err: ::postgres::Error) -> Failure {
        Failure::Sql(err)
    }
}

impl PostgresFleet {
    /// The newest fleet schema version this binary knows.
    pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

    /// How many connections one store (and every handle on it) opens at
    /// most. Reports of different agents run beside each other, each on its
    /// own connection: a report is a handful of round trips, mostly waiting,
    /// so a few connections keep a server's cores busy; more would only queue
    /// inside PostgreSQL. Several servers sharing a database each open this
    /// many.
    pub const POOL_SIZE: usize = 8;

    /// Connects to the database `url` names, a `postgres://` or
    /// `postgresql://` URL or a libpq key=value string (`host=/run/postgresql
    /// dbname=perimeter`; a host that is a path is a Unix socket directory),
    /// and migrates its fleet schema. A database whose fleet schema is newer
    /// than this binary's is refused ([`FleetError::TooNew`]) and left as it
    /// was. TLS is not offered: use a Unix socket or a trusted network. One
    /// connection is opened now, up to [`PostgresFleet::POOL_SIZE`] as calls
    /// need them.
    pub fn connect(url: &str) -> Result<PostgresFleet, FleetError> {
        PostgresFleet::connect_with_pool(url, PostgresFleet::POOL_SIZE)
    }

    /// [`PostgresFleet::connect`] with at most `max_connections` (at least
    /// one).
    pub fn connect_with_pool(
        url: &str,
        max_connections: usize,
    ) -> Result<PostgresFleet, FleetError> {
        let config: Config = url.parse().map_err(|err| FleetError::Backend {
            backend: BACKEND,
            target: "(a connection string that does not parse)".to_owned(),
            action: "read the connection string".to_owned(),
            message: describe(&err),
        })?;
        let target = describe_config(&config);
        let client = config.connect(NoTls).map_err(|err| FleetError::Backend {
            backend: BACKEND,
            target: target.clone(),
            action: "connect".to_owned(),
            message: describe(&err),
        })?;
        let fleet = PostgresFleet {
            shared: Arc::new(Shared {
                config,
                target,
                pool: Pool::new(Connection::new(client), max_connections),
            }),
        };
        fleet.migrate()?;
        Ok(fleet)
    }

    /// The database as errors name it: hosts, ports, user and database name,
    /// never a password.
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// Applies the migrations the database lacks, one transaction each, each
    /// under the migration lock and reading the version again under it.
    fn migrate(&self) -> Result<(), FleetError> {
        loop {
            let migrated = self.run("migrate the fleet schema", |tx| {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
                let version = fleet_version(tx)?;
                if version > PostgresFleet::SCHEMA_VERSION {
                    return Err(self.too_new(version));
                }
                let Some(sql) = usize::try_from(version)
                    .ok()
                    .and_then(|idx| MIGRATIONS.get(idx))
                else {
                    return if version == PostgresFleet::SCHEMA_VERSION {
                        Ok(false)
                    } else {
                        Err(Failure::Corrupt(format!(
                            "negative fleet schema version {version}"
                        )))
                    };
                };
                tx.batch_execute(sql)?;
                tx.execute("UPDATE fleet_schema SET version = $1", &[&(version + 1)])?;
                Ok(true)
            })?;
            if !migrated {
                return Ok(());
            }
        }
    }

    fn too_new(&self, found: i64) -> Failure {
        Failure::Fleet(FleetError::TooNew {
            backend: BACKEND,
            target: self.shared.target.clone(),
            found,
            known: PostgresFleet::SCHEMA_VERSION,
        })
    }

    fn failed(&self, action: &str, failure: Failure) -> FleetError {
        let target = || self.shared.target.clone();
        match failure {
            Failure::Sql(err) => FleetError::Backend {
                backend: BACKEND,
                target: target(),
                action: action.to_owned(),
                message: describe(&err),
            },
            Failure::Fleet(err) => err,
            Failure::Corrupt(detail) => FleetError::Corrupt {
                backend: BACKEND,
                target: target(),
                detail,
            },
            Failure::Unstorable(message) => FleetError::Backend {
                backend: BACKEND,
                target: target(),
                action: action.to_owned(),
                message,
            },
        }
    }

    /// A connection from the pool; a new one is opened (with the same
    /// errors as [`PostgresFleet::connect`]'s) while fewer than the pool's
    /// size are open.
    fn checkout(&self) -> Result<Checkout<'_>, FleetError> {
        let shared = &self.shared;
        shared.pool.checkout(|| {
            shared
                .config
                .connect(NoTls)
                .map_err(|err| FleetError::Backend {
                    backend: BACKEND,
                    target: shared.target.clone(),
                    action: "connect".to_owned(),
                    message: describe(&err),
                })
        })
    }

    fn reconnect(&self, action: &str) -> Result<Connection, FleetError> {
        self.shared
            .config
            .connect(NoTls)
            .map(Connection::new)
            .map_err(|err| FleetError::Backend {
                backend: BACKEND,
                target: self.shared.target.clone(),
                action: format!("connect again to {action} (the connection was lost)"),
                message: describe(&err),
            })
    }

    /// A checked-out connection, reconnected first when it is known to be
    /// closed; and whether it was.
    fn connection<'c>(
        &self,
        checkout: &'c mut Checkout<'_>,
        action: &str,
    ) -> Result<(&'c mut Connection, bool), FleetError> {
        let internal = || FleetError::Backend {
            backend: BACKEND,
            target: self.shared.target.clone(),
            action: action.to_owned(),
            message: "the pool handed out no connection".to_owned(),
        };
        let connection = checkout.connection().ok_or_else(internal)?;
        if connection.client.is_closed() {
            *connection = self.reconnect(action)?;
            return Ok((connection, true));
        }
        Ok((connection, false))
    }

    /// Runs `op` in one transaction on a connection of the pool, committed
    /// when `op` succeeds and rolled back otherwise. A lost connection is
    /// reconnected once, as the module's documentation says: only before or
    /// at `BEGIN`, so `op` runs at most once.
    fn run<T>(
        &self,
        action: &str,
        mut op: impl FnMut(&mut Tx<'_, '_>) -> Result<T, Failure>,
    ) -> Result<T, FleetError> {
        let mut checkout = self.checkout()?;
        let (connection, mut reconnected) = self.connection(&mut checkout, action)?;
        loop {
            let Connection { client, statements } = &mut *connection;
            let lost = match client.transaction() {
                Ok(mut transaction) => {
                    let result = op(&mut Session {
                        client: &mut transaction,
                        statements,
                    })
                    .and_then(|value| {
                        transaction.commit()?;
                        Ok(value)
                    });
                    return result.map_err(|failure| self.failed(action, failure));
                }
                Err(err) => err,
            };
            if reconnected || !(client.is_closed() || is_connection_lost(&lost)) {
                return Err(self.failed(action, Failure::Sql(lost)));
            }
            *connection = self.reconnect(action)?;
            reconnected = true;
        }
    }

    /// Runs `op`, one statement that only reads, outside any transaction (a
    /// statement sees one snapshot by itself; `BEGIN` and `COMMIT` would be
    /// two more round trips). Reading twice changes nothing, so a read that
    /// finds its connection lost reconnects once and reads again.
    fn read<T>(
        &self,
        action: &str,
        mut op: impl FnMut(&mut Session<'_, Client>) -> Result<T, Failure>,
    ) -> Result<T, FleetError> {
        let mut checkout = self.checkout()?;
        let (connection, mut reconnected) = self.connection(&mut checkout, action)?;
        loop {
            let Connection { client, statements } = &mut *connection;
            let result = op(&mut Session { client, statements });
            match result {
                Err(Failure::Sql(err))
                    if !reconnected && (client.is_closed() || is_connection_lost(&err)) =>
                {
                    *connection = self.reconnect(action)?;
                    reconnected = true;
                }
                other => return other.map_err(|failure| self.failed(action, failure)),
            }
        }
    }

    /// Stores a report in one transaction of four round trips when nothing
    /// else is asked (`BEGIN`; the agent's row locked and the chain judged;
    /// the new state and the agent's row written by one statement; `COMMIT`),
    /// one more to read the latest state when `want_latest` (after the lock,
    /// in its own statement: one that took the lock would have read it from
    /// a snapshot older than the report it waited for), and the events'
    /// lock and rows when there are events. `next_state` runs before anything
    /// is written, so giving up (`Err`) writes nothing.
    fn record<E>(
        &self,
        report: &NewReport,
        want_latest: bool,
        mut next_state: impl FnMut(Option<StateRow>) -> Result<Option<String>, E>,
    ) -> Result<Result<ReportOutcome, E>, FleetError> {
        let action = format!("record report {} of agent {}", report.seq, report.agent_id);
        self.run(&action, |tx| {
            // The row lock makes concurrent reports of one agent (two servers,
            // two connections) take their turns: the second sees the first's
            // sequence once it commits.
            let agent = tx
                .query_opt(
                    "SELECT status, last_seq, last_digest FROM fleet_agents WHERE id = $1 \
                     FOR UPDATE",
                    &[&report.agent_id],
                )?
                .map(|row| {
                    let corrupt =
                        |detail| Failure::Corrupt(format!("agent {}: {detail}", report.agent_id));
                    Ok::<_, Failure>((
                        decode_status(row.try_get(0)?).map_err(corrupt)?,
                        decode_seq(row.try_get(1)?).map_err(corrupt)?,
                        row.try_get::<_, String>(2)?,
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
                tx.query_opt(LATEST_STATE, &[&report.agent_id])?
                    .as_ref()
                    .map(state_from_row)
                    .transpose()?
            } else {
                None
            };
            let state = match next_state(latest) {
                Ok(state) => state,
                // Nothing written yet: committing is rolling back.
                Err(abandoned) => return Ok(Err(abandoned)),
            };
            // The state (when there is one) and the agent's row in one
            // statement: a data-modifying WITH runs whether or not it is read.
            tx.execute(
                "WITH new_state AS ( \
                     INSERT INTO fleet_states (agent_id, seq, taken_at, received_at, state) \
                     SELECT $1::TEXT, $2::BIGINT, $3::BIGINT, $4::BIGINT, $6::TEXT \
                     WHERE $6::TEXT IS NOT NULL) \
                 UPDATE fleet_agents SET last_seq = $2, last_digest = $5, hostname = $7, \
                 last_seen = $4 WHERE id = $1",
                &[
                    &report.agent_id,
                    &seq,
                    &taken_at,
                    &received_at,
                    &report.digest,
                    &state,
                    &report.hostname,
                ],
            )?;
            if !report.events.is_empty() {
                // Taken last and held to the commit: event ids are handed
                // out and committed in one order across all writers.
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENTS_LOCK])?;
                for event in &report.events {
                    tx.execute(
                        "INSERT INTO fleet_events (agent_id, seq, received_at, event) \
                         VALUES ($1, $2, $3, $4)",
                        &[&report.agent_id, &seq, &received_at, event],
                    )?;
                }
            }
            Ok(Ok(ReportOutcome::Stored))
        })
    }
}

/// Whether an error says the connection is gone (closed, an I/O error, the
/// server shutting down or not up yet) rather than that a statement failed.
fn is_connection_lost(err: &::postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(code) = err.code() {
        return [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code);
    }
    std::error::Error::source(err).is_some_and(|source| source.is::<std::io::Error>())
}

/// An error with its cause: the client's own `Display` says only "db error".
fn describe(err: &::postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return text;
    }
    match std::error::Error::source(err) {
        Some(source) => format!("{err}: {source}"),
        None => err.to_string(),
    }
}

/// The connection settings that name a database, with no password:
/// `host=/run/postgresql port=5432 user=perimeter dbname=fleet`.
fn describe_config(config: &Config) -> String {
    let mut parts = Vec::new();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        parts.push(format!("host={}", hosts.join(",")));
    }
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        parts.push(format!("port={}", ports.join(",")));
    }
    if let Some(user) = config.get_user() {
        parts.push(format!("user={user}"));
    }
    if let Some(dbname) = config.get_dbname() {
        parts.push(format!("dbname={dbname}"));
    }
    if parts.is_empty() {
        "(default settings)".to_owned()
    } else {
        parts.join(" ")
    }
}

/// The fleet schema version: 0 before the first migration.
fn fleet_version(tx: &mut Tx<'_, '_>) -> Result<i64, Failure> {
    let has_table: bool = tx
        .query_one("SELECT to_regclass('fleet_schema') IS NOT NULL", &[])?
        .try_get(0)?;
    if !has_table {
        return Ok(0);
    }
    let row = tx.query_one("SELECT count(*), max(version) FROM fleet_schema", &[])?;
    let n_rows: i64 = row.try_get(0)?;
    let version: Option<i64> = row.try_get(1)?;
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

/// A unique key taken by a concurrent writer between our check and our insert
/// is `Exists`, as if the check had seen it.
fn unique_or_sql(err: ::postgres::Error, what: impl FnOnce() -> String) -> Failure {
    if err.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        Failure::Fleet(FleetError::Exists { what: what() })
    } else {
        Failure::Sql(err)
    }
}

fn insert_trail(
    tx: &mut Tx<'_, '_>,
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    subject: &str,
    reason: &str,
) -> Result<i64, Failure> {
    let at = time_column("trail time", at)?;
    Ok(tx
        .query_one(
            "INSERT INTO fleet_trail (at, actor, action, subject, reason) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&at, &actor, &action, &subject, &reason],
        )?
        .try_get(0)?)
}

const AGENT_COLUMNS: &str =
    "id, public_key, hostname, status, enrolled_at, environment, last_seq, last_digest, last_seen";

fn agent_from_row(row: &Row) -> Result<AgentRow, Failure> {
    let id: String = row.try_get(0)?;
    let corrupt = |detail: String| Failure::Corrupt(format!("agent {id}: {detail}"));
    let agent = AgentRow {
        public_key: row.try_get(1)?,
        hostname: row.try_get(2)?,
        status: decode_status(row.try_get(3)?).map_err(corrupt)?,
        enrolled_at: decode_time(row.try_get(4)?).map_err(corrupt)?,
        environment: row.try_get(5)?,
        last_seq: decode_seq(row.try_get(6)?).map_err(corrupt)?,
        last_digest: row.try_get(7)?,
        last_seen: decode_opt_time(row.try_get(8)?).map_err(corrupt)?,
        id,
    };
    Ok(agent)
}

const STATE_COLUMNS: &str = "agent_id, seq, taken_at, received_at, state";

const LATEST_STATE: &str = "SELECT agent_id, seq, taken_at, received_at, state FROM fleet_states \
                            WHERE agent_id = $1 ORDER BY id DESC LIMIT 1";

fn state_from_row(row: &Row) -> Result<StateRow, Failure> {
    let agent_id: String = row.try_get(0)?;
    let corrupt = |detail: String| Failure::Corrupt(format!("state of agent {agent_id}: {detail}"));
    let state = StateRow {
        seq: decode_seq(row.try_get(1)?).map_err(corrupt)?,
        taken_at: decode_time(row.try_get(2)?).map_err(corrupt)?,
        received_at: decode_time(row.try_get(3)?).map_err(corrupt)?,
        state: row.try_get(4)?,
        agent_id,
    };
    Ok(state)
}

fn event_from_row(row: &Row) -> Result<EventRow, Failure> {
    let id: i64 = row.try_get(0)?;
    let corrupt = |detail: String| Failure::Corrupt(format!("event {id}: {detail}"));
    Ok(EventRow {
        id,
        agent_id: row.try_get(1)?,
        seq: decode_seq(row.try_get(2)?).map_err(corrupt)?,
        received_at: decode_time(row.try_get(3)?).map_err(corrupt)?,
        event: row.try_get(4)?,
    })
}

const APPROVAL_COLUMNS: &str = "id, scope_kind, scope_name, selector, approved_by, approved_at, \
                                reason, expires, revoked_by, revoked_at, revoked_reason";

fn approval_from_row(row: &Row) -> Result<FleetApproval, Failure> {
    let id: i64 = row.try_get(0)?;
    let corrupt = |detail: String| Failure::Corrupt(format!("approval {id}: {detail}"));
    let revoked_by: Option<String> = row.try_get(8)?;
    let revoked_at: Option<i64> = row.try_get(9)?;
    let revoked_reason: Option<String> = row.try_get(10)?;
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
        scope: decode_scope(row.try_get(1)?, row.try_get(2)?).map_err(corrupt)?,
        selector: row.try_get(3)?,
        approved_by: row.try_get(4)?,
        approved_at: decode_time(row.try_get(5)?).map_err(corrupt)?,
        reason: row.try_get(6)?,
        expires: decode_opt_time(row.try_get(7)?).map_err(corrupt)?,
        revoked,
    })
}

const USER_COLUMNS: &str = "name, role, password_hash, created_at, disabled";

fn user_from_row(row: &Row) -> Result<UserRow, Failure> {
    let name: String = row.try_get(0)?;
    let corrupt = |detail: String| Failure::Corrupt(format!("user {name}: {detail}"));
    let user = UserRow {
        role: decode_role(row.try_get(1)?).map_err(corrupt)?,
        password_hash: row.try_get(2)?,
        created_at: decode_time(row.try_get(3)?).map_err(corrupt)?,
        disabled: row.try_get(4)?,
        name,
    };
    Ok(user)
}

const TOKEN_COLUMNS: &str =
    "t.id, t.user_name, u.role, t.label, t.created_at, t.expires, t.revoked, t.scope";

fn token_from_row(row: &Row) -> Result<TokenRow, Failure> {
    let id: i64 = row.try_get(0)?;
    let corrupt = |detail: String| Failure::Corrupt(format!("token {id}: {detail}"));
    Ok(TokenRow {
        id,
        user: row.try_get(1)?,
        role: decode_role(row.try_get(2)?).map_err(corrupt)?,
        label: row.try_get(3)?,
        created_at: decode_time(row.try_get(4)?).map_err(corrupt)?,
        expires: decode_opt_time(row.try_get(5)?).map_err(corrupt)?,
        revoked: row.try_get(6)?,
        scope: decode_token_scope(row.try_get(7)?).map_err(corrupt)?,
    })
}

fn trail_from_row(row: &Row) -> Result<TrailEntry, Failure> {
    let id: i64 = row.try_get(0)?;
    Ok(TrailEntry {
        id,
        at: decode_time(row.try_get(1)?)
            .map_err(|detail| Failure::Corrupt(format!("trail entry {id}: {detail}")))?,
        actor: row.try_get(2)?,
        action: row.try_get(3)?,
        subject: row.try_get(4)?,
        reason: row.try_get(5)?,
    })
}

const JOB_COLUMNS: &str = "j.id, j.created_by, j.created_at, j.scan_args, j.seed, j.shards, \
     j.vantage, j.lease_seconds, \
     (SELECT count(*) FROM fleet_scan_shards s WHERE s.job_id = j.id AND s.state = 'done'), \
     (SELECT count(*) FROM fleet_scan_shards s WHERE s.job_id = j.id AND s.state = 'leased')";

fn job_from_row(row: &Row) -> Result<ScanJobRow, Failure> {
    let id: i64 = row.try_get(0)?;
    let corrupt = |detail: String| Failure::Corrupt(format!("scan job {id}: {detail}"));
    Ok(ScanJobRow {
        id,
        created_by: row.try_get(1)?,
        created_at: decode_time(row.try_get(2)?).map_err(corrupt)?,
        scan_args: decode_scan_args(row.try_get(3)?).map_err(corrupt)?,
        seed: decode_seed(row.try_get(4)?),
        shards: decode_u32("shard count", row.try_get(5)?).map_err(corrupt)?,
        vantage: row.try_get(6)?,
        lease_seconds: decode_u32("lease time", row.try_get(7)?).map_err(corrupt)?,
        done: decode_u32("done parts", row.try_get(8)?).map_err(corrupt)?,
        leased: decode_u32("leased parts", row.try_get(9)?).map_err(corrupt)?,
    })
}

const SHARD_COLUMNS: &str =
    "job_id, idx, state, node, leased_at, lease_expires, attempts, finished_at";

fn shard_from_row(row: &Row) -> Result<ShardRow, Failure> {
    let job_id: i64 = row.try_get(0)?;
    let index: i64 = row.try_get(1)?;
    let corrupt =
        |detail: String| Failure::Corrupt(format!("scan job {job_id} shard {index}: {detail}"));
    Ok(ShardRow {
        job_id,
        index: decode_u32("part", index).map_err(corrupt)?,
        state: decode_shard_state(row.try_get(2)?).map_err(corrupt)?,
        node: row.try_get(3)?,
        leased_at: decode_opt_time(row.try_get(4)?).map_err(corrupt)?,
        lease_expires: decode_opt_time(row.try_get(5)?).map_err(corrupt)?,
        attempts: decode_u32("attempts", row.try_get(6)?).map_err(corrupt)?,
        finished_at: decode_opt_time(row.try_get(7)?).map_err(corrupt)?,
    })
}

/// The part a lease token holds, locked, if it still holds one: `Err` says
/// why not.
fn held_lease(tx: &mut Tx<'_, '_>, token: &str) -> Result<Result<(i64, i64), String>, Failure> {
    let found = tx
        .query_opt(
            "SELECT job_id, idx, state FROM fleet_scan_shards WHERE lease_token = $1 FOR UPDATE",
            &[&token],
        )?
        .map(|row| Ok::<_, Failure>((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .transpose()?;
    Ok(judge_lease(found))
}

fn decode_all<T>(
    rows: Vec<Row>,
    decode: impl Fn(&Row) -> Result<T, Failure>,
) -> Result<Vec<T>, Failure> {
    rows.iter().map(decode).collect()
}

impl FleetStore for PostgresFleet {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn concurrent_handle(&self) -> Option<Box<dyn FleetStore>> {
        Some(Box::new(PostgresFleet {
            shared: Arc::clone(&self.shared),
        }))
    }

    fn enrol_agent(&mut self, agent: &NewAgent) -> Result<AgentRow, FleetError> {
        self.run(&format!("enrol agent {}", agent.id), |tx| {
            let enrolled_at = time_column("enrolment time", agent.enrolled_at)?;
            let existing = tx.query_opt(
                "SELECT id FROM fleet_agents WHERE id = $1 OR public_key = $2 LIMIT 1",
                &[&agent.id, &agent.public_key],
            )?;
            if let Some(existing) = existing {
                let existing: String = existing.try_get(0)?;
                return Err(Failure::Fleet(exists_agent(&agent.id, &existing)));
            }
            tx.execute(
                "INSERT INTO fleet_agents (id, public_key, hostname, status, enrolled_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &agent.id,
                    &agent.public_key,
                    &agent.hostname,
                    &agent.status.as_str(),
                    &enrolled_at,
                ],
            )
            .map_err(|err| unique_or_sql(err, || format!("agent {} or its key", agent.id)))?;
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
        self.read(&format!("look up agent {id}"), |db| {
            db.query_opt(
                &format!("SELECT {AGENT_COLUMNS} FROM fleet_agents WHERE id = $1"),
                &[&id],
            )?
            .as_ref()
            .map(agent_from_row)
            .transpose()
        })
    }

    fn agents(&self) -> Result<Vec<AgentRow>, FleetError> {
        self.read("list agents", |db| {
            let rows = db.query(
                &format!("SELECT {AGENT_COLUMNS} FROM fleet_agents ORDER BY row_id"),
                &[],
            )?;
            decode_all(rows, agent_from_row)
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
        self.run(&format!("set the status of agent {id}"), |tx| {
            let Some(current) = tx.query_opt(
                "SELECT status FROM fleet_agents WHERE id = $1 FOR UPDATE",
                &[&id],
            )?
            else {
                return Err(Failure::Fleet(not_found(format!("agent {id}"))));
            };
            let current = decode_status(current.try_get(0)?)
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
                "UPDATE fleet_agents SET status = $2 WHERE id = $1",
                &[&id, &status.as_str()],
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
        self.run(&format!("set the environment of agent {id}"), |tx| {
            let Some(current) = tx.query_opt(
                "SELECT environment FROM fleet_agents WHERE id = $1 FOR UPDATE",
                &[&id],
            )?
            else {
                return Err(Failure::Fleet(not_found(format!("agent {id}"))));
            };
            let current: Option<&str> = current.try_get(0)?;
            if current == environment {
                return Ok(());
            }
            tx.execute(
                "UPDATE fleet_agents SET environment = $2 WHERE id = $1",
                &[&id, &environment],
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
        self.run("prune old states", |tx| {
            let before = time_column("cutoff", before)?;
            // A state goes when the one that followed it (the next id of its
            // agent) was received before the cutoff: it stopped being its
            // host's state before then. Each agent's latest has no follower.
            let n_deleted = tx.execute(
                "DELETE FROM fleet_states WHERE id IN ( \
                 SELECT s.id FROM fleet_states s WHERE s.received_at < $1 \
                 AND (SELECT n.received_at FROM fleet_states n \
                      WHERE n.agent_id = s.agent_id AND n.id > s.id \
                      ORDER BY n.id LIMIT 1) < $1 \
                 ORDER BY s.received_at LIMIT $2)",
                &[&before, &sql_limit(limit)],
            )?;
            Ok(usize::try_from(n_deleted).unwrap_or(usize::MAX))
        })
    }

    fn latest_state(&self, agent_id: &str) -> Result<Option<StateRow>, FleetError> {
        self.read(&format!("load the state of agent {agent_id}"), |db| {
            db.query_opt(LATEST_STATE, &[&agent_id])?
                .as_ref()
                .map(state_from_row)
                .transpose()
        })
    }

    fn states(&self, agent_id: &str, limit: usize) -> Result<Vec<StateRow>, FleetError> {
        self.read(&format!("list the states of agent {agent_id}"), |db| {
            let rows = db.query(
                &format!(
                    "SELECT {STATE_COLUMNS} FROM fleet_states WHERE agent_id = $1 \
                     ORDER BY id DESC LIMIT $2"
                ),
                &[&agent_id, &sql_limit(limit)],
            )?;
            decode_all(rows, state_from_row)
        })
    }

    fn events(
        &self,
        agent_id: Option<&str>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<EventRow>, FleetError> {
        self.read("list events", |db| {
            let rows = db.query(
                "SELECT id, agent_id, seq, received_at, event FROM fleet_events \
                 WHERE id > $1 AND ($2::TEXT IS NULL OR agent_id = $2) ORDER BY id LIMIT $3",
                &[&after, &agent_id, &sql_limit(limit)],
            )?;
            decode_all(rows, event_from_row)
        })
    }

    fn events_received(
        &self,
        window: std::ops::Range<OffsetDateTime>,
        limit: usize,
    ) -> Result<Vec<EventRow>, FleetError> {
        self.run("list events by time", |tx| {
            let from = time_column("window start", window.start)?;
            let to = time_column("window end", window.end)?;
            let rows = tx.query(
                "SELECT id, agent_id, seq, received_at, event FROM fleet_events \
                 WHERE received_at >= $1 AND received_at < $2 ORDER BY id LIMIT $3",
                &[&from, &to, &sql_limit(limit)],
            )?;
            decode_all(rows, event_from_row)
        })
    }

    fn add_approval(&mut self, approval: &NewFleetApproval) -> Result<FleetApproval, FleetError> {
        self.run("add an approval", |tx| {
            let (kind, name) = encode_scope(&approval.scope);
            let approved_at = time_column("approval time", approval.approved_at)?;
            let expires = opt_time_column("expiry", approval.expires)?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO fleet_approvals (scope_kind, scope_name, selector, approved_by, \
                     approved_at, reason, expires) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     RETURNING id",
                    &[
                        &kind,
                        &name,
                        &approval.selector,
                        &approval.approved_by,
                        &approved_at,
                        &approval.reason,
                        &expires,
                    ],
                )?
                .try_get(0)?;
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
        self.run(&format!("revoke approval {id}"), |tx| {
            let revoked: Option<bool> = tx
                .query_opt(
                    "SELECT revoked_at IS NOT NULL FROM fleet_approvals WHERE id = $1 FOR UPDATE",
                    &[&id],
                )?
                .map(|row| row.try_get(0))
                .transpose()?;
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
                "UPDATE fleet_approvals SET revoked_by = $2, revoked_at = $3, revoked_reason = $4 \
                 WHERE id = $1",
                &[&id, &by, &at_column, &reason],
            )?;
            insert_trail(tx, at, by, "approval.revoke", &id.to_string(), reason)?;
            Ok(())
        })
    }

    fn approvals(&self, include_revoked: bool) -> Result<Vec<FleetApproval>, FleetError> {
        self.read("list approvals", |db| {
            let rows = db.query(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM fleet_approvals \
                     WHERE $1 OR revoked_at IS NULL ORDER BY id"
                ),
                &[&include_revoked],
            )?;
            decode_all(rows, approval_from_row)
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
        let exists = || format!("user {name}");
        self.run(&format!("add user {name}"), |tx| {
            let created_at = time_column("creation time", at)?;
            let taken = tx
                .query_opt("SELECT 1 FROM fleet_users WHERE name = $1", &[&name])?
                .is_some();
            if taken {
                return Err(Failure::Fleet(FleetError::Exists { what: exists() }));
            }
            tx.execute(
                "INSERT INTO fleet_users (name, role, password_hash, created_at) \
                 VALUES ($1, $2, $3, $4)",
                &[&name, &role.as_str(), &password_hash, &created_at],
            )
            .map_err(|err| unique_or_sql(err, exists))?;
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
        self.run(&format!("disable or enable user {name}"), |tx| {
            let now: Option<bool> = tx
                .query_opt(
                    "SELECT disabled FROM fleet_users WHERE name = $1 FOR UPDATE",
                    &[&name],
                )?
                .map(|row| row.try_get(0))
                .transpose()?;
            match now {
                None => return Err(Failure::Fleet(not_found(format!("user {name}")))),
                Some(now) if now == disabled => return Ok(()),
                Some(_) => {}
            }
            tx.execute(
                "UPDATE fleet_users SET disabled = $2 WHERE name = $1",
                &[&name, &disabled],
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
        self.read(&format!("look up user {name}"), |db| {
            db.query_opt(
                &format!("SELECT {USER_COLUMNS} FROM fleet_users WHERE name = $1"),
                &[&name],
            )?
            .as_ref()
            .map(user_from_row)
            .transpose()
        })
    }

    fn users(&self) -> Result<Vec<UserRow>, FleetError> {
        self.read("list users", |db| {
            let rows = db.query(
                &format!("SELECT {USER_COLUMNS} FROM fleet_users ORDER BY row_id"),
                &[],
            )?;
            decode_all(rows, user_from_row)
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
        let exists = || "a token with this hash".to_owned();
        self.run(&format!("add a token of user {user}"), |tx| {
            let created_at = time_column("creation time", at)?;
            let expires_column = opt_time_column("expiry", expires)?;
            // FOR SHARE: the user cannot vanish (or change role) before the
            // token naming them commits.
            let Some(role) = tx.query_opt(
                "SELECT role FROM fleet_users WHERE name = $1 FOR SHARE",
                &[&user],
            )?
            else {
                return Err(Failure::Fleet(not_found(format!("user {user}"))));
            };
            let role = decode_role(role.try_get(0)?)
                .map_err(|detail| Failure::Corrupt(format!("user {user}: {detail}")))?;
            let taken = tx
                .query_opt(
                    "SELECT 1 FROM fleet_tokens WHERE token_hash = $1",
                    &[&token_hash],
                )?
                .is_some();
            if taken {
                return Err(Failure::Fleet(FleetError::Exists { what: exists() }));
            }
            let id: i64 = tx
                .query_one(
                    "INSERT INTO fleet_tokens \
                     (token_hash, user_name, label, created_at, expires, scope) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[
                        &token_hash,
                        &user,
                        &label,
                        &created_at,
                        &expires_column,
                        &scope.as_str(),
                    ],
                )
                .map_err(|err| unique_or_sql(err, exists))?
                .try_get(0)?;
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
        self.read("look up a token", |db| {
            db.query_opt(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM fleet_tokens t \
                     JOIN fleet_users u ON u.name = t.user_name WHERE t.token_hash = $1"
                ),
                &[&token_hash],
            )?
            .as_ref()
            .map(token_from_row)
            .transpose()
        })
    }

    fn revoke_token(&mut self, id: i64, by: &str, at: OffsetDateTime) -> Result<(), FleetError> {
        self.run(&format!("revoke token {id}"), |tx| {
            let revoked: Option<bool> = tx
                .query_opt(
                    "SELECT revoked FROM fleet_tokens WHERE id = $1 FOR UPDATE",
                    &[&id],
                )?
                .map(|row| row.try_get(0))
                .transpose()?;
            match revoked {
                None => return Err(Failure::Fleet(not_found(format!("token {id}")))),
                Some(true) => {
                    return Err(Failure::Fleet(not_found(format!(
                        "token {id} that is not revoked"
                    ))));
                }
                Some(false) => {}
            }
            tx.execute(
                "UPDATE fleet_tokens SET revoked = TRUE WHERE id = $1",
                &[&id],
            )?;
            insert_trail(tx, at, by, "token.revoke", &id.to_string(), "")?;
            Ok(())
        })
    }

    fn append_trail(&mut self, entry: &NewTrailEntry) -> Result<i64, FleetError> {
        self.run("append to the trail", |tx| {
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
        self.read("read the trail", |db| {
            let rows = db.query(
                "SELECT id, at, actor, action, subject, reason FROM fleet_trail \
                 ORDER BY id DESC LIMIT $1",
                &[&sql_limit(limit)],
            )?;
            decode_all(rows, trail_from_row)
        })
    }

    fn add_scan_job(&mut self, job: &NewScanJob) -> Result<ScanJobRow, FleetError> {
        self.run("store a scan job", |tx| {
            let created_at = time_column("creation time", job.created_at)?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO fleet_scan_jobs \
                     (created_by, created_at, scan_args, seed, shards, vantage, lease_seconds) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    &[
                        &job.created_by,
                        &created_at,
                        &encode_scan_args(&job.scan_args),
                        &encode_seed(job.seed),
                        &i64::from(job.shards),
                        &job.vantage,
                        &i64::from(job.lease_seconds),
                    ],
                )?
                .try_get(0)?;
            // One statement for every part, however many.
            tx.execute(
                "INSERT INTO fleet_scan_shards (job_id, idx) \
                 SELECT $1::BIGINT, generate_series(0, $2::BIGINT - 1)",
                &[&id, &i64::from(job.shards)],
            )?;
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
        self.read("read the scan jobs", |db| {
            let rows = db.query(
                &format!("SELECT {JOB_COLUMNS} FROM fleet_scan_jobs j ORDER BY j.id DESC LIMIT $1"),
                &[&sql_limit(limit)],
            )?;
            decode_all(rows, job_from_row)
        })
    }

    fn scan_job(&self, id: i64) -> Result<Option<(ScanJobRow, Vec<ShardRow>)>, FleetError> {
        // One transaction: the job's counts and its parts from one snapshot.
        self.run(&format!("read scan job {id}"), |tx| {
            let Some(job) = tx.query_opt(
                &format!("SELECT {JOB_COLUMNS} FROM fleet_scan_jobs j WHERE j.id = $1"),
                &[&id],
            )?
            else {
                return Ok(None);
            };
            let job = job_from_row(&job)?;
            let rows = tx.query(
                &format!(
                    "SELECT {SHARD_COLUMNS} FROM fleet_scan_shards WHERE job_id = $1 ORDER BY idx"
                ),
                &[&id],
            )?;
            Ok(Some((job, decode_all(rows, shard_from_row)?)))
        })
    }

    fn lease_shard(
        &mut self,
        node: &str,
        vantage: Option<&str>,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Lease>, FleetError> {
        self.run(&format!("lease a scan shard to {node}"), |tx| {
            let now_column = time_column("lease time", now)?;
            // SKIP LOCKED: nodes asking at once each take a different part,
            // none waits for another's transaction. The row lock is held to
            // the commit, so a part is never leased twice at once.
            let Some(leased) = tx.query_opt(
                "WITH next AS ( \
                     SELECT s.job_id, s.idx FROM fleet_scan_shards s \
                     JOIN fleet_scan_jobs j ON j.id = s.job_id \
                     WHERE (s.state = 'pending' \
                            OR (s.state = 'leased' AND s.lease_expires <= $1)) \
                     AND (j.vantage IS NULL OR j.vantage = $2) \
                     ORDER BY s.job_id, s.idx LIMIT 1 \
                     FOR UPDATE OF s SKIP LOCKED) \
                 UPDATE fleet_scan_shards u SET state = 'leased', node = $3, \
                     lease_token = $4, leased_at = $1, attempts = u.attempts + 1, \
                     lease_expires = $1 + j.lease_seconds * 1000000000 \
                 FROM next, fleet_scan_jobs j \
                 WHERE u.job_id = next.job_id AND u.idx = next.idx AND j.id = u.job_id \
                 RETURNING u.job_id, u.idx, u.lease_expires, u.attempts",
                &[&now_column, &vantage, &node, &token],
            )?
            else {
                return Ok(None);
            };
            let job_id: i64 = leased.try_get(0)?;
            let job = tx
                .query_opt(
                    &format!("SELECT {JOB_COLUMNS} FROM fleet_scan_jobs j WHERE j.id = $1"),
                    &[&job_id],
                )?
                .ok_or_else(|| Failure::Corrupt(format!("scan job {job_id} vanished")))?;
            lease_of(
                job_from_row(&job)?,
                leased.try_get(1)?,
                token,
                leased.try_get(2)?,
                leased.try_get(3)?,
            )
            .map(Some)
            .map_err(Failure::Corrupt)
        })
    }

    fn renew_lease(&mut self, token: &str, now: OffsetDateTime) -> Result<LeaseCheck, FleetError> {
        self.run("renew a scan shard's lease", |tx| {
            let held = match held_lease(tx, token)? {
                Ok(held) => held,
                Err(lost) => return Ok(LeaseCheck::Lost(lost)),
            };
            let now_column = time_column("renewal time", now)?;
            let expires: i64 = tx
                .query_one(
                    "UPDATE fleet_scan_shards s SET lease_expires = $2 + j.lease_seconds * 1000000000 \
                     FROM fleet_scan_jobs j WHERE s.lease_token = $1 AND j.id = s.job_id \
                     RETURNING s.lease_expires",
                    &[&token, &now_column],
                )?
                .try_get(0)?;
            held_check(held, expires).map_err(Failure::Corrupt)
        })
    }

    fn finish_shard(
        &mut self,
        token: &str,
        now: OffsetDateTime,
        run: &str,
    ) -> Result<LeaseCheck, FleetError> {
        self.run("store a scan shard's run", |tx| {
            let held = match held_lease(tx, token)? {
                Ok(held) => held,
                Err(lost) => return Ok(LeaseCheck::Lost(lost)),
            };
            let now_column = time_column("finish time", now)?;
            let expires: i64 = tx
                .query_one(
                    "UPDATE fleet_scan_shards SET state = 'done', finished_at = $2, run = $3 \
                     WHERE lease_token = $1 RETURNING lease_expires",
                    &[&token, &now_column, &run],
                )?
                .try_get(0)?;
            held_check(held, expires).map_err(Failure::Corrupt)
        })
    }

    fn shard_runs(&self, job_id: i64) -> Result<Vec<(u32, String)>, FleetError> {
        self.read(&format!("read the runs of scan job {job_id}"), |db| {
            let rows = db.query(
                "SELECT idx, run FROM fleet_scan_shards \
                 WHERE job_id = $1 AND state = 'done' ORDER BY idx",
                &[&job_id],
            )?;
            rows.iter()
                .map(|row| {
                    let index: i64 = row.try_get(0)?;
                    let corrupt = |detail: String| {
                        Failure::Corrupt(format!("scan job {job_id} shard {index}: {detail}"))
                    };
                    let run: Option<String> = row.try_get(1)?;
                    Ok((
                        decode_u32("part", index).map_err(corrupt)?,
                        run.ok_or_else(|| corrupt("done without a run".to_owned()))?,
                    ))
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_never_holds_the_password() {
        for text in [
            "postgresql://fleet:hunter2-secret@%2Frun%2Fpostgresql:5433/perimeter",
            "postgres://fleet:hunter2-secret@/perimeter?host=/run/postgresql&port=5433",
            "host=/run/postgresql port=5433 user=fleet password=hunter2-secret dbname=perimeter",
            "host=/run/postgresql port=5433 user=fleet password='hunter2-secret' dbname=perimeter",
        ] {
            let config: Config = text.parse().expect("parses");
            assert_eq!(
                describe_config(&config),
                "host=/run/postgresql port=5433 user=fleet dbname=perimeter",
                "{text}"
            );
        }
    }

    #[test]
    fn a_connection_string_that_does_not_parse_is_not_repeated() {
        let err = PostgresFleet::connect("host=/x password=hunter2-secret bogus").expect_err("bad");
        let text = err.to_string();
        assert!(!text.contains("hunter2-secret"), "{text}");
        assert!(text.starts_with("postgresql database"), "{text}");
    }
}
