//! The command channel running real shell scripts: one that saves its
//! stdin and environment, one that outlives its timeout (with a child of
//! its own), one that fails, one that floods its stdout.

use std::path::Path;
use std::time::{Duration, Instant};

use perimeter_notify::{Command, CommandConfig, Destination};

use crate::common::{alert, channel};

/// `/bin/sh` running `script` (written to `dir`) with `args`: the program
/// is the user's choice; perimeter itself never involves a shell.
fn script(dir: &Path, body: &str, args: &[&str], timeout: Duration) -> Destination {
    let path = dir.join("alert.sh");
    std::fs::write(&path, body).expect("write the script");
    let mut argv = vec!["/bin/sh".to_owned(), path.display().to_string()];
    argv.extend(args.iter().map(ToString::to_string));
    Destination::Command(
        Command::new(CommandConfig {
            argv,
            env: vec![("HOME".to_owned(), "/nonexistent".to_owned())],
            timeout,
        })
        .expect("command"),
    )
}

#[tokio::test]
async fn the_alert_arrives_on_stdin_with_a_clean_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stdin = dir.path().join("stdin.json");
    let env = dir.path().join("env");
    let run = channel(
        "script",
        script(
            dir.path(),
            "cat > \"$1\"\nenv > \"$2\"\necho queued\n",
            &[&stdin.display().to_string(), &env.display().to_string()],
            Duration::from_secs(10),
        ),
    );
    let alert = alert("script");
    let delivery = run.deliver(&alert).await.expect("delivered");
    assert_eq!(delivery.receipt, "exit status 0: queued");
    assert_eq!(
        std::fs::read(&stdin).expect("stdin saved"),
        perimeter_report::alert::to_json_bytes(&alert)
    );
    let env = std::fs::read_to_string(&env).expect("env saved");
    let names: Vec<&str> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(n, _)| n)
        .collect();
    assert!(
        env.contains("PERIMETER_IDEMPOTENCY_KEY=nightly:42:script\n"),
        "{env}"
    );
    assert!(env.contains("PERIMETER_SEVERITY=critical\n"), "{env}");
    assert!(env.contains("PATH=/usr/local/bin:/usr/bin:/bin\n"), "{env}");
    assert!(env.contains("HOME=/nonexistent\n"), "{env}");
    // Nothing of the test process's environment (cargo sets these) leaks.
    for inherited in [
        "CARGO_MANIFEST_DIR",
        "CARGO_PKG_NAME",
        "RUST_TEST_THREADS",
        "USER",
    ] {
        assert!(!names.contains(&inherited), "{inherited} inherited: {env}");
    }
}

#[tokio::test]
async fn a_command_that_outlives_its_timeout_is_killed_with_its_children() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("sleeper.pid");
    let run = channel(
        "script",
        script(
            dir.path(),
            // A child of its own, which must die with it.
            "sleep 300 &\necho $! > \"$1\"\nwait\n",
            &[&pid_file.display().to_string()],
            Duration::from_secs(1),
        ),
    );
    let started = Instant::now();
    let err = run.deliver(&alert("script")).await.expect_err("timed out");
    let took = started.elapsed();
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .ends_with("did not finish within 1s; it was killed"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let sleeper = std::fs::read_to_string(&pid_file).expect("pid file");
    let sleeper = sleeper.trim();
    // Gone, or a zombie waiting for init to reap it: not running.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{sleeper}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next()))
            .flatten();
        if matches!(state, None | Some('Z' | 'X')) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sleep {sleeper} still runs ({state:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failing_command_is_transient_with_what_it_said() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = channel(
        "script",
        script(
            dir.path(),
            "cat > /dev/null\necho 'relay down\x1b[2J' >&2\nexit 1\n",
            &[],
            Duration::from_secs(10),
        ),
    );
    let err = run.deliver(&alert("script")).await.expect_err("failed");
    assert!(err.is_transient(), "{err}");
    // The program is /bin/sh; what it wrote to stderr is cleaned.
    assert_eq!(
        err.to_string(),
        "channel script: /bin/sh exited with status 1: relay down\\u{1b}[2J"
    );

    let config_error = channel(
        "script",
        script(dir.path(), "exit 78\n", &[], Duration::from_secs(10)),
    );
    let err = config_error
        .deliver(&alert("script"))
        .await
        .expect_err("failed");
    assert!(!err.is_transient(), "EX_CONFIG is permanent: {err}");
}

#[tokio::test]
async fn a_missing_program_is_permanent() {
    let run = channel(
        "script",
        Destination::Command(
            Command::new(CommandConfig {
                argv: vec!["/nonexistent/perimeter-notify-hook".to_owned()],
                env: Vec::new(),
                timeout: Duration::from_secs(10),
            })
            .expect("command"),
        ),
    );
    let err = run.deliver(&alert("script")).await.expect_err("not found");
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .starts_with("channel script: cannot run /nonexistent/perimeter-notify-hook: "),
        "{err}"
    );
}

#[tokio::test]
async fn a_flood_of_output_is_read_and_mostly_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = channel(
        "script",
        script(
            dir.path(),
            "head -c 10485760 /dev/zero | tr '\\0' x\n",
            &[],
            Duration::from_secs(20),
        ),
    );
    let delivery = run.deliver(&alert("script")).await.expect("delivered");
    // All 10 MiB were read (the script never blocked), 300 characters kept
    // for the receipt.
    assert_eq!(delivery.answer_bytes_read, 10 * 1024 * 1024);
    assert_eq!(
        delivery.receipt.chars().count(),
        "exit status 0: ".len() + 300
    );
}
