//! Leased shards end to end (issue 11): `perimeter server` on a throwaway
//! PostgreSQL cluster in a namespace of the scan lab, a job submitted with
//! `scans submit`, and three `perimeter scanner` nodes in three more
//! namespaces with three vantage points: one stopped (SIGSTOP) while it holds
//! a part, one killed with -9 while it holds another, one that finishes
//! everything once their leases run out. The job completes with each
//! (address, port) once and the same states as one unsharded scan of the
//! lab; the stopped node, woken, has its late results refused; a job for one
//! vantage point is scanned only from there. On SQLite the server runs the
//! job itself, as one part, and refuses scanner nodes.
//!
//! Packets go only to the lab's namespaces (198.18.0.0/15, fd00:198:18::/64),
//! which have no route beyond the lab bridge.

mod common;
mod scan_lab;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{code, perimeter, stderr, stdout};
use perimeter_api::client::{ApiClient, Auth, Trust};
use perimeter_api::{FinishRequest, LeaseDoc, LeaseRef, LeaseRequest, LeaseStatus, SCHEMA};
use perimeter_model::ScanInfo;
use perimeter_store::{MERGED_SHARDS_OPTION, SqliteStore, Store, encode_run};
use perimeter_testlab::{Ns, PgCluster, Requirement, require, require_postgres};
use scan_lab::{ServiceLab, json_of, json_states, perimeter_in, require_service_lab, results};
use serde_json::Value;

const SERVER_IP: &str = "198.18.0.10";
const PORT: u16 = 8443;

/// The scan every job and the unsharded comparison run: every state kept,
/// no identification (states are compared), enough ports that a part takes
/// a couple of seconds at the rate given, so nodes can be stopped in one.
fn scan_options(rate: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "--all-states",
        "--no-identify",
        "-p",
        "1-200,6379,7379,8080,9000,9001,11211",
        "--timeout",
        "300ms",
        "--retries",
        "2",
        "--rate",
        rate,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(ServiceLab::targets().iter().map(|s| (*s).to_owned()));
    args
}

struct Server {
    ns: Arc<Ns>,
    dir: tempfile::TempDir,
    child: Child,
    fingerprint: String,
}

impl Server {
    fn start(lab: &mut ServiceLab, database: Option<String>) -> Server {
        let ns = lab.add_vantage("srv", &[&format!("{SERVER_IP}/15"), "fd00:198:18::10/64"]);
        let dir = tempfile::tempdir().expect("temp dir");
        let database =
            database.unwrap_or_else(|| dir.path().join("server.db").to_string_lossy().into_owned());
        let server_args = |args: &[&str]| {
            let mut all = vec!["server", "--database", &database];
            all.extend_from_slice(args);
            common::run(None, &all)
        };
        let password = dir.path().join("password");
        std::fs::write(&password, "a long enough password\n").expect("password");
        for (user, role) in [("amy", "approver"), ("nodes", "viewer")] {
            let added = server_args(&[
                "user",
                "add",
                user,
                "--role",
                role,
                "--password-file",
                &password.to_string_lossy(),
            ]);
            assert_eq!(code(&added), 0, "user add: {}", stderr(&added));
        }
        for (file, args) in [
            ("amy.token", &["token", "add", "amy"][..]),
            ("node.token", &["token", "add", "nodes", "--scanner"][..]),
        ] {
            let made = server_args(args);
            assert_eq!(code(&made), 0, "token add: {}", stderr(&made));
            std::fs::write(dir.path().join(file), stdout(&made)).expect("token file");
        }
        let listen = format!("{SERVER_IP}:{PORT}");
        let mut child = ns
            .command(perimeter())
            .args([
                "server",
                "--database",
                &database,
                "--listen",
                &listen,
                "--dev-self-signed",
            ])
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server");
        let out = child.stdout.take().expect("stdout");
        let mut fingerprint = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("certificate fingerprint ") {
                fingerprint = rest.trim().to_owned();
                break;
            }
        }
        assert!(!fingerprint.is_empty(), "the server printed no fingerprint");
        ns.wait_tcp(listen.parse().expect("address"), Duration::from_secs(30))
            .expect("the server listens");
        Server {
            ns,
            dir,
            child,
            fingerprint,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn url(&self) -> String {
        format!("https://{SERVER_IP}:{PORT}")
    }

    /// `perimeter scans ACTION --server URL --fingerprint FP --token-file
    /// amy's ARGS`, in the server's namespace.
    fn as_amy(&self, args: &[&str]) -> Output {
        let url = self.url();
        let token = self.path("amy.token");
        // After the subcommand (`scans submit`), before a `--`.
        let mut all = args.to_vec();
        all.splice(
            2..2,
            [
                "--server",
                url.as_str(),
                "--fingerprint",
                &self.fingerprint,
                "--token-file",
                &token,
            ],
        );
        perimeter_in(&self.ns, &all)
    }

    fn submit(&self, shards: &str, extra: &[&str]) -> Value {
        let mut args = vec!["scans", "submit", "--shards", shards, "--format", "json"];
        args.extend_from_slice(extra);
        args.push("--");
        let options = scan_options("50");
        args.extend(options.iter().map(String::as_str));
        let output = self.as_amy(&args);
        assert_eq!(code(&output), 0, "submit: {}", stderr(&output));
        json_of(&output)
    }

    fn job(&self, id: i64) -> Value {
        let output = self.as_amy(&["scans", "jobs", &id.to_string(), "--format", "json"]);
        assert_eq!(code(&output), 0, "jobs: {}", stderr(&output));
        json_of(&output)
    }

    /// Waits until `node` holds a lease on a part of job `id`; the part.
    fn wait_for_lease(&self, id: i64, node: &str) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.job(id);
            if let Some(part) = job["parts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|part| part["state"] == "leased" && part["node"].as_str() == Some(node))
            {
                return part["index"].as_u64().expect("index");
            }
            assert!(
                Instant::now() < deadline,
                "{node} took no part of job {id}: {job}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A scanner node in `ns`, its stderr in a file of the server's directory.
    fn node(&self, ns: &Ns, name: &str, vantage: &str, extra: &[&str]) -> Child {
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).expect("log file");
        ns.command(perimeter())
            .args([
                "scanner",
                "--server",
                &self.url(),
                "--fingerprint",
                &self.fingerprint,
                "--token-file",
                &self.path("node.token"),
                "--node",
                name,
                "--vantage",
                vantage,
                "--poll",
                "500ms",
                "--allow-targets",
                "198.18.0.0/15,fd00:198:18::/64",
            ])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a scanner node")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// `scans merge --server --job ID` into a database of its own: the
    /// output, and the merged scan's states by (address, port), each once.
    fn merge(&self, id: i64, db: &str) -> (Output, BTreeMap<(IpAddr, u16), String>) {
        let output = self.as_amy(&["scans", "merge", "--job", &id.to_string(), "--db", db]);
        let store = SqliteStore::open_read_only(Path::new(db)).expect("open the merged database");
        let merged = store
            .list_scans(usize::MAX)
            .expect("list")
            .into_iter()
            .find(|scan| scan.info.options.contains_key(MERGED_SHARDS_OPTION))
            .expect("a merged scan");
        let (_, stored) = store.load_scan(merged.info.id).expect("load");
        let mut states = BTreeMap::new();
        for result in stored {
            let before = states.insert(
                (result.address, result.port),
                result.state.as_str().to_owned(),
            );
            assert!(
                before.is_none(),
                "{}:{} merged twice",
                result.address,
                result.port
            );
        }
        (output, states)
    }
}

impl Server {
    /// `f` with an API client of the node token, inside the server's
    /// namespace.
    fn as_node<T: Send + 'static>(
        &self,
        f: impl FnOnce(ApiClient) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
        + Send
        + 'static,
    ) -> T {
        let url = self.url();
        let trust = Trust::parse_fingerprint(&self.fingerprint).expect("fingerprint");
        let token = std::fs::read_to_string(self.path("node.token")).expect("node token");
        self.ns
            .enter(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let client = ApiClient::new(&url, &trust, Auth::Token(token.trim().to_owned()))
                    .expect("client");
                runtime.block_on(f(client))
            })
            .expect("inside the server's namespace")
    }
}

/// `verify --scan` judges the merged job as seen from where its nodes
/// scanned: the lab's web host is dev, reachable only from the office range;
/// from a node outside it, its open ports are env.dev-reachable, from inside
/// it they are not.
fn verify_from_the_nodes_vantage_point(server: &Server, db: &str) {
    let inventory = server.path("perimeter.toml");
    std::fs::write(
        &inventory,
        "[[environment]]\nname = \"dev\"\nkind = \"dev\"\nranges = [\"198.18.0.2/32\"]\n\
         allow_from = [\"198.18.0.11/32\"]\n",
    )
    .expect("inventory");
    let store = SqliteStore::open_read_only(Path::new(db)).expect("open");
    let merged = store
        .list_scans(usize::MAX)
        .expect("list")
        .into_iter()
        .find(|scan| scan.info.options.contains_key(MERGED_SHARDS_OPTION))
        .expect("the merged scan")
        .info
        .id
        .to_string();
    let judged = |from: &str| {
        let output = common::run(
            None,
            &[
                "verify",
                "--scan",
                &merged,
                "--from",
                from,
                "--inventory",
                &inventory,
                "--db",
                db,
                "--format",
                "json",
            ],
        );
        let doc = json_of(&output);
        let rules: Vec<String> = results(&doc)
            .iter()
            .filter(|result| result["address"] == "198.18.0.2")
            .flat_map(|result| result["findings"].as_array().cloned().unwrap_or_default())
            .filter_map(|finding| finding["rule"].as_str().map(str::to_owned))
            .collect();
        (code(&output), rules)
    };
    let (code_outside, outside) = judged("198.18.0.13");
    assert_eq!(
        code_outside, 1,
        "a high finding fails the gate: {outside:?}"
    );
    assert_eq!(
        outside
            .iter()
            .filter(|rule| *rule == "env.dev-reachable")
            .count(),
        3,
        "web's three open ports, reachable from dc-2: {outside:?}"
    );
    let (code_inside, inside) = judged("198.18.0.11");
    assert_eq!(code_inside, 0, "{inside:?}");
    assert!(
        !inside.iter().any(|rule| rule == "env.dev-reachable"),
        "{inside:?}"
    );
}

/// A complete run of one part, as a node would send it (no results).
fn fake_run(part: &str, seed: u64) -> Value {
    let now = time::OffsetDateTime::now_utc();
    let info = ScanInfo {
        id: 0,
        targets: vec!["198.18.0.2".into()],
        resolved: Vec::new(),
        excluded: Vec::new(),
        ports: "22".into(),
        profile: "normal".into(),
        seed,
        options: BTreeMap::from([("shard".to_owned(), part.to_owned())]),
        started: now,
        finished: Some(now),
        complete: true,
        n_probes: 1,
    };
    serde_json::from_str(&encode_run(&info, &[]).expect("encode")).expect("json")
}

/// A lease's requests that break the rules are refused and change nothing:
/// a run of another part or seed, an unknown lease, a lease of a done part.
fn hostile_leases(server: &Server) {
    let job = server.submit("2", &["--seed", "99"]);
    let id = job["id"].as_i64().expect("job id");
    let refusals = server.as_node(move |client| {
        Box::pin(async move {
            let lease: LeaseDoc = client
                .post_json_or_none(
                    "/api/v1/leases",
                    &LeaseRequest {
                        schema: SCHEMA.to_owned(),
                        node: "hostile".into(),
                        vantage: None,
                    },
                )
                .await
                .expect("lease")
                .expect("a part");
            assert_eq!(lease.job.id, id);
            let part = format!("{}/2", lease.index);
            let other = format!("{}/2", 1 - lease.index);
            let mut codes = Vec::new();
            for run in [fake_run(&other, 99), fake_run(&part, 98)] {
                let refused = client
                    .post_json::<_, LeaseStatus>(
                        "/api/v1/leases/finish",
                        &FinishRequest {
                            schema: SCHEMA.to_owned(),
                            lease: lease.lease.clone(),
                            run,
                        },
                    )
                    .await
                    .expect_err("a run of another part or seed");
                codes.push(refused.code().unwrap_or("").to_owned());
            }
            let unknown = client
                .post_json::<_, LeaseStatus>(
                    "/api/v1/leases/renew",
                    &LeaseRef {
                        schema: SCHEMA.to_owned(),
                        lease: "0".repeat(32),
                    },
                )
                .await
                .expect_err("an unknown lease");
            codes.push(unknown.code().unwrap_or("").to_owned());
            // The right run is taken once; again, the part is done.
            let finish = FinishRequest {
                schema: SCHEMA.to_owned(),
                lease: lease.lease.clone(),
                run: fake_run(&part, 99),
            };
            client
                .post_json::<_, LeaseStatus>("/api/v1/leases/finish", &finish)
                .await
                .expect("the part's own run");
            let again = client
                .post_json::<_, LeaseStatus>("/api/v1/leases/finish", &finish)
                .await
                .expect_err("a done part");
            codes.push(again.code().unwrap_or("").to_owned());
            codes
        })
    });
    assert_eq!(
        refusals,
        ["bad_request", "bad_request", "lease_lost", "lease_lost"]
    );
    let job = server.job(id);
    assert_eq!(job["done"], 1, "{job}");
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {}", child.id());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "a node did not exit in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The merged job and the unsharded scan have the same (address, port)
/// pairs in the same states; the first differences otherwise.
fn assert_same_states(
    merged: &BTreeMap<(IpAddr, u16), String>,
    whole: &BTreeMap<(IpAddr, u16), String>,
) {
    let differences: Vec<String> = whole
        .iter()
        .filter(|(port, state)| merged.get(port) != Some(state))
        .map(|((address, port), state)| {
            format!(
                "{address}:{port} {state} unsharded, {:?} merged",
                merged.get(&(*address, *port))
            )
        })
        .chain(
            merged
                .keys()
                .filter(|port| !whole.contains_key(port))
                .map(|(address, port)| format!("{address}:{port} only merged")),
        )
        .collect();
    assert!(
        differences.is_empty(),
        "{} of {} pairs differ, first: {:?}",
        differences.len(),
        whole.len(),
        &differences[..differences.len().min(10)]
    );
}

/// One unsharded scan of the lab with the same options, its states.
fn unsharded(lab: &ServiceLab) -> BTreeMap<(IpAddr, u16), String> {
    let mut args = vec!["scan", "--format", "json", "--no-store"];
    let options = scan_options("400");
    args.extend(options.iter().map(String::as_str));
    let output = perimeter_in(&lab.scanner, &args);
    assert_eq!(code(&output), 0, "unsharded: {}", stderr(&output));
    json_states(results(&json_of(&output)))
}

#[test]
fn three_nodes_one_stopped_one_killed_complete_the_job_once_each() {
    if !require_service_lab() || !require(Requirement::Root) || !require_postgres() {
        return;
    }
    let cluster = PgCluster::start().expect("PostgreSQL");
    let mut lab = ServiceLab::start();
    let server = Server::start(&mut lab, Some(cluster.url()));
    let office = lab.add_vantage("office", &["198.18.0.11/15", "fd00:198:18::11/64"]);
    let internet = lab.add_vantage("inet", &["198.18.0.12/15", "fd00:198:18::12/64"]);
    let dc2 = lab.add_vantage("dc2", &["198.18.0.13/15", "fd00:198:18::13/64"]);

    let job = server.submit("8", &["--lease", "3s"]);
    let id = job["id"].as_i64().expect("job id");
    assert_eq!(job["shards"], 8);
    assert_eq!(job["runs_on"], "scanner nodes");
    let dc2_job = server.submit("1", &["--vantage", "dc-2"]);
    let dc2_id = dc2_job["id"].as_i64().expect("job id");

    // The office node takes a part and is stopped holding it.
    let mut sleepy = server.node(&office, "sleepy", "office", &[]);
    let sleepy_part = server.wait_for_lease(id, "sleepy");
    signal(&sleepy, "STOP");
    // The internet node takes the next part and dies holding it.
    let mut doomed = server.node(&internet, "doomed", "internet", &[]);
    let doomed_part = server.wait_for_lease(id, "doomed");
    doomed.kill().expect("kill -9");
    let _ = doomed.wait();
    // The dc-2 node scans everything left, the two parts whose leases ran
    // out included, and its own vantage point's job, then exits.
    let mut steady = server.node(&dc2, "steady", "dc-2", &["--once"]);
    let status = wait_exit(&mut steady, Duration::from_secs(240));
    assert!(
        status.success(),
        "steady: {status}\n{}",
        server.log("steady")
    );

    let done = server.job(id);
    assert_eq!(done["complete"], true, "{done}");
    let parts = done["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 8);
    for index in [sleepy_part, doomed_part] {
        let part = &parts[usize::try_from(index).expect("index")];
        assert_eq!(
            part["node"], "steady",
            "part {index} finished by steady: {part}"
        );
        assert!(part["attempts"].as_u64() >= Some(2), "{part}");
    }
    let dc2_done = server.job(dc2_id);
    assert_eq!(dc2_done["complete"], true);
    assert_eq!(dc2_done["parts"][0]["node"], "steady", "only dc-2 scans it");

    // The stopped node wakes: its lease was taken, so what it sends is
    // refused, and it says so; the job is unchanged.
    signal(&sleepy, "CONT");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server
        .log("sleepy")
        .contains(&format!("job {id} part {sleepy_part}/8"))
        || !(server.log("sleepy").contains("lost job") || server.log("sleepy").contains("refused"))
    {
        assert!(
            Instant::now() < deadline,
            "the woken node did not report its lost lease:\n{}",
            server.log("sleepy")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(&sleepy, "TERM");
    wait_exit(&mut sleepy, Duration::from_secs(30));
    assert_eq!(
        server.job(id)["parts"],
        done["parts"],
        "the late node changed nothing"
    );

    // Merged: every (address, port) once, the states of one unsharded scan.
    let db = server.path("merged.db");
    let (output, merged) = server.merge(id, &db);
    assert_eq!(
        code(&output),
        0,
        "merge: {}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("merged 8 of 8 shards"),
        "{}",
        stdout(&output)
    );
    let whole = unsharded(&lab);
    assert_eq!(whole.len(), 4 * 206);
    assert_same_states(&merged, &whole);
    assert_eq!(
        merged.values().filter(|state| *state == "open").count(),
        whole.values().filter(|state| *state == "open").count()
    );
    assert!(merged.values().any(|state| state == "open"));
    verify_from_the_nodes_vantage_point(&server, &db);
    hostile_leases(&server);
    drop(server);
    drop(cluster);
}

#[test]
fn a_server_on_sqlite_runs_jobs_itself_and_refuses_nodes() {
    if !require_service_lab() || !require(Requirement::Root) {
        return;
    }
    let mut lab = ServiceLab::start();
    let server = Server::start(&mut lab, None);
    let job = server.submit("4", &["--vantage", "office"]);
    let id = job["id"].as_i64().expect("job id");
    assert_eq!(job["shards"], 1, "one part, whatever is asked");
    assert_eq!(job["vantage"], Value::Null);
    assert!(
        job["runs_on"]
            .as_str()
            .is_some_and(|text| text.starts_with("the server's own scanner")),
        "{job}"
    );

    // A node is refused, and says why.
    let office = lab.add_vantage("office", &["198.18.0.11/15", "fd00:198:18::11/64"]);
    let mut node = server.node(&office, "office-a", "office", &["--once"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log("office-a").contains("local_scanner") {
        assert!(Instant::now() < deadline, "{}", server.log("office-a"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = node.kill();
    let _ = node.wait();
    // A scanner token does nothing else; a person's token cannot lease.
    let node_token = server.path("node.token");
    let url = server.url();
    let with_node_token = perimeter_in(
        &server.ns,
        &[
            "scans",
            "jobs",
            "--server",
            &url,
            "--fingerprint",
            &server.fingerprint,
            "--token-file",
            &node_token,
        ],
    );
    assert_ne!(code(&with_node_token), 0);
    assert!(
        stderr(&with_node_token).contains("scanner node's"),
        "{}",
        stderr(&with_node_token)
    );

    // The server scans it, from where it is.
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.job(id)["complete"] != true {
        assert!(Instant::now() < deadline, "the server did not run its job");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(server.job(id)["parts"][0]["node"], "server");
    let db = server.path("merged.db");
    let (output, merged) = server.merge(id, &db);
    assert_eq!(
        code(&output),
        0,
        "merge: {}{}",
        stdout(&output),
        stderr(&output)
    );
    assert_same_states(&merged, &unsharded(&lab));
}
