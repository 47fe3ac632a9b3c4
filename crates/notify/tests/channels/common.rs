//! What the channel tests share: the alert they send, the receivers they
//! start (stopped on drop), certificates they make.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use perimeter_model::{Alert, AlertChange, ChangeKind, ChangeState, IdempotencyKey, Severity};
use perimeter_notify::{Channel, Destination, Filter};
use perimeter_testlab::{Daemon, Requirement, require};
use time::macros::datetime;

/// Debian's Python, which has python3-aiosmtpd (a PATH python may not).
pub(crate) const PYTHON: &str = "/usr/bin/python3";

/// A subject the network could have chosen: markup, a CRLF to start a new
/// header or log line, a Slack mention, a terminal escape.
pub(crate) const HOSTILE: &str =
    "<script>x</script>\r\nX-Injected: yes <!channel> ] \" \\ \u{1b}[2J";

/// The alert every test sends: three changes, one with a hostile subject.
pub(crate) fn alert(channel: &str) -> Alert {
    Alert::new(
        IdempotencyKey::for_delivery("nightly", "42", channel),
        "nightly",
        "42",
        datetime!(2026-11-25 12:07:16 UTC),
        "scanner-1",
        vec![
            AlertChange::new(
                ChangeKind::PortOpened,
                Severity::Medium,
                ChangeState::New,
                "198.51.100.7:8080",
                "a port opened",
            )
            .with_evidence("tcp 198.51.100.7:8080 open")
            .with_remedy("Close it or approve it."),
            AlertChange::new(
                ChangeKind::AuthChanged,
                Severity::Critical,
                ChangeState::New,
                "198.51.100.7:6379",
                "redis now answers without a password",
            )
            .with_evidence("PING answered +PONG without AUTH")
            .with_remedy("Set requirepass."),
            AlertChange::new(
                ChangeKind::UnknownHost,
                Severity::High,
                ChangeState::New,
                HOSTILE,
                "a host in no environment answered",
            ),
        ],
    )
}

/// A channel named `name` that takes every change.
pub(crate) fn channel(name: &str, destination: Destination) -> Channel {
    Channel {
        name: name.to_owned(),
        filter: Filter::default(),
        destination,
    }
}

/// Python and, when `aiosmtpd`, Debian's aiosmtpd; asked on the test's own
/// thread, as `require` wants.
pub(crate) fn require_python(aiosmtpd: bool) -> bool {
    require(Requirement::Tool(PYTHON))
        && (!aiosmtpd || require(Requirement::Path("/usr/lib/python3/dist-packages/aiosmtpd")))
}

/// A receiver script running on 127.0.0.1, stopped when dropped.
pub(crate) struct Receiver {
    pub(crate) port: u16,
    _daemon: Daemon,
}

/// Start `tests/receivers/<script>` with `args` and read back the port it
/// printed.
pub(crate) fn start_receiver(script: &str, args: &[&str]) -> Receiver {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/receivers")
        .join(script);
    let mut child = Command::new(PYTHON)
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {script}: {err}"));
    let stdout = child.stdout.take().expect("stdout");
    // Read the first line on a thread, so that a receiver that hangs before
    // printing fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let mut daemon = Daemon::new(script, child);
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| {
            let why = daemon.ensure_running().err();
            panic!("{script} printed {line:?} instead of its port ({why:?})")
        });
    Receiver {
        port,
        _daemon: daemon,
    }
}

/// A private CA and a certificate it issued for 127.0.0.1 and localhost, as
/// PEM files in `dir`: (CA certificate, server certificate, server key).
pub(crate) fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "perimeter test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params")
        .signed_by(&server_key, &ca)
        .expect("server certificate");
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write CA");
    std::fs::write(&paths.1, server.pem()).expect("write certificate");
    std::fs::write(&paths.2, server_key.serialize_pem()).expect("write key");
    (paths.0, paths.1, paths.2)
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// The path as UTF-8, for a receiver's command line.
pub(crate) fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}
