//! Every input hostile, every write safe (issue 15): one test per defect a
//! hostile but honest user found, each named after what it proves. Closed
//! pipes, /dev/full, non-UTF-8 paths, FIFOs, /dev/zero, symlinks into a
//! repository, device nodes made with mknod, two `approve`s at once, files
//! owned by someone else, a scan killed with -9, read-only databases.
//!
//! Packets only go to loopback or into namespaces these tests create.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{AS_NOBODY, code, perimeter, run, stderr, stdout};
use perimeter_testlab::{Daemon, Ns, Requirement, require};

/// How long any of these commands may take before it counts as hung. Only
/// silence is bounded: every command here answers in well under a second.
const HANG: Duration = Duration::from_secs(60);

/// perimeter with `args` (OS strings, some not UTF-8), stdout to `stdout`,
/// waited for at most [`HANG`].
fn run_os(args: &[&OsStr], stdout: Stdio) -> Output {
    let child = Command::new(perimeter())
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("PERIMETER_APPROVALS")
        .env_remove("PERIMETER_DB")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("perimeter starts");
    wait_bounded(child, args)
}

fn wait_bounded(mut child: Child, what: &[&OsStr]) -> Output {
    let started = Instant::now();
    loop {
        match child.try_wait().expect("wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if started.elapsed() > HANG => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("perimeter {what:?} hung (killed after {HANG:?})");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn os<'a>(args: &[&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(|arg| OsStr::new(*arg)).collect()
}

/// A pipe whose reading end is already closed: the first write gets EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    Stdio::from(writer)
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A loopback listener for scans to find, and its port.
fn loopback_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    (listener, port)
}

/// A database holding two complete scans of one loopback port.
fn db_with_two_scans(dir: &Path) -> PathBuf {
    let db = dir.join("h.db");
    let (_listener, port) = loopback_listener();
    for _ in 0..2 {
        let output = run(
            None,
            &[
                "scan",
                "127.0.0.1",
                "-p",
                &port,
                "--no-identify",
                "-q",
                "--db",
                &text(&db),
            ],
        );
        assert_eq!(code(&output), 0, "{}", stderr(&output));
    }
    db
}

// ---------------------------------------------------------------------------
// Panics: exit 101 is never acceptable

#[test]
fn a_closed_stdout_ends_every_command_quietly_with_its_own_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = db_with_two_scans(dir.path());
    let db = text(&db);
    let (_listener, port) = loopback_listener();
    let approvals = dir.path().join("approvals.toml");
    fs::write(&approvals, "version = 1\n").expect("write");
    let approvals = text(&approvals);
    let commands: Vec<Vec<&str>> = vec![
        vec!["rules"],
        vec!["audit", "--no-store", "--approvals", &approvals],
        vec![
            "audit",
            "--no-store",
            "--format",
            "json",
            "--approvals",
            &approvals,
        ],
        vec!["check", "--approvals", &approvals],
        vec!["inventory", "--format", "json"],
        vec!["scans", "--db", &db],
        vec!["diff", "--db", &db, "--format", "json"],
        vec![
            "scan",
            "127.0.0.1",
            "-p",
            &port,
            "--all-states",
            "-q",
            "--no-store",
        ],
        vec![
            "scan",
            "127.0.0.1",
            "-p",
            &port,
            "--format",
            "jsonl",
            "-q",
            "--no-store",
        ],
    ];
    for args in commands {
        let reference = run_os(&os(&args), Stdio::null());
        let closed = run_os(&os(&args), closed_pipe());
        let err = stderr(&closed);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(code(&closed), 101, "{args:?}: {err}");
        assert_eq!(
            code(&closed),
            code(&reference),
            "{args:?}: a closed pipe changed the verdict\n{err}"
        );
        assert!(
            !err.contains("Broken pipe"),
            "{args:?}: a closed pipe is not an error: {err}"
        );
    }
}

#[test]
fn a_full_stdout_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let approvals = dir.path().join("approvals.toml");
    fs::write(&approvals, "version = 1\n").expect("write");
    for args in [
        vec!["rules"],
        vec!["audit", "--no-store", "--approvals", &text(&approvals)],
        vec![
            "audit",
            "--no-store",
            "--format",
            "json",
            "--approvals",
            &text(&approvals),
        ],
    ] {
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let output = run_os(&os(&args), Stdio::from(full));
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("cannot write the output: No space left on device"),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!stderr(&output).contains("panicked"));
    }
}

#[test]
fn paths_that_are_not_utf8_are_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join(OsStr::from_bytes(b"h\xff.db"));
    let xml = dir.path().join(OsStr::from_bytes(b"out\xfe.xml"));
    let (_listener, port) = loopback_listener();
    let mut args = os(&["scan", "127.0.0.1", "-p", &port, "--no-identify", "-q"]);
    args.extend([
        OsStr::new("--db"),
        db.as_os_str(),
        OsStr::new("-X"),
        xml.as_os_str(),
    ]);
    let output = run_os(&args, Stdio::piped());
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(db.exists() && xml.exists());
    let output = run_os(
        &[OsStr::new("scans"), OsStr::new("--db"), db.as_os_str()],
        Stdio::piped(),
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(stdout(&output).contains("complete"), "{}", stdout(&output));
}

// ---------------------------------------------------------------------------
// Hangs and unbounded reads

#[test]
fn a_fifo_given_as_an_input_file_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("input");
    mkfifo(&fifo);
    let fifo = text(&fifo);
    let manifest = dir.path().join("a.json");
    let output = run(None, &["inventory", "export", "-o", &text(&manifest)]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let db = text(&dir.path().join("h.db"));
    for args in [
        vec!["check", "--approvals", &fifo],
        vec!["envs", "--inventory", &fifo, "--db", &db],
        vec!["watch", "--approvals", &fifo, "--duration", "1s"],
        vec!["inventory", "diff", &text(&manifest), &fifo],
        vec!["scan", "-i", &fifo, "-p", "1", "--no-store"],
        vec![
            "scan",
            "127.0.0.1",
            "--exclude-file",
            &fifo,
            "-p",
            "1",
            "--no-store",
        ],
    ] {
        let output = run_os(&os(&args), Stdio::piped());
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("is a FIFO (named pipe), not a regular file"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn dev_zero_as_an_input_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = text(&dir.path().join("h.db"));
    for args in [
        vec!["check", "--approvals", "/dev/zero"],
        vec!["envs", "--inventory", "/dev/zero", "--db", &db],
        vec!["scan", "-i", "/dev/zero", "-p", "1", "--no-store"],
    ] {
        let output = run_os(&os(&args), Stdio::piped());
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("/dev/zero: is a character device, not a regular file"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

// ---------------------------------------------------------------------------
// Files lost, clobbered or changed behind the user's back

/// What the approve tests need, asked before [`approvable_host`] is built.
fn require_approvable_host() -> bool {
    require(Requirement::Netns)
        && require(Requirement::Tool("setpriv"))
        && require(Requirement::Tool("/usr/bin/python3"))
}

/// A namespace with web servers (run as nobody) on 198.18.5.1 at `ports`:
/// listeners beyond loopback, to approve.
fn approvable_host(ports: &[u16]) -> (Ns, Vec<Daemon>) {
    let ns = Ns::new("hostile").expect("netns");
    ns.ip(&["addr", "add", "198.18.5.1/32", "dev", "lo"])
        .expect("lab address");
    let daemons = ports
        .iter()
        .map(|port| common::start_web_as_nobody(&ns, "198.18.5.1", *port))
        .collect();
    (ns, daemons)
}

fn approve(ns: &Ns, approvals: &Path, port: u16) -> Output {
    run(
        Some(ns),
        &[
            "approve",
            "--approvals",
            &text(approvals),
            "--port",
            &port.to_string(),
            "--reason",
            "hostile-input test",
            "--by",
            "tester",
        ],
    )
}

#[test]
fn approve_through_a_symlink_updates_the_file_in_the_repository() {
    if !require_approvable_host() {
        return;
    }
    let (ns, _web) = approvable_host(&[8081]);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    fs::create_dir(&repo).expect("mkdir");
    fs::write(repo.join("approvals.toml"), "version = 1\n").expect("write");
    let link = dir.path().join("perimeter-approvals.toml");
    symlink("repo/approvals.toml", &link).expect("symlink");

    let output = approve(&ns, &link, 8081);
    assert_eq!(code(&output), 0, "{}", stderr(&output));

    assert!(
        fs::symlink_metadata(&link)
            .expect("lstat")
            .file_type()
            .is_symlink()
    );
    let in_repo = fs::read_to_string(repo.join("approvals.toml")).expect("read");
    assert!(in_repo.contains("port = 8081"), "{in_repo}");
}

#[test]
fn two_approves_at_once_both_land() {
    if !require_approvable_host() {
        return;
    }
    let (ns, _web) = approvable_host(&[8082, 8083]);
    let dir = tempfile::tempdir().expect("tempdir");
    // Before the lock, 6 trials in 30 lost an entry; 20 here.
    for trial in 0..20 {
        let approvals = dir.path().join(format!("approvals-{trial}.toml"));
        fs::write(&approvals, "version = 1\n").expect("write");
        let spawn = |port: u16| {
            ns.command(perimeter())
                .args([
                    "approve",
                    "--approvals",
                    &text(&approvals),
                    "--port",
                    &port.to_string(),
                    "--reason",
                    "concurrent",
                    "--by",
                    "tester",
                ])
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("approve starts")
        };
        let (first, second) = (spawn(8082), spawn(8083));
        for child in [first, second] {
            let output = wait_bounded(child, &os(&["approve"]));
            assert_eq!(code(&output), 0, "trial {trial}: {}", stderr(&output));
        }
        let written = fs::read_to_string(&approvals).expect("read");
        assert!(
            written.contains("port = 8082") && written.contains("port = 8083"),
            "trial {trial} lost an entry:\n{written}"
        );
    }
}

#[test]
fn approve_as_root_keeps_owner_group_mode_bom_and_crlf() {
    if !require_approvable_host() {
        return;
    }
    let (ns, _web) = approvable_host(&[8084]);
    let dir = tempfile::tempdir().expect("tempdir");
    let approvals = dir.path().join("approvals.toml");
    let original = "\u{feff}# kept in git\r\nversion = 1\r\n";
    fs::write(&approvals, original).expect("write");
    std::os::unix::fs::chown(&approvals, Some(65534), Some(65534)).expect("chown");
    fs::set_permissions(&approvals, fs::Permissions::from_mode(0o640)).expect("chmod");

    let output = approve(&ns, &approvals, 8084);
    assert_eq!(code(&output), 0, "{}", stderr(&output));

    let meta = fs::metadata(&approvals).expect("stat");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (65534, 65534, 0o640)
    );
    let written = fs::read_to_string(&approvals).expect("read");
    assert!(written.starts_with(original), "{written:?}");
    assert!(written.contains("port = 8084"));
    assert!(
        !written.replace("\r\n", "").contains('\n'),
        "a bare LF crept in: {written:?}"
    );
}

#[test]
fn outputs_never_replace_a_device_and_write_through_symlinks() {
    if !require(Requirement::Root) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A character device like /dev/null (1, 3), made in the temp dir.
    let device = dir.path().join("null");
    nix::sys::stat::mknod(
        &device,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod");
    let (_listener, port) = loopback_listener();
    let output = run(
        None,
        &[
            "scan",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "--no-store",
            "-X",
            &text(&device),
        ],
    );
    assert_eq!(code(&output), 2, "{}", stdout(&output));
    assert!(
        stderr(&output).contains("is a character device, not a regular file"),
        "{}",
        stderr(&output)
    );
    {
        use std::os::unix::fs::FileTypeExt;
        assert!(
            fs::symlink_metadata(&device)
                .expect("lstat")
                .file_type()
                .is_char_device()
        );
    }
    // Refused before a packet was sent: nothing scanned, nothing printed.
    assert_eq!(stdout(&output), "");

    // Through a symlink: the target is written, the link stays.
    for (args, name) in [
        (vec!["inventory", "export", "-o"], "manifest.json"),
        (vec!["init", "--force"], "perimeter.toml"),
    ] {
        let target = dir.path().join(format!("real-{name}"));
        fs::write(&target, "old").expect("write");
        let link = dir.path().join(name);
        symlink(&target, &link).expect("symlink");
        let mut args = args.clone();
        let link_text = text(&link);
        args.push(&link_text);
        let output = run(None, &args);
        assert_eq!(code(&output), 0, "{args:?}: {}", stderr(&output));
        assert!(
            fs::symlink_metadata(&link)
                .expect("lstat")
                .file_type()
                .is_symlink()
        );
        assert_ne!(
            fs::read_to_string(&target).expect("read"),
            "old",
            "{args:?}"
        );
    }
}

#[test]
fn read_only_commands_create_no_database_and_no_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("typo/dir/h.db");
    for args in [
        vec!["scans", "--db", &text(&typo)],
        vec!["audits", "--db", &text(&typo)],
        vec!["diff", "--db", &text(&typo)],
    ] {
        let output = run(None, &args);
        assert_eq!(code(&output), 2, "{args:?}");
        assert!(
            stderr(&output).contains("no history database at"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let inventory = dir.path().join("perimeter.toml");
    fs::write(
        &inventory,
        "[[environment]]\nname = \"lab\"\nkind = \"dev\"\nranges = [\"198.18.0.0/24\"]\n",
    )
    .expect("write");
    let output = run(
        None,
        &[
            "envs",
            "--inventory",
            &text(&inventory),
            "--db",
            &text(&typo),
        ],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(!dir.path().join("typo").exists(), "a directory was created");
}

#[test]
fn a_database_another_user_owns_is_read_without_writing() {
    if !require(Requirement::Root) || !require(Requirement::Tool("setpriv")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let db = db_with_two_scans(dir.path());
    fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = Command::new("setpriv")
        .args(AS_NOBODY)
        .arg(perimeter())
        .args(["scans", "--db", &text(&db)])
        .env("NO_COLOR", "1")
        .output()
        .expect("setpriv runs");
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        stdout(&output)
            .lines()
            .filter(|l| l.contains("complete"))
            .count(),
        2
    );
}

#[test]
fn an_unprivileged_audit_without_a_history_directory_goes_on() {
    if !require(Requirement::Root) || !require(Requirement::Tool("setpriv")) {
        return;
    }
    let output = Command::new("setpriv")
        .args(AS_NOBODY)
        .arg(perimeter())
        .args(["audit", "--format", "json"])
        .env("NO_COLOR", "1")
        .env("HOME", "/nonexistent")
        .env_remove("XDG_DATA_HOME")
        .env_remove("PERIMETER_DB")
        .env_remove("PERIMETER_APPROVALS")
        .current_dir("/")
        .output()
        .expect("setpriv runs");
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let problems = doc["problems"].as_array().expect("problems");
    assert!(
        problems.iter().any(|p| p["subject"] == "history"
            && p["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("this audit was not recorded"))),
        "{problems:#?}"
    );
}

// ---------------------------------------------------------------------------
// Truthful output

#[test]
fn a_scan_killed_with_sigkill_is_interrupted_and_never_diffed_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = db_with_two_scans(dir.path());
    // A slow scan of a thousand loopback ports, killed once it has started.
    let mut child = Command::new(perimeter())
        .args([
            "scan",
            "127.0.0.1",
            "-p",
            "1-1000",
            "--rate",
            "5",
            "--profile",
            "stealth",
            "--no-identify",
            "-q",
            "--format",
            "jsonl",
            "--db",
        ])
        .arg(&db)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("scan starts");
    let started = Instant::now();
    loop {
        let listed = run(None, &["scans", "--db", &text(&db), "--format", "json"]);
        let doc: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
        if doc["scans"].as_array().is_some_and(|s| s.len() == 3) {
            assert_eq!(doc["scans"][0]["status"], "running", "{doc:#}");
            break;
        }
        assert!(started.elapsed() < HANG, "the scan never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let _ = child.wait();

    let output = run(None, &["scans", "--db", &text(&db), "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(doc["scans"][0]["status"], "interrupted", "{doc:#}");
    assert_eq!(doc["scans"][0]["complete"], false);
    let human = stdout(&run(None, &["scans", "--db", &text(&db)]));
    assert!(
        human
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("interrupted")),
        "{human}"
    );

    // The default diff compares the two complete scans, not the dead one.
    let output = run(None, &["diff", "--db", &text(&db), "--format", "json"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(
        (doc["before"]["id"].as_i64(), doc["after"]["id"].as_i64()),
        (Some(1), Some(2))
    );
}

#[test]
fn unclear_messages_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = db_with_two_scans(dir.path());
    let output = run(None, &["scans", "--db", &text(&db), "--limit", "0"]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("--limit 0 would list nothing"),
        "{}",
        stderr(&output)
    );

    let output = run(None, &["scan", "fe80::1%lo", "-p", "22", "--no-store"]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("IPv6 zone ids (`%lo`) are not supported"),
        "{}",
        stderr(&output)
    );

    // A damaged database: its error said once, not doubled by its cause.
    let garbage = dir.path().join("garbage.db");
    fs::write(&garbage, vec![0x5a; 8192]).expect("write");
    let output = run(None, &["scans", "--db", &text(&garbage)]);
    assert_eq!(code(&output), 2);
    let message = stderr(&output);
    assert!(message.contains("is not a SQLite database"), "{message}");
    let after_prefix = message.trim_start_matches("perimeter: error: ");
    for word in after_prefix.split(": ") {
        assert_eq!(
            after_prefix.matches(word).count(),
            1,
            "`{word}` said twice: {message}"
        );
    }

    let output = run(
        None,
        &[
            "scan",
            "127.0.0.1",
            "--top-ports",
            "99999999",
            "--profile",
            "fast",
            "--no-store",
            "-q",
            "--no-identify",
        ],
    );
    assert!(
        stderr(&output)
            .contains("--top-ports 99999999 is more than there are ports: scanning every port"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unresolvable_name_is_named_with_the_resolvers_reason() {
    if !require(Requirement::Netns) {
        return;
    }
    // In a namespace of its own there is no route: the resolver fails
    // without a packet leaving, and says why.
    let ns = Ns::new("resolve").expect("netns");
    let output = run(
        Some(&ns),
        &[
            "scan",
            "no-such-host.perimeter.invalid",
            "-p",
            "22",
            "--no-store",
            "-q",
        ],
    );
    let message = stderr(&output);
    assert!(
        message.contains("no-such-host.perimeter.invalid") && message.contains("cannot resolve: "),
        "{message}"
    );
    let reason = message
        .split("cannot resolve: ")
        .nth(1)
        .map(|rest| rest.lines().next().unwrap_or("").trim())
        .unwrap_or("");
    assert!(reason.len() > 5, "no reason given: {message}");
}

#[test]
fn duplicates_are_warned_about_with_both_places() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entry = "[[listener]]\nprotocol = \"tcp\"\naddress = \"0.0.0.0\"\nport = 22\nexe = \"/usr/sbin/sshd\"\napproved_by = \"a\"\napproved_at = 2026-11-01\nreason = \"r\"\n";
    let approvals = dir.path().join("approvals.toml");
    fs::write(&approvals, format!("version = 1\n{entry}{entry}")).expect("write");
    let output = run(None, &["check", "--approvals", &text(&approvals)]);
    assert!(
        stderr(&output).contains(&format!(
            "warning: {}:10: this entry approves exactly what the entry at line 2 does",
            text(&approvals)
        )),
        "{}",
        stderr(&output)
    );

    let manifest = dir.path().join("a.json");
    let output = run(None, &["inventory", "export", "-o", &text(&manifest)]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let mut doc: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&manifest).expect("read")).expect("json");
    let packages = doc["packages"].as_array_mut().expect("packages");
    let mut twin = packages[0].clone();
    twin["version"] = serde_json::json!("0.0-other");
    let name = twin["name"].as_str().expect("name").to_owned();
    packages.push(twin);
    let n_packages = packages.len();
    let doubled = dir.path().join("b.json");
    fs::write(&doubled, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
    let output = run(
        None,
        &["inventory", "diff", &text(&manifest), &text(&doubled)],
    );
    assert!(
        stderr(&output).contains(&format!(
            "package {name} is listed twice, at /packages/0 and /packages/{}",
            n_packages - 1
        )),
        "{}",
        stderr(&output)
    );
}
