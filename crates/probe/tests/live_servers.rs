//! The identification plan against real servers on 127.0.0.1: each test starts a
//! daemon on an ephemeral port (killed in `Drop`), runs `probes_for_address`
//! through a small blocking driver, and checks the exact service, version, auth
//! state and findings. A test whose daemon is not installed says so and is
//! skipped, or fails under `PERIMETER_TEST_STRICT=1` (as `scripts/test` runs it).
//!
//! The driver here is test code: std sockets, a read timeout on every read, and
//! the probe's `max_response` cap, the same contract the scan engine follows.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use perimeter_model::{AuthState, Severity};
use perimeter_probe::{Identified, Next, Probe, probes_for_address, rules};
use perimeter_testlab::{Requirement, require, require_tool};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// How long the banner probe waits for a greeting, and any other read for its
/// answer. Loopback servers answer in microseconds when idle, but these tests
/// run side by side on two CPUs with postgres's initdb and a dozen Python
/// servers: an 800 ms bound once let a TLS handshake (the mTLS server's)
/// pass unanswered in CI. It only bounds silence, so a wider one costs time
/// only where a probe waits out a server that never speaks.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// A daemon started for one test, killed and reaped when dropped.
struct Daemon {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .or_else(|| {
            let name = candidates.first()?.rsplit('/').next()?;
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|dir| Path::new(dir).join(name))
                .find(|path| path.is_file())
        })
}

/// [`find_binary`], or `None` after [`require_tool`] said that the last
/// candidate (the one `scripts/test` installs) is missing, or failed the test
/// in strict mode.
fn require_binary(candidates: &[&str]) -> Option<PathBuf> {
    find_binary(candidates).or_else(|| require_tool(candidates.last()?))
}

/// A port free on 127.0.0.1 now, and never handed to another test of this
/// binary: the tests run side by side, and the kernel may give a port just
/// released to the next `bind(0)`, so two daemons could be told the same one.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind((LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|error| panic!("no free port: {error}"));
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Starts `command` and waits until its port accepts connections, failing if
/// the daemon exits first (so a port some other process answers on is never
/// taken for the daemon's).
fn start(mut command: Command, port: u16, dir: tempfile::TempDir) -> Daemon {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("starting {command:?}: {error}"));
    let mut daemon = Daemon {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("{command:?} exited ({status}) before listening on {port}");
        }
        if TcpStream::connect_timeout(
            &SocketAddr::new(LOCALHOST, port),
            Duration::from_millis(200),
        )
        .is_ok()
        {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("{command:?} exited ({status}); something else answers on {port}");
            }
            return daemon;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{command:?} did not listen on {port}");
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"))
}

/// One probe conversation on a fresh connection: the identification, or how
/// the conversation ended without one (for the failure message).
fn run_probe(port: u16, probe: &mut dyn Probe) -> Result<Identified, String> {
    let address = SocketAddr::new(LOCALHOST, port);
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
        .map_err(|error| format!("connect: {error}"))?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(READ_TIMEOUT)))
        .map_err(|error| format!("socket options: {error}"))?;
    let cap = probe.max_response();
    let mut received = Vec::new();
    let mut next = probe.start();
    let (found, how) = loop {
        match next {
            Next::Done(found) => break (found, "done".to_string()),
            Next::Send(request) => {
                received.clear();
                if let Err(error) = stream.write_all(&request) {
                    break (probe.on_end(&received, false), format!("write: {error}"));
                }
            }
            Next::Receive => {}
        }
        let room = cap.saturating_sub(received.len());
        if room == 0 {
            break (probe.on_end(&received, false), "cap reached".into());
        }
        let mut chunk = vec![0u8; room.min(8192)];
        match stream.read(&mut chunk) {
            Ok(0) => break (probe.on_end(&received, false), "closed".into()),
            Ok(n) => {
                received.extend_from_slice(chunk.get(..n).unwrap_or_default());
                next = probe.on_data(&received);
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break (probe.on_end(&received, true), "silent".into());
            }
            Err(error) => break (probe.on_end(&received, false), format!("read: {error}")),
        }
    };
    found.ok_or_else(|| format!("{how} after {} bytes", received.len()))
}

/// Runs the plan for `port`; returns the identification and the probes run.
fn identify(port: u16) -> (Identified, Vec<&'static str>) {
    let mut run = Vec::new();
    let mut outcomes = Vec::new();
    for mut probe in probes_for_address(LOCALHOST, port) {
        run.push(probe.name());
        match run_probe(port, probe.as_mut()) {
            Ok(found) => return (found, run),
            Err(how) => outcomes.push(format!("{}: {how}", probe.name())),
        }
    }
    panic!("nothing identified on port {port}: {outcomes:#?}");
}

/// The text after `marker` in a program's version output, up to a space or comma.
fn version_from(program: &Path, args: &[&str], marker: &str) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let after = text.split(marker).nth(1)?;
    Some(after.split([' ', ',', '\n']).next()?.to_string())
}

/// A Redis on a free port, and its binary; `None` when it is not installed.
fn redis(extra: &[&str]) -> Option<(Daemon, PathBuf)> {
    let binary = require_binary(&["/usr/bin/redis-server"])?;
    let port = free_port();
    let dir = temp_dir();
    let mut command = Command::new(&binary);
    command
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--daemonize", "no", "--dir"])
        .arg(dir.path())
        .args(extra);
    Some((start(command, port, dir), binary))
}

#[test]
fn redis_without_password_is_critical() {
    let Some((daemon, binary)) = redis(&[]) else {
        return;
    };
    let (found, run) = identify(daemon.port);
    assert_eq!(
        run,
        vec!["banner", "redis"],
        "Redis on an unusual port is found by the general order"
    );
    assert_eq!(found.service.name, "redis");
    let expected = version_from(&binary, &["--version"], "v=");
    assert_eq!(found.service.version, expected);
    assert_eq!(found.service.auth, AuthState::None);
    let [finding] = found.findings.as_slice() else {
        panic!("one finding: {:?}", found.findings);
    };
    assert_eq!(finding.rule, rules::REDIS_NOAUTH);
    assert_eq!(finding.severity, Severity::Critical);
    assert_eq!(
        finding.evidence,
        vec![
            "PING answered +PONG without AUTH".to_string(),
            format!("redis_version:{}", expected.unwrap_or_default())
        ]
    );
}

#[test]
fn redis_with_password_requires_auth() {
    let Some((daemon, _)) = redis(&["--requirepass", "lab-password-not-secret"]) else {
        return;
    };
    let (found, _) = identify(daemon.port);
    assert_eq!(found.service.name, "redis");
    assert_eq!(found.service.auth, AuthState::Required);
    assert!(found.findings.is_empty());
}

#[test]
fn memcached_is_high() {
    let Some(binary) = require_binary(&["/usr/bin/memcached"]) else {
        return;
    };
    let port = free_port();
    let mut command = Command::new(&binary);
    command.args([
        "-l",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "0",
        "-u",
        "nobody",
    ]);
    let daemon = start(command, port, temp_dir());
    let (found, run) = identify(daemon.port);
    assert_eq!(run, vec!["banner", "redis", "memcached"]);
    assert_eq!(found.service.name, "memcached");
    assert_eq!(
        found.service.version,
        version_from(&binary, &["-V"], "memcached ")
    );
    assert_eq!(found.service.auth, AuthState::None);
    assert_eq!(found.findings.len(), 1);
    assert_eq!(
        found.findings.first().map(|f| f.rule.as_str()),
        Some(rules::MEMCACHED)
    );
    assert_eq!(
        found.findings.first().map(|f| f.severity),
        Some(Severity::High)
    );
}

#[test]
fn sshd_banner() {
    let (Some(binary), Some(keygen)) = (
        require_binary(&["/usr/sbin/sshd"]),
        require_binary(&["/usr/bin/ssh-keygen"]),
    ) else {
        return;
    };
    let dir = temp_dir();
    let key = dir.path().join("host_ed25519");
    let generated = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&key)
        .status();
    assert!(generated.is_ok_and(|s| s.success()), "host key generated");
    // sshd refuses to start without its privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = free_port();
    let config = dir.path().join("sshd_config");
    let text = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nUsePAM no\n",
        key.display()
    );
    std::fs::write(&config, text).unwrap_or_else(|error| panic!("writing sshd_config: {error}"));
    let mut command = Command::new(&binary);
    command.arg("-D").arg("-f").arg(&config);
    let daemon = start(command, port, dir);
    let (found, run) = identify(daemon.port);
    assert_eq!(run, vec!["banner"]);
    assert_eq!(found.service.name, "ssh");
    assert_eq!(found.service.product.as_deref(), Some("OpenSSH"));
    // `ssh -V` names the same build (`OpenSSH_9.2p1 Debian-...`); only this
    // check needs the client.
    if let Some(ssh) = require_binary(&["/usr/bin/ssh"]) {
        assert_eq!(
            found.service.version,
            version_from(&ssh, &["-V"], "OpenSSH_")
        );
    }
    assert!(
        found
            .service
            .banner
            .as_deref()
            .is_some_and(|b| b.starts_with("SSH-2.0-OpenSSH_"))
    );
    assert!(found.findings.is_empty());
}

fn python() -> Option<PathBuf> {
    require_binary(&["/usr/bin/python3"])
}

#[test]
fn python_http_server() {
    let Some(python) = python() else {
        return;
    };
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("index.html"),
        "<html><head><title>Perimeter lab</title></head><body>lab</body></html>",
    )
    .unwrap_or_else(|error| panic!("writing index.html: {error}"));
    let port = free_port();
    let mut command = Command::new(python);
    command
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir.path());
    let daemon = start(command, port, dir);
    let (found, run) = identify(daemon.port);
    // Redis's PING and memcached's `version` get an error page from
    // http.server; those probes leave it to the HTTP probe, which learns more.
    assert_eq!(run, vec!["banner", "redis", "memcached", "http"]);
    assert_eq!(found.service.name, "http");
    assert_eq!(found.service.product.as_deref(), Some("SimpleHTTPServer"));
    assert_eq!(found.service.version.as_deref(), Some("0.6"));
    assert_eq!(
        found.service.extra.get("title").map(String::as_str),
        Some("Perimeter lab")
    );
    assert_eq!(
        found.service.extra.get("status").map(String::as_str),
        Some("200")
    );
    assert!(found.findings.is_empty());
}

const LAB_CERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lab-cert.pem");
const LAB_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lab-key.pem");

/// Python's http.server behind TLS with the lab certificate; `extra_setup`
/// is Python run on `context` before it wraps the socket. The socket listens
/// only once TLS is set up, so the port accepting means the server is ready.
fn python_https(extra_setup: &str) -> Option<Daemon> {
    let python = python()?;
    let dir = temp_dir();
    let port = free_port();
    let script = format!(
        "import http.server, ssl\n\
         server = http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler, bind_and_activate=False)\n\
         context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         context.load_cert_chain({LAB_CERT:?}, {LAB_KEY:?})\n\
         {extra_setup}\n\
         server.socket = context.wrap_socket(server.socket, server_side=True)\n\
         server.server_bind()\n\
         server.server_activate()\n\
         server.serve_forever()\n"
    );
    let mut command = Command::new(python);
    command.arg("-c").arg(script).current_dir(dir.path());
    Some(start(command, port, dir))
}

#[test]
fn https_demanding_a_client_certificate_requires_auth() {
    let setup = format!(
        "context.verify_mode = ssl.CERT_REQUIRED; context.load_verify_locations({LAB_CERT:?})"
    );
    let Some(daemon) = python_https(&setup) else {
        return;
    };
    let (found, _) = identify(daemon.port);
    assert_eq!(found.service.name, "ssl");
    assert_eq!(found.service.auth, AuthState::Required);
    assert_eq!(
        found.service.extra.get("auth").map(String::as_str),
        Some("client-certificate")
    );
    assert!(
        found.service.tls.is_some(),
        "the server certificate is still recorded"
    );
}

#[test]
fn https_with_the_lab_certificate() {
    let Some(daemon) = python_https("pass") else {
        return;
    };
    let (found, run) = identify(daemon.port);
    assert_eq!(run.last(), Some(&"https"));
    assert_eq!(found.service.name, "https");
    assert_eq!(found.service.product.as_deref(), Some("SimpleHTTPServer"));
    let Some(tls) = found.service.tls else {
        panic!("certificate recorded");
    };
    assert_eq!(tls.subject, "CN=lab.perimeter.test, O=Perimeter Lab");
    assert_eq!(
        tls.subject_alt_names,
        vec!["DNS:lab.perimeter.test".to_string(), "IP:127.0.0.1".into()]
    );
    assert_eq!(
        found.service.extra.get("tls_version").map(String::as_str),
        Some("TLSv1_3")
    );
}

#[test]
fn etcd_without_auth_is_critical() {
    let Some(binary) = require_binary(&["/usr/bin/etcd"]) else {
        return;
    };
    let dir = temp_dir();
    let (client, peer) = (free_port(), free_port());
    let mut command = Command::new(&binary);
    command
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"));
    let daemon = start(command, client, dir);
    let (found, _) = identify(daemon.port);
    assert_eq!(found.service.name, "http");
    assert_eq!(found.service.product.as_deref(), Some("etcd"));
    assert_eq!(
        found.service.version,
        version_from(&binary, &["--version"], "etcd Version: ")
    );
    assert_eq!(found.service.auth, AuthState::None);
    assert_eq!(
        found.findings.first().map(|f| f.rule.as_str()),
        Some(rules::ETCD_OPEN)
    );
}

#[test]
fn vnc_without_password_is_critical() {
    let Some(binary) = require_binary(&["/usr/bin/Xtigervnc"]) else {
        return;
    };
    let port = free_port();
    // A display number unlikely to be taken; the X socket itself is not used.
    let display = format!(":{}", 100 + port % 400);
    let mut command = Command::new(binary);
    command.args([
        display.as_str(),
        "-rfbport",
        &port.to_string(),
        "-interface",
        "127.0.0.1",
        "-SecurityTypes",
        "None",
        "-nolisten",
        "tcp",
    ]);
    let daemon = start(command, port, temp_dir());
    let (found, run) = identify(daemon.port);
    assert_eq!(run, vec!["banner"]);
    assert_eq!(found.service.name, "vnc");
    assert_eq!(found.service.version.as_deref(), Some("3.8"));
    assert_eq!(found.service.auth, AuthState::None);
    assert_eq!(
        found.findings.first().map(|f| f.rule.as_str()),
        Some(rules::VNC_NOAUTH)
    );
}

/// The uid and gid of the `postgres` account, which PostgreSQL needs to run as
/// (it refuses root).
fn postgres_account() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let output = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// Initialises a cluster owned by `postgres` and starts it on a free port with
/// `hba` as its only pg_hba.conf line; `None` when PostgreSQL is not installed
/// or the test does not run as root (which it needs to hand the cluster to the
/// `postgres` account).
fn postgres(hba: &str, ssl: bool) -> Option<Daemon> {
    use std::os::unix::process::CommandExt as _;
    if !require(Requirement::Root) || !require(Requirement::Account("postgres")) {
        return None;
    }
    let postgres = require_binary(&[
        "/usr/local/bin/postgres",
        "/usr/lib/postgresql/15/bin/postgres",
    ])?;
    let initdb = require_tool(&postgres.with_file_name("initdb").to_string_lossy())?;
    let (uid, gid) = postgres_account().expect("the postgres account's uid and gid");
    let dir = temp_dir();
    let owned = |path: &Path| {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|error| panic!("chown {path:?}: {error}"));
    };
    owned(dir.path());
    let data = dir.path().join("data");
    let status = Command::new(&initdb)
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres"])
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(status.is_ok_and(|s| s.success()), "initdb");
    std::fs::write(data.join("pg_hba.conf"), format!("{hba}\n"))
        .unwrap_or_else(|error| panic!("pg_hba: {error}"));
    owned(&data.join("pg_hba.conf"));
    let port = free_port();
    let mut command = Command::new(&postgres);
    command
        .arg("-D")
        .arg(&data)
        .args([
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-k",
        ])
        .arg(dir.path())
        .uid(uid)
        .gid(gid);
    if ssl {
        for (from, to) in [(LAB_CERT, "server.crt"), (LAB_KEY, "server.key")] {
            let target = data.join(to);
            std::fs::copy(from, &target).unwrap_or_else(|error| panic!("copy {from}: {error}"));
            owned(&target);
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600));
        }
        command.args(["-c", "ssl=on"]);
    }
    Some(start(command, port, dir))
}

#[test]
fn postgres_trust_means_no_authentication() {
    let Some(daemon) = postgres("host all all 127.0.0.1/32 trust", false) else {
        return;
    };
    let (found, run) = identify(daemon.port);
    assert_eq!(run.last(), Some(&"postgresql"));
    assert_eq!(found.service.name, "postgresql");
    assert_eq!(found.service.auth, AuthState::None);
    assert_eq!(
        found.service.extra.get("auth_method").map(String::as_str),
        Some("trust")
    );
    assert_eq!(
        found.service.extra.get("ssl").map(String::as_str),
        Some("no")
    );
}

#[test]
fn postgres_hostssl_scram_over_tls() {
    let Some(daemon) = postgres("hostssl all all 127.0.0.1/32 scram-sha-256", true) else {
        return;
    };
    let (found, _) = identify(daemon.port);
    assert_eq!(found.service.name, "postgresql");
    assert_eq!(found.service.auth, AuthState::Required);
    // Over TLS the server also offers channel binding.
    assert_eq!(
        found.service.extra.get("auth_method").map(String::as_str),
        Some("sasl (SCRAM-SHA-256-PLUS, SCRAM-SHA-256)")
    );
    assert_eq!(
        found.service.extra.get("ssl").map(String::as_str),
        Some("yes")
    );
    assert_eq!(
        found.service.tls.map(|tls| tls.subject),
        Some("CN=lab.perimeter.test, O=Perimeter Lab".to_string())
    );
}
