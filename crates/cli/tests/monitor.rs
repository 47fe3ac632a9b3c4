//! `perimeter monitor` end to end, in a network namespace each test makes:
//! real services appear and go between runs, real receivers take the alerts
//! (an HTTP receiver that checks the HMAC signature with Python's hmac, an
//! aiosmtpd mail server, a command), the service is signalled and killed,
//! and promtool reads its metrics. Every address is inside the namespace
//! (198.18.40.0/30 on its loopback, receivers on its 127.0.0.1).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{code, perimeter, start_listening, start_redis, stderr, stdout};
use perimeter_testlab::{Daemon, Ns, Requirement, require};
use serde_json::Value;

/// Debian's Python, which has python3-aiosmtpd.
const PYTHON: &str = "/usr/bin/python3";
const TARGET: &str = "198.18.40.1";

fn requirements() -> bool {
    require(Requirement::Root)
        && require(Requirement::Netns)
        && require(Requirement::Tool(PYTHON))
        && require(Requirement::Path("/usr/lib/python3/dist-packages/aiosmtpd"))
        && require(Requirement::Tool("/usr/bin/redis-server"))
}

fn receivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../notify/tests/receivers")
}

/// Starts a receiver script inside `ns` and returns it with the port it
/// printed ("PORT n").
fn receiver(ns: &Ns, script: &str, args: &[&str]) -> (Daemon, u16) {
    let mut child = ns
        .command(PYTHON)
        .arg(receivers_dir().join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {script}: {err}"));
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let daemon = Daemon::new(script, child);
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{script} did not say its port: {line:?}"));
    (daemon, port)
}

/// The monitor's world: a namespace with the target address, the three
/// receivers, and a perimeter.toml pointing at them.
struct MonitorLab {
    ns: Ns,
    dir: tempfile::TempDir,
    config: PathBuf,
    db: PathBuf,
    hook_record: PathBuf,
    hook_key: PathBuf,
    hook_port: u16,
    maildir: PathBuf,
    command_out: PathBuf,
    hook: Option<Daemon>,
    _mail: Daemon,
}

struct Settings {
    close_after: u32,
    ports: &'static str,
    /// `None`: the webhook receiver is not started (its port is reserved).
    hook_mode: Option<&'static str>,
    every: &'static str,
    /// Probes per second of the scan job.
    rate: u32,
}

impl MonitorLab {
    fn new(tag: &str, settings: &Settings) -> MonitorLab {
        let ns = Ns::new(tag).expect("namespace");
        ns.ip(&["addr", "add", &format!("{TARGET}/32"), "dev", "lo"])
            .expect("target address");
        let dir = tempfile::tempdir().expect("tempdir");
        let hook_record = dir.path().join("hook.jsonl");
        let hook_key = dir.path().join("hook.key");
        std::fs::write(&hook_key, "a-signing-key-for-the-lab").expect("key");
        std::fs::set_permissions(&hook_key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let maildir = dir.path().join("mail");
        std::fs::create_dir(&maildir).expect("maildir");
        let command_out = dir.path().join("command.jsonl");
        let (mail, smtp_port) = receiver(
            &ns,
            "smtp_receiver.py",
            &["--mode", "plain", "--maildir", &maildir.to_string_lossy()],
        );
        let mut lab = MonitorLab {
            ns,
            config: dir.path().join("perimeter.toml"),
            db: dir.path().join("history.db"),
            hook_record,
            hook_key,
            hook_port: 0,
            maildir,
            command_out,
            hook: None,
            _mail: mail,
            dir,
        };
        lab.hook_port = match settings.hook_mode {
            Some(mode) => lab.start_hook(mode, 0),
            None => free_port_in(&lab.ns),
        };
        let text = format!(
            r#"[[environment]]
name = "prod"
kind = "prod"
ranges = ["198.18.40.0/30"]
public_ports = [443]

[monitor]
close_after = {close_after}
metrics = "127.0.0.1:19464"

[[monitor.scan]]
name = "edge"
targets = ["env:prod"]
ports = "{ports}"
profile = "fast"
every = "{every}"
rate = {rate}.0

[[monitor.channel]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/perimeter"
signing_key = {{ file = "{key}" }}

[[monitor.channel]]
name = "mail"
kind = "email"
server = "127.0.0.1"
port = {smtp_port}
security = "none"
from = "perimeter <perimeter@lab.test>"
to = ["ops@lab.test"]

[[monitor.channel]]
name = "pipe"
kind = "command"
argv = ["/bin/sh", "-c", "cat >> {command_out}; echo >> {command_out}"]
timeout = "10s"
"#,
            close_after = settings.close_after,
            ports = settings.ports,
            every = settings.every,
            rate = settings.rate,
            hook_port = lab.hook_port,
            key = lab.hook_key.display(),
            command_out = lab.command_out.display(),
        );
        std::fs::write(&lab.config, text).expect("config");
        // The webhook URL is written inline: only in a file no one else reads.
        std::fs::set_permissions(&lab.config, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        lab
    }

    /// (Re)starts the webhook receiver in `mode` on `port` (0: any).
    fn start_hook(&mut self, mode: &str, port: u16) -> u16 {
        self.hook = None;
        let port_text = port.to_string();
        let (daemon, port) = receiver(
            &self.ns,
            "http_receiver.py",
            &[
                "--mode",
                mode,
                "--record",
                &self.hook_record.to_string_lossy(),
                "--key-file",
                &self.hook_key.to_string_lossy(),
                "--port",
                &port_text,
            ],
        );
        self.hook = Some(daemon);
        port
    }

    fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<String> {
        let mut args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        if extra.first() == Some(&"monitor") {
            args.extend([
                "--inventory".to_owned(),
                self.config.to_string_lossy().into_owned(),
            ]);
        }
        args.extend(["--db".to_owned(), self.db.to_string_lossy().into_owned()]);
        args
    }

    fn perimeter(&self, extra: &[&str]) -> Output {
        let args = self.args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::run(Some(&self.ns), &args)
    }

    /// `monitor --once edge`, with short retries.
    fn once(&self) -> Output {
        self.perimeter(&[
            "monitor",
            "--once",
            "edge",
            "--retry-initial",
            "1s",
            "--retry-max",
            "2s",
        ])
    }

    /// `monitor --once` (what is due: here only deliveries).
    fn deliver_due(&self) -> Output {
        self.perimeter(&[
            "monitor",
            "--once",
            "--retry-initial",
            "1s",
            "--retry-max",
            "2s",
        ])
    }

    /// The service, its log in the temp dir; killed when dropped, so a
    /// failing test leaves no monitor behind.
    fn service(&self) -> Service {
        let log = std::fs::File::create(self.dir.path().join("monitor.log")).expect("log");
        let child = self
            .ns
            .command(perimeter())
            .args(self.args(&["monitor", "--retry-initial", "1s", "--retry-max", "2s"]))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the monitor starts");
        Service(child)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("monitor.log")).unwrap_or_default()
    }

    /// What the webhook receiver got: each request with its body parsed.
    fn posts(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.hook_record)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["method"] == "POST")
            .collect()
    }

    fn mails(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.maildir)
            .expect("maildir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("mail"))
            .collect()
    }

    fn command_documents(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.command_out)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("the command got JSON"))
            .collect()
    }

    fn alerts_json(&self) -> Value {
        let output = self.perimeter(&["alerts", "--format", "json"]);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        serde_json::from_slice(&output.stdout).expect("alerts JSON")
    }
}

/// A running monitor, killed (and reaped) on drop.
struct Service(Child);

impl std::ops::Deref for Service {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Service {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port_in(ns: &Ns) -> u16 {
    ns.enter(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
    })
    .expect("enter")
    .expect("a free port")
}

fn body(post: &Value) -> Value {
    serde_json::from_str(post["body"].as_str().expect("a body")).expect("the body is JSON")
}

/// (kind, state, subject) of each change of an alert document.
fn changes(alert: &Value) -> Vec<(String, String, String)> {
    alert["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap_or_default().to_owned(),
                c["state"].as_str().unwrap_or_default().to_owned(),
                c["subject"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// [`wait_for`] while the service runs: its exit fails the test at once,
/// with its log.
fn wait_service(
    lab: &MonitorLab,
    service: &mut Child,
    what: &str,
    mut ready: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        if let Ok(Some(status)) = service.try_wait() {
            panic!(
                "the monitor exited ({status}) before {what}:\n{}",
                lab.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}:\n{}", lab.log());
}

#[test]
fn a_redis_that_appears_is_told_once_to_every_channel_and_its_end_too() {
    if !requirements() {
        return;
    }
    let lab = MonitorLab::new(
        "mon1",
        &Settings {
            close_after: 1,
            ports: "443,6379,8080",
            hook_mode: Some("ok"),
            every: "1h",
            rate: 10_000,
        },
    );
    let check = lab.perimeter(&["monitor", "--check"]);
    assert_eq!(code(&check), 0, "{}", stderr(&check));
    assert!(
        stdout(&check).contains("job edge: every 1h"),
        "{}",
        stdout(&check)
    );

    // The first run finds nothing open: nothing to tell.
    let first = lab.once();
    assert_eq!(code(&first), 0, "{}{}", stdout(&first), stderr(&first));
    assert!(
        stdout(&first).contains("edge: complete (0 changes)"),
        "{}",
        stdout(&first)
    );
    assert!(lab.posts().is_empty());

    // The forgotten Redis: no password, every interface.
    let redis = start_redis(&lab.ns, Path::new("/usr/bin/redis-server"), "0.0.0.0", 6379);
    let second = lab.once();
    assert_eq!(code(&second), 1, "{}{}", stdout(&second), stderr(&second));
    assert!(
        stdout(&second).contains("alerts: 3 delivered, 0 waiting"),
        "{}",
        stdout(&second)
    );
    let posts = lab.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["signature_valid"], true, "{}", posts[0]);
    let alert = body(&posts[0]);
    assert_eq!(alert["schema"], "perimeter.alert/1");
    assert_eq!(alert["severity"], "critical", "{alert}");
    let told = changes(&alert);
    assert!(
        told.contains(&("port-opened".into(), "new".into(), format!("{TARGET}:6379"))),
        "{told:?}"
    );
    assert!(
        told.iter()
            .any(|(kind, _, subject)| kind == "finding-new" && subject.contains("6379")),
        "the unauthenticated Redis is a finding: {told:?}"
    );
    let key = posts[0]["headers"]["x-perimeter-idempotency-key"].clone();
    assert!(key.is_string(), "{}", posts[0]["headers"]);
    // The same alert reached the mail server and the command.
    let mails = lab.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("6379"), "{}", mails[0]);
    assert!(mails[0].to_lowercase().contains("subject:"), "{}", mails[0]);
    let documents = lab.command_documents();
    assert_eq!(documents.len(), 1);
    // Each channel has its own key for the same changes.
    assert_eq!(changes(&documents[0]), told);
    assert_ne!(documents[0]["idempotency_key"], alert["idempotency_key"]);

    // Still there: nothing new to say.
    let third = lab.once();
    assert_eq!(code(&third), 0, "{}{}", stdout(&third), stderr(&third));
    assert_eq!(lab.posts().len(), 1);
    assert_eq!(lab.mails().len(), 1);

    // `alerts` lists it, and an acknowledgement is recorded.
    let listed = lab.alerts_json();
    assert_eq!(
        listed["alerts"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let deliveries = &listed["alerts"][0]["deliveries"];
    assert_eq!(deliveries.as_array().map(Vec::len), Some(3), "{listed}");
    assert!(
        deliveries
            .as_array()
            .into_iter()
            .flatten()
            .all(|d| d["state"] == "sent"),
        "{listed}"
    );
    let condition = listed["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["kind"] == "port-opened")
        .unwrap_or_else(|| panic!("the open port is an open condition: {listed}"));
    let id = condition["id"].as_i64().expect("id").to_string();
    let ack = lab.perimeter(&[
        "alerts",
        "ack",
        &id,
        "--reason",
        "migrating it",
        "--until",
        "7d",
        "--by",
        "alice",
    ]);
    assert_eq!(code(&ack), 0, "{}", stderr(&ack));
    assert!(
        stdout(&ack).contains("acknowledged by alice"),
        "{}",
        stdout(&ack)
    );
    let human = lab.perimeter(&["alerts"]);
    assert!(
        stdout(&human).contains("[acknowledged until")
            && stdout(&human).contains(" by alice at ")
            && stdout(&human).contains(": migrating it]"),
        "who, when and why: {}",
        stdout(&human)
    );
    let listed = lab.perimeter(&["alerts", "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&listed)).expect("alerts as JSON");
    let acknowledged = listed["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"].as_i64().map(|i| i.to_string()) == Some(id.clone()))
        .unwrap_or_else(|| panic!("the condition is still open: {listed}"));
    assert_eq!(acknowledged["acknowledgement"]["by"], "alice", "{listed}");
    assert_eq!(
        acknowledged["acknowledgement"]["reason"], "migrating it",
        "{listed}"
    );
    let missing = lab.perimeter(&["alerts", "ack", "999999", "--reason", "x"]);
    assert_eq!(code(&missing), 2);
    assert!(
        stderr(&missing).contains("no condition 999999"),
        "{}",
        stderr(&missing)
    );

    // It goes away: told once more, as resolved.
    drop(redis);
    let fourth = lab.once();
    assert_eq!(code(&fourth), 1, "{}{}", stdout(&fourth), stderr(&fourth));
    let posts = lab.posts();
    assert_eq!(posts.len(), 2, "{posts:?}");
    let resolved = body(&posts[1]);
    let told = changes(&resolved);
    assert!(
        told.iter()
            .any(|(kind, state, subject)| kind == "port-closed"
                && state == "resolved"
                && subject == &format!("{TARGET}:6379")),
        "{told:?}"
    );
    assert_ne!(posts[1]["headers"]["x-perimeter-idempotency-key"], key);
    assert_eq!(lab.mails().len(), 2);
}

#[test]
fn an_allowed_port_is_quiet_and_a_flapping_one_is_told_once() {
    if !requirements() {
        return;
    }
    let lab = MonitorLab::new(
        "mon2",
        &Settings {
            close_after: 2,
            ports: "443,8080",
            hook_mode: Some("ok"),
            every: "1h",
            rate: 10_000,
        },
    );
    // 443 is public in prod: expected, never told.
    let _public = start_listening(
        &lab.ns,
        PYTHON,
        &[
            "-m",
            "http.server",
            "443",
            "--bind",
            TARGET,
            "--directory",
            "/",
        ],
        &format!("{TARGET}:443"),
    );
    let web = |lab: &MonitorLab| {
        start_listening(
            &lab.ns,
            PYTHON,
            &[
                "-m",
                "http.server",
                "8080",
                "--bind",
                TARGET,
                "--directory",
                "/",
            ],
            &format!("{TARGET}:8080"),
        )
    };
    let run = |lab: &MonitorLab| {
        let output = lab.once();
        assert!(
            matches!(code(&output), 0 | 1),
            "{}{}",
            stdout(&output),
            stderr(&output)
        );
    };
    run(&lab);
    assert!(
        lab.posts().is_empty(),
        "an allowed port was told: {:?}",
        lab.posts()
    );
    // 8080 opens, closes for one run, opens again: one alert.
    let flapping = web(&lab);
    run(&lab);
    drop(flapping);
    run(&lab);
    let _again = web(&lab);
    run(&lab);
    let posts = lab.posts();
    assert_eq!(
        posts.len(),
        1,
        "{:?}",
        posts.iter().map(body).collect::<Vec<_>>()
    );
    let told = changes(&body(&posts[0]));
    assert_eq!(
        told,
        [(
            "port-opened".to_owned(),
            "new".to_owned(),
            format!("{TARGET}:8080")
        )]
    );
}

#[test]
fn a_channel_that_is_down_gets_the_alert_once_it_is_back() {
    if !requirements() {
        return;
    }
    let mut lab = MonitorLab::new(
        "mon3",
        &Settings {
            close_after: 1,
            ports: "8080",
            hook_mode: None,
            every: "1h",
            rate: 10_000,
        },
    );
    let _web = start_listening(
        &lab.ns,
        PYTHON,
        &[
            "-m",
            "http.server",
            "8080",
            "--bind",
            TARGET,
            "--directory",
            "/",
        ],
        &format!("{TARGET}:8080"),
    );
    // Nothing listens where the webhook points: the alert waits.
    let first = lab.once();
    assert_eq!(code(&first), 1, "{}{}", stdout(&first), stderr(&first));
    assert!(stdout(&first).contains("1 waiting"), "{}", stdout(&first));
    let listed = lab.alerts_json();
    let hook = listed["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["channel"] == "hook")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(hook["pending"], 1, "{listed}");
    assert!(hook["last_error"].is_string(), "{listed}");

    // A receiver that answers with a body of 100 MB: read up to a bound,
    // the delivery counts, and the monitor is not held.
    let port = lab.hook_port;
    lab.start_hook("huge", port);
    std::thread::sleep(Duration::from_millis(2100));
    let second = lab.deliver_due();
    assert_eq!(code(&second), 0, "{}{}", stdout(&second), stderr(&second));
    assert!(
        stdout(&second).contains("1 delivered, 0 waiting"),
        "{}",
        stdout(&second)
    );
    let posts = lab.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["signature_valid"], true);
    // Delivered once: nothing more goes out.
    lab.start_hook("ok", port);
    std::thread::sleep(Duration::from_millis(2100));
    let third = lab.deliver_due();
    assert_eq!(code(&third), 0, "{}{}", stdout(&third), stderr(&third));
    assert_eq!(lab.posts().len(), 1);
    assert_eq!(lab.mails().len(), 1);
}

#[test]
fn killed_mid_delivery_the_alert_goes_out_after_restart_with_the_same_key() {
    if !requirements() {
        return;
    }
    let mut lab = MonitorLab::new(
        "mon4",
        &Settings {
            close_after: 1,
            ports: "8080",
            hook_mode: Some("hang"),
            every: "1h",
            rate: 10_000,
        },
    );
    let _web = start_listening(
        &lab.ns,
        PYTHON,
        &[
            "-m",
            "http.server",
            "8080",
            "--bind",
            TARGET,
            "--directory",
            "/",
        ],
        &format!("{TARGET}:8080"),
    );
    let mut service = lab.service();
    // The first run is due at start; its alert reaches the hanging receiver.
    wait_service(&lab, &mut service, "the webhook to be posted", || {
        !lab.posts().is_empty()
    });
    let first_key = lab.posts()[0]["headers"]["x-perimeter-idempotency-key"].clone();
    // The mail and the command went through and are recorded as sent; only
    // the webhook is in flight when the monitor dies.
    wait_service(
        &lab,
        &mut service,
        "the other channels to be recorded",
        || {
            let listed = lab.alerts_json();
            listed["alerts"][0]["deliveries"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["state"] == "sent")
                .count()
                == 2
        },
    );
    service.kill().expect("kill -9");
    let _ = service.wait();

    let port = lab.hook_port;
    lab.start_hook("ok", port);
    std::thread::sleep(Duration::from_millis(2100));
    let after = lab.deliver_due();
    assert_eq!(code(&after), 0, "{}{}", stdout(&after), stderr(&after));
    let posts = lab.posts();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(
        posts[1]["headers"]["x-perimeter-idempotency-key"],
        first_key
    );
    assert_eq!(
        body(&posts[1])["idempotency_key"],
        body(&posts[0])["idempotency_key"]
    );
    // Every channel got it once; the run itself was complete and is kept.
    assert_eq!(lab.mails().len(), 1);
    assert_eq!(lab.command_documents().len(), 1);
    let listed = lab.alerts_json();
    assert_eq!(
        listed["alerts"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

/// The service: metrics promtool accepts, a reload that fails keeps the
/// running configuration, SIGTERM stops it with exit 0 and no false
/// "closed" (a scan cut short is the next test's).
#[test]
fn the_service_serves_metrics_survives_a_bad_reload_and_stops_cleanly() {
    if !requirements() || !require(Requirement::Tool("promtool")) {
        return;
    }
    let lab = MonitorLab::new(
        "mon5",
        &Settings {
            close_after: 1,
            ports: "8080",
            hook_mode: Some("ok"),
            every: "2s",
            rate: 10_000,
        },
    );
    let _web = start_listening(
        &lab.ns,
        PYTHON,
        &[
            "-m",
            "http.server",
            "8080",
            "--bind",
            TARGET,
            "--directory",
            "/",
        ],
        &format!("{TARGET}:8080"),
    );
    let mut service = lab.service();
    wait_service(&lab, &mut service, "the first alert", || {
        !lab.posts().is_empty()
    });
    let metrics = fetch_metrics(&lab.ns);
    assert!(
        metrics.contains("perimeter_job_runs_total{job=\"edge\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("perimeter_alerts_sent_total{channel=\"hook\"}"),
        "{metrics}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A broken configuration on SIGHUP: said, and the running one kept.
    let good = std::fs::read_to_string(&lab.config).expect("config");
    std::fs::write(&lab.config, format!("{good}\n[monitor.bogus]\n")).expect("break");
    signal(&service, "HUP");
    wait_for(
        "the refused reload in the log",
        Duration::from_secs(20),
        || lab.log().contains("the running one is kept"),
    );
    let runs_before = lab.posts().len();
    assert!(service.try_wait().expect("wait").is_none(), "{}", lab.log());
    std::fs::write(&lab.config, &good).expect("restore");

    // SIGTERM: it stops, and says so.
    signal(&service, "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = service.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the monitor did not stop:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}\n{}", lab.log());
    // The port stayed open throughout: never told as closed.
    let told: Vec<_> = lab.posts().iter().map(|p| changes(&body(p))).collect();
    assert!(
        told.iter()
            .flatten()
            .all(|(_, state, _)| state != "resolved"),
        "{told:?}"
    );
    assert!(lab.posts().len() >= runs_before);
    let scans = lab.perimeter(&["scans"]);
    assert_eq!(code(&scans), 0, "{}", stderr(&scans));
}

/// The status of each stored scan, oldest first.
fn scan_statuses(lab: &MonitorLab) -> Vec<String> {
    let output = lab.perimeter(&["scans", "--format", "json"]);
    if code(&output) != 0 {
        return Vec::new();
    }
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let mut statuses: Vec<(i64, String)> = doc["scans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["id"].as_i64().unwrap_or_default(),
                s["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    statuses.sort();
    statuses.into_iter().map(|(_, status)| status).collect()
}

/// A scan stopped by SIGTERM, and one killed with SIGKILL, are stored as
/// incomplete and interrupted, and neither is judged: the open port they had
/// not reached yet is never told as closed.
#[test]
fn a_scan_stopped_or_killed_midway_is_never_judged() {
    if !requirements() {
        return;
    }
    let lab = MonitorLab::new(
        "mon6",
        &Settings {
            close_after: 1,
            ports: "8080,20000-20999",
            hook_mode: Some("ok"),
            every: "2s",
            rate: 10_000,
        },
    );
    let _web = start_listening(
        &lab.ns,
        PYTHON,
        &[
            "-m",
            "http.server",
            "8080",
            "--bind",
            TARGET,
            "--directory",
            "/",
        ],
        &format!("{TARGET}:8080"),
    );
    let baseline = lab.once();
    assert_eq!(
        code(&baseline),
        1,
        "{}{}",
        stdout(&baseline),
        stderr(&baseline)
    );
    assert_eq!(lab.posts().len(), 1);
    // From now on each scan takes about 50 s.
    let fast = std::fs::read_to_string(&lab.config).expect("config");
    std::fs::write(&lab.config, fast.replace("rate = 10000.0", "rate = 20.0")).expect("slow");

    let mut service = lab.service();
    wait_service(&lab, &mut service, "a running scan", || {
        scan_statuses(&lab).last().map(String::as_str) == Some("running")
    });
    signal(&service, "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = service.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the monitor did not stop:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}\n{}", lab.log());
    assert_eq!(scan_statuses(&lab), ["complete", "incomplete"]);

    let mut service = lab.service();
    wait_service(&lab, &mut service, "another running scan", || {
        scan_statuses(&lab).last().map(String::as_str) == Some("running")
    });
    service.kill().expect("kill -9");
    let _ = service.wait();
    // The next run (fast again) compares with the last complete one.
    std::fs::write(&lab.config, &fast).expect("fast");
    let after = lab.once();
    assert_eq!(code(&after), 0, "{}{}", stdout(&after), stderr(&after));
    assert_eq!(
        scan_statuses(&lab),
        ["complete", "incomplete", "interrupted", "complete"]
    );
    assert_eq!(
        lab.posts().len(),
        1,
        "{:?}",
        lab.posts().iter().map(body).collect::<Vec<_>>()
    );
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// GET /metrics from inside the namespace.
fn fetch_metrics(ns: &Ns) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let got = ns
            .enter(|| -> std::io::Result<String> {
                let mut stream = std::net::TcpStream::connect("127.0.0.1:19464")?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
                let mut response = String::new();
                stream.read_to_string(&mut response)?;
                Ok(response)
            })
            .expect("enter");
        if let Ok(response) = got
            && let Some((head, body)) = response.split_once("\r\n\r\n")
            && head.starts_with("HTTP/1.0 200") | head.starts_with("HTTP/1.1 200")
        {
            text = body.to_owned();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!text.is_empty(), "no metrics served");
    text
}
