//! The SQLite store against real files: every field through a round trip,
//! migrations, refusals, and the bookkeeping of scans and audits.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use perimeter_model::{
    Account, AuthState, Finding, HostSnapshot, Listener, Netns, Ownership, PackageRef, PortResult,
    PortState, Problem, Process, Protocol, ScanInfo, Scope, ServiceInfo, Severity, SocketOwner,
    TlsInfo,
};
use perimeter_store::{AuditRecord, SCHEMA_VERSION, SqliteStore, Store, StoreError, TargetKey};
use time::macros::datetime;

type TestResult = Result<(), Box<dyn std::error::Error>>;

// The CLI moves the store into `spawn_blocking`, which needs `Send`.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<SqliteStore>();
};

fn scan_info(targets: &[&str]) -> ScanInfo {
    ScanInfo {
        id: 0,
        targets: targets.iter().map(|t| (*t).to_owned()).collect(),
        resolved: vec![(
            "lab.example".to_owned(),
            vec![
                "198.18.0.5".parse().expect("v4"),
                "2001:db8::5".parse().expect("v6"),
            ],
        )],
        excluded: vec!["198.18.0.9".to_owned()],
        ports: "22,80,443,6379".to_owned(),
        profile: "default".to_owned(),
        // Above i64::MAX, which a signed INTEGER column would not hold.
        seed: u64::MAX - 41,
        options: BTreeMap::from([
            ("rate".to_owned(), "1000".to_owned()),
            ("retries".to_owned(), "2".to_owned()),
        ]),
        started: datetime!(2024-05-01 10:00:00.123456789 +02:00),
        finished: None,
        complete: false,
        n_probes: 0,
    }
}

fn full_results() -> Vec<PortResult> {
    let https = ServiceInfo {
        name: "https".to_owned(),
        product: Some("nginx".to_owned()),
        version: Some("1.22.1".to_owned()),
        banner: Some("HTTP/1.1 200 OK\\r\\nServer: nginx".to_owned()),
        tls: Some(TlsInfo {
            subject: "CN=lab.example".to_owned(),
            issuer: "CN=Lab CA, O=Perimeter Test".to_owned(),
            not_after: Some(datetime!(9999-12-31 23:59:59 UTC)),
            subject_alt_names: vec!["lab.example".to_owned(), "*.lab.example".to_owned()],
        }),
        auth: AuthState::Unknown,
        extra: BTreeMap::from([
            ("http.title".to_owned(), "Welcome to nginx!".to_owned()),
            ("alpn".to_owned(), "h2,http/1.1".to_owned()),
        ]),
    };
    let redis = ServiceInfo {
        name: "redis".to_owned(),
        product: None,
        version: Some("7.0.15".to_owned()),
        banner: None,
        tls: None,
        auth: AuthState::None,
        extra: BTreeMap::new(),
    };
    let mut tls_without_expiry = ServiceInfo::named("imaps");
    tls_without_expiry.tls = Some(TlsInfo {
        subject: String::new(),
        issuer: String::new(),
        not_after: None,
        subject_alt_names: vec![],
    });
    tls_without_expiry.auth = AuthState::Required;
    vec![
        PortResult {
            address: "198.18.0.5".parse().expect("v4"),
            port: 443,
            protocol: Protocol::Tcp,
            state: PortState::Open,
            service: Some(https),
            findings: vec![
                Finding::new(
                    "tls.expiry-far",
                    Severity::Info,
                    "tcp 198.18.0.5:443",
                    "expires in 9999",
                )
                .with_evidence("notAfter=9999-12-31")
                .with_evidence("issuer=CN=Lab CA")
                .with_remedy("issue certificates with bounded lifetimes"),
            ],
        },
        PortResult {
            address: "2001:db8::5".parse().expect("v6"),
            port: 6379,
            protocol: Protocol::Tcp,
            state: PortState::Open,
            service: Some(redis),
            findings: vec![
                Finding::new(
                    "redis.no-auth",
                    Severity::Critical,
                    "tcp [2001:db8::5]:6379",
                    "no password",
                )
                .with_evidence("PING -> +PONG"),
                Finding::new(
                    "redis.old",
                    Severity::Low,
                    "tcp [2001:db8::5]:6379",
                    "old version",
                ),
            ],
        },
        PortResult {
            address: "198.18.0.5".parse().expect("v4"),
            port: 993,
            protocol: Protocol::Tcp,
            state: PortState::Open,
            service: Some(tls_without_expiry),
            findings: vec![],
        },
        PortResult {
            address: "198.18.0.5".parse().expect("v4"),
            port: 22,
            protocol: Protocol::Tcp,
            state: PortState::Closed,
            service: None,
            findings: vec![],
        },
        PortResult {
            address: "198.18.0.6".parse().expect("v4"),
            port: 53,
            protocol: Protocol::Udp,
            state: PortState::Filtered,
            service: None,
            findings: vec![],
        },
    ]
}

#[test]
fn scans_round_trip_every_field() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("history.db");
    let mut store = SqliteStore::open(&path)?;
    let info = scan_info(&["198.18.0.0/24", "lab.example"]);
    let results = full_results();

    let scan_id = store.begin_scan(&info)?;
    let (first_batch, second_batch) = results.split_at(2);
    store.record_results(scan_id, first_batch)?;
    store.record_results(scan_id, second_batch)?;
    let finished = datetime!(2024-05-01 08:05:30.5 UTC);
    store.finish_scan(scan_id, finished, true, 1234)?;
    drop(store);

    let store = SqliteStore::open(&path)?;
    let (loaded_info, loaded_results) = store.load_scan(scan_id)?;
    let expected_info = ScanInfo {
        id: scan_id,
        finished: Some(finished),
        complete: true,
        n_probes: 1234,
        ..info.clone()
    };
    assert_eq!(loaded_info, expected_info);
    // OffsetDateTime equality compares instants; the offset is kept too.
    assert_eq!(loaded_info.started.offset(), info.started.offset());
    assert_eq!(loaded_results, results);

    let listed = store.list_scans(10)?;
    assert_eq!(listed.len(), 1);
    let summary = listed.first().ok_or("one scan listed")?;
    assert_eq!(summary.info, expected_info);
    assert_eq!((summary.n_results, summary.n_open), (5, 3));
    assert_eq!(summary.target_key, TargetKey::of(&info));
    Ok(())
}

/// Shards (issue 11) are stored with a key of their own: never the
/// previous scan of the whole target set or of another shard, and the key
/// survives the round trip.
#[test]
fn shards_are_kept_apart_from_the_whole_scan_and_each_other() -> TestResult {
    let mut store = SqliteStore::open_in_memory()?;
    let whole = scan_info(&["198.18.0.0/24"]);
    let shard = |part: &str| {
        let mut info = whole.clone();
        info.options
            .insert(perimeter_store::SHARD_OPTION.to_owned(), part.to_owned());
        info
    };
    let mut ids = BTreeMap::new();
    for (name, info) in [
        ("whole", whole.clone()),
        ("0/2", shard("0/2")),
        ("1/2", shard("1/2")),
        ("0/2 again", shard("0/2")),
    ] {
        let scan_id = store.begin_scan(&info)?;
        store.finish_scan(scan_id, datetime!(2024-05-01 12:00 UTC), true, 10)?;
        ids.insert(name, scan_id);
    }
    let previous = |info: &ScanInfo| -> Result<Vec<i64>, StoreError> {
        Ok(store
            .previous_scans_of(&TargetKey::of(info), 10)?
            .iter()
            .map(|summary| summary.info.id)
            .collect())
    };
    assert_eq!(previous(&whole)?, vec![ids["whole"]]);
    assert_eq!(previous(&shard("0/2"))?, vec![ids["0/2 again"], ids["0/2"]]);
    assert_eq!(previous(&shard("1/2"))?, vec![ids["1/2"]]);
    let stored = store
        .list_scans(1)?
        .into_iter()
        .next()
        .ok_or("no scan listed")?;
    assert_eq!(stored.target_key, TargetKey::of(&shard("0/2")));
    assert_ne!(stored.target_key, TargetKey::of_whole(&stored.info));
    Ok(())
}

#[test]
fn previous_scans_are_the_complete_ones_with_the_same_key() -> TestResult {
    let mut store = SqliteStore::open_in_memory()?;
    let lab = scan_info(&["198.18.0.0/24"]);
    let other = scan_info(&["198.18.1.0/24"]);
    let mut ids = Vec::new();
    for (info, complete) in [
        (&lab, true),
        (&other, true),
        (&lab, true),
        (&lab, false),
        (&lab, true),
    ] {
        let scan_id = store.begin_scan(info)?;
        store.finish_scan(scan_id, datetime!(2024-05-01 12:00 UTC), complete, 10)?;
        ids.push(scan_id);
    }
    let unfinished = store.begin_scan(&lab)?;

    // The same targets spelled differently are the same target set.
    let respelled = ScanInfo {
        targets: vec![" 198.18.0.0/24".to_owned()],
        ports: "6379, 443,80,22".to_owned(),
        ..lab.clone()
    };
    let previous: Vec<i64> = store
        .previous_scans_of(&TargetKey::of(&respelled), 2)?
        .iter()
        .map(|summary| summary.info.id)
        .collect();
    assert_eq!(previous, vec![ids[4], ids[2]]);
    let all: Vec<i64> = store
        .previous_scans_of(&TargetKey::of(&lab), 10)?
        .iter()
        .map(|summary| summary.info.id)
        .collect();
    assert_eq!(all, vec![ids[4], ids[2], ids[0]]);

    let listed: Vec<i64> = store
        .list_scans(3)?
        .iter()
        .map(|summary| summary.info.id)
        .collect();
    assert_eq!(listed, vec![unfinished, ids[4], ids[3]]);
    Ok(())
}

#[test]
fn finished_and_missing_scans_are_refused() -> TestResult {
    let mut store = SqliteStore::open_in_memory()?;
    let scan_id = store.begin_scan(&scan_info(&["198.18.0.1"]))?;
    store.finish_scan(scan_id, datetime!(2024-05-01 12:00 UTC), true, 1)?;

    let err = store
        .record_results(scan_id, &full_results())
        .expect_err("finished scan refuses results");
    assert!(
        matches!(err, StoreError::ScanFinished { id, .. } if id == scan_id),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("database :memory:: scan {scan_id} is already finished and takes no more results")
    );
    let err = store
        .finish_scan(scan_id, datetime!(2024-05-01 12:00 UTC), true, 1)
        .expect_err("finished twice");
    assert!(matches!(err, StoreError::ScanFinished { .. }), "{err}");
    let err = store.record_results(999, &[]).expect_err("no such scan");
    assert_eq!(err.to_string(), "database :memory:: no scan with id 999");
    assert!(matches!(
        store.load_scan(999),
        Err(StoreError::NoSuchScan { id: 999, .. })
    ));
    // The refused batch left nothing behind.
    let (_, results) = store.load_scan(scan_id)?;
    assert_eq!(results, vec![]);
    Ok(())
}

fn process(pid: u32, ppid: u32, exe: Option<PathBuf>, ownership: Ownership) -> Process {
    Process {
        pid,
        ppid,
        comm: "redis-server".to_owned(),
        cmdline: vec!["redis-server *:6379".to_owned()],
        uid: 107,
        account: Some(Account {
            name: "redis".to_owned(),
            uid: 107,
            shell: Some("/usr/sbin/nologin".to_owned()),
            home: Some("/var/lib/redis".to_owned()),
        }),
        exe,
        exe_deleted: false,
        cwd: None,
        cgroup: Some("/system.slice/redis-server.service".to_owned()),
        unit: Some("redis-server.service".to_owned()),
        container: None,
        netns_inode: Some(4_026_531_840),
        ownership,
    }
}

fn listener(address: &str, port: u16, owners: &[u32], netns: &Netns) -> Listener {
    let address = address.parse().expect("test address");
    Listener {
        protocol: Protocol::Tcp,
        address,
        port,
        scope: Scope::of(address),
        v6only: None,
        interface: None,
        inode: 91_000 + u64::from(port),
        socket_uid: 107,
        netns: netns.clone(),
        owners: owners
            .iter()
            .map(|&pid| SocketOwner { pid, fd: 6 })
            .collect(),
    }
}

fn snapshot() -> HostSnapshot {
    let host_ns = Netns {
        inode: 4_026_531_840,
        name: "host".to_owned(),
    };
    let lab_ns = Netns {
        // Larger than i64::MAX, to check the bit-for-bit storage of inodes.
        inode: u64::MAX - 7,
        name: "netns:[18446744073709551608]".to_owned(),
    };
    let weird_exe = PathBuf::from(OsString::from_vec(b"/opt/\xff\xfeodd/server".to_vec()));
    let mut dual_stack = listener("::", 22, &[900], &host_ns);
    dual_stack.v6only = Some(false);
    dual_stack.interface = Some("eth0".to_owned());
    let mut sshd = process(
        900,
        1,
        Some(PathBuf::from("/usr/sbin/sshd")),
        Ownership::Unpackaged,
    );
    sshd.account = None;
    sshd.uid = 0;
    sshd.exe_deleted = true;
    sshd.container = Some("docker:0123abcd".to_owned());
    HostSnapshot {
        hostname: "lab-host".to_owned(),
        namespaces: vec![],
        listeners: vec![
            // Pre-forked: the master (812) is the main owner, not its child. The
            // owners are out of pid order on purpose: the stored pids are sorted.
            listener("0.0.0.0", 6379, &[813, 812], &host_ns),
            dual_stack,
            listener("127.0.0.1", 8080, &[], &lab_ns),
            listener("198.18.0.1", 9000, &[950], &lab_ns),
            listener("198.18.0.1", 9001, &[960], &lab_ns),
        ],
        processes: BTreeMap::from([
            (
                812,
                process(
                    812,
                    1,
                    Some(PathBuf::from("/usr/bin/redis-server")),
                    Ownership::Package(PackageRef {
                        manager: "dpkg".to_owned(),
                        name: "redis-server".to_owned(),
                        arch: Some("amd64".to_owned()),
                    }),
                ),
            ),
            (
                813,
                process(
                    813,
                    812,
                    Some(PathBuf::from("/usr/bin/redis-server")),
                    Ownership::NotChecked,
                ),
            ),
            (900, sshd),
            (
                950,
                process(
                    950,
                    1,
                    Some(weird_exe),
                    Ownership::Unknown("no package database".to_owned()),
                ),
            ),
            (960, process(960, 1, None, Ownership::NotChecked)),
        ]),
        redis: vec![],
        sshd: vec![],
        problems: vec![
            Problem::new("/proc/4242/fd", "permission denied").with_hint("run as root"),
            Problem::new("nft list ruleset", "nft not installed"),
        ],
        ..HostSnapshot::default()
    }
}

fn audit_findings() -> Vec<Finding> {
    vec![
        Finding::new(
            "redis.no-auth",
            Severity::High,
            "tcp 0.0.0.0:6379 redis-server (pid 812)",
            "answers without a password",
        )
        .with_evidence("PING -> +PONG")
        .with_evidence("protected-mode no")
        .with_remedy("set requirepass"),
        Finding::new(
            "exec.deleted",
            Severity::Medium,
            "sshd (pid 900)",
            "executable deleted",
        ),
    ]
}

#[test]
fn audits_round_trip_every_field() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("history.db");
    let mut store = SqliteStore::open(&path)?;
    let snapshot = snapshot();
    let taken_at = datetime!(2024-05-02 03:04:05.006 -07:00);
    let audit_id = store.record_audit("lab", taken_at, &snapshot, &audit_findings())?;
    drop(store);

    let store = SqliteStore::open(&path)?;
    let loaded = store.load_audit(audit_id)?;
    let mut expected = AuditRecord {
        id: audit_id,
        ..AuditRecord::from_snapshot("lab", taken_at, &snapshot, &audit_findings())
    };
    // Listeners come back in the order the collector lists them (namespace,
    // protocol, port, address, inode), whatever order they were given in.
    expected.listeners.sort_by(|a, b| {
        (&a.netns, a.protocol, a.port, a.address, a.inode)
            .cmp(&(&b.netns, b.protocol, b.port, b.address, b.inode))
    });
    assert_eq!(loaded, expected);
    assert_eq!(loaded.taken_at.offset(), taken_at.offset());

    // The flattening itself: main owner, user, package or why not.
    let redis = loaded.listeners.get(1).ok_or("redis listener")?;
    assert_eq!(redis.pids, vec![812, 813]);
    let owner = redis.process.as_ref().ok_or("redis has an owner")?;
    assert_eq!(owner.name, "redis-server");
    assert_eq!(owner.user_name(), "redis");
    assert_eq!(
        owner.exe.as_deref(),
        Some(Path::new("/usr/bin/redis-server"))
    );
    assert_eq!(
        redis.package().map(ToString::to_string),
        Some("redis-server:amd64".to_owned())
    );
    let sshd = loaded.listeners.first().ok_or("sshd listener")?;
    assert_eq!(
        sshd.process.as_ref().map(|p| p.user_name()),
        Some("0".to_owned())
    );
    assert_eq!(sshd.v6only, Some(false));
    let orphan = loaded.listeners.get(2).ok_or("ownerless listener")?;
    assert_eq!(orphan.process, None);
    assert_eq!(orphan.netns.inode, u64::MAX - 7);
    let odd = loaded.listeners.get(3).ok_or("odd exe listener")?;
    assert_eq!(
        odd.exe().map(|exe| exe.as_os_str().len()),
        Some(b"/opt/\xff\xfeodd/server".len())
    );

    let summaries = store.list_audits(10)?;
    assert_eq!(summaries.len(), 1);
    let summary = summaries.first().ok_or("one audit")?;
    assert_eq!(
        (
            summary.n_listeners,
            summary.n_findings,
            summary.worst_severity
        ),
        (5, 2, Some(Severity::High))
    );
    assert_eq!(summary.hostname, "lab-host");
    Ok(())
}

#[test]
fn previous_audit_is_the_latest_of_that_host() -> TestResult {
    let mut store = SqliteStore::open_in_memory()?;
    assert_eq!(store.previous_audit("lab")?, None);
    let snapshot = snapshot();
    let first = store.record_audit("lab", datetime!(2024-05-01 0:00 UTC), &snapshot, &[])?;
    let other = store.record_audit(
        "other",
        datetime!(2024-05-02 0:00 UTC),
        &HostSnapshot::default(),
        &[],
    )?;
    let second = store.record_audit(
        "lab",
        datetime!(2024-05-03 0:00 UTC),
        &snapshot,
        &audit_findings(),
    )?;

    let previous = store.previous_audit("lab")?.ok_or("lab has audits")?;
    assert_eq!(previous.id, second);
    assert_eq!(previous.findings, audit_findings());
    let ids: Vec<i64> = store.audits_of("lab", 5)?.iter().map(|a| a.id).collect();
    assert_eq!(ids, vec![second, first]);
    let ids: Vec<i64> = store.list_audits(2)?.iter().map(|a| a.id).collect();
    assert_eq!(ids, vec![second, other]);
    let empty = store.load_audit(other)?;
    assert_eq!(
        (
            empty.listeners.len(),
            empty.findings.len(),
            empty.problems.len()
        ),
        (0, 0, 0)
    );
    assert_eq!(empty.hostname, "");
    assert!(matches!(
        store.load_audit(12345),
        Err(StoreError::NoSuchAudit { id: 12345, .. })
    ));
    Ok(())
}

fn schema_version(path: &Path) -> Result<i64, rusqlite::Error> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

#[test]
fn migrates_an_empty_file_and_creates_private_directories() -> TestResult {
    let dir = tempfile::tempdir()?;

    // A zero-byte file is an empty SQLite database.
    let empty = dir.path().join("empty.db");
    fs::write(&empty, b"")?;
    let store = SqliteStore::open(&empty)?;
    drop(store);
    assert_eq!(schema_version(&empty)?, SCHEMA_VERSION);
    // Opening again finds the schema current and changes nothing.
    let mut store = SqliteStore::open(&empty)?;
    store.begin_scan(&scan_info(&["198.18.0.1"]))?;
    drop(store);
    assert_eq!(schema_version(&empty)?, SCHEMA_VERSION);

    let nested = dir.path().join("data/perimeter/perimeter.db");
    let mut store = SqliteStore::open(&nested)?;
    store.begin_scan(&scan_info(&["198.18.0.1"]))?;
    assert_eq!(store.path(), nested);
    drop(store);
    let mode = |path: &Path| -> std::io::Result<u32> {
        Ok(fs::metadata(path)?.permissions().mode() & 0o777)
    };
    assert_eq!(mode(&dir.path().join("data"))?, 0o700);
    assert_eq!(mode(&dir.path().join("data/perimeter"))?, 0o700);
    assert_eq!(mode(&nested)?, 0o600);

    let conn = rusqlite::Connection::open(&nested)?;
    let journal: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
    assert_eq!(journal, "wal");
    let written_by: String = conn.query_row(
        "SELECT value FROM meta WHERE key = 'schema_written_by'",
        [],
        |row| row.get(0),
    )?;
    assert!(written_by.starts_with("perimeter "), "{written_by}");
    Ok(())
}

#[test]
fn a_newer_schema_is_refused_and_left_untouched() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("future.db");
    drop(SqliteStore::open(&path)?);
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 4)?;
    }
    let before = fs::read(&path)?;

    let err = SqliteStore::open(&path).expect_err("newer schema is refused");
    assert!(
        matches!(err, StoreError::TooNew { found, known, .. } if found == SCHEMA_VERSION + 4 && known == SCHEMA_VERSION)
    );
    assert_eq!(
        err.to_string(),
        format!(
            "database {} has schema version {}, this perimeter knows up to {}: upgrade perimeter",
            path.display(),
            SCHEMA_VERSION + 4,
            SCHEMA_VERSION
        )
    );
    assert_eq!(fs::read(&path)?, before);
    assert_eq!(schema_version(&path)?, SCHEMA_VERSION + 4);
    Ok(())
}

#[test]
fn files_that_are_not_perimeter_databases_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;

    let text = dir.path().join("notes.db");
    let content =
        b"this is a text file, not a database, and it is long enough to hold a header\n".repeat(20);
    fs::write(&text, &content)?;
    let err = SqliteStore::open(&text).expect_err("text is refused");
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{} is not a SQLite database", text.display())
    );
    assert_eq!(fs::read(&text)?, content);

    let foreign = dir.path().join("foreign.db");
    {
        let conn = rusqlite::Connection::open(&foreign)?;
        conn.execute_batch("CREATE TABLE bookmarks (url TEXT)")?;
    }
    let err = SqliteStore::open(&foreign).expect_err("another program's database is refused");
    assert!(matches!(err, StoreError::NotPerimeter { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{} is a SQLite database but not a perimeter one: it has 1 tables and indexes and schema version 0 \
             but no perimeter application id",
            foreign.display()
        )
    );

    let other_app = dir.path().join("other-app.db");
    {
        let conn = rusqlite::Connection::open(&other_app)?;
        conn.pragma_update(None, "application_id", 0x0f0f_0f0f)?;
    }
    let err = SqliteStore::open(&other_app).expect_err("another application id is refused");
    assert!(
        err.to_string().contains("its application id is 0x0f0f0f0f"),
        "{err}"
    );

    let directory = dir.path().join("a-directory");
    fs::create_dir(&directory)?;
    let err = SqliteStore::open(&directory).expect_err("a directory is refused");
    assert!(
        matches!(err, StoreError::Open { .. } | StoreError::Sqlite { .. }),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn damaged_rows_are_reported_with_their_place() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("damaged.db");
    let mut store = SqliteStore::open(&path)?;
    let scan_id = store.begin_scan(&scan_info(&["198.18.0.5"]))?;
    store.record_results(scan_id, &full_results())?;
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute("UPDATE port_results SET state = 'opne' WHERE port = 22", [])?;
    }
    let err = store.load_scan(scan_id).expect_err("damaged row");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.ends_with("`opne` is not a port state"), "{message}");
    assert!(
        message.contains(&format!("scan {scan_id}, result ")),
        "{message}"
    );
    Ok(())
}

#[test]
fn a_second_handle_sees_committed_batches_of_a_running_scan() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shared.db");
    let mut writer = SqliteStore::open(&path)?;
    let reader = SqliteStore::open(&path)?;
    let scan_id = writer.begin_scan(&scan_info(&["198.18.0.5"]))?;
    let results = full_results();
    let (first_batch, second_batch) = results.split_at(3);

    writer.record_results(scan_id, first_batch)?;
    let (info, seen) = reader.load_scan(scan_id)?;
    assert_eq!((info.finished, info.complete), (None, false));
    assert_eq!(seen, first_batch);

    writer.record_results(scan_id, second_batch)?;
    writer.finish_scan(scan_id, datetime!(2024-05-01 12:00 UTC), true, 5)?;
    let (info, seen) = reader.load_scan(scan_id)?;
    assert!(info.complete);
    assert_eq!(seen, results);
    Ok(())
}

#[test]
fn a_scan_whose_writer_died_is_interrupted_and_never_the_latest_complete() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("h.db");
    let mut store = SqliteStore::open(&path)?;
    let finished = datetime!(2024-05-01 10:05:00 +02:00);
    let done = store.begin_scan(&scan_info(&["198.18.0.0/30"]))?;
    store.finish_scan(done, finished, true, 4)?;
    let running = store.begin_scan(&scan_info(&["198.18.0.0/30"]))?;

    // Written by this process, which lives: running.
    let status_of = |store: &SqliteStore, id: i64| -> Result<_, StoreError> {
        Ok(store
            .list_scans(10)?
            .into_iter()
            .find(|s| s.info.id == id)
            .map(|s| s.status))
    };
    assert_eq!(
        status_of(&store, running)?,
        Some(perimeter_store::ScanStatus::Running)
    );
    assert_eq!(
        status_of(&store, done)?,
        Some(perimeter_store::ScanStatus::Complete)
    );

    // The same scan as a process of another boot wrote it: that process is
    // gone, so every reader sees the scan interrupted.
    rusqlite::Connection::open(&path)?.execute(
        "UPDATE scans SET writer = 'an-earlier-boot/4242/99' WHERE id = ?1",
        [running],
    )?;
    assert_eq!(
        status_of(&store, running)?,
        Some(perimeter_store::ScanStatus::Interrupted)
    );
    let read_only = SqliteStore::open_read_only(&path)?;
    assert_eq!(
        status_of(&read_only, running)?,
        Some(perimeter_store::ScanStatus::Interrupted)
    );
    // The newest scan is the interrupted one; the newest complete one is not.
    assert_eq!(store.list_scans(1)?[0].info.id, running);
    assert_eq!(store.latest_complete_scan()?.map(|s| s.info.id), Some(done));
    // A scan stored before writers were recorded, unfinished, is interrupted
    // too: it may be dead and must never pass for running.
    rusqlite::Connection::open(&path)?
        .execute("UPDATE scans SET writer = NULL WHERE id = ?1", [running])?;
    assert_eq!(
        status_of(&store, running)?,
        Some(perimeter_store::ScanStatus::Interrupted)
    );
    Ok(())
}

#[test]
fn read_only_opening_creates_nothing_and_writes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("typo/dir/h.db");
    let err = SqliteStore::open_read_only(&missing).expect_err("missing");
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "no history database at {}: nothing has been stored there yet",
            missing.display()
        )
    );
    assert!(!dir.path().join("typo").exists(), "a directory was created");

    let path = dir.path().join("h.db");
    {
        let mut store = SqliteStore::open(&path)?;
        let id = store.begin_scan(&scan_info(&["198.18.0.1"]))?;
        store.finish_scan(id, datetime!(2024-05-01 10:05:00 +02:00), true, 1)?;
    }
    // Mode 0444, as a database another user owns looks to us. Root ignores
    // modes, so what is proven here is that the open never writes; the CLI
    // tests read such a file as an unprivileged user.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o444))?;
    let before = fs::read(&path)?;
    let store = SqliteStore::open_read_only(&path)?;
    assert_eq!(store.list_scans(5)?.len(), 1);
    drop(store);
    assert_eq!(
        fs::read(&path)?,
        before,
        "a read-only open changed the file"
    );
    Ok(())
}

#[test]
fn an_older_schema_is_read_as_it_is_when_opened_read_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("v1.db");
    {
        let mut store = SqliteStore::open(&path)?;
        let id = store.begin_scan(&scan_info(&["198.18.0.1"]))?;
        store.finish_scan(id, datetime!(2024-05-01 10:05:00 +02:00), true, 1)?;
    }
    // Take the file back to schema version 1 (as an older perimeter wrote it).
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(
            "DROP TABLE audit_listener_spans; DROP TABLE audit_finding_spans; \
             DROP TABLE audit_problem_spans; ALTER TABLE audits DROP COLUMN layout; \
             ALTER TABLE scans DROP COLUMN writer; DROP TABLE monitor_acks; \
             DROP TABLE monitor_deliveries; DROP TABLE monitor_alerts; \
             DROP TABLE monitor_conditions; DROP TABLE monitor_runs; \
             PRAGMA user_version = 1;",
        )?;
    }
    let store = SqliteStore::open_read_only(&path)?;
    let scans = store.list_scans(5)?;
    assert_eq!(scans.len(), 1);
    assert_eq!(scans[0].status, perimeter_store::ScanStatus::Complete);
    // A history older than the monitor has no alerts, rather than an error.
    {
        use perimeter_store::MonitorStore as _;
        assert!(store.alerts(5)?.is_empty());
        assert!(store.open_conditions()?.is_empty());
        assert!(store.channel_tallies()?.is_empty());
    }
    assert_eq!(
        schema_version(&path)?,
        1,
        "a read-only open migrated the file"
    );
    drop(store);
    // A writing open migrates it.
    drop(SqliteStore::open(&path)?);
    assert_eq!(schema_version(&path)?, SCHEMA_VERSION);
    Ok(())
}

/// Rows in one of the store's tables.
fn n_rows(path: &Path, table: &str) -> Result<i64, rusqlite::Error> {
    let conn = rusqlite::Connection::open(path)?;
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
        row.get(0)
    })
}

/// The listeners' ports, findings' rules and problems' subjects of an audit.
fn contents(record: &AuditRecord) -> (Vec<u16>, Vec<String>, Vec<String>) {
    let mut ports: Vec<u16> = record.listeners.iter().map(|l| l.port).collect();
    ports.sort_unstable();
    let mut rules: Vec<String> = record.findings.iter().map(|f| f.rule.clone()).collect();
    rules.sort();
    let mut subjects: Vec<String> = record.problems.iter().map(|p| p.subject.clone()).collect();
    subjects.sort();
    (ports, rules, subjects)
}

#[test]
fn an_unchanged_audit_writes_no_listener_finding_or_problem_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("history.db");
    let mut store = SqliteStore::open(&path)?;
    let snapshot = snapshot();
    let findings = audit_findings();
    let first = store.record_audit("lab", datetime!(2024-05-01 0:00 UTC), &snapshot, &findings)?;
    let counts = |path: &Path| -> Result<[i64; 3], rusqlite::Error> {
        Ok([
            n_rows(path, "audit_listener_spans")?,
            n_rows(path, "audit_finding_spans")?,
            n_rows(path, "audit_problem_spans")?,
        ])
    };
    assert_eq!(counts(&path)?, [5, 2, 2]);
    let mut ids = vec![first];
    for day in 2..=5u8 {
        let taken_at = datetime!(2024-05-01 0:00 UTC) + time::Duration::days(i64::from(day));
        ids.push(store.record_audit("lab", taken_at, &snapshot, &findings)?);
    }
    assert_eq!(counts(&path)?, [5, 2, 2], "nothing new was written");
    let expected = store.load_audit(first)?;
    for id in ids {
        let loaded = store.load_audit(id)?;
        assert_eq!(
            (loaded.listeners, loaded.findings, loaded.problems),
            (
                expected.listeners.clone(),
                expected.findings.clone(),
                expected.problems.clone()
            )
        );
    }
    Ok(())
}

#[test]
fn every_audit_reads_back_as_it_was_when_values_come_and_go() -> TestResult {
    let mut store = SqliteStore::open_in_memory()?;
    let full = snapshot();
    let findings = audit_findings();
    // Audit 1: everything. Audit 2: the listener on 8080 and a problem gone,
    // one finding resolved, and the redis listener's owners changed (a
    // restart: the same port, a new row). Audit 3: 8080 back. An audit of
    // another host in between changes nothing here.
    let mut fewer = full.clone();
    fewer.listeners.retain(|l| l.port != 8080);
    fewer.problems.truncate(1);
    for listener in fewer.listeners.iter_mut().filter(|l| l.port == 6379) {
        listener.owners.truncate(1);
    }
    let t = datetime!(2024-05-01 0:00 UTC);
    let one = store.record_audit("lab", t, &full, &findings)?;
    let two = store.record_audit("lab", t, &fewer, &findings[..1])?;
    let other = store.record_audit("other", t, &full, &[])?;
    let three = store.record_audit("lab", t, &full, &findings)?;

    let expect = |snapshot: &HostSnapshot, findings: &[Finding]| {
        contents(&AuditRecord::from_snapshot("lab", t, snapshot, findings))
    };
    assert_eq!(contents(&store.load_audit(one)?), expect(&full, &findings));
    assert_eq!(
        contents(&store.load_audit(two)?),
        expect(&fewer, &findings[..1])
    );
    assert_eq!(contents(&store.load_audit(other)?), expect(&full, &[]));
    assert_eq!(
        contents(&store.load_audit(three)?),
        expect(&full, &findings)
    );
    // Every field, not only the identities: audit 2's redis listener has one pid.
    let redis = store
        .load_audit(two)?
        .listeners
        .into_iter()
        .find(|l| l.port == 6379)
        .ok_or("redis listener")?;
    let kept = fewer
        .listeners
        .iter()
        .find(|l| l.port == 6379)
        .map(|l| l.pids())
        .ok_or("redis listener in the snapshot")?;
    assert_eq!((redis.pids.len(), &redis.pids), (1, &kept));
    assert_eq!(store.previous_audit("lab")?.map(|a| a.id), Some(three));
    Ok(())
}

#[test]
fn a_value_listed_twice_is_kept_twice() -> TestResult {
    let mut store = SqliteStore::open_in_memory()?;
    let twice = [audit_findings(), audit_findings()].concat();
    let t = datetime!(2024-05-01 0:00 UTC);
    let one = store.record_audit("lab", t, &HostSnapshot::default(), &twice)?;
    let two = store.record_audit("lab", t, &HostSnapshot::default(), &audit_findings())?;
    let three = store.record_audit("lab", t, &HostSnapshot::default(), &twice)?;
    assert_eq!(store.load_audit(one)?.findings.len(), 4);
    assert_eq!(store.load_audit(two)?.findings.len(), 2);
    assert_eq!(store.load_audit(three)?.findings.len(), 4);
    Ok(())
}

#[test]
fn audits_stored_before_version_3_are_read_and_followed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("v2.db");
    // A version 2 history, as perimeter wrote it: an audit with its own rows.
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(include_str!("../migrations/0001_initial.sql"))?;
        conn.execute_batch(include_str!("../migrations/0002_scan_writer.sql"))?;
        conn.execute_batch(
            "PRAGMA application_id = 1347571028; PRAGMA user_version = 2;
             INSERT INTO audits (host, taken_at, hostname, n_listeners, n_findings, worst_severity)
               VALUES ('lab', '2024-05-01T00:00:00Z', 'lab-host', 1, 1, 'high');
             INSERT INTO audit_listeners (audit_id, protocol, address, port, scope, inode, socket_uid,
               netns_inode, netns_name, pids, process_name, uid, user, exe, ownership)
               VALUES (1, 'tcp', '0.0.0.0', 6379, 'wildcard', 97379, 107, 4026531840, 'host', '[812]',
               'redis-server', 107, 'redis', CAST('/usr/bin/redis-server' AS BLOB), 'unpackaged');
             INSERT INTO audit_findings (audit_id, rule, severity, subject, message, evidence, remedy)
               VALUES (1, 'redis.no-auth', 'high', 'redis (pid 812)', 'open', '[]', '');
             INSERT INTO audit_problems (audit_id, subject, message, hint)
               VALUES (1, '/proc/4242/fd', 'permission denied', NULL);",
        )?;
    }
    let mut store = SqliteStore::open(&path)?;
    assert_eq!(schema_version(&path)?, SCHEMA_VERSION);
    let old = store.previous_audit("lab")?.ok_or("the old audit")?;
    assert_eq!(old.id, 1);
    assert_eq!(
        contents(&old),
        (
            vec![6379],
            vec!["redis.no-auth".to_owned()],
            vec!["/proc/4242/fd".to_owned()]
        )
    );
    // The first audit after the upgrade writes all its values, diffed with
    // the old audit whole; both read back.
    let recorded = store.record_audit_since(
        "lab",
        datetime!(2024-05-02 0:00 UTC),
        &snapshot(),
        &audit_findings(),
    )?;
    let new = recorded.id;
    let since = recorded.since.ok_or("the old audit is the previous one")?;
    assert_eq!(since.audit_id, 1);
    assert_eq!(
        since.changes,
        perimeter_store::diff_audits(&old, &store.load_audit(new)?)
    );
    assert!(!since.changes.is_empty());
    assert_eq!(store.load_audit(1)?, old);
    assert_eq!(
        contents(&store.load_audit(new)?),
        contents(&AuditRecord::from_snapshot(
            "lab",
            datetime!(2024-05-02 0:00 UTC),
            &snapshot(),
            &audit_findings()
        ))
    );
    Ok(())
}

#[test]
fn recording_says_what_diff_audits_of_the_whole_audits_says() -> TestResult {
    // A series of audits of one host, each changing something: a listener
    // gone, a restart (new pids, same identity), a listener moved to another
    // executable, a finding resolved and one whose pid changed, duplicates.
    let full = snapshot();
    let findings = audit_findings();
    let mut series: Vec<(HostSnapshot, Vec<Finding>)> = vec![(full.clone(), findings.clone())];
    let mut gone = full.clone();
    gone.listeners.retain(|l| l.port != 9000);
    series.push((gone.clone(), findings[..1].to_vec()));
    let mut restarted = gone.clone();
    for listener in restarted.listeners.iter_mut() {
        listener.inode += 1;
    }
    series.push((restarted.clone(), findings.clone()));
    let mut moved = restarted.clone();
    for process in moved.processes.values_mut() {
        if process.pid == 950 || process.pid == 812 {
            process.exe = Some(PathBuf::from("/opt/other/server"));
        }
    }
    let mut renamed = findings.clone();
    for finding in &mut renamed {
        finding.subject = finding.subject.replace("pid 812", "pid 9812");
    }
    renamed.push(renamed[0].clone());
    series.push((moved, renamed));
    series.push((HostSnapshot::default(), Vec::new()));
    series.push((full, findings));

    let mut store = SqliteStore::open_in_memory()?;
    let mut previous: Option<AuditRecord> = None;
    for (idx, (snapshot, findings)) in series.iter().enumerate() {
        let taken_at = datetime!(2024-05-01 0:00 UTC) + time::Duration::hours(idx as i64);
        let recorded = store.record_audit_since("lab", taken_at, snapshot, findings)?;
        let current = store.load_audit(recorded.id)?;
        match (&previous, recorded.since) {
            (None, None) => {}
            (Some(previous), Some(since)) => {
                assert_eq!(since.audit_id, previous.id);
                assert_eq!(since.taken_at, previous.taken_at);
                let whole = perimeter_store::diff_audits(previous, &current);
                assert!(
                    idx == 0 || !whole.is_empty() || idx == 2,
                    "audit {idx} changes something"
                );
                assert_eq!(since.changes, whole, "audit {idx}");
            }
            (previous, since) => panic!("audit {idx}: previous {previous:?}, since {since:?}"),
        }
        previous = Some(current);
    }
    Ok(())
}
