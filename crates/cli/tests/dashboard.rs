//! The dashboard in a real browser: the real `perimeter server
//! --dev-self-signed` on loopback with a fresh SQLite database, a host
//! reported through the API as an agent reports it (enrolment, then a signed
//! report), and headless Chromium driven over the Chrome DevTools Protocol:
//! sign in, see the host and its unapproved listener at the top of the
//! overview, see a hostile process name rendered as text, approve the
//! listener on /approvals with a reason, see it approved on the host's page
//! and in `GET /api/v1/hosts/{id}`, and see a viewer refused an approval.
//!
//! Why the DevTools protocol rather than WebDriver: Debian's `chromium` speaks
//! it itself (no chromedriver of a matching version to install and start),
//! one small dependency (tungstenite, a WebSocket over a loopback socket)
//! drives it, and it gives what the test wants to check beside the page:
//! JavaScript dialogs (an XSS that ran), exceptions, and screenshots at a set
//! window size.
//!
//! Screenshots of each page at 1280×800 and at phone width (390×844) are
//! written under target/tmp/dashboard/ (not committed) for a person to look
//! at.

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use perimeter_api::client::{ApiClient, Auth, Trust};
use perimeter_api::sign::AgentKey;
use perimeter_api::{
    EnrolRequest, EnrolResponse, FindingDoc, HostDetail, HostState, ListenerDoc, OwnerDoc, Report,
    ReportAck, SCHEMA,
};
use perimeter_testlab::{Daemon, Ns, Requirement, require};
use serde_json::{Value, json};

const PASSWORD: &str = "a long enough password";
const HOSTILE_NAME: &str = "<script>alert(1)</script>";
const HOSTILE_EXE: &str = "/tmp/\"><img src=x onerror=alert(2)>";

/// `perimeter server` running; killed in `Drop`.
struct Server {
    child: Child,
    base: String,
    fingerprint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn admin(database: &Path, args: &[&str]) -> String {
    let mut all = vec!["server", "--database", database.to_str().expect("path")];
    all.extend_from_slice(args);
    let output = common::run(None, &all);
    assert_eq!(
        common::code(&output),
        0,
        "perimeter {all:?}: {}",
        common::stderr(&output)
    );
    common::stdout(&output)
}

fn start_server(database: &Path, secret_file: &Path) -> Server {
    let secret_file = secret_file.to_str().expect("path");
    start_server_in(None, database, &["--enrol-secret-file", secret_file])
}

/// `perimeter server` on 127.0.0.1 (of `ns`, when given) with a fresh
/// self-signed certificate and `extra` arguments.
fn start_server_in(ns: Option<&Ns>, database: &Path, extra: &[&str]) -> Server {
    let mut command = match ns {
        Some(ns) => ns.command(common::perimeter()),
        None => Command::new(common::perimeter()),
    };
    let mut child = command
        .args([
            "server",
            "--database",
            database.to_str().expect("path"),
            "--listen",
            "127.0.0.1:0",
            "--dev-self-signed",
        ])
        .args(extra)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("perimeter server starts");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut base = None;
    let mut fingerprint = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while base.is_none() || fingerprint.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("the server prints its address and fingerprint");
        if let Some(rest) = line.strip_prefix("perimeter server: ") {
            base = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(rest) = line.strip_prefix("certificate fingerprint ") {
            fingerprint = Some(rest.trim().to_owned());
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || while lines.recv().is_ok() {});
    Server {
        child,
        base: base.expect("address"),
        fingerprint: fingerprint.expect("fingerprint"),
    }
}

fn owner(name: &str, exe: &str, package: Option<&str>, user: &str) -> OwnerDoc {
    OwnerDoc {
        pid: 4242,
        name: name.into(),
        exe: Some(exe.into()),
        package: package.map(str::to_owned),
        user: user.into(),
    }
}

fn listener(address: &str, port: u16, scope: &str, owner: OwnerDoc) -> ListenerDoc {
    ListenerDoc {
        netns: "host".into(),
        protocol: "tcp".into(),
        address: address.into(),
        port,
        scope: scope.into(),
        owners: vec![owner],
        reach: None,
    }
}

/// Enrols an agent and sends its first report, as `perimeter agent` does:
/// an unapproved Redis on every address, a hostile unpackaged process on a
/// private address, a loopback PostgreSQL and a critical finding. Its id.
fn report_host(server: &Server, secret: &str) -> String {
    let trust = Trust::parse_fingerprint(&server.fingerprint).expect("fingerprint");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let key = AgentKey::generate();
        let client = ApiClient::new(&server.base, &trust, Auth::None).expect("client");
        let enrolled: EnrolResponse = client
            .post_json(
                "/api/v1/enrol",
                &EnrolRequest {
                    schema: SCHEMA.into(),
                    public_key: key.public_key_base64(),
                    hostname: "cache-1".into(),
                    secret: secret.into(),
                },
            )
            .await
            .expect("enrol");
        assert_eq!(enrolled.status, "accepted");
        let agent_id = enrolled.agent_id.clone();
        let client =
            ApiClient::new(&server.base, &trust, Auth::Agent(Arc::new(key))).expect("client");
        // The Redis reachable from everyone, as the agent's audit walked
        // the firewall (this server says it accepts the field).
        let mut redis = listener(
            "0.0.0.0",
            6379,
            "wildcard",
            owner(
                "redis-server",
                "/usr/bin/redis-server",
                Some("redis-server"),
                "redis",
            ),
        );
        redis.reach = Some(perimeter_api::ReachDoc {
            allowed: vec!["0.0.0.0/0".into()],
            undecided: Vec::new(),
        });
        let state = HostState {
            hostname: "cache-1".into(),
            listeners: vec![
                redis,
                listener(
                    "10.20.0.5",
                    31337,
                    "private",
                    owner(HOSTILE_NAME, HOSTILE_EXE, None, "nobody"),
                ),
                listener(
                    "127.0.0.1",
                    5432,
                    "loopback",
                    owner(
                        "postgres",
                        "/usr/lib/postgresql/15/bin/postgres",
                        Some("postgresql-15"),
                        "postgres",
                    ),
                ),
            ],
            findings: vec![FindingDoc {
                rule: "redis.no-auth".into(),
                severity: "critical".into(),
                subject: "tcp 0.0.0.0:6379".into(),
                message: "Redis answers without a password".into(),
                evidence: vec!["PING -> +PONG".into()],
                remedy: "set requirepass, or bind to loopback".into(),
            }],
        };
        let ack: ReportAck = client
            .post_json(
                "/api/v1/reports",
                &Report {
                    schema: SCHEMA.into(),
                    agent_id: agent_id.clone(),
                    seq: 1,
                    taken_at: time::OffsetDateTime::now_utc(),
                    hostname: "cache-1".into(),
                    full: Some(state),
                    delta: None,
                    events: Vec::new(),
                    dropped_events: 0,
                },
            )
            .await
            .expect("report");
        assert_eq!(ack.outcome, "stored");
        agent_id
    })
}

fn host_via_api(server: &Server, token: &str, agent_id: &str) -> HostDetail {
    let trust = Trust::parse_fingerprint(&server.fingerprint).expect("fingerprint");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        ApiClient::new(&server.base, &trust, Auth::Token(token.to_owned()))
            .expect("client")
            .get_json(&format!("/api/v1/hosts/{agent_id}"))
            .await
            .expect("GET /api/v1/hosts/{id}")
    })
}

/// Headless Chromium and one page of it, driven over the DevTools protocol;
/// killed in `Drop`.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    socket: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
    session: String,
    /// Every event the browser sent (dialogs, exceptions, log entries).
    events: Vec<Value>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.socket.close(None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Chromium on the loopback of `ns` when given (its DevTools socket
    /// opened from inside it), else of this host.
    fn start(chromium: &Path, ns: Option<&Ns>) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut command = match ns {
            Some(ns) => ns.command(&chromium.to_string_lossy()),
            None => Command::new(chromium),
        };
        let child = command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--ignore-certificate-errors",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        // Chromium writes its DevTools port and path to this file once it
        // listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.trim().to_owned(), path.trim().to_owned());
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let address = format!("127.0.0.1:{port}");
        let stream = match ns {
            // A socket made on a thread inside the namespace stays in it.
            Some(ns) => ns
                .enter(move || TcpStream::connect(address))
                .expect("enter the namespace"),
            None => TcpStream::connect(address),
        }
        .expect("DevTools socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let (socket, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
            .expect("DevTools WebSocket");
        let mut browser = Browser {
            child,
            _profile: profile,
            socket,
            next_id: 0,
            session: String::new(),
            events: Vec::new(),
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("target id").to_owned();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({}));
        }
        browser.viewport(1280, 800, false);
        browser
    }

    /// Sends one command (to the page once attached) and waits for its
    /// answer, keeping the events that come meanwhile.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(tungstenite::Message::text(message.to_string()))
            .expect("send to chromium");
        loop {
            let answer = self.socket.read().expect("read from chromium");
            let tungstenite::Message::Text(text) = answer else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if value["id"] == id {
                assert!(
                    value.get("error").is_none(),
                    "{method} failed: {}",
                    value["error"]
                );
                return value["result"].clone();
            }
            if value.get("method").is_some() {
                self.events.push(value);
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Waits until `condition` (JavaScript) is true in a loaded page.
    fn wait_for(&mut self, condition: &str) {
        let expression = format!("document.readyState === 'complete' && ({condition})");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(&expression) != json!(true) {
            assert!(
                Instant::now() < deadline,
                "waited 30 s for `{condition}`; the page is {}\n{}",
                self.eval("location.href"),
                self.eval("document.body ? document.body.innerText : ''")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn goto(&mut self, url: &str, path: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for(&format!("location.pathname === {}", json!(path)));
    }

    /// Types `text` into the field `selector` as a person would.
    fn type_into(&mut self, selector: &str, text: &str) {
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; e.focus(); e.value = ''; return true; }})()",
            json!(selector)
        ));
        assert_eq!(found, json!(true), "no field {selector}");
        self.call("Input.insertText", json!({"text": text}));
    }

    fn click(&mut self, selector: &str) {
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; e.click(); return true; }})()",
            json!(selector)
        ));
        assert_eq!(found, json!(true), "nothing to click at {selector}");
    }

    fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    /// Screenshots of the page at desktop and phone width, under `dir`.
    fn screenshots(&mut self, dir: &Path, name: &str) {
        for (width, height, mobile, suffix) in
            [(1280, 800, false, "desktop"), (390, 844, true, "phone")]
        {
            self.viewport(width, height, mobile);
            let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
            let png = base64::engine::general_purpose::STANDARD
                .decode(shot["data"].as_str().expect("screenshot data"))
                .expect("base64");
            std::fs::write(dir.join(format!("{name}-{suffix}.png")), png).expect("write png");
        }
        self.viewport(1280, 800, false);
    }

    /// Events that mean a page misbehaved: a JavaScript dialog (script that
    /// should have been text ran), an uncaught exception, a logged error
    /// (a Content-Security-Policy violation among them).
    fn troubles(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|event| {
                let method = event["method"].as_str().unwrap_or("");
                method == "Page.javascriptDialogOpening"
                    || method == "Runtime.exceptionThrown"
                    || (method == "Log.entryAdded" && event["params"]["entry"]["level"] == "error")
            })
            .collect()
    }
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

#[test]
fn sign_in_see_the_unapproved_listener_approve_it_and_a_viewer_is_refused() {
    if !require(Requirement::Tool("chromium")) {
        return;
    }
    let chromium = perimeter_testlab::require_tool("chromium").expect("chromium");
    let dir = tempfile::tempdir().expect("tempdir");
    let database = dir.path().join("server.db");
    let secret = "an enrolment secret for the test";
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, secret).expect("secret");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("password");
    let password_path = password_file.to_str().expect("path");
    for (name, role) in [("alice", "approver"), ("vera", "viewer")] {
        admin(
            &database,
            &[
                "user",
                "add",
                name,
                "--role",
                role,
                "--password-file",
                password_path,
            ],
        );
    }
    let token = admin(&database, &["token", "add", "alice"])
        .trim()
        .to_owned();
    let server = start_server(&database, &secret_file);
    let agent_id = report_host(&server, secret);
    let shots = screenshot_dir();

    let mut browser = Browser::start(&chromium, None);
    let base = server.base.clone();

    // No page without a session: the overview sends the browser to sign in.
    browser.goto(&format!("{base}/"), "/login");
    browser.screenshots(&shots, "login");
    browser.type_into("#login input[name=user]", "alice");
    browser.type_into("#login input[name=password]", "not the password");
    browser.click("#login button[type=submit]");
    browser.wait_for("document.querySelector('p.error') !== null");
    let text = browser.text();
    assert!(text.contains("wrong user name or password"), "{text}");
    browser.type_into("#login input[name=user]", "alice");
    browser.type_into("#login input[name=password]", PASSWORD);
    browser.click("#login button[type=submit]");
    browser.wait_for("location.pathname === '/' && document.querySelector('ol.problems') !== null");

    // The overview: the host, and its unapproved Redis first among the
    // problems; the hostile process name as text, nothing of it run.
    let first_problem = browser.eval("document.querySelector('ol.problems li').innerText");
    let first_problem = first_problem.as_str().unwrap_or("");
    assert!(
        first_problem.contains("cache-1")
            && first_problem.contains("UNAPPROVED")
            && first_problem.contains("6379"),
        "the first problem is {first_problem:?}"
    );
    let text = browser.text();
    assert!(text.contains("cache-1"), "{text}");
    assert!(
        text.contains(HOSTILE_NAME),
        "the hostile name is shown as text"
    );
    assert!(
        text.contains(HOSTILE_EXE),
        "the hostile path is shown as text"
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('img').length"),
        json!(0)
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('script').length"),
        json!(1),
        "only /static/app.js"
    );
    browser.screenshots(&shots, "overview");

    // The host's page: the listeners table as the CLI shows it.
    browser.goto(
        &format!("{base}/hosts/{agent_id}"),
        &format!("/hosts/{agent_id}"),
    );
    let row = browser.eval("document.querySelector('tr[data-port=\"6379\"]').innerText");
    let row = row.as_str().unwrap_or("");
    assert!(
        row.contains("wildcard") && row.contains("redis-server") && row.contains("UNAPPROVED"),
        "{row}"
    );
    assert_eq!(
        browser.eval("document.querySelector('tr[data-port=\"6379\"] td.reach').innerText"),
        json!("everyone"),
        "whom the firewall lets through to it"
    );
    let hostile_row = browser.eval("document.querySelector('tr[data-port=\"31337\"]').innerText");
    assert!(
        hostile_row.as_str().unwrap_or("").contains("UNPACKAGED"),
        "{hostile_row}"
    );
    browser.screenshots(&shots, "host");

    // Approve the Redis on /approvals, for this host, with a reason.
    browser.goto(&format!("{base}/approvals"), "/approvals");
    browser.screenshots(&shots, "approvals-pending");
    let form = "form.approve[data-port=\"6379\"]";
    browser.type_into(
        &format!("{form} input[name=reason]"),
        "the session cache of the web tier",
    );
    browser.click(&format!("{form} button[type=submit]"));
    browser.wait_for("location.search.includes('added=')");
    let text = browser.text();
    assert!(text.contains("Approval 1 added."), "{text}");
    assert_eq!(
        browser.eval(&format!("document.querySelector('{form}') === null")),
        json!(true),
        "6379 is no longer pending"
    );
    let approved = browser.eval("document.querySelector('tr[data-approval=\"1\"]').innerText");
    let approved = approved.as_str().unwrap_or("");
    assert!(
        approved.contains("alice")
            && approved.contains("the session cache of the web tier")
            && approved.contains(&format!("host:{agent_id}")),
        "{approved}"
    );
    browser.screenshots(&shots, "approvals-done");

    // The host's page says so, with who and why...
    browser.goto(
        &format!("{base}/hosts/{agent_id}"),
        &format!("/hosts/{agent_id}"),
    );
    let row = browser.eval("document.querySelector('tr[data-port=\"6379\"]').innerText");
    let row = row.as_str().unwrap_or("");
    assert!(
        row.contains("approved") && row.contains("by alice") && row.contains("web tier"),
        "{row}"
    );
    // ...and so does the API.
    let detail = host_via_api(&server, &token, &agent_id);
    let redis = detail
        .listeners
        .iter()
        .find(|l| l.listener.port == 6379)
        .expect("6379 in the API");
    assert_eq!(redis.approval, "approved");
    assert_eq!(redis.approval_id, Some(1));
    let hostile = detail
        .listeners
        .iter()
        .find(|l| l.listener.port == 31337)
        .expect("31337 in the API");
    assert_eq!(hostile.approval, "unapproved");

    // The changes page has the approval in the trail.
    browser.goto(&format!("{base}/changes?kind=approval"), "/changes");
    let text = browser.text();
    assert!(
        text.contains("approval.add") && text.contains("alice"),
        "{text}"
    );
    browser.screenshots(&shots, "changes");

    // The Trends page: the host's listeners over the hours, judged by the
    // approvals live at each (the Redis approved now: one left unapproved),
    // and its finding by severity.
    browser.goto(&format!("{base}/trends"), "/trends");
    let plot = browser.eval(
        "(() => { const b = document.querySelector('.plot-box[data-environment=\"-\"]'); \
         return b && b.querySelector('svg[role=img]') ? b.querySelector('ul.legend').innerText.replace(/\\s+/g, ' ') : null })()",
    );
    let plot = plot.as_str().unwrap_or("");
    assert!(
        plot.contains("exposed 2")
            && plot.contains("unapproved 1")
            && plot.contains("hosts reporting 1"),
        "{plot}"
    );
    let text = browser
        .text()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(text.contains("critical 1"), "{text}");
    assert!(text.contains("This server runs no monitor"), "{text}");
    browser.screenshots(&shots, "trends");
    // The 30 days: a link, no script; the same host, day by day.
    browser.click("nav.ranges a[href=\"/trends?range=30d\"]");
    browser.wait_for("location.search === '?range=30d'");
    let text = browser.text();
    assert!(
        text.contains("Day by day (at midnight UTC) over the last 30 days"),
        "{text}"
    );
    assert_eq!(
        browser.eval("document.querySelector('nav.ranges [aria-current=page]').innerText"),
        json!("30 days")
    );
    let plot = browser.eval(
        "(() => { const b = document.querySelector('.plot-box[data-environment=\"-\"]'); \
         return b && b.querySelector('svg[role=img]') ? b.querySelector('ul.legend').innerText.replace(/\\s+/g, ' ') : null })()",
    );
    assert!(plot.as_str().unwrap_or("").contains("exposed 2"), "{plot}");
    browser.screenshots(&shots, "trends-30d");

    // Sign out; a viewer sees no approve form and is refused a forged post.
    browser.click("form.who button[type=submit]");
    browser.wait_for("location.pathname === '/login'");
    browser.type_into("#login input[name=user]", "vera");
    browser.type_into("#login input[name=password]", PASSWORD);
    browser.click("#login button[type=submit]");
    browser.wait_for("location.pathname === '/'");
    browser.goto(&format!("{base}/approvals"), "/approvals");
    assert_eq!(
        browser.eval("document.querySelectorAll('form.approve').length"),
        json!(0)
    );
    let refused = browser.eval(&format!(
        "fetch('/approvals', {{method: 'POST', body: new URLSearchParams({{
            csrf: document.querySelector('form.who input[name=csrf]').value,
            host: {}, netns: 'host', protocol: 'tcp', address: '10.20.0.5', port: '31337',
            scope: 'host', reason: 'a viewer tries'}})}})
         .then(async r => [r.status, await r.text()])",
        json!(agent_id)
    ));
    assert_eq!(refused[0], json!(403), "{refused}");
    assert!(
        refused[1]
            .as_str()
            .unwrap_or("")
            .contains("this needs the approver role; vera has viewer"),
        "{refused}"
    );
    let detail = host_via_api(&server, &token, &agent_id);
    assert_eq!(
        detail
            .listeners
            .iter()
            .filter(|l| l.approval == "approved")
            .count(),
        1,
        "the viewer's post changed nothing"
    );

    // The wrong password's 401 and the forged post's 403 are logged by the
    // browser as failed loads; anything else is a misbehaving page.
    let unexpected: Vec<String> = browser
        .troubles()
        .into_iter()
        .filter(|event| {
            let entry = &event["params"]["entry"];
            let text = entry["text"].as_str().unwrap_or("");
            let url = entry["url"].as_str().unwrap_or("");
            !(entry["source"] == "network"
                && ((text.contains("status of 401") && url.ends_with("/login"))
                    || (text.contains("status of 403") && url.ends_with("/approvals"))))
        })
        .map(Value::to_string)
        .collect();
    assert!(
        unexpected.is_empty(),
        "the pages misbehaved in the browser: {unexpected:#?}"
    );
    eprintln!("screenshots in {}", shots.display());
}

/// The lab's address for the services the monitor scans, on the loopback of
/// the test's namespace.
const EDGE: &str = "198.18.42.1";
/// What the fake SSH service on port 22 says: a software version and
/// comments written to run as markup in a page that forgot to escape them.
const HOSTILE_BANNER: &str = "SSH-2.0-<script>alert(3)</script>_9.9 <img src=x onerror=alert(4)>";

/// A TCP service in `ns` that sends `banner` to whoever connects and hangs
/// up: Debian's Python, one connection at a time.
fn banner_service(ns: &Ns, address: &str, port: u16, banner: &str) -> Daemon {
    let program = format!(
        "import socket\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(({address:?}, {port}))\n\
         s.listen(16)\n\
         while True:\n\
         \x20   c, _ = s.accept()\n\
         \x20   try:\n\
         \x20       c.sendall({banner:?}.encode() + b'\\r\\n')\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         \x20   c.close()\n"
    );
    common::start_listening(
        ns,
        "/usr/bin/python3",
        &["-c", &program],
        &format!("{address}:{port}"),
    )
}

/// Signs `user` in on a fresh session (signing out any other first).
fn sign_in(browser: &mut Browser, base: &str, user: &str) {
    if browser.eval("document.querySelector('form.who button[type=submit]') !== null")
        == json!(true)
    {
        browser.click("form.who button[type=submit]");
        browser.wait_for("location.pathname === '/login'");
    } else {
        browser.goto(&format!("{base}/login"), "/login");
    }
    browser.type_into("#login input[name=user]", user);
    browser.type_into("#login input[name=password]", PASSWORD);
    browser.click("#login button[type=submit]");
    browser.wait_for("location.pathname === '/'");
}

/// Opens `path` again and again until `condition` holds in it, for what the
/// server's monitor writes in its own time.
fn wait_for_page(browser: &mut Browser, base: &str, path: &str, condition: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        browser.goto(&format!("{base}{path}"), path);
        if browser.eval(condition) == json!(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited {within:?} for `{condition}` on {path}:\n{}",
            browser.text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_monitors_alerts_are_acknowledged_and_its_scan_shows_what_the_outside_sees() {
    if !(require(Requirement::Tool("chromium"))
        && require(Requirement::Root)
        && require(Requirement::Netns)
        && require(Requirement::Tool("/usr/bin/redis-server"))
        && require(Requirement::Tool("/usr/bin/python3")))
    {
        return;
    }
    let chromium = perimeter_testlab::require_tool("chromium").expect("chromium");
    // Everything in a namespace of the test's own: the services, the server
    // with its monitor (whose scan goes only to 198.18.42.1 there) and the
    // browser.
    let ns = Ns::new("dash2").expect("namespace");
    ns.ip(&["addr", "add", &format!("{EDGE}/32"), "dev", "lo"])
        .expect("the edge address");
    // A forgotten Redis (no password, every address) and an SSH daemon whose
    // banner is hostile.
    let _redis = common::start_redis(&ns, Path::new("/usr/bin/redis-server"), "0.0.0.0", 6379);
    let _ssh = banner_service(&ns, EDGE, 22, HOSTILE_BANNER);

    let dir = tempfile::tempdir().expect("tempdir");
    let database = dir.path().join("server.db");
    let history = dir.path().join("history.db");
    let config = dir.path().join("perimeter.toml");
    let told = dir.path().join("alerts.jsonl");
    std::fs::write(
        &config,
        format!(
            r#"[[environment]]
name = "prod"
kind = "prod"
ranges = ["{EDGE}/32"]
public_ports = [443]

[monitor]
close_after = 1

[[monitor.scan]]
name = "edge"
targets = ["env:prod"]
ports = "22,443,6379"
profile = "fast"
every = "1h"
rate = 1000.0

[[monitor.channel]]
name = "pipe"
kind = "command"
argv = ["/bin/sh", "-c", "cat >> {told}; echo >> {told}"]
timeout = "10s"
"#,
            told = told.display()
        ),
    )
    .expect("config");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("password");
    for (name, role) in [("alice", "approver"), ("vera", "viewer")] {
        admin(
            &database,
            &[
                "user",
                "add",
                name,
                "--role",
                role,
                "--password-file",
                password_file.to_str().expect("path"),
            ],
        );
    }
    // The scan job has never run: it is due as the server starts.
    let server = start_server_in(
        Some(&ns),
        &database,
        &[
            "--monitor",
            config.to_str().expect("path"),
            "--history",
            history.to_str().expect("path"),
        ],
    );
    let shots = screenshot_dir();
    let mut browser = Browser::start(&chromium, Some(&ns));
    let base = server.base.clone();
    sign_in(&mut browser, &base, "alice");

    // The monitor's first scan raised an alert: the open Redis is an open
    // condition, critical, with an acknowledgement form for an approver.
    let redis_row = "[...document.querySelectorAll('tr[data-condition]')]\
                     .find(r => r.innerText.includes(':6379') && r.querySelector('form.ack'))";
    wait_for_page(
        &mut browser,
        &base,
        "/alerts",
        &format!("({redis_row}) !== undefined && document.querySelector('table.alerts') !== null"),
        Duration::from_secs(120),
    );
    let id = browser.eval(&format!("({redis_row}).dataset.condition"));
    let id = id.as_str().expect("a condition id").to_owned();
    let row = browser.eval(&format!("({redis_row}).innerText"));
    let row = row.as_str().unwrap_or("");
    assert!(row.contains("edge") && row.contains(EDGE), "{row}");
    let severities: Vec<String> = browser
        .eval(
            "[...document.querySelectorAll('tr[data-condition] td:nth-child(2)')]\
             .map(c => c.innerText.trim().toLowerCase())",
        )
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert!(
        severities.first().is_some_and(|s| s.contains("critical")),
        "the worst condition first: {severities:?}"
    );
    let alert = browser.eval("document.querySelector('table.alerts tbody tr').innerText");
    let alert = alert.as_str().unwrap_or("");
    assert!(
        alert.contains("edge") && alert.contains("critical") && alert.contains("pipe: "),
        "the alert and its channel: {alert}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&told)
        .unwrap_or_default()
        .contains(":6379")
    {
        assert!(
            Instant::now() < deadline,
            "the channel was not told of the Redis within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    browser.screenshots(&shots, "alerts-open");

    // Acknowledge it, for a week, with a reason: its state changes on the
    // page, in the monitor's history and in the fleet's trail.
    let form = format!("tr[data-condition=\"{id}\"] form.ack");
    browser.type_into(
        &format!("{form} input[name=reason]"),
        "moving the cache behind the firewall this week",
    );
    browser.click(&format!("{form} button[type=submit]"));
    browser.wait_for(&format!("location.search === '?acked={id}'"));
    let text = browser.text();
    assert!(
        text.contains(&format!("Condition {id} acknowledged.")),
        "{text}"
    );
    let row = browser.eval(&format!(
        "document.querySelector('tr[data-condition=\"{id}\"]').innerText"
    ));
    let row = row.as_str().unwrap_or("");
    assert!(row.contains("until "), "acknowledged until a date: {row}");
    assert!(
        row.contains("by alice on ")
            && row.contains("moving the cache behind the firewall this week"),
        "who acknowledged it, when and why: {row}"
    );
    assert_eq!(
        browser.eval(&format!(
            "document.querySelector('tr[data-condition=\"{id}\"] .acknowledgement time').title.endsWith(' UTC')"
        )),
        json!(true),
        "the acknowledgement's time in the reader's zone, UTC as its title"
    );
    assert_eq!(
        browser.eval(&format!("document.querySelector('{form}') === null")),
        json!(true),
        "no form to acknowledge it again"
    );
    let listed = common::run(
        None,
        &[
            "alerts",
            "--format",
            "json",
            "--db",
            history.to_str().expect("path"),
        ],
    );
    assert_eq!(common::code(&listed), 0, "{}", common::stderr(&listed));
    let listed: Value = serde_json::from_str(&common::stdout(&listed)).expect("alerts json");
    let kept = listed["conditions"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["id"].as_i64().is_some_and(|n| n.to_string() == id))
        })
        .unwrap_or_else(|| panic!("condition {id} in the history: {listed}"));
    assert!(kept["acknowledged_until"].is_string(), "{kept}");
    assert_eq!(kept["acknowledgement"]["by"], "alice", "{kept}");
    assert_eq!(
        kept["acknowledgement"]["reason"], "moving the cache behind the firewall this week",
        "{kept}"
    );
    browser.goto(&format!("{base}/changes?kind=alert"), "/changes");
    let text = browser.text();
    assert!(
        text.contains("alert.ack") && text.contains("moving the cache behind the firewall"),
        "the trail has the acknowledgement: {text}"
    );
    browser.goto(&format!("{base}/alerts"), "/alerts");
    browser.screenshots(&shots, "alerts-acknowledged");

    // The Exposure page: the scan's open ports, the unauthenticated Redis
    // first, the hostile banner as text and nothing of it run.
    browser.goto(&format!("{base}/exposure"), "/exposure");
    let ports: Vec<Value> = browser
        .eval("[...document.querySelectorAll('table.exposure tbody tr')].map(r => r.dataset.port)")
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        ports,
        vec![json!("6379"), json!("22")],
        "open ports, worst first"
    );
    let first = browser.eval("document.querySelector('table.exposure tbody tr').innerText");
    let first = first.as_str().unwrap_or("");
    assert!(
        first.contains("redis") && first.contains("NONE") && first.contains(EDGE),
        "{first}"
    );
    let ssh =
        browser.eval("document.querySelector('table.exposure tr[data-port=\"22\"]').innerText");
    let ssh = ssh.as_str().unwrap_or("");
    assert!(
        ssh.contains("<script>alert(3)</script>") && ssh.contains("<img src=x onerror=alert(4)>"),
        "the banner as text: {ssh}"
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('img').length"),
        json!(0)
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('script').length"),
        json!(1),
        "only /static/app.js"
    );
    browser.screenshots(&shots, "exposure");
    // The scan's own page, a URL to paste into a ticket.
    browser.click("table.scans tbody tr a");
    browser.wait_for("location.pathname.startsWith('/exposure/scans/')");
    assert_eq!(
        browser.eval("document.querySelector('table.exposure tbody tr').dataset.port"),
        json!("6379")
    );
    browser.screenshots(&shots, "exposure-scan");

    // The Trends page's scan coverage: the scan of the edge, its two open
    // ports.
    browser.goto(&format!("{base}/trends"), "/trends");
    let coverage = browser.eval(
        "[...document.querySelectorAll('.plot-box')].filter(b => b.querySelector('h3 code'))\
         .map(b => b.innerText.replace(/\\s+/g, ' ')).join(' | ')",
    );
    let coverage = coverage.as_str().unwrap_or("");
    assert!(
        coverage.contains(EDGE)
            && coverage.contains("open 2")
            && coverage.contains("1 scan, 0 not complete"),
        "{coverage}"
    );
    browser.screenshots(&shots, "trends-scans");

    // A viewer sees the conditions but no form, and a forged post is refused.
    sign_in(&mut browser, &base, "vera");
    browser.goto(&format!("{base}/alerts"), "/alerts");
    assert!(
        browser
            .eval("document.querySelectorAll('tr[data-condition]').length")
            .as_u64()
            .unwrap_or(0)
            >= 1
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('form.ack').length"),
        json!(0)
    );
    let other = browser.eval(&format!(
        "[...document.querySelectorAll('tr[data-condition]')].map(r => r.dataset.condition)\
         .find(c => c !== {})",
        json!(id)
    ));
    let target = other.as_str().unwrap_or(&id).to_owned();
    let refused = browser.eval(&format!(
        "fetch('/alerts/{target}/ack', {{method: 'POST', body: new URLSearchParams({{
            csrf: document.querySelector('form.who input[name=csrf]').value,
            reason: 'a viewer tries', until: '7d'}})}})
         .then(async r => [r.status, await r.text()])"
    ));
    assert_eq!(refused[0], json!(403), "{refused}");
    assert!(
        refused[1]
            .as_str()
            .unwrap_or("")
            .contains("this needs the approver role; vera has viewer"),
        "{refused}"
    );
    let listed = common::run(
        None,
        &[
            "alerts",
            "--format",
            "json",
            "--db",
            history.to_str().expect("path"),
        ],
    );
    let listed: Value = serde_json::from_str(&common::stdout(&listed)).expect("alerts json");
    let n_acked = listed["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["acknowledged_until"].is_string())
        .count();
    assert_eq!(n_acked, 1, "the viewer's post changed nothing: {listed}");

    let unexpected: Vec<String> = browser
        .troubles()
        .into_iter()
        .filter(|event| {
            let entry = &event["params"]["entry"];
            let text = entry["text"].as_str().unwrap_or("");
            let url = entry["url"].as_str().unwrap_or("");
            !(entry["source"] == "network"
                && text.contains("status of 403")
                && url.ends_with("/ack"))
        })
        .map(Value::to_string)
        .collect();
    assert!(
        unexpected.is_empty(),
        "the pages misbehaved in the browser: {unexpected:#?}"
    );
    eprintln!("screenshots in {}", shots.display());
}
