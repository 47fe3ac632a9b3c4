//! One suite, two backends: every case below runs against `SqliteFleet` (a
//! fresh file) and `PostgresFleet` (a fresh database in one throwaway
//! cluster, on a Unix socket), so the two behave the same by construction.
//! Each case gets a [`Database`]: a way to open stores on it, to set its
//! schema version by hand and to dump it.
//!
//! The suite runs as one test per backend; a failing case does not stop the
//! others, and the test fails naming every case that failed. A few cases
//! only PostgreSQL has (passwords kept out of errors, a restarted server)
//! run after the suite in the PostgreSQL test.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Barrier;

use perimeter_store::fleet::{
    Abandon, AgentRow, AgentStatus, ApprovalScope, EventRow, FleetError, FleetStore, LeaseCheck,
    NewAgent, NewFleetApproval, NewReport, NewScanJob, NewTrailEntry, PostgresFleet, ReportOutcome,
    Revocation, Role, ShardState, SqliteFleet, StateRow, TokenRow, TokenScope, UserRow,
};
use perimeter_testlab::{PgCluster, require_postgres};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::datetime;

// The server moves stores into `spawn_blocking`, which needs `Send`.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<SqliteFleet>();
    is_send::<PostgresFleet>();
};

/// A database one case runs against.
trait Database: Sync {
    /// A new store on this database: a new connection, migrating if needed.
    fn open(&self) -> Result<Box<dyn FleetStore>, FleetError>;
    /// The newest fleet schema version the backend knows.
    fn known_version(&self) -> i64;
    /// Sets the stored fleet schema version by hand, as a newer perimeter
    /// would have left it.
    fn set_schema_version(&self, version: i64);
    /// Everything that tells one state of the database from another.
    fn dump(&self) -> String;
    /// Makes the database as fleet schema 1 left it, by hand (its first
    /// migration, as released), holding `agent` (accepted, at `state.seq`)
    /// and `state` as schema 1 stored it.
    fn make_schema_1(&self, agent: &NewAgent, state: &StateRow);
    /// Whether stores on this database hand out concurrent handles.
    fn pooled(&self) -> bool;
}

type Case = fn(&dyn Database);

const CASES: &[(&str, Case)] = &[
    (
        "agents_enrol_and_refuse_duplicates",
        agents_enrol_and_refuse_duplicates,
    ),
    (
        "agent_status_and_revoked_stays",
        agent_status_and_revoked_stays,
    ),
    ("agent_environment", agent_environment),
    ("report_chain_every_outcome", report_chain_every_outcome),
    ("states_and_events", states_and_events),
    ("approvals_with_each_scope", approvals_with_each_scope),
    ("users_and_duplicates", users_and_duplicates),
    ("tokens_as_stored", tokens_as_stored),
    (
        "scan_jobs_leased_renewed_finished",
        scan_jobs_leased_renewed_finished,
    ),
    (
        "expired_leases_taken_again_late_runs_refused",
        expired_leases_taken_again_late_runs_refused,
    ),
    ("scan_jobs_by_vantage_point", scan_jobs_by_vantage_point),
    (
        "concurrent_leases_take_each_part_once",
        concurrent_leases_take_each_part_once,
    ),
    ("trail_appended_newest_first", trail_appended_newest_first),
    (
        "timestamps_round_trip_exactly",
        timestamps_round_trip_exactly,
    ),
    (
        "unstorable_values_write_nothing",
        unstorable_values_write_nothing,
    ),
    ("reopened_keeps_everything", reopened_keeps_everything),
    (
        "newer_schema_refused_untouched",
        newer_schema_refused_untouched,
    ),
    (
        "concurrent_opens_migrate_once",
        concurrent_opens_migrate_once,
    ),
    (
        "concurrent_reports_store_each_once",
        concurrent_reports_store_each_once,
    ),
    (
        "concurrent_handles_share_the_store",
        concurrent_handles_share_the_store,
    ),
    (
        "report_with_builds_on_the_latest_state",
        report_with_builds_on_the_latest_state,
    ),
    (
        "large_states_read_back_identically",
        large_states_read_back_identically,
    ),
    (
        "pruning_keeps_the_latest_and_the_window",
        pruning_keeps_the_latest_and_the_window,
    ),
    ("pruning_in_batches", pruning_in_batches),
    (
        "schema_1_states_read_after_migration",
        schema_1_states_read_after_migration,
    ),
];

/// Runs every case, each on a database `fresh` makes for it; fails naming the
/// cases that failed.
fn run_suite<'a>(backend: &str, fresh: &mut dyn FnMut(&str) -> Box<dyn Database + 'a>) {
    let mut failed = Vec::new();
    for (name, case) in CASES {
        let database = fresh(name);
        match catch_unwind(AssertUnwindSafe(|| case(database.as_ref()))) {
            Ok(()) => eprintln!("{backend}: {name}: ok"),
            Err(payload) => failed.push(format!("{name}: {}", panic_message(payload.as_ref()))),
        }
    }
    assert!(
        failed.is_empty(),
        "{backend}: {} of {} cases failed:\n{}",
        failed.len(),
        CASES.len(),
        failed.join("\n")
    );
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(a panic without a message)".to_owned())
}

// ---------------------------------------------------------------- SQLite

struct SqliteDatabase {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SqliteDatabase {
    fn new() -> SqliteDatabase {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("state").join("fleet.db");
        SqliteDatabase { _dir: dir, path }
    }

    fn connection(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.path).expect("open the file with rusqlite")
    }
}

impl Database for SqliteDatabase {
    fn open(&self) -> Result<Box<dyn FleetStore>, FleetError> {
        SqliteFleet::open(&self.path).map(|store| Box::new(store) as Box<dyn FleetStore>)
    }

    fn known_version(&self) -> i64 {
        SqliteFleet::SCHEMA_VERSION
    }

    fn set_schema_version(&self, version: i64) {
        self.connection()
            .execute("UPDATE fleet_schema SET version = ?1", [version])
            .expect("set the fleet schema version");
    }

    fn dump(&self) -> String {
        // The bytes first, before anything opens the file again.
        let bytes = std::fs::read(&self.path).expect("read the database file");
        let mut dump = format!("sha256 {}\n", hex(&Sha256::digest(&bytes)));
        let conn = self.connection();
        let mut statement = conn
            .prepare("SELECT type, name, sql FROM sqlite_schema ORDER BY name")
            .expect("list the schema");
        let objects: Vec<(String, String, Option<String>)> = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .and_then(Iterator::collect)
            .expect("read the schema");
        for (kind, name, sql) in objects {
            dump.push_str(&format!("{kind} {name}: {}\n", sql.unwrap_or_default()));
            if kind == "table" {
                let n_rows: i64 = conn
                    .query_row(&format!("SELECT count(*) FROM \"{name}\""), [], |row| {
                        row.get(0)
                    })
                    .expect("count rows");
                dump.push_str(&format!("  {n_rows} rows\n"));
            }
        }
        let version: i64 = conn
            .query_row("SELECT version FROM fleet_schema", [], |row| row.get(0))
            .expect("read the fleet schema version");
        dump.push_str(&format!("fleet schema {version}\n"));
        dump
    }

    fn make_schema_1(&self, agent: &NewAgent, state: &StateRow) {
        std::fs::create_dir_all(self.path.parent().expect("a parent")).expect("directory");
        let conn = self.connection();
        conn.pragma_update(None, "application_id", 0x5052_4d54)
            .expect("application id");
        conn.execute_batch(SQLITE_SCHEMA_1).expect("schema 1");
        conn.execute("UPDATE fleet_schema SET version = 1", [])
            .expect("version 1");
        conn.execute(
            "INSERT INTO fleet_agents (id, public_key, hostname, status, enrolled_at, last_seq, \
             last_digest) VALUES (?1, ?2, ?3, 'accepted', ?4, ?5, 'old')",
            rusqlite::params![
                agent.id,
                agent.public_key,
                agent.hostname,
                nanos(agent.enrolled_at),
                state.seq as i64
            ],
        )
        .expect("agent");
        conn.execute(
            "INSERT INTO fleet_states (agent_id, seq, taken_at, received_at, state) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![
                state.agent_id,
                state.seq as i64,
                nanos(state.taken_at),
                nanos(state.received_at),
                state.state
            ],
        )
        .expect("state");
    }

    fn pooled(&self) -> bool {
        false
    }
}

/// Schema 1 as released: a database it made must keep opening.
const SQLITE_SCHEMA_1: &str = include_str!("../migrations/fleet/sqlite/0001_initial.sql");
const POSTGRES_SCHEMA_1: &str = include_str!("../migrations/fleet/postgres/0001_initial.sql");

fn nanos(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos()).expect("in range")
}

/// States are stored compressed (a BLOB) from schema 2 on, and read back as
/// they were given.
#[test]
fn sqlite_states_are_stored_compressed() {
    let database = SqliteDatabase::new();
    let mut store = database.open().expect("open");
    let agent = new_agent(1, AgentStatus::Accepted);
    store.enrol_agent(&agent).expect("enrol");
    let state = big_state(1);
    store
        .record_report(&report(&agent.id, 1, "d1", Some(&state), &[]))
        .expect("record");
    let (kind, n_bytes): (String, i64) = database
        .connection()
        .query_row(
            "SELECT typeof(state), length(state) FROM fleet_states",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("the stored row");
    assert_eq!(kind, "blob");
    assert!(
        (n_bytes as usize) * 5 < state.len(),
        "{n_bytes} bytes stored for {}",
        state.len()
    );
    let latest = store.latest_state(&agent.id).expect("latest").expect("one");
    assert_eq!(latest.state, state);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn sqlite() {
    run_suite("sqlite", &mut |_| Box::new(SqliteDatabase::new()));
}

#[test]
fn sqlite_file_and_directory_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let database = SqliteDatabase::new();
    database.open().expect("open");
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&database.path), 0o600);
    assert_eq!(
        mode(database.path.parent().expect("parent directory")),
        0o700
    );
}

/// The fleet may live in the history's file: each keeps its own schema
/// version, whichever opened the file first.
#[test]
fn sqlite_shares_a_file_with_the_history() {
    for fleet_first in [true, false] {
        let database = SqliteDatabase::new();
        let open_history = || perimeter_store::SqliteStore::open(&database.path).expect("history");
        if fleet_first {
            database.open().expect("fleet");
        } else {
            open_history();
        }
        let history = open_history();
        let mut fleet = database.open().expect("fleet beside the history");
        fleet
            .enrol_agent(&new_agent(1, AgentStatus::Pending))
            .expect("enrol");
        drop((history, fleet));
        let conn = database.connection();
        let user_version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("user_version");
        assert_eq!(user_version, perimeter_store::SCHEMA_VERSION);
        let fleet_version: i64 = conn
            .query_row("SELECT version FROM fleet_schema", [], |row| row.get(0))
            .expect("fleet version");
        assert_eq!(fleet_version, SqliteFleet::SCHEMA_VERSION);
        let reopened = database.open().expect("fleet again");
        assert_eq!(reopened.agents().expect("agents").len(), 1);
    }
}

#[test]
fn sqlite_refuses_another_programs_file() {
    let database = SqliteDatabase::new();
    std::fs::create_dir_all(database.path.parent().expect("parent")).expect("mkdir");
    {
        let conn = database.connection();
        conn.execute_batch("CREATE TABLE theirs (x); INSERT INTO theirs VALUES (1);")
            .expect("someone else's table");
    }
    let before = std::fs::read(&database.path).expect("read");
    let err = database.open().err().expect("refused");
    assert!(
        matches!(&err, FleetError::Corrupt { detail, .. } if detail.starts_with("not a perimeter database")),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&database.path).expect("read"),
        before,
        "changed"
    );
}

#[test]
fn sqlite_in_memory() {
    let mut store = SqliteFleet::open_in_memory().expect("in memory");
    store
        .enrol_agent(&new_agent(1, AgentStatus::Accepted))
        .expect("enrol");
    assert_eq!(store.agents().expect("agents").len(), 1);
    assert_eq!(store.backend(), "sqlite");
}

// ------------------------------------------------------------ PostgreSQL

struct PgDatabase<'a> {
    cluster: &'a PgCluster,
    name: String,
}

impl PgDatabase<'_> {
    fn admin(&self) -> postgres::Client {
        postgres::Client::connect(&self.cluster.conninfo_for(&self.name), postgres::NoTls)
            .expect("connect with the postgres client")
    }
}

impl Database for PgDatabase<'_> {
    fn open(&self) -> Result<Box<dyn FleetStore>, FleetError> {
        PostgresFleet::connect(&self.cluster.url_for(&self.name))
            .map(|store| Box::new(store) as Box<dyn FleetStore>)
    }

    fn known_version(&self) -> i64 {
        PostgresFleet::SCHEMA_VERSION
    }

    fn set_schema_version(&self, version: i64) {
        self.admin()
            .execute("UPDATE fleet_schema SET version = $1", &[&version])
            .expect("set the fleet schema version");
    }

    fn dump(&self) -> String {
        let mut admin = self.admin();
        let mut dump = String::new();
        let columns = admin
            .query(
                "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT \
                 FROM information_schema.columns WHERE table_schema = 'public' \
                 ORDER BY table_name, ordinal_position",
                &[],
            )
            .expect("list columns");
        let mut tables = Vec::new();
        for row in columns {
            let table: String = row.get(0);
            let column: String = row.get(1);
            let kind: String = row.get(2);
            dump.push_str(&format!("{table}.{column} {kind}\n"));
            if !tables.contains(&table) {
                tables.push(table);
            }
        }
        for table in tables {
            // Every row as text: any change to any value shows.
            let rows = admin
                .query(
                    &format!("SELECT t::TEXT FROM \"{table}\" t ORDER BY 1"),
                    &[],
                )
                .expect("read rows");
            for row in rows {
                let text: String = row.get(0);
                dump.push_str(&format!("{table}: {text}\n"));
            }
        }
        dump
    }

    fn make_schema_1(&self, agent: &NewAgent, state: &StateRow) {
        let mut admin = self.admin();
        admin.batch_execute(POSTGRES_SCHEMA_1).expect("schema 1");
        admin
            .execute("UPDATE fleet_schema SET version = 1", &[])
            .expect("version 1");
        admin
            .execute(
                "INSERT INTO fleet_agents (id, public_key, hostname, status, enrolled_at, \
                 last_seq, last_digest) VALUES ($1, $2, $3, 'accepted', $4, $5, 'old')",
                &[
                    &agent.id,
                    &agent.public_key,
                    &agent.hostname,
                    &nanos(agent.enrolled_at),
                    &(state.seq as i64),
                ],
            )
            .expect("agent");
        admin
            .execute(
                "INSERT INTO fleet_states (agent_id, seq, taken_at, received_at, state) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &state.agent_id,
                    &(state.seq as i64),
                    &nanos(state.taken_at),
                    &nanos(state.received_at),
                    &state.state,
                ],
            )
            .expect("state");
    }

    fn pooled(&self) -> bool {
        true
    }
}

#[test]
fn postgresql() {
    if !require_postgres() {
        return;
    }
    let mut cluster = PgCluster::start().expect("start a throwaway PostgreSQL");
    let mut n_databases = 0;
    run_suite("postgresql", &mut |name| {
        n_databases += 1;
        let name = format!("case{n_databases}_{name}");
        cluster.create_database(&name).expect("create a database");
        Box::new(PgDatabase {
            cluster: &cluster,
            name,
        })
    });
    postgres_errors_never_hold_the_password(&cluster);
    postgres_store_drops_inside_an_async_runtime(&cluster);
    postgres_reconnects_after_a_restart(&mut cluster);
}

/// The server's last reference to the store may go on a thread that drives
/// async tasks (at shutdown): the store and its handles drop there without
/// a panic (the client closes a connection by blocking on a runtime of its
/// own, which tokio refuses inside another).
fn postgres_store_drops_inside_an_async_runtime(cluster: &PgCluster) {
    cluster.create_database("dropped").expect("create");
    let url = cluster.url_for("dropped");
    let mut store = PostgresFleet::connect(&url).expect("connect");
    let handle = store.concurrent_handle().expect("a handle");
    // Two connections in the pool: one held by a call on another thread
    // while this one enrols.
    let barrier = Barrier::new(2);
    let handle = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            barrier.wait();
            handle.agents().expect("agents");
            handle
        });
        barrier.wait();
        store
            .enrol_agent(&new_agent(1, AgentStatus::Accepted))
            .expect("enrol");
        reader.join().expect("the thread")
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        drop(store);
        drop(handle);
    });
    eprintln!("postgresql: store_drops_inside_an_async_runtime: ok");
}

/// Whatever the connection string, errors name the database without its
/// password: a database that does not exist, a refused newer schema, and the
/// target of a store that connected.
fn postgres_errors_never_hold_the_password(cluster: &PgCluster) {
    const SECRET: &str = "hunter2-fleet-secret";
    let dir = cluster.socket_dir().display().to_string();
    let expected_target = format!("host={dir} port=5432 user=postgres dbname=no_such_db");
    for text in [
        format!("postgresql://postgres:{SECRET}@/no_such_db?host={dir}&port=5432"),
        format!("host={dir} port=5432 user=postgres password={SECRET} dbname=no_such_db"),
        format!("host={dir} port=5432 user=postgres password='{SECRET}' dbname=no_such_db"),
    ] {
        let err = PostgresFleet::connect(&text).expect_err("no such database");
        let message = err.to_string();
        assert!(!message.contains(SECRET), "{message}");
        assert!(
            matches!(&err, FleetError::Backend { target, action, .. }
                if *target == expected_target && action == "connect"),
            "{err:?}"
        );
        assert!(message.contains("no_such_db"), "{message}");
    }

    cluster.create_database("secretive").expect("create");
    let url = format!("postgresql://postgres:{SECRET}@/secretive?host={dir}&port=5432");
    let store = PostgresFleet::connect(&url).expect("trust ignores the password");
    assert_eq!(
        store.target(),
        format!("host={dir} port=5432 user=postgres dbname=secretive")
    );
    drop(store);
    let database = PgDatabase {
        cluster,
        name: "secretive".to_owned(),
    };
    database.set_schema_version(PostgresFleet::SCHEMA_VERSION + 1);
    let err = PostgresFleet::connect(&url).expect_err("too new");
    assert!(matches!(err, FleetError::TooNew { .. }), "{err:?}");
    assert!(!err.to_string().contains(SECRET), "{err}");
    eprintln!("postgresql: errors_never_hold_the_password: ok");
}

/// A server restarted under the store: the next call, read or write,
/// reconnects once and goes on; what was committed before is still there.
fn postgres_reconnects_after_a_restart(cluster: &mut PgCluster) {
    cluster.create_database("restarted").expect("create");
    let url = cluster.url_for("restarted");
    let mut store = PostgresFleet::connect(&url).expect("connect");
    let agent = new_agent(1, AgentStatus::Accepted);
    store.enrol_agent(&agent).expect("enrol");

    cluster.restart().expect("restart PostgreSQL");
    let row = store.agent(&agent.id).expect("a read after the restart");
    assert_eq!(row, Some(enrolled_row(&agent)));

    cluster.restart().expect("restart PostgreSQL again");
    let outcome = store
        .record_report(&report(&agent.id, 1, "d1", Some("{\"n\":1}"), &["e1"]))
        .expect("a write after the restart");
    assert_eq!(outcome, ReportOutcome::Stored);

    // Stopped, not restarted: the one reconnect fails and says so; once the
    // server is back, the next call reconnects again.
    cluster.stop();
    let err = store.agents().expect_err("the server is down");
    assert!(
        matches!(&err, FleetError::Backend { action, .. } if action.contains("connect again")),
        "{err:?}"
    );
    cluster.restart().expect("start PostgreSQL again");
    let agents = store.agents().expect("agents once the server is back");
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].last_seq, 1);
    eprintln!("postgresql: reconnects_after_a_restart: ok");
}

// ------------------------------------------------------------- fixtures

const AT: OffsetDateTime = datetime!(2026-05-20 09:15:30.123456789 UTC);

fn at(seconds: i64) -> OffsetDateTime {
    AT + time::Duration::seconds(seconds)
}

fn new_agent(n: u8, status: AgentStatus) -> NewAgent {
    NewAgent {
        id: format!("ag_{n:02x}{}", "ab".repeat(7)),
        public_key: vec![n; 32],
        hostname: format!("host{n}.lab"),
        status,
        enrolled_at: at(i64::from(n)),
    }
}

/// The row `enrol_agent` returns and stores for `agent`.
fn enrolled_row(agent: &NewAgent) -> AgentRow {
    AgentRow {
        id: agent.id.clone(),
        public_key: agent.public_key.clone(),
        hostname: agent.hostname.clone(),
        status: agent.status,
        enrolled_at: agent.enrolled_at,
        environment: None,
        last_seq: 0,
        last_digest: String::new(),
        last_seen: None,
    }
}

fn report(
    agent_id: &str,
    seq: u64,
    digest: &str,
    state: Option<&str>,
    events: &[&str],
) -> NewReport {
    NewReport {
        agent_id: agent_id.to_owned(),
        seq,
        digest: digest.to_owned(),
        hostname: format!("reported-{seq}"),
        taken_at: at(1000 + seq as i64),
        received_at: at(1000 + seq as i64) + time::Duration::milliseconds(250),
        state: state.map(str::to_owned),
        events: events.iter().map(|event| (*event).to_owned()).collect(),
    }
}

/// The trail, oldest first, as (actor, action, subject, reason).
fn trail_of(store: &dyn FleetStore) -> Vec<(String, String, String, String)> {
    let mut trail: Vec<_> = store
        .trail(10_000)
        .expect("trail")
        .into_iter()
        .map(|entry| (entry.actor, entry.action, entry.subject, entry.reason))
        .collect();
    trail.reverse();
    trail
}

fn entry(
    actor: &str,
    action: &str,
    subject: &str,
    reason: &str,
) -> (String, String, String, String) {
    (
        actor.to_owned(),
        action.to_owned(),
        subject.to_owned(),
        reason.to_owned(),
    )
}

fn assert_not_found(result: Result<(), FleetError>, expected: &str) {
    match result {
        Err(FleetError::NotFound { what }) => assert_eq!(what, expected),
        other => panic!("expected NotFound {{ {expected} }}, got {other:?}"),
    }
}

/// Everything a report can change, to check that a refused one changed
/// nothing.
fn report_footprint(store: &dyn FleetStore, agent_id: &str) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}",
        store.agent(agent_id).expect("agent"),
        store.states(agent_id, 1000).expect("states"),
        store.events(None, 0, 1000).expect("events"),
        store.trail(1000).expect("trail"),
    )
}

// ---------------------------------------------------------------- cases

fn agents_enrol_and_refuse_duplicates(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let first = new_agent(1, AgentStatus::Pending);
    let second = new_agent(2, AgentStatus::Accepted);
    assert_eq!(store.agents().expect("agents"), vec![]);
    assert_eq!(
        store.enrol_agent(&first).expect("enrol"),
        enrolled_row(&first)
    );
    assert_eq!(
        store.enrol_agent(&second).expect("enrol"),
        enrolled_row(&second)
    );
    assert_eq!(
        store.agent(&first.id).expect("agent"),
        Some(enrolled_row(&first))
    );
    assert_eq!(store.agent("ag_unknown").expect("agent"), None);
    // Listed in enrolment order, not by id or key.
    let third = NewAgent {
        id: "ag_00".to_owned(),
        ..new_agent(0, AgentStatus::Pending)
    };
    store.enrol_agent(&third).expect("enrol");
    assert_eq!(
        store.agents().expect("agents"),
        vec![
            enrolled_row(&first),
            enrolled_row(&second),
            enrolled_row(&third)
        ]
    );

    let trail_before = trail_of(store.as_ref());
    let same_id = NewAgent {
        public_key: vec![0xee; 32],
        ..first.clone()
    };
    match store.enrol_agent(&same_id) {
        Err(FleetError::Exists { what }) => assert_eq!(what, format!("agent {}", first.id)),
        other => panic!("same id enrolled: {other:?}"),
    }
    let same_key = NewAgent {
        id: "ag_another".to_owned(),
        ..second.clone()
    };
    match store.enrol_agent(&same_key) {
        Err(FleetError::Exists { what }) => assert_eq!(
            what,
            format!("an agent with this public key ({})", second.id)
        ),
        other => panic!("same key enrolled: {other:?}"),
    }
    assert_eq!(
        trail_of(store.as_ref()),
        trail_before,
        "refusals in the trail"
    );
    assert_eq!(store.agents().expect("agents").len(), 3);
    assert_eq!(
        trail_before,
        vec![
            entry(
                &format!("agent:{}", first.id),
                "agent.enrol",
                &first.id,
                "hostname host1.lab, status pending"
            ),
            entry(
                &format!("agent:{}", second.id),
                "agent.enrol",
                &second.id,
                "hostname host2.lab, status accepted"
            ),
            entry(
                "agent:ag_00",
                "agent.enrol",
                "ag_00",
                "hostname host0.lab, status pending"
            ),
        ]
    );
    let newest = &store.trail(1).expect("trail")[0];
    assert_eq!(newest.at, third.enrolled_at);
}

fn agent_status_and_revoked_stays(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let agent = new_agent(1, AgentStatus::Pending);
    store.enrol_agent(&agent).expect("enrol");
    let status = |store: &dyn FleetStore| {
        store
            .agent(&agent.id)
            .expect("agent")
            .expect("known")
            .status
    };

    store
        .set_agent_status(
            &agent.id,
            AgentStatus::Accepted,
            "alice",
            "checked the key",
            at(10),
        )
        .expect("accept");
    assert_eq!(status(store.as_ref()), AgentStatus::Accepted);
    // Accepting an accepted agent changes nothing, and the trail says nothing.
    store
        .set_agent_status(&agent.id, AgentStatus::Accepted, "alice", "again", at(11))
        .expect("accept again");
    store
        .set_agent_status(&agent.id, AgentStatus::Pending, "bob", "suspicious", at(12))
        .expect("suspend");
    assert_eq!(status(store.as_ref()), AgentStatus::Pending);
    store
        .set_agent_status(
            &agent.id,
            AgentStatus::Revoked,
            "bob",
            "host retired",
            at(13),
        )
        .expect("revoke");
    assert_eq!(status(store.as_ref()), AgentStatus::Revoked);

    let trail_before = trail_of(store.as_ref());
    let not_revoked = format!("agent {} that is not revoked", agent.id);
    for again in [
        AgentStatus::Accepted,
        AgentStatus::Pending,
        AgentStatus::Revoked,
    ] {
        assert_not_found(
            store.set_agent_status(&agent.id, again, "alice", "undo", at(14)),
            &not_revoked,
        );
    }
    assert_eq!(status(store.as_ref()), AgentStatus::Revoked);
    assert_not_found(
        store.set_agent_status("ag_unknown", AgentStatus::Accepted, "alice", "", at(15)),
        "agent ag_unknown",
    );
    assert_eq!(trail_of(store.as_ref()), trail_before);
    assert_eq!(
        trail_before[1..],
        [
            entry("alice", "agent.accept", &agent.id, "checked the key"),
            entry("bob", "agent.suspend", &agent.id, "suspicious"),
            entry("bob", "agent.revoke", &agent.id, "host retired"),
        ]
    );
    let times: Vec<OffsetDateTime> = store
        .trail(3)
        .expect("trail")
        .iter()
        .map(|entry| entry.at)
        .collect();
    assert_eq!(times, [at(13), at(12), at(10)]);
}

fn agent_environment(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let agent = new_agent(1, AgentStatus::Accepted);
    store.enrol_agent(&agent).expect("enrol");
    let environment = |store: &dyn FleetStore| {
        store
            .agent(&agent.id)
            .expect("agent")
            .expect("known")
            .environment
    };
    store
        .set_agent_environment(&agent.id, Some("prod"), "alice", at(10))
        .expect("set");
    assert_eq!(environment(store.as_ref()).as_deref(), Some("prod"));
    store
        .set_agent_environment(&agent.id, Some("prod"), "alice", at(11))
        .expect("the same again");
    store
        .set_agent_environment(&agent.id, None, "bob", at(12))
        .expect("clear");
    assert_eq!(environment(store.as_ref()), None);
    assert_not_found(
        store.set_agent_environment("ag_unknown", Some("prod"), "alice", at(13)),
        "agent ag_unknown",
    );
    assert_eq!(
        trail_of(store.as_ref())[1..],
        [
            entry("alice", "agent.environment", &agent.id, "environment prod"),
            entry("bob", "agent.environment", &agent.id, "no environment"),
        ]
    );
}

fn report_chain_every_outcome(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let agent = new_agent(1, AgentStatus::Pending);
    store.enrol_agent(&agent).expect("enrol");
    let id = agent.id.as_str();

    let refused = |store: &mut Box<dyn FleetStore>, report: NewReport, expected: ReportOutcome| {
        let before = report_footprint(store.as_ref(), id);
        assert_eq!(
            store.record_report(&report).expect("record"),
            expected,
            "{report:?}"
        );
        assert_eq!(
            report_footprint(store.as_ref(), id),
            before,
            "{expected:?} wrote"
        );
    };

    refused(
        &mut store,
        report("ag_unknown", 1, "d1", Some("{}"), &["e"]),
        ReportOutcome::NotAccepted { status: None },
    );
    refused(
        &mut store,
        report(id, 1, "d1", Some("{}"), &["e"]),
        ReportOutcome::NotAccepted {
            status: Some(AgentStatus::Pending),
        },
    );
    store
        .set_agent_status(id, AgentStatus::Accepted, "alice", "", at(5))
        .expect("accept");
    refused(
        &mut store,
        report(id, 2, "d2", Some("{}"), &["e"]),
        ReportOutcome::OutOfOrder { expected: 1 },
    );
    refused(
        &mut store,
        report(id, 0, "", Some("{}"), &["e"]),
        ReportOutcome::OutOfOrder { expected: 1 },
    );

    let first = report(id, 1, "d1", Some("{\"n\":1}"), &["e1"]);
    assert_eq!(
        store.record_report(&first).expect("record"),
        ReportOutcome::Stored
    );
    let row = store.agent(id).expect("agent").expect("known");
    assert_eq!(
        row,
        AgentRow {
            hostname: "reported-1".to_owned(),
            status: AgentStatus::Accepted,
            last_seq: 1,
            last_digest: "d1".to_owned(),
            last_seen: Some(first.received_at),
            ..enrolled_row(&agent)
        }
    );

    refused(&mut store, first.clone(), ReportOutcome::Duplicate);
    refused(
        &mut store,
        report(id, 1, "another", Some("{}"), &[]),
        ReportOutcome::Forked,
    );
    refused(
        &mut store,
        report(id, 3, "d3", Some("{}"), &[]),
        ReportOutcome::OutOfOrder { expected: 2 },
    );
    assert_eq!(
        store
            .record_report(&report(id, 2, "d2", None, &[]))
            .expect("record"),
        ReportOutcome::Stored
    );
    // Below the last number: the agent never goes back, so another host
    // holds its key, whatever the digest.
    refused(&mut store, first.clone(), ReportOutcome::Forked);
    refused(
        &mut store,
        report(id, 0, "", None, &[]),
        ReportOutcome::OutOfOrder { expected: 3 },
    );
    refused(
        &mut store,
        report(id, 2, "d2", None, &[]),
        ReportOutcome::Duplicate,
    );

    store
        .set_agent_status(id, AgentStatus::Revoked, "alice", "", at(6))
        .expect("revoke");
    refused(
        &mut store,
        report(id, 3, "d3", Some("{}"), &["e"]),
        ReportOutcome::NotAccepted {
            status: Some(AgentStatus::Revoked),
        },
    );
    refused(
        &mut store,
        report(id, 2, "d2", None, &[]),
        ReportOutcome::NotAccepted {
            status: Some(AgentStatus::Revoked),
        },
    );
    // Two stored reports; reports write no trail entries.
    let row = store.agent(id).expect("agent").expect("known");
    assert_eq!((row.last_seq, row.last_digest.as_str()), (2, "d2"));
    let actions: Vec<String> = trail_of(store.as_ref())
        .into_iter()
        .map(|(_, action, _, _)| action)
        .collect();
    assert_eq!(actions, ["agent.enrol", "agent.accept", "agent.revoke"]);
}

fn states_and_events(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let agent = new_agent(1, AgentStatus::Accepted);
    let other = new_agent(2, AgentStatus::Accepted);
    store.enrol_agent(&agent).expect("enrol");
    store.enrol_agent(&other).expect("enrol");
    let id = agent.id.as_str();
    assert_eq!(store.latest_state(id).expect("latest"), None);
    assert_eq!(store.states(id, 10).expect("states"), vec![]);
    assert_eq!(store.events(None, 0, 10).expect("events"), vec![]);

    let reports = [
        report(
            id,
            1,
            "d1",
            Some("{\"state\":\"A\"}"),
            &["{\"e\":1}", "{\"e\":2}"],
        ),
        report(
            &other.id,
            1,
            "o1",
            Some("{\"state\":\"other\"}"),
            &["{\"o\":1}"],
        ),
        report(id, 2, "d2", None, &["{\"e\":3}"]),
        report(id, 3, "d3", Some("{\"state\":\"B\"}"), &[]),
    ];
    for report in &reports {
        assert_eq!(
            store.record_report(report).expect("record"),
            ReportOutcome::Stored
        );
    }
    let state_row = |report: &NewReport| StateRow {
        agent_id: report.agent_id.clone(),
        seq: report.seq,
        taken_at: report.taken_at,
        received_at: report.received_at,
        state: report.state.clone().expect("a state"),
    };
    // Report 2 carried no state: the newest stored state is report 3's.
    assert_eq!(
        store.latest_state(id).expect("latest"),
        Some(state_row(&reports[3]))
    );
    assert_eq!(
        store.states(id, 10).expect("states"),
        vec![state_row(&reports[3]), state_row(&reports[0])]
    );
    assert_eq!(
        store.states(id, 1).expect("states"),
        vec![state_row(&reports[3])]
    );
    assert_eq!(
        store.latest_state(&other.id).expect("latest"),
        Some(state_row(&reports[1]))
    );
    assert_eq!(store.latest_state("ag_unknown").expect("latest"), None);

    let all = store.events(None, 0, 100).expect("events");
    let texts: Vec<(&str, u64, &str)> = all
        .iter()
        .map(|event| (event.agent_id.as_str(), event.seq, event.event.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            (id, 1, "{\"e\":1}"),
            (id, 1, "{\"e\":2}"),
            (other.id.as_str(), 1, "{\"o\":1}"),
            (id, 2, "{\"e\":3}"),
        ]
    );
    assert!(
        all.windows(2).all(|pair| pair[0].id < pair[1].id),
        "{all:?}"
    );
    assert_eq!(all[0].received_at, reports[0].received_at);
    assert_eq!(all[3].received_at, reports[2].received_at);

    let of_agent = store.events(Some(id), 0, 100).expect("events");
    assert_eq!(
        of_agent,
        vec![all[0].clone(), all[1].clone(), all[3].clone()]
    );
    assert_eq!(
        store.events(Some(id), all[0].id, 100).expect("events"),
        vec![all[1].clone(), all[3].clone()]
    );
    assert_eq!(
        store.events(None, all[1].id, 1).expect("events"),
        vec![all[2].clone()]
    );
    assert_eq!(
        store.events(None, all[3].id, 100).expect("events"),
        Vec::<EventRow>::new()
    );
    assert_eq!(
        store.events(Some("ag_unknown"), 0, 100).expect("events"),
        vec![]
    );

    // By the time received: adjoining windows (start in, end out) hold each
    // event once.
    let first = reports[0].received_at;
    let second = reports[2].received_at;
    assert_eq!(
        store.events_received(first..second, 100).expect("window"),
        all[..3].to_vec()
    );
    assert_eq!(
        store
            .events_received(second..second + time::Duration::seconds(1), 100)
            .expect("window"),
        vec![all[3].clone()]
    );
    assert_eq!(
        store
            .events_received(first - time::Duration::hours(1)..first, 100)
            .expect("window"),
        vec![]
    );
    assert_eq!(
        store.events_received(first..second, 1).expect("window"),
        vec![all[0].clone()]
    );
}

fn approvals_with_each_scope(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let approval =
        |scope: ApprovalScope, n: i64, expires: Option<OffsetDateTime>| NewFleetApproval {
            scope,
            selector: format!("protocol = \"tcp\"\nport = {}", 8000 + n),
            approved_by: "alice".to_owned(),
            approved_at: at(n),
            reason: format!("reason {n}"),
            expires,
        };
    let given = [
        approval(ApprovalScope::Fleet, 1, None),
        approval(
            ApprovalScope::Environment("prod".to_owned()),
            2,
            Some(at(86_400)),
        ),
        approval(ApprovalScope::Host("ag_0101".to_owned()), 3, None),
        approval(ApprovalScope::Environment(String::new()), 4, None),
    ];
    let stored: Vec<_> = given
        .iter()
        .map(|approval| store.add_approval(approval).expect("add"))
        .collect();
    for (approval, row) in given.iter().zip(&stored) {
        assert_eq!(row.scope, approval.scope);
        assert_eq!(row.selector, approval.selector);
        assert_eq!(row.approved_by, approval.approved_by);
        assert_eq!(row.approved_at, approval.approved_at);
        assert_eq!(row.reason, approval.reason);
        assert_eq!(row.expires, approval.expires);
        assert_eq!(row.revoked, None);
    }
    assert!(stored.windows(2).all(|pair| pair[0].id < pair[1].id));
    assert_eq!(store.approvals(false).expect("approvals"), stored);
    assert_eq!(store.approvals(true).expect("approvals"), stored);

    let env_id = stored[1].id;
    store
        .revoke_approval(env_id, "bob", "prod moved", at(100))
        .expect("revoke");
    let trail_before = trail_of(store.as_ref());
    assert_not_found(
        store.revoke_approval(env_id, "bob", "again", at(101)),
        &format!("approval {env_id} that is not revoked"),
    );
    assert_not_found(
        store.revoke_approval(9_999, "bob", "", at(101)),
        "approval 9999",
    );
    assert_eq!(trail_of(store.as_ref()), trail_before);

    let mut revoked = stored[1].clone();
    revoked.revoked = Some(Revocation {
        by: "bob".to_owned(),
        at: at(100),
        reason: "prod moved".to_owned(),
    });
    assert_eq!(
        store.approvals(false).expect("approvals"),
        vec![stored[0].clone(), stored[2].clone(), stored[3].clone()]
    );
    assert_eq!(
        store.approvals(true).expect("approvals"),
        vec![
            stored[0].clone(),
            revoked,
            stored[2].clone(),
            stored[3].clone()
        ]
    );
    let mut expected: Vec<_> = stored
        .iter()
        .map(|row| entry("alice", "approval.add", &row.id.to_string(), &row.reason))
        .collect();
    expected.push(entry(
        "bob",
        "approval.revoke",
        &env_id.to_string(),
        "prod moved",
    ));
    assert_eq!(trail_before, expected);
    let newest = &store.trail(1).expect("trail")[0];
    assert_eq!(newest.at, at(100));
}

fn users_and_duplicates(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
    store
        .add_user("zed", Role::Admin, hash, "setup", at(1))
        .expect("add");
    store
        .add_user("amy", Role::Viewer, "other-hash", "zed", at(2))
        .expect("add");
    store
        .add_user("max", Role::Approver, "third-hash", "zed", at(3))
        .expect("add");
    let zed = UserRow {
        name: "zed".to_owned(),
        role: Role::Admin,
        password_hash: hash.to_owned(),
        created_at: at(1),
        disabled: false,
    };
    assert_eq!(store.user("zed").expect("user"), Some(zed.clone()));
    assert_eq!(store.user("nobody").expect("user"), None);
    let users = store.users().expect("users");
    let names: Vec<(&str, Role)> = users
        .iter()
        .map(|user| (user.name.as_str(), user.role))
        .collect();
    assert_eq!(
        names,
        [
            ("zed", Role::Admin),
            ("amy", Role::Viewer),
            ("max", Role::Approver)
        ]
    );
    assert_eq!(users[0], zed);

    let trail_before = trail_of(store.as_ref());
    match store.add_user("amy", Role::Admin, "x", "zed", at(4)) {
        Err(FleetError::Exists { what }) => assert_eq!(what, "user amy"),
        other => panic!("duplicate user: {other:?}"),
    }
    assert_eq!(
        store.user("amy").expect("user").expect("amy").role,
        Role::Viewer
    );
    assert_eq!(trail_of(store.as_ref()), trail_before);
    assert_eq!(
        trail_before,
        [
            entry("setup", "user.add", "zed", "role admin"),
            entry("zed", "user.add", "amy", "role viewer"),
            entry("zed", "user.add", "max", "role approver"),
        ]
    );

    // Disabled and enabled again, each once in the trail; setting what is
    // set writes nothing; an unknown name is NotFound.
    store
        .set_user_disabled("amy", true, "zed", at(5))
        .expect("disable");
    assert!(store.user("amy").expect("user").expect("amy").disabled);
    store
        .set_user_disabled("amy", true, "zed", at(6))
        .expect("again");
    store
        .set_user_disabled("amy", false, "zed", at(7))
        .expect("enable");
    assert!(!store.user("amy").expect("user").expect("amy").disabled);
    match store.set_user_disabled("nobody", true, "zed", at(8)) {
        Err(FleetError::NotFound { what }) => assert_eq!(what, "user nobody"),
        other => panic!("unknown user: {other:?}"),
    }
    let mut expected = trail_before;
    expected.push(entry("zed", "user.disable", "amy", ""));
    expected.push(entry("zed", "user.enable", "amy", ""));
    assert_eq!(trail_of(store.as_ref()), expected);
}

fn tokens_as_stored(database: &dyn Database) {
    let mut store = database.open().expect("open");
    store
        .add_user("amy", Role::Approver, "hash", "setup", at(1))
        .expect("add user");
    let live = store
        .add_token("aa11", "amy", "laptop", at(10), Some(at(1_000_000)))
        .expect("add");
    assert_eq!(
        live,
        TokenRow {
            id: live.id,
            user: "amy".to_owned(),
            role: Role::Approver,
            label: "laptop".to_owned(),
            created_at: at(10),
            expires: Some(at(1_000_000)),
            revoked: false,
            scope: TokenScope::Full,
        }
    );
    // Expired already: stored and returned as it is; the caller refuses it.
    let expired = store
        .add_token("bb22", "amy", "old", at(11), Some(at(-86_400)))
        .expect("add");
    let forever = store
        .add_token("cc33", "amy", "ci", at(12), None)
        .expect("add");
    assert!(live.id < expired.id && expired.id < forever.id);
    assert_eq!(store.token("aa11").expect("token"), Some(live.clone()));
    assert_eq!(store.token("bb22").expect("token"), Some(expired.clone()));
    assert_eq!(store.token("cc33").expect("token"), Some(forever.clone()));
    assert_eq!(store.token("unknown").expect("token"), None);

    store.revoke_token(live.id, "zed", at(20)).expect("revoke");
    assert_eq!(
        store.token("aa11").expect("token"),
        Some(TokenRow {
            revoked: true,
            ..live.clone()
        })
    );

    let trail_before = trail_of(store.as_ref());
    assert_not_found(
        store.revoke_token(live.id, "zed", at(21)),
        &format!("token {} that is not revoked", live.id),
    );
    assert_not_found(store.revoke_token(9_999, "zed", at(21)), "token 9999");
    match store.add_token("x", "nobody", "", at(22), None) {
        Err(FleetError::NotFound { what }) => assert_eq!(what, "user nobody"),
        other => panic!("token of an unknown user: {other:?}"),
    }
    match store.add_token("cc33", "amy", "again", at(22), None) {
        Err(FleetError::Exists { what }) => assert_eq!(what, "a token with this hash"),
        other => panic!("duplicate token hash: {other:?}"),
    }
    assert_eq!(store.token("cc33").expect("token"), Some(forever.clone()));
    assert_eq!(trail_of(store.as_ref()), trail_before);
    assert_eq!(
        trail_before[1..],
        [
            entry("amy", "token.add", &live.id.to_string(), "laptop"),
            entry("amy", "token.add", &expired.id.to_string(), "old"),
            entry("amy", "token.add", &forever.id.to_string(), "ci"),
            entry("zed", "token.revoke", &live.id.to_string(), ""),
        ]
    );
    // A scanner node's token: its scope kept, its own trail action.
    let scanner = store
        .add_scoped_token("dd44", "amy", "node-a", at(13), None, TokenScope::Scanner)
        .expect("add scanner token");
    assert_eq!(scanner.scope, TokenScope::Scanner);
    assert_eq!(store.token("dd44").expect("token"), Some(scanner.clone()));
    assert!(
        trail_of(store.as_ref()).contains(&(
            "amy".to_owned(),
            "token.add-scanner".to_owned(),
            scanner.id.to_string(),
            "node-a".to_owned()
        )),
        "{:?}",
        trail_of(store.as_ref())
    );
}

fn trail_appended_newest_first(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let ids: Vec<i64> = (0..5)
        .map(|n| {
            store
                .append_trail(&NewTrailEntry {
                    at: at(n),
                    actor: "alice".to_owned(),
                    action: "alert.ack".to_owned(),
                    subject: format!("alert-{n}"),
                    reason: format!("seen {n}"),
                })
                .expect("append")
        })
        .collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    let newest = store.trail(3).expect("trail");
    let got: Vec<(i64, OffsetDateTime, &str, &str)> = newest
        .iter()
        .map(|entry| {
            (
                entry.id,
                entry.at,
                entry.subject.as_str(),
                entry.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (ids[4], at(4), "alert-4", "seen 4"),
            (ids[3], at(3), "alert-3", "seen 3"),
            (ids[2], at(2), "alert-2", "seen 2"),
        ]
    );
    assert!(
        newest
            .iter()
            .all(|entry| entry.actor == "alice" && entry.action == "alert.ack")
    );
    assert_eq!(store.trail(100).expect("trail").len(), 5);
    assert_eq!(store.trail(0).expect("trail"), vec![]);
}

/// Nanoseconds, offsets other than UTC and the ends of the storable range
/// come back as the same instants, through every timestamp column.
fn timestamps_round_trip_exactly(database: &dyn Database) {
    let times = [
        datetime!(2026-05-20 13:14:15.123456789 +05:30),
        datetime!(1970-01-01 0:00 UTC),
        datetime!(1969-12-31 23:59:59.999999999 UTC),
        datetime!(1677-09-21 00:12:43.145224192 UTC),
        datetime!(2262-04-11 23:47:16.854775807 UTC),
        datetime!(2001-02-03 04:05:06.000000001 -07:00),
    ];
    let mut store = database.open().expect("open");
    store
        .add_user("amy", Role::Admin, "h", "setup", times[0])
        .expect("user");
    for (n, &time) in times.iter().enumerate() {
        let agent = NewAgent {
            enrolled_at: time,
            ..new_agent(n as u8 + 1, AgentStatus::Accepted)
        };
        store.enrol_agent(&agent).expect("enrol");
        let sent = NewReport {
            taken_at: time,
            received_at: times[(n + 1) % times.len()],
            ..report(&agent.id, 1, "d", Some("{}"), &["{}"])
        };
        assert_eq!(
            store.record_report(&sent).expect("record"),
            ReportOutcome::Stored
        );
        let row = store.agent(&agent.id).expect("agent").expect("known");
        assert_eq!(row.enrolled_at, time);
        assert_eq!(row.last_seen, Some(sent.received_at));
        let state = store
            .latest_state(&agent.id)
            .expect("state")
            .expect("stored");
        assert_eq!(
            (state.taken_at, state.received_at),
            (sent.taken_at, sent.received_at)
        );
        let events = store.events(Some(&agent.id), 0, 10).expect("events");
        assert_eq!(events[0].received_at, sent.received_at);

        let approval = store
            .add_approval(&NewFleetApproval {
                scope: ApprovalScope::Fleet,
                selector: "port = 22".to_owned(),
                approved_by: "amy".to_owned(),
                approved_at: time,
                reason: String::new(),
                expires: Some(times[(n + 2) % times.len()]),
            })
            .expect("approval");
        store
            .revoke_approval(approval.id, "amy", "", times[(n + 3) % times.len()])
            .expect("revoke");
        let listed = store
            .approvals(true)
            .expect("approvals")
            .into_iter()
            .find(|row| row.id == approval.id)
            .expect("listed");
        assert_eq!(listed.approved_at, time);
        assert_eq!(listed.expires, Some(times[(n + 2) % times.len()]));
        assert_eq!(
            listed.revoked.map(|revocation| revocation.at),
            Some(times[(n + 3) % times.len()])
        );

        let hash = format!("hash{n}");
        store
            .add_token(&hash, "amy", "", time, Some(times[(n + 4) % times.len()]))
            .expect("token");
        let token = store.token(&hash).expect("token").expect("stored");
        assert_eq!(
            (token.created_at, token.expires),
            (time, Some(times[(n + 4) % times.len()]))
        );
        let id = store
            .append_trail(&NewTrailEntry {
                at: time,
                actor: "amy".to_owned(),
                action: "alert.ack".to_owned(),
                subject: String::new(),
                reason: String::new(),
            })
            .expect("append");
        let newest = &store.trail(1).expect("trail")[0];
        assert_eq!((newest.id, newest.at), (id, time));
        // The exact bits, not merely an equal instant.
        assert_eq!(
            newest.at.unix_timestamp_nanos(),
            time.unix_timestamp_nanos()
        );
    }
    assert_eq!(
        store.user("amy").expect("user").expect("amy").created_at,
        times[0]
    );
}

/// A value no column can hold is an error, and nothing of the change is
/// written (no row, no trail entry).
fn unstorable_values_write_nothing(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let far = datetime!(2300-01-01 0:00 UTC);
    let agent = new_agent(1, AgentStatus::Accepted);
    store.enrol_agent(&agent).expect("enrol");
    let before = report_footprint(store.as_ref(), &agent.id);

    let err = store
        .enrol_agent(&NewAgent {
            enrolled_at: far,
            ..new_agent(2, AgentStatus::Pending)
        })
        .expect_err("refused");
    assert!(matches!(err, FleetError::Backend { .. }), "{err:?}");
    assert!(
        err.to_string().contains("outside the storable range"),
        "{err}"
    );
    let err = store
        .record_report(&NewReport {
            received_at: far,
            ..report(&agent.id, 1, "d", Some("{}"), &["e"])
        })
        .expect_err("refused");
    assert!(
        err.to_string().contains("outside the storable range"),
        "{err}"
    );
    let err = store
        .record_report(&report(&agent.id, u64::MAX, "d", None, &[]))
        .map(|outcome| format!("{outcome:?}"));
    // u64::MAX is far out of order for an agent at 0: judged before stored.
    assert_eq!(
        err.expect("judged"),
        format!("{:?}", ReportOutcome::OutOfOrder { expected: 1 })
    );
    store
        .add_approval(&NewFleetApproval {
            scope: ApprovalScope::Fleet,
            selector: String::new(),
            approved_by: "amy".to_owned(),
            approved_at: at(1),
            reason: String::new(),
            expires: Some(far),
        })
        .expect_err("refused");
    store
        .set_agent_status(&agent.id, AgentStatus::Revoked, "amy", "", far)
        .expect_err("refused");
    assert_eq!(report_footprint(store.as_ref(), &agent.id), before);
    assert_eq!(store.agents().expect("agents").len(), 1);
    assert_eq!(store.approvals(true).expect("approvals"), vec![]);
}

fn reopened_keeps_everything(database: &dyn Database) {
    let snapshot = |store: &dyn FleetStore| {
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            store.agents().expect("agents"),
            store.states("ag_01ababababababab", 100).expect("states"),
            store.events(None, 0, 100).expect("events"),
            store.approvals(true).expect("approvals"),
            store.users().expect("users"),
            store.token("t1").expect("token"),
            store.trail(100).expect("trail"),
        )
    };
    let written = {
        let mut store = database.open().expect("open");
        let agent = new_agent(1, AgentStatus::Accepted);
        store.enrol_agent(&agent).expect("enrol");
        store
            .record_report(&report(
                &agent.id,
                1,
                "d1",
                Some("{\"s\":1}"),
                &["{\"e\":1}"],
            ))
            .expect("record");
        store
            .set_agent_environment(&agent.id, Some("prod"), "amy", at(3))
            .expect("environment");
        store
            .add_approval(&NewFleetApproval {
                scope: ApprovalScope::Host(agent.id.clone()),
                selector: "port = 22".to_owned(),
                approved_by: "amy".to_owned(),
                approved_at: at(4),
                reason: "ssh".to_owned(),
                expires: None,
            })
            .expect("approval");
        store
            .add_user("amy", Role::Admin, "h", "setup", at(5))
            .expect("user");
        store
            .add_token("t1", "amy", "", at(6), None)
            .expect("token");
        snapshot(store.as_ref())
    };
    assert!(written.contains("ag_01"), "{written}");
    let mut store = database.open().expect("open again");
    assert_eq!(snapshot(store.as_ref()), written);
    // And it goes on where it stopped: the chain, the ids.
    assert_eq!(
        store
            .record_report(&report("ag_01ababababababab", 1, "d1", None, &[]))
            .expect("record"),
        ReportOutcome::Duplicate
    );
    assert_eq!(
        store
            .record_report(&report(
                "ag_01ababababababab",
                2,
                "d2",
                None,
                &["{\"e\":2}"]
            ))
            .expect("record"),
        ReportOutcome::Stored
    );
    let events = store.events(None, 0, 10).expect("events");
    assert_eq!(events.len(), 2);
    assert!(events[0].id < events[1].id);
}

fn newer_schema_refused_untouched(database: &dyn Database) {
    {
        let mut store = database.open().expect("open");
        store
            .enrol_agent(&new_agent(1, AgentStatus::Pending))
            .expect("enrol");
    }
    let found = database.known_version() + 1;
    database.set_schema_version(found);
    let before = database.dump();
    let err = database.open().err().expect("a newer schema is refused");
    match &err {
        FleetError::TooNew {
            found: got, known, ..
        } => {
            assert_eq!((*got, *known), (found, database.known_version()));
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    assert!(err.to_string().ends_with("upgrade perimeter"), "{err}");
    assert_eq!(database.dump(), before, "the refused database changed");
    assert!(before.contains(&format!("{found}")), "{before}");
}

/// Two stores opening one new database at once: both succeed, and the schema
/// is made once.
fn concurrent_opens_migrate_once(database: &dyn Database) {
    let barrier = Barrier::new(2);
    let opened: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    database.open().map(drop).map_err(|err| err.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("the thread"))
            .collect()
    });
    assert_eq!(opened, [Ok(()), Ok(())]);
    let mut store = database.open().expect("open");
    store
        .enrol_agent(&new_agent(1, AgentStatus::Pending))
        .expect("enrol");
    assert_eq!(store.agents().expect("agents").len(), 1);
    assert!(
        database
            .dump()
            .contains(&format!("{}", database.known_version())),
        "no schema version"
    );
}

/// Two stores (two connections, as two servers) receiving the same agent's
/// reports at once: each number is stored exactly once, and no report is
/// lost or stored twice.
fn concurrent_reports_store_each_once(database: &dyn Database) {
    const N_REPORTS: u64 = 40;
    let agent = new_agent(1, AgentStatus::Accepted);
    let mut stores: Vec<Box<dyn FleetStore>> =
        (0..2).map(|_| database.open().expect("open")).collect();
    stores[0].enrol_agent(&agent).expect("enrol");
    let barrier = Barrier::new(2);
    let outcomes: Vec<Vec<ReportOutcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter_mut()
            .map(|store| {
                let (agent, barrier) = (&agent, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    (1..=N_REPORTS)
                        .map(|seq| {
                            let digest = format!("d{seq}");
                            let state = format!("{{\"seq\":{seq}}}");
                            store
                                .record_report(&report(
                                    &agent.id,
                                    seq,
                                    &digest,
                                    Some(&state),
                                    &[&state],
                                ))
                                .expect("record")
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("the thread"))
            .collect()
    });
    let n_stored = outcomes
        .iter()
        .flatten()
        .filter(|outcome| **outcome == ReportOutcome::Stored)
        .count();
    assert_eq!(n_stored as u64, N_REPORTS, "{outcomes:?}");
    // Each sender sends in order, so it is never ahead of the stored chain.
    assert!(
        outcomes
            .iter()
            .flatten()
            .all(|outcome| !matches!(outcome, ReportOutcome::OutOfOrder { .. })),
        "{outcomes:?}"
    );
    let store = &stores[0];
    let mut seqs: Vec<u64> = store
        .states(&agent.id, 1000)
        .expect("states")
        .iter()
        .map(|state| state.seq)
        .collect();
    seqs.reverse();
    assert_eq!(seqs, (1..=N_REPORTS).collect::<Vec<_>>());
    let events = store.events(None, 0, 1000).expect("events");
    let event_seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(event_seqs, (1..=N_REPORTS).collect::<Vec<_>>());
    let row = store.agent(&agent.id).expect("agent").expect("known");
    assert_eq!(
        (row.last_seq, row.last_digest),
        (N_REPORTS, format!("d{N_REPORTS}"))
    );
}

/// A host state of 100 listeners as the API writes it (about 20 KB), with
/// text that is not ASCII; `n` makes each one different.
fn big_state(n: u32) -> String {
    let listeners: Vec<String> = (0..100)
        .map(|idx| {
            format!(
                "{{\"protocol\":\"tcp\",\"address\":\"198.18.0.{}\",\"port\":{},\
                 \"owners\":[{{\"pid\":{},\"name\":\"wörker-{idx}\",\
                 \"exe\":\"/usr/sbin/svc\",\"package\":\"svc\",\"user\":\"www-data\"}}]}}",
                idx % 250,
                8000 + idx,
                1000 * n + idx
            )
        })
        .collect();
    format!(
        "{{\"hostname\":\"host ✓\",\"listeners\":[{}],\"n\":{n}}}",
        listeners.join(",")
    )
}

/// A handle from `concurrent_handle` is the same store: what one writes the
/// other reads, and reports on handles of one store run from several threads
/// store each number once.
fn concurrent_handles_share_the_store(database: &dyn Database) {
    const N_REPORTS: u64 = 30;
    let mut store = database.open().expect("open");
    let Some(mut handle) = store.concurrent_handle() else {
        assert!(!database.pooled(), "a pooled store gave no handle");
        return;
    };
    assert!(database.pooled(), "a store without a pool gave a handle");
    let agents: Vec<NewAgent> = (1..=3)
        .map(|n| new_agent(n, AgentStatus::Accepted))
        .collect();
    handle.enrol_agent(&agents[0]).expect("enrol");
    assert_eq!(
        store.agent(&agents[0].id).expect("agent"),
        Some(enrolled_row(&agents[0]))
    );
    for agent in &agents[1..] {
        store.enrol_agent(agent).expect("enrol");
    }
    // Four threads, each on its own handle: one agent each, and the fourth
    // on the first agent's chain too, as two servers receiving one agent's
    // reports (the one behind sees duplicates and, for a number already
    // passed, a fork; never a gap).
    let barrier = Barrier::new(4);
    let outcomes: Vec<(usize, ReportOutcome)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|thread_idx| {
                let mut handle = store.concurrent_handle().expect("a handle");
                let (agents, barrier) = (&agents, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let agent_idx = thread_idx % agents.len();
                    let agent = &agents[agent_idx];
                    (1..=N_REPORTS)
                        .map(|seq| {
                            let state = format!("{{\"seq\":{seq}}}");
                            let outcome = handle
                                .record_report_with(
                                    &report(&agent.id, seq, &format!("d{seq}"), None, &[&state]),
                                    &mut |_| Ok(Some(state.clone())),
                                )
                                .expect("record")
                                .expect("built");
                            (agent_idx, outcome)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|thread| thread.join().expect("the thread"))
            .collect()
    });
    for agent_idx in 0..agents.len() {
        let n_stored = outcomes
            .iter()
            .filter(|(idx, outcome)| *idx == agent_idx && *outcome == ReportOutcome::Stored)
            .count();
        assert_eq!(
            n_stored as u64, N_REPORTS,
            "agent {agent_idx}: {outcomes:?}"
        );
    }
    assert!(
        outcomes
            .iter()
            .all(|(_, outcome)| !matches!(outcome, ReportOutcome::OutOfOrder { .. })),
        "{outcomes:?}"
    );
    for agent in &agents {
        let mut seqs: Vec<u64> = store
            .states(&agent.id, 1000)
            .expect("states")
            .iter()
            .map(|state| state.seq)
            .collect();
        seqs.reverse();
        assert_eq!(seqs, (1..=N_REPORTS).collect::<Vec<_>>(), "{}", agent.id);
        let events = store.events(Some(&agent.id), 0, 1000).expect("events");
        assert_eq!(events.len() as u64, N_REPORTS, "{}", agent.id);
        assert_eq!(
            store
                .agent(&agent.id)
                .expect("agent")
                .expect("known")
                .last_seq,
            N_REPORTS
        );
    }
}

/// `record_report_with`: the builder sees the latest stored state, only when
/// the report is stored; what it returns is stored (or not, when `None`);
/// giving up writes nothing.
fn report_with_builds_on_the_latest_state(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let agent = new_agent(1, AgentStatus::Accepted);
    let pending = new_agent(2, AgentStatus::Pending);
    store.enrol_agent(&agent).expect("enrol");
    store.enrol_agent(&pending).expect("enrol");
    let id = agent.id.as_str();
    let mut seen: Vec<Option<StateRow>> = Vec::new();
    let record = |store: &mut Box<dyn FleetStore>,
                  report: &NewReport,
                  next: Result<Option<&str>, Abandon>,
                  seen: &mut Vec<Option<StateRow>>| {
        store
            .record_report_with(report, &mut |latest| {
                seen.push(latest);
                next.map(|state| state.map(str::to_owned))
            })
            .expect("record")
    };

    // The ignored `state` of the report is not what is stored.
    let first = report(id, 1, "d1", Some("{\"ignored\":1}"), &["e1"]);
    assert_eq!(
        record(&mut store, &first, Ok(Some("{\"n\":1}")), &mut seen),
        Ok(ReportOutcome::Stored)
    );
    assert_eq!(seen, vec![None]);
    let state_1 = StateRow {
        agent_id: id.to_owned(),
        seq: 1,
        taken_at: first.taken_at,
        received_at: first.received_at,
        state: "{\"n\":1}".to_owned(),
    };
    assert_eq!(
        store.latest_state(id).expect("latest"),
        Some(state_1.clone())
    );

    // Unchanged: the builder sees state 1 and stores nothing new.
    let second = report(id, 2, "d2", None, &[]);
    assert_eq!(
        record(&mut store, &second, Ok(None), &mut seen),
        Ok(ReportOutcome::Stored)
    );
    assert_eq!(seen.last(), Some(&Some(state_1.clone())));
    assert_eq!(store.states(id, 10).expect("states"), vec![state_1.clone()]);
    assert_eq!(store.agent(id).expect("agent").expect("known").last_seq, 2);

    // Giving up writes nothing at all.
    let before = report_footprint(store.as_ref(), id);
    let third = report(id, 3, "d3", None, &["e3"]);
    assert_eq!(
        record(&mut store, &third, Err(Abandon), &mut seen),
        Err(Abandon)
    );
    assert_eq!(seen.last(), Some(&Some(state_1.clone())));
    assert_eq!(report_footprint(store.as_ref(), id), before);

    // The builder is not asked for what is not stored.
    let n_seen = seen.len();
    for (report, expected) in [
        (second.clone(), ReportOutcome::Duplicate),
        (report(id, 2, "other", None, &[]), ReportOutcome::Forked),
        (
            report(id, 9, "d9", None, &[]),
            ReportOutcome::OutOfOrder { expected: 3 },
        ),
        (
            report(&pending.id, 1, "p1", None, &[]),
            ReportOutcome::NotAccepted {
                status: Some(AgentStatus::Pending),
            },
        ),
    ] {
        assert_eq!(
            record(&mut store, &report, Ok(Some("{}")), &mut seen),
            Ok(expected)
        );
    }
    assert_eq!(seen.len(), n_seen);
    assert_eq!(report_footprint(store.as_ref(), id), before);

    assert_eq!(
        record(&mut store, &third, Ok(Some("{\"n\":3}")), &mut seen),
        Ok(ReportOutcome::Stored)
    );
    let states = store.states(id, 10).expect("states");
    assert_eq!(states.iter().map(|row| row.seq).collect::<Vec<_>>(), [3, 1]);
    assert_eq!(states[0].state, "{\"n\":3}");
    let events = store.events(Some(id), 0, 10).expect("events");
    assert_eq!(
        events
            .iter()
            .map(|event| event.event.as_str())
            .collect::<Vec<_>>(),
        ["e1", "e3"]
    );
}

/// States of every size come back byte for byte, from `latest_state` and
/// from `states`, also after the store is opened again.
fn large_states_read_back_identically(database: &dyn Database) {
    let agent = new_agent(1, AgentStatus::Accepted);
    let states = [
        big_state(1),
        String::new(),
        "{}".to_owned(),
        big_state(2).repeat(20),
    ];
    {
        let mut store = database.open().expect("open");
        store.enrol_agent(&agent).expect("enrol");
        for (idx, state) in states.iter().enumerate() {
            let seq = idx as u64 + 1;
            store
                .record_report(&report(
                    &agent.id,
                    seq,
                    &format!("d{seq}"),
                    Some(state),
                    &[],
                ))
                .expect("record");
            assert_eq!(
                store
                    .latest_state(&agent.id)
                    .expect("latest")
                    .expect("one")
                    .state,
                *state
            );
        }
    }
    let store = database.open().expect("open again");
    let read: Vec<String> = store
        .states(&agent.id, 10)
        .expect("states")
        .into_iter()
        .rev()
        .map(|row| row.state)
        .collect();
    assert_eq!(read, states);
}

/// A state `age_secs` after `AT`, stored by `report` `seq`.
fn state_report(agent_id: &str, seq: u64, received_secs: i64) -> NewReport {
    NewReport {
        received_at: at(received_secs),
        taken_at: at(received_secs) - time::Duration::seconds(1),
        ..report(
            agent_id,
            seq,
            &format!("d{seq}"),
            Some(&format!("{{\"seq\":{seq}}}")),
            &["{\"event\":1}"],
        )
    }
}

fn stored_seqs(store: &dyn FleetStore, agent_id: &str) -> Vec<u64> {
    let mut seqs: Vec<u64> = store
        .states(agent_id, 1000)
        .expect("states")
        .iter()
        .map(|state| state.seq)
        .collect();
    seqs.reverse();
    seqs
}

/// Pruning removes the states replaced before the cutoff, and only those:
/// the state current at the cutoff stays (it was the host's inside the
/// window), each agent's latest stays however old, and events and the trail
/// stay whole.
fn pruning_keeps_the_latest_and_the_window(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let agents: Vec<NewAgent> = (1..=4)
        .map(|n| new_agent(n, AgentStatus::Accepted))
        .collect();
    for agent in &agents {
        store.enrol_agent(agent).expect("enrol");
    }
    let [churning, stale, recent, heartbeat] = [0, 1, 2, 3].map(|idx| agents[idx].id.as_str());
    // Received at 10, 20, 30 and 50 s; the cutoff is 35 s.
    for (seq, secs) in [(1, 10), (2, 20), (3, 30), (4, 50)] {
        store
            .record_report(&state_report(churning, seq, secs))
            .expect("record");
    }
    // One old state, then reports that changed nothing.
    store
        .record_report(&state_report(stale, 1, 5))
        .expect("record");
    for seq in 2..=3 {
        store
            .record_report(&report(stale, seq, &format!("d{seq}"), None, &[]))
            .expect("record");
    }
    for (seq, secs) in [(1, 40), (2, 45)] {
        store
            .record_report(&state_report(recent, seq, secs))
            .expect("record");
    }
    // Replaced exactly at the cutoff: not before it, so kept.
    for (seq, secs) in [(1, 12), (2, 35)] {
        store
            .record_report(&state_report(heartbeat, seq, secs))
            .expect("record");
    }
    let events_before = store.events(None, 0, 1000).expect("events");
    let trail_before = store.trail(1000).expect("trail");
    let latest_before: Vec<Option<StateRow>> = agents
        .iter()
        .map(|agent| store.latest_state(&agent.id).expect("latest"))
        .collect();

    assert_eq!(store.prune_states(at(35), 100).expect("prune"), 2);
    assert_eq!(stored_seqs(store.as_ref(), churning), [3, 4]);
    assert_eq!(stored_seqs(store.as_ref(), stale), [1]);
    assert_eq!(stored_seqs(store.as_ref(), recent), [1, 2]);
    assert_eq!(stored_seqs(store.as_ref(), heartbeat), [1, 2]);
    assert_eq!(store.prune_states(at(35), 100).expect("prune again"), 0);

    assert_eq!(store.events(None, 0, 1000).expect("events"), events_before);
    assert_eq!(store.trail(1000).expect("trail"), trail_before);
    let latest_after: Vec<Option<StateRow>> = agents
        .iter()
        .map(|agent| store.latest_state(&agent.id).expect("latest"))
        .collect();
    assert_eq!(latest_after, latest_before);

    // A cutoff past everything leaves each agent its latest state alone.
    assert_eq!(store.prune_states(at(10_000), 100).expect("prune"), 3);
    for (agent, latest) in agents.iter().zip(&latest_before) {
        let states = store.states(&agent.id, 1000).expect("states");
        assert_eq!(states.len(), 1, "{}", agent.id);
        assert_eq!(Some(&states[0]), latest.as_ref());
    }
    // Storing goes on after pruning, on top of the kept state.
    store
        .record_report(&state_report(churning, 5, 60))
        .expect("record");
    assert_eq!(stored_seqs(store.as_ref(), churning), [4, 5]);
    assert_eq!(
        store.events(None, 0, 1000).expect("events").len(),
        events_before.len() + 1
    );
}

/// At most `limit` states a call, oldest first, until none is due.
fn pruning_in_batches(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let agents: Vec<NewAgent> = (1..=2)
        .map(|n| new_agent(n, AgentStatus::Accepted))
        .collect();
    for agent in &agents {
        store.enrol_agent(agent).expect("enrol");
    }
    // Interleaved: agent 1 at 1, 3, 5, ... s, agent 2 at 2, 4, 6, ... s.
    for seq in 1..=6_u64 {
        for (agent_idx, agent) in agents.iter().enumerate() {
            let secs = (seq as i64 - 1) * 2 + agent_idx as i64 + 1;
            store
                .record_report(&state_report(&agent.id, seq, secs))
                .expect("record");
        }
    }
    assert_eq!(store.prune_states(at(100), 3).expect("prune"), 3);
    // The three oldest: agent 1's first two and agent 2's first.
    assert_eq!(stored_seqs(store.as_ref(), &agents[0].id), [3, 4, 5, 6]);
    assert_eq!(stored_seqs(store.as_ref(), &agents[1].id), [2, 3, 4, 5, 6]);
    assert_eq!(store.prune_states(at(100), 3).expect("prune"), 3);
    assert_eq!(store.prune_states(at(100), 3).expect("prune"), 3);
    assert_eq!(store.prune_states(at(100), 3).expect("prune"), 1);
    assert_eq!(store.prune_states(at(100), 3).expect("prune"), 0);
    assert_eq!(stored_seqs(store.as_ref(), &agents[0].id), [6]);
    assert_eq!(stored_seqs(store.as_ref(), &agents[1].id), [6]);
    assert_eq!(store.prune_states(at(100), 0).expect("prune nothing"), 0);
}

/// A database schema 1 made (states stored as they came) migrates to the
/// current schema untouched: its state reads back as it was, the next
/// report builds on it, and both read back identically after pruning
/// nothing.
fn schema_1_states_read_after_migration(database: &dyn Database) {
    let agent = new_agent(1, AgentStatus::Accepted);
    let old = StateRow {
        agent_id: agent.id.clone(),
        seq: 4,
        taken_at: at(100),
        received_at: at(101),
        state: big_state(4),
    };
    database.make_schema_1(&agent, &old);
    let mut store = database.open().expect("open and migrate");
    assert!(
        database
            .dump()
            .contains(&format!("{}", database.known_version())),
        "not migrated"
    );
    assert_eq!(
        store.latest_state(&agent.id).expect("latest"),
        Some(old.clone())
    );
    let next = NewReport {
        received_at: at(200),
        ..report(&agent.id, 5, "d5", None, &[])
    };
    let new_state = big_state(5);
    assert_eq!(
        store
            .record_report_with(&next, &mut |latest| {
                assert_eq!(latest.as_ref(), Some(&old));
                Ok(Some(new_state.clone()))
            })
            .expect("record"),
        Ok(ReportOutcome::Stored)
    );
    assert_eq!(store.prune_states(at(150), 10).expect("prune"), 0);
    let states = store.states(&agent.id, 10).expect("states");
    assert_eq!(states.len(), 2);
    assert_eq!(states[0].state, new_state);
    assert_eq!(states[1], old);
    // The old row goes like any other once its successor is old enough.
    assert_eq!(store.prune_states(at(300), 10).expect("prune"), 1);
    assert_eq!(stored_seqs(store.as_ref(), &agent.id), [5]);
}

fn scan_job(shards: u32, vantage: Option<&str>, lease_seconds: u32) -> NewScanJob {
    NewScanJob {
        created_by: "amy".to_owned(),
        created_at: at(100),
        scan_args: vec!["--ports".into(), "22,80".into(), "198.18.0.0/24".into()],
        seed: u64::MAX - 1,
        shards,
        vantage: vantage.map(str::to_owned),
        lease_seconds,
    }
}

fn lease_token(n: u32) -> String {
    format!("lease-{n:04}")
}

fn scan_jobs_leased_renewed_finished(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let job = store.add_scan_job(&scan_job(3, None, 60)).expect("add job");
    assert_eq!((job.shards, job.done, job.leased), (3, 0, 0));
    assert_eq!(job.seed, u64::MAX - 1, "the seed keeps its 64 bits");
    assert!(
        trail_of(store.as_ref()).contains(&(
            "amy".to_owned(),
            "scan.submit".to_owned(),
            job.id.to_string(),
            "3 shards of seed 18446744073709551614: --ports 22,80 198.18.0.0/24".to_owned()
        )),
        "{:?}",
        trail_of(store.as_ref())
    );
    let (listed, parts) = store.scan_job(job.id).expect("read").expect("the job");
    assert_eq!(listed, job);
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|part| part.state == ShardState::Pending));

    // Parts are handed out in order, each once.
    let first = store
        .lease_shard("node-a", None, &lease_token(1), at(200))
        .expect("lease")
        .expect("a part");
    assert_eq!((first.job.id, first.index, first.attempt), (job.id, 0, 1));
    assert_eq!(first.expires, at(260));
    let second = store
        .lease_shard("node-b", None, &lease_token(2), at(201))
        .expect("lease")
        .expect("a part");
    assert_eq!(second.index, 1);

    // Renewed from its renewal time.
    assert_eq!(
        store.renew_lease(&lease_token(1), at(230)).expect("renew"),
        LeaseCheck::Held {
            job_id: job.id,
            index: 0,
            expires: at(290)
        }
    );
    assert!(matches!(
        store
            .finish_shard(&lease_token(1), at(240), "{\"run\":0}")
            .expect("finish"),
        LeaseCheck::Held { index: 0, .. }
    ));
    // Done: neither renewed nor finished again.
    for check in [
        store.renew_lease(&lease_token(1), at(241)).expect("renew"),
        store
            .finish_shard(&lease_token(1), at(241), "{\"run\":\"again\"}")
            .expect("finish"),
    ] {
        match check {
            LeaseCheck::Lost(why) => assert!(why.contains("already done"), "{why}"),
            held => panic!("a done part's lease held: {held:?}"),
        }
    }
    assert!(matches!(
        store
            .renew_lease("never-handed-out", at(241))
            .expect("renew"),
        LeaseCheck::Lost(_)
    ));
    let third = store
        .lease_shard("node-a", None, &lease_token(3), at(242))
        .expect("lease")
        .expect("a part");
    assert_eq!(third.index, 2);
    assert_eq!(
        store
            .lease_shard("node-c", None, &lease_token(4), at(243))
            .expect("lease"),
        None,
        "every part is leased or done"
    );
    store
        .finish_shard(&lease_token(3), at(250), "{\"run\":2}")
        .expect("finish");
    store
        .finish_shard(&lease_token(2), at(251), "{\"run\":1}")
        .expect("finish");
    let (done, parts) = store.scan_job(job.id).expect("read").expect("the job");
    assert!(done.is_complete());
    assert_eq!((done.done, done.leased), (3, 0));
    assert_eq!(
        parts.iter().map(|p| p.node.as_deref()).collect::<Vec<_>>(),
        [Some("node-a"), Some("node-b"), Some("node-a")]
    );
    assert_eq!(parts[2].finished_at, Some(at(250)));
    assert_eq!(
        store.shard_runs(job.id).expect("runs"),
        vec![
            (0, "{\"run\":0}".to_owned()),
            (1, "{\"run\":1}".to_owned()),
            (2, "{\"run\":2}".to_owned())
        ]
    );
    assert_eq!(store.scan_jobs(10).expect("jobs"), vec![done]);
}

fn expired_leases_taken_again_late_runs_refused(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let job = store.add_scan_job(&scan_job(1, None, 10)).expect("add job");
    store
        .lease_shard("node-a", None, &lease_token(1), at(200))
        .expect("lease")
        .expect("a part");
    // Not expired yet: nothing to lease.
    assert_eq!(
        store
            .lease_shard("node-b", None, &lease_token(2), at(209))
            .expect("lease"),
        None
    );
    // Expired but not taken again: its holder may still renew and finish.
    assert!(matches!(
        store.renew_lease(&lease_token(1), at(215)).expect("renew"),
        LeaseCheck::Held { .. }
    ));
    // Expired again (renewed to 225), and taken by another node.
    let again = store
        .lease_shard("node-b", None, &lease_token(2), at(226))
        .expect("lease")
        .expect("the expired part");
    assert_eq!((again.index, again.attempt), (0, 2));
    // The first node comes back late: refused, nothing stored.
    match store
        .finish_shard(&lease_token(1), at(227), "{\"late\":true}")
        .expect("finish")
    {
        LeaseCheck::Lost(why) => assert!(why.contains("leased to another node"), "{why}"),
        held => panic!("a late run was taken: {held:?}"),
    }
    assert_eq!(store.shard_runs(job.id).expect("runs"), vec![]);
    store
        .finish_shard(&lease_token(2), at(228), "{\"late\":false}")
        .expect("finish");
    assert_eq!(
        store.shard_runs(job.id).expect("runs"),
        vec![(0, "{\"late\":false}".to_owned())]
    );
    let (_, parts) = store.scan_job(job.id).expect("read").expect("the job");
    assert_eq!(parts[0].attempts, 2);
    assert_eq!(parts[0].node.as_deref(), Some("node-b"));
}

fn scan_jobs_by_vantage_point(database: &dyn Database) {
    let mut store = database.open().expect("open");
    let office = store
        .add_scan_job(&scan_job(1, Some("office"), 60))
        .expect("add job");
    let anywhere = store.add_scan_job(&scan_job(1, None, 60)).expect("add job");
    // A node of another vantage point takes only the job that names none.
    let lease = store
        .lease_shard("dc2-a", Some("dc-2"), &lease_token(1), at(200))
        .expect("lease")
        .expect("a part");
    assert_eq!(lease.job.id, anywhere.id);
    assert_eq!(
        store
            .lease_shard("dc2-b", Some("dc-2"), &lease_token(2), at(200))
            .expect("lease"),
        None
    );
    assert_eq!(
        store
            .lease_shard("plain", None, &lease_token(3), at(200))
            .expect("lease"),
        None,
        "a node naming no vantage point takes only jobs that name none"
    );
    let lease = store
        .lease_shard("office-a", Some("office"), &lease_token(4), at(200))
        .expect("lease")
        .expect("a part");
    assert_eq!(lease.job.id, office.id);
    assert_eq!(lease.job.vantage.as_deref(), Some("office"));
}

fn concurrent_leases_take_each_part_once(database: &dyn Database) {
    const PARTS: u32 = 64;
    const NODES: u32 = 4;
    let job = {
        let mut store = database.open().expect("open");
        store
            .add_scan_job(&scan_job(PARTS, None, 600))
            .expect("add job")
    };
    let barrier = Barrier::new(NODES as usize);
    let mut taken: Vec<(u32, u32)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..NODES)
            .map(|node| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut store = database.open().expect("open");
                    barrier.wait();
                    let mut mine = Vec::new();
                    for n in 0.. {
                        let token = format!("node-{node}-{n}");
                        let Some(lease) = store
                            .lease_shard(&format!("node-{node}"), None, &token, at(200))
                            .expect("lease")
                        else {
                            break;
                        };
                        store
                            .finish_shard(&token, at(201), &format!("{{\"part\":{}}}", lease.index))
                            .expect("finish");
                        mine.push((lease.index, node));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("a node thread"))
            .collect()
    });
    taken.sort_unstable();
    assert_eq!(
        taken.iter().map(|(index, _)| *index).collect::<Vec<_>>(),
        (0..PARTS).collect::<Vec<_>>(),
        "each part leased exactly once"
    );
    let runs = database
        .open()
        .expect("open")
        .shard_runs(job.id)
        .expect("runs");
    assert_eq!(runs.len(), PARTS as usize);
}
