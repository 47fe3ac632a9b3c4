//! `perimeter server` and `perimeter agent` end to end (issue 9): the real
//! binary as the server in one network namespace and as agents in three
//! others on a lab bridge (198.18.70.0/24), each agent auditing its own
//! namespace with real listeners; the server on SQLite and on a throwaway
//! PostgreSQL cluster (Unix socket). Enrolment with and without acceptance,
//! a listener that reaches the server unapproved, approval through the API
//! making `check --server` pass, revocation, a cloned agent, and a server
//! killed with -9 and restarted while an agent has reports queued.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{code, perimeter, start_listening, stderr, stdout};
use perimeter_api::client::{ApiClient, Auth, Trust};
use perimeter_api::{AlertList, Decision, HostDetail, HostList, NewApprovalDoc, SCHEMA, TrailList};
use perimeter_testlab::{Daemon, Lab, Ns, PgCluster, Requirement, require, require_postgres};

const SERVER_IP: &str = "198.18.70.1";
const PORT: u16 = 8443;
const SECRET: &str = "a-long-enrolment-secret-for-the-lab";
const PYTHON: &str = "/usr/bin/python3";

fn requirements() -> bool {
    require(Requirement::Root) && require(Requirement::Netns) && require(Requirement::Tool(PYTHON))
}

/// The lab: a server namespace and three agent namespaces.
struct Fleet {
    _lab: Lab,
    server_ns: Arc<Ns>,
    agents: Vec<Arc<Ns>>,
    dir: tempfile::TempDir,
    database: String,
    server: Option<Child>,
    fingerprint: String,
    token: String,
}

impl Fleet {
    fn new(database: Option<String>, extra: &[&str]) -> Fleet {
        let mut lab = Lab::new().expect("lab");
        let server_ns = lab
            .add_host("srv", &[&format!("{SERVER_IP}/24")])
            .expect("server namespace");
        let agents = (1..=3)
            .map(|i| {
                lab.add_host(&format!("ag{i}"), &[&format!("198.18.70.1{i}/24")])
                    .expect("agent namespace")
            })
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("secret"), SECRET).expect("secret");
        std::fs::write(dir.path().join("password"), "a long enough password\n").expect("pw");
        // A certificate of our own, so the fingerprint survives a restart.
        let generated =
            rcgen::generate_simple_self_signed(vec![SERVER_IP.to_owned()]).expect("certificate");
        std::fs::write(dir.path().join("cert.pem"), generated.cert.pem()).expect("cert");
        std::fs::write(
            dir.path().join("key.pem"),
            generated.signing_key.serialize_pem(),
        )
        .expect("key");
        let database =
            database.unwrap_or_else(|| dir.path().join("server.db").to_string_lossy().into_owned());
        let mut fleet = Fleet {
            _lab: lab,
            server_ns,
            agents,
            dir,
            database,
            server: None,
            fingerprint: String::new(),
            token: String::new(),
        };
        let admin = fleet.admin(&["user", "add", "admin", "--role", "admin", "--password-file"]);
        assert_eq!(code(&admin), 0, "user add: {}", stderr(&admin));
        let token = fleet.admin(&["token", "add", "admin", "--label", "tests"]);
        assert_eq!(code(&token), 0, "token add: {}", stderr(&token));
        fleet.token = stdout(&token).trim().to_owned();
        assert!(fleet.token.starts_with("prm_"), "{}", fleet.token);
        fleet.start_server(extra);
        fleet
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// `perimeter server --database D ARGS` on the database directly.
    fn admin(&self, args: &[&str]) -> Output {
        let mut all = vec!["server", "--database", &self.database];
        all.extend_from_slice(args);
        let password = self.path("password");
        if args.last() == Some(&"--password-file") {
            all.push(&password);
        }
        common::run(None, &all)
    }

    fn url(&self) -> String {
        format!("https://{SERVER_IP}:{PORT}")
    }

    fn start_server(&mut self, extra: &[&str]) {
        let listen = format!("{SERVER_IP}:{PORT}");
        let mut child = self
            .server_ns
            .command(perimeter())
            .args([
                "server",
                "--database",
                &self.database,
                "--listen",
                &listen,
                "--tls-cert",
                &self.path("cert.pem"),
                "--tls-key",
                &self.path("key.pem"),
                "--enrol-secret-file",
                &self.path("secret"),
            ])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut fingerprint = None;
        while fingerprint.is_none() && Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
                && let Some(rest) = line.strip_prefix("certificate fingerprint ")
            {
                fingerprint = Some(rest.trim().to_owned());
            }
        }
        self.server = Some(child);
        self.fingerprint = fingerprint.expect("the server printed its fingerprint");
        self.server_ns
            .wait_tcp(listen.parse().expect("address"), Duration::from_secs(30))
            .expect("the server listens");
    }

    /// SIGKILL, as a crash would.
    fn kill_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn agent_dir(&self, i: usize) -> String {
        self.path(&format!("agent{i}"))
    }

    /// `perimeter agent --once` in agent namespace `i` (0-based).
    fn agent_once(&self, i: usize, extra: &[&str]) -> Output {
        let url = self.url();
        let secret = self.path("secret");
        let state = self.agent_dir(i);
        let mut args = vec![
            "agent",
            "--server",
            &url,
            "--fingerprint",
            &self.fingerprint,
            "--enrol-secret-file",
            &secret,
            "--state-dir",
            &state,
            "--once",
        ];
        args.extend_from_slice(extra);
        common::run(Some(&self.agents[i]), &args)
    }

    /// `perimeter agent` running in agent namespace `i` (watch on, an hour
    /// between audits), once it has enrolled and its first report is in
    /// (its watch is up then); with its id.
    fn run_agent(&self, i: usize) -> (Daemon, String) {
        let url = self.url();
        let secret = self.path("secret");
        let state = self.agent_dir(i);
        let agent = self.agents[i]
            .command(perimeter())
            .args([
                "agent",
                "--server",
                &url,
                "--fingerprint",
                &self.fingerprint,
                "--enrol-secret-file",
                &secret,
                "--state-dir",
                &state,
                "--interval",
                "1h",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the agent");
        let agent = Daemon::new("perimeter agent", agent);
        let enrolment = Path::new(&state).join("enrolment.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !enrolment.exists() {
            assert!(
                Instant::now() < deadline,
                "the agent did not enrol within 60 s"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        let id = self.agent_id(i);
        while self.host(&id).state_taken_at.is_none() {
            assert!(
                Instant::now() < deadline,
                "the agent did not report within 60 s"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        (agent, id)
    }

    fn agent_id(&self, i: usize) -> String {
        let text = std::fs::read_to_string(Path::new(&self.agent_dir(i)).join("enrolment.json"))
            .expect("enrolment.json");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
        doc["agent_id"].as_str().expect("agent_id").to_owned()
    }

    /// Runs `f` with an admin API client inside the server's namespace.
    fn api<T: Send + 'static>(
        &self,
        f: impl FnOnce(ApiClient) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
        + Send
        + 'static,
    ) -> T {
        let url = self.url();
        let trust = Trust::parse_fingerprint(&self.fingerprint).expect("fingerprint");
        let token = self.token.clone();
        self.server_ns
            .enter(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let client = ApiClient::new(&url, &trust, Auth::Token(token)).expect("client");
                runtime.block_on(f(client))
            })
            .expect("inside the server namespace")
    }

    fn host(&self, id: &str) -> HostDetail {
        let path = format!("/api/v1/hosts/{id}");
        self.api(move |c| Box::pin(async move { c.get_json(&path).await.expect("host") }))
    }

    fn hosts(&self) -> HostList {
        self.api(|c| Box::pin(async move { c.get_json("/api/v1/hosts").await.expect("hosts") }))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_server();
    }
}

/// A Python listener on `address:port` inside `ns`.
fn listen(ns: &Ns, address: &str, port: u16) -> Daemon {
    let script = format!(
        "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{address}',{port}))\ns.listen()\ntime.sleep(600)"
    );
    start_listening(ns, PYTHON, &["-c", &script], &format!("{address}:{port}"))
}

fn assert_ok(output: &Output, what: &str) {
    assert_eq!(
        code(output),
        0,
        "{what}: exit {}\nstdout:\n{}\nstderr:\n{}",
        code(output),
        stdout(output),
        stderr(output)
    );
}

/// The whole path of a deploy gate on a fleet, on one backend.
fn gate_flow(fleet: &Fleet) {
    // Three agents enrol and report: three hosts, three ids.
    for i in 0..3 {
        assert_ok(&fleet.agent_once(i, &[]), "first report");
    }
    let ids: Vec<String> = (0..3).map(|i| fleet.agent_id(i)).collect();
    let hosts = fleet.hosts();
    let mut listed: Vec<String> = hosts.hosts.iter().map(|h| h.agent_id.clone()).collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected);

    // A listener in the first namespace reaches the server, unapproved.
    let _listener = listen(&fleet.agents[0], "198.18.70.11", 7001);
    assert_ok(&fleet.agent_once(0, &[]), "report with a listener");
    let detail = fleet.host(&ids[0]);
    let found = detail
        .listeners
        .iter()
        .find(|l| l.listener.port == 7001)
        .unwrap_or_else(|| panic!("7001 not reported: {detail:?}"));
    assert_eq!(found.approval, "unapproved");
    // The server's first answer said it takes the listeners' reach; the
    // agent kept that with its acknowledged state and sent it in its next
    // report: the namespace has no ruleset, so everyone reaches 7001.
    let acked =
        std::fs::read_to_string(std::path::Path::new(&fleet.agent_dir(0)).join("acked.json"))
            .expect("acked.json");
    assert!(acked.contains("\"listener.reach\""), "{acked}");
    let reach = found
        .listener
        .reach
        .as_ref()
        .unwrap_or_else(|| panic!("no reach for 7001: {found:?}"));
    assert!(reach.from_anywhere(), "{reach:?}");
    let owner = found.listener.owners.first().expect("the python process");
    let exe = owner.exe.clone().expect("its executable");
    // The agent runs inside a named namespace: the approval names it, as an
    // approvals file entry would.
    let netns = found.listener.netns.clone();
    assert!(exe.contains("python"), "{exe}");
    // The other hosts did not get it.
    assert!(
        fleet
            .host(&ids[1])
            .listeners
            .iter()
            .all(|l| l.listener.port != 7001)
    );

    // The gate on that host fails on it, judged by the server's approvals.
    let url = fleet.url();
    let agent_dir = fleet.agent_dir(0);
    let gate = |fleet: &Fleet| {
        common::run(
            Some(&fleet.agents[0]),
            &[
                "check",
                "--server",
                &url,
                "--fingerprint",
                &fleet.fingerprint,
                "--agent-dir",
                &agent_dir,
                "--fail-on",
                "critical",
                "--no-service-probes",
            ],
        )
    };
    let failed = gate(fleet);
    assert_eq!(code(&failed), 1, "{}{}", stdout(&failed), stderr(&failed));
    assert!(
        stdout(&failed).contains("UNAPPROVED  tcp 198.18.70.11:7001"),
        "{}",
        stdout(&failed)
    );

    // Approved through the API for that host: the gate passes.
    let approval = NewApprovalDoc {
        schema: SCHEMA.into(),
        scope: format!("host:{}", ids[0]),
        netns: Some(netns),
        protocol: "tcp".into(),
        address: Some("198.18.70.11".into()),
        bind_scope: None,
        port: 7001,
        exe: Some(exe.clone()),
        package: None,
        user: Some(owner.user.clone()),
        unowned: false,
        reason: "the lab's test service".into(),
        expires: None,
        recorded_by: None,
        recorded_at: None,
    };
    let _: perimeter_api::ApprovalDoc = fleet.api(move |c| {
        Box::pin(async move {
            c.post_json("/api/v1/approvals", &approval)
                .await
                .expect("approve")
        })
    });
    assert_eq!(
        fleet
            .host(&ids[0])
            .listeners
            .iter()
            .find(|l| l.listener.port == 7001)
            .map(|l| l.approval.clone()),
        Some("approved".to_owned())
    );
    let passed = gate(fleet);
    assert_eq!(code(&passed), 0, "{}{}", stdout(&passed), stderr(&passed));
    assert!(
        stdout(&passed).contains("check passed"),
        "{}",
        stdout(&passed)
    );

    // The second agent is revoked: its next report fails, loudly.
    let id = ids[1].clone();
    let _: serde_json::Value = fleet.api(move |c| {
        Box::pin(async move {
            c.post_json(
                &format!("/api/v1/hosts/{id}/revoke"),
                &Decision {
                    schema: SCHEMA.into(),
                    reason: "decommissioned".into(),
                },
            )
            .await
            .expect("revoke")
        })
    });
    let revoked = fleet.agent_once(1, &[]);
    assert_eq!(code(&revoked), 2, "{}", stderr(&revoked));
    assert!(stderr(&revoked).contains("revoked"), "{}", stderr(&revoked));

    let trail: TrailList =
        fleet.api(|c| Box::pin(async move { c.get_json("/api/v1/trail").await.expect("trail") }));
    let actions: Vec<&str> = trail.entries.iter().map(|e| e.action.as_str()).collect();
    for action in ["agent.enrol", "approval.add", "agent.revoke"] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
}

#[test]
fn a_fleet_on_sqlite_enrols_reports_and_gates() {
    if !requirements() {
        return;
    }
    let fleet = Fleet::new(None, &[]);
    gate_flow(&fleet);
}

#[test]
fn a_fleet_on_postgresql_enrols_reports_and_gates() {
    if !requirements() || !require_postgres() {
        return;
    }
    let mut cluster = PgCluster::start().expect("PostgreSQL");
    let fleet = Fleet::new(Some(cluster.url()), &[]);
    assert!(
        fleet
            .api(|c| Box::pin(async move {
                c.get_json::<serde_json::Value>("/api/v1/health")
                    .await
                    .expect("health")
            }))
            .to_string()
            .contains("postgresql")
    );
    gate_flow(&fleet);
    // PostgreSQL restarted under the server: it reconnects and keeps
    // serving; an agent whose report met the restart sends it again.
    cluster.restart().expect("restart PostgreSQL");
    let after = fleet.agent_once(2, &[]);
    if code(&after) != 0 {
        assert!(
            stdout(&after).contains("1 queued"),
            "{}{}",
            stdout(&after),
            stderr(&after)
        );
        assert_ok(&fleet.agent_once(2, &[]), "the report after the restart");
    }
    assert!(fleet.host(&fleet.agent_id(2)).state_taken_at.is_some());
}

#[test]
fn new_agents_wait_for_acceptance_when_the_server_asks_for_it() {
    if !requirements() {
        return;
    }
    let fleet = Fleet::new(None, &["--require-acceptance"]);
    let pending = fleet.agent_once(0, &[]);
    // Enrolled, its report kept queued until accepted.
    assert_eq!(code(&pending), 1, "{}", stderr(&pending));
    assert!(
        stdout(&pending).contains("1 queued"),
        "{}",
        stdout(&pending)
    );
    let id = fleet.agent_id(0);
    let list = fleet.admin(&["agents"]);
    assert!(
        stdout(&list).contains(&format!("{id}  pending")),
        "{}",
        stdout(&list)
    );
    let accept = fleet.admin(&[
        "agents",
        "accept",
        &id,
        "--reason",
        "ticket 42",
        "--by",
        "ops",
    ]);
    assert_ok(&accept, "accept");
    let accepted = fleet.agent_once(0, &[]);
    assert_ok(&accepted, "report after acceptance");
    // The queued report and the new one.
    assert!(
        stdout(&accepted).contains("2 reports acknowledged, 0 queued"),
        "{}",
        stdout(&accepted)
    );
    assert_eq!(fleet.host(&id).host.status, "accepted");
}

#[test]
fn a_cloned_agent_enrols_as_a_new_host_and_the_original_goes_on() {
    if !requirements() {
        return;
    }
    let fleet = Fleet::new(None, &[]);
    assert_ok(&fleet.agent_once(0, &[]), "original");
    let original = fleet.agent_id(0);
    // The clone: the same state directory, copied (as a cloned disk would
    // be), reporting from another namespace.
    let copy = std::process::Command::new("cp")
        .args(["-a", &fleet.agent_dir(0), &fleet.agent_dir(1)])
        .status()
        .expect("cp");
    assert!(copy.success());
    // The original reports first; the clone's next report then forks the
    // chain, and the clone enrols anew.
    assert_ok(&fleet.agent_once(0, &[]), "original again");
    let clone = fleet.agent_once(1, &[]);
    assert_ok(&clone, "clone");
    let cloned_id = fleet.agent_id(1);
    assert_ne!(
        cloned_id, original,
        "the clone kept the original's identity"
    );
    assert_ok(&fleet.agent_once(0, &[]), "original after the clone");
    let hosts = fleet.hosts();
    assert_eq!(hosts.hosts.len(), 2, "{hosts:?}");
    assert_eq!(fleet.agent_id(0), original);
}

#[test]
fn a_server_killed_with_9_loses_no_acknowledged_report_and_agents_resend() {
    if !requirements() {
        return;
    }
    let mut fleet = Fleet::new(None, &[]);
    assert_ok(&fleet.agent_once(0, &[]), "first");
    let id = fleet.agent_id(0);
    fleet.kill_server();
    // The server is gone: the report waits in the queue.
    let _listener = listen(&fleet.agents[0], "198.18.70.11", 7002);
    let queued = fleet.agent_once(0, &[]);
    assert_eq!(code(&queued), 1, "{}", stderr(&queued));
    assert!(stdout(&queued).contains("1 queued"), "{}", stdout(&queued));
    let queue: Vec<PathBuf> = std::fs::read_dir(Path::new(&fleet.agent_dir(0)).join("queue"))
        .expect("queue")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(queue.len(), 1);
    fleet.start_server(&[]);
    let resent = fleet.agent_once(0, &[]);
    assert_ok(&resent, "resend");
    assert!(
        stdout(&resent).contains("2 reports acknowledged, 0 queued"),
        "{}",
        stdout(&resent)
    );
    let detail = fleet.host(&id);
    assert!(detail.listeners.iter().any(|l| l.listener.port == 7002));
    let list = fleet.admin(&["agents"]);
    assert!(stdout(&list).contains("reports 3 "), "{}", stdout(&list));
}

#[test]
fn the_running_agent_reports_a_new_listener_as_it_appears() {
    if !requirements() {
        return;
    }
    let fleet = Fleet::new(None, &[]);
    // An hour between audits: only the watch can bring the listener early.
    let (_agent, id) = fleet.run_agent(2);
    let wait_for = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !check() {
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within 60 s"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let _listener = listen(&fleet.agents[2], "198.18.70.13", 7003);
    wait_for("the new listener on the server", &|| {
        fleet
            .host(&id)
            .listeners
            .iter()
            .any(|l| l.listener.port == 7003 && l.approval == "unapproved")
    });
}

#[test]
fn approve_on_the_server_and_approvals_round_trip_through_a_file() {
    if !requirements() {
        return;
    }
    let fleet = Fleet::new(None, &[]);
    let token_file = fleet.path("token");
    std::fs::write(&token_file, &fleet.token).expect("token file");
    let _listener = listen(&fleet.agents[0], "198.18.70.11", 7005);
    assert_ok(&fleet.agent_once(0, &[]), "report");
    let id = fleet.agent_id(0);
    let url = fleet.url();
    let agent_dir = fleet.agent_dir(0);
    let server_flags = [
        "--server",
        url.as_str(),
        "--fingerprint",
        fleet.fingerprint.as_str(),
        "--token-file",
        token_file.as_str(),
        "--agent-dir",
        agent_dir.as_str(),
    ];

    // `approve --server` by selectors, on the host that runs the listener.
    let mut args = vec!["approve"];
    args.extend_from_slice(&server_flags);
    args.extend_from_slice(&[
        "--port",
        "7005",
        "--reason",
        "the lab's service",
        "--no-service-probes",
    ]);
    let approved = common::run(Some(&fleet.agents[0]), &args);
    assert_ok(&approved, "approve --server");
    assert!(
        stdout(&approved).contains(&format!("the server for host:{id}")),
        "{}",
        stdout(&approved)
    );
    assert_eq!(
        fleet
            .host(&id)
            .listeners
            .iter()
            .find(|l| l.listener.port == 7005)
            .map(|l| l.approval.clone()),
        Some("approved".to_owned())
    );

    // Export the host's scope, import it into an environment, twice.
    let exported = fleet.path("exported.toml");
    let scope = format!("host:{id}");
    let mut args = vec![
        "approvals",
        "export",
        "--scope",
        scope.as_str(),
        "-o",
        exported.as_str(),
    ];
    args.extend_from_slice(&server_flags);
    assert_ok(&common::run(Some(&fleet.agents[0]), &args), "export");
    let text = std::fs::read_to_string(&exported).expect("exported file");
    assert!(text.contains("port = 7005"), "{text}");
    assert!(text.contains("approved_by = \"admin\""), "{text}");
    let import = |file: &str, sync: bool| {
        let mut args = vec!["approvals", "import", file, "--scope", "environment:lab"];
        if sync {
            args.push("--sync");
        }
        args.extend_from_slice(&server_flags);
        common::run(Some(&fleet.agents[0]), &args)
    };
    let first = import(&exported, false);
    assert_ok(&first, "import");
    assert!(
        stdout(&first).contains("1 added, 0 already held"),
        "{}",
        stdout(&first)
    );
    let again = import(&exported, false);
    assert!(
        stdout(&again).contains("0 added, 1 already held"),
        "{}",
        stdout(&again)
    );
    // The file as the source of truth: an empty one revokes what it lacks.
    let empty = fleet.path("empty.toml");
    std::fs::write(&empty, "version = 1\n").expect("empty file");
    let synced = import(&empty, true);
    assert_ok(&synced, "import --sync");
    assert!(
        stdout(&synced).contains("0 added, 0 already held, 1 revoked"),
        "{}",
        stdout(&synced)
    );
    let trail: TrailList =
        fleet.api(|c| Box::pin(async move { c.get_json("/api/v1/trail").await.expect("trail") }));
    let actions: Vec<&str> = trail.entries.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"approval.import"), "{actions:?}");
    assert!(actions.contains(&"approval.revoke"), "{actions:?}");
}

#[test]
fn the_monitor_runs_inside_the_server_when_configured_there() {
    if !requirements() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("perimeter.toml");
    let alerts = dir.path().join("alerts.jsonl");
    std::fs::write(
        &config,
        format!(
            "[monitor]\n\n[monitor.audit]\nevery = \"1h\"\n\n[monitor.fleet]\nevery = \"2s\"\n\n\
             [[monitor.channel]]\nname = \"pipe\"\nkind = \"command\"\n\
             argv = [\"/bin/sh\", \"-c\", \"cat >> {}; echo >> {}\"]\ntimeout = \"10s\"\n",
            alerts.display(),
            alerts.display()
        ),
    )
    .expect("config");
    let history = dir.path().join("history.db");
    let config_text = config.to_string_lossy().into_owned();
    let history_text = history.to_string_lossy().into_owned();
    let fleet = Fleet::new(
        None,
        &["--monitor", &config_text, "--history", &history_text],
    );
    // The audit job was due at start: the monitor's history gets its audit
    // while the server serves.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let audits = common::run(None, &["audits", "--db", &history_text]);
        if code(&audits) == 0 && stdout(&audits).contains(" listeners") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no audit in the monitor's history: {}{}",
            stdout(&audits),
            stderr(&audits)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let health: serde_json::Value =
        fleet.api(|c| Box::pin(async move { c.get_json("/api/v1/health").await.expect("health") }));
    assert_eq!(health["status"], "ok");

    // The fleet job: an unapproved listener an agent reports becomes an
    // alert on the channel and an open condition on the API.
    let _redis = listen(&fleet.agents[0], "198.18.70.11", 7011);
    let once = fleet.agent_once(0, &[]);
    assert!(code(&once) <= 1, "agent --once: {}", stderr(&once));
    // Within three minutes: an exec waits for the agent's next early cycle
    // (a minute apart at most, other tests' executables count too).
    let told = |needle: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let text = std::fs::read_to_string(&alerts).unwrap_or_default();
            if needle.iter().all(|n| text.contains(n)) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no alert with {needle:?} within 180 s: {text}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    told(&["listener-unapproved", "198.18.70.11:7011"]);
    let list: AlertList =
        fleet.api(|c| Box::pin(async move { c.get_json("/api/v1/alerts").await.expect("alerts") }));
    let condition = list
        .conditions
        .iter()
        .find(|c| c.kind == "listener-unapproved" && c.subject.contains(":7011"))
        .unwrap_or_else(|| panic!("no open condition for the listener: {list:?}"));

    // A person acknowledges it with the CLI, through the API.
    let token_file = fleet.path("token");
    std::fs::write(&token_file, &fleet.token).expect("token file");
    let url = fleet.url();
    let id = condition.id.to_string();
    let acked = common::run(
        Some(&fleet.server_ns),
        &[
            "alerts",
            "ack",
            &id,
            "--reason",
            "the lab's cache, moving it",
            "--until",
            "7d",
            "--server",
            &url,
            "--fingerprint",
            &fleet.fingerprint,
            "--token-file",
            &token_file,
        ],
    );
    assert_eq!(code(&acked), 0, "alerts ack --server: {}", stderr(&acked));
    let listed = common::run(
        Some(&fleet.server_ns),
        &[
            "alerts",
            "--format",
            "json",
            "--server",
            &url,
            "--fingerprint",
            &fleet.fingerprint,
            "--token-file",
            &token_file,
        ],
    );
    assert_eq!(code(&listed), 0, "alerts --server: {}", stderr(&listed));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&listed)).expect("json");
    let row = doc["conditions"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["id"] == condition.id))
        .unwrap_or_else(|| panic!("{doc}"));
    assert!(row["acknowledged_until"].is_string(), "{row}");
    let trail: TrailList =
        fleet.api(|c| Box::pin(async move { c.get_json("/api/v1/trail").await.expect("trail") }));
    assert!(
        trail
            .entries
            .iter()
            .any(|e| e.action == "alert.ack" && e.actor == "admin"),
        "{trail:?}"
    );

    // A suspicious exec on a host with a running agent (watch on) is told
    // on the channel: an unpackaged copy of sleep, as a miner would be. An
    // hour between audits: only the exec brings the report early.
    let (_agent, _) = fleet.run_agent(1);
    let miner = dir.path().join("xminer-perimeter-test");
    std::fs::copy("/bin/sleep", &miner).expect("copy sleep");
    let status = fleet.agents[1]
        .command(&miner.to_string_lossy())
        .arg("1")
        .status()
        .expect("run the copy");
    assert!(status.success());
    told(&["suspicious-exec", "xminer-perimeter-test", "unpackaged"]);

    // A monitor configuration that does not parse stops the server from
    // starting, with the file's line and column.
    std::fs::write(&config, "[monitor]\nbogus = 1\n").expect("bad config");
    let refused = common::run(
        Some(&fleet.server_ns),
        &[
            "server",
            "--database",
            &fleet.path("other.db"),
            "--dev-self-signed",
            "--listen",
            "198.18.70.1:8444",
            "--monitor",
            &config_text,
        ],
    );
    assert_eq!(code(&refused), 2, "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("perimeter.toml:2:"),
        "{}",
        stderr(&refused)
    );
}
