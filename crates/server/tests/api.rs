//! The API end to end, in process, on loopback: a real server (TLS, the
//! router, the SQLite fleet store in a temporary file) and real clients (the
//! API crate's client, and raw HTTP/1.1 over rustls for what a well-behaved
//! client never sends). Enrolment, the report chain, approvals judged by the
//! host's listeners, roles, and the hostile inputs of issue 9.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use perimeter_api::client::{ApiClient, Auth, Trust, client_config};
use perimeter_api::sign::AgentKey;
use perimeter_api::{
    AckRequest, AlertList, ApprovalDoc, ConditionDoc, Decision, EnrolRequest, EnrolResponse,
    HostDetail, HostList, HostState, ListenerDoc, NewApprovalDoc, OwnerDoc, ReachDoc, Report,
    ReportAck, SCHEMA, StateDelta, TrailList, UndecidedDoc,
};
use perimeter_server::{Limits, ServerConfig, TlsSource, hash_password, new_token, serve};
use perimeter_store::fleet::{FleetStore, Role, SqliteFleet};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SECRET: &str = "an-enrolment-secret-for-tests";

struct Harness {
    addr: SocketAddr,
    trust: Trust,
    admin: String,
    viewer: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(require_acceptance: bool, limits: Limits) -> Harness {
        Harness::start_with(require_acceptance, limits, None).await
    }

    /// With a monitor's history: `history` names a file in the harness's
    /// directory.
    async fn start_with(
        require_acceptance: bool,
        limits: Limits,
        history: Option<&str>,
    ) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = SqliteFleet::open(&dir.path().join("server.db")).expect("store");
        let now = OffsetDateTime::now_utc();
        let hash = hash_password("a long enough password").expect("hash");
        store
            .add_user("admin", Role::Admin, &hash, "test", now)
            .expect("admin");
        store
            .add_user("viewer", Role::Viewer, &hash, "test", now)
            .expect("viewer");
        let admin = new_token();
        store
            .add_token(&admin.hash, "admin", "test", now, None)
            .expect("token");
        let viewer = new_token();
        store
            .add_token(&viewer.hash, "viewer", "test", now, None)
            .expect("token");
        let tls = TlsSource::DevSelfSigned {
            names: vec!["localhost".into()],
        }
        .load()
        .expect("certificate");
        let trust = Trust::parse_fingerprint(&tls.fingerprint).expect("fingerprint");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let config = ServerConfig {
            listen: addr,
            enrol_secret: Some(SECRET.into()),
            require_acceptance,
            limits,
            monitor_history: history.map(|name| dir.path().join(name)),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            serve(listener, tls.config, Box::new(store), config, async move {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        Harness {
            addr,
            trust,
            admin: admin.token,
            viewer: viewer.token,
            stop: Some(stop),
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn client(&self, auth: Auth) -> ApiClient {
        ApiClient::new(&self.url(), &self.trust, auth).expect("client")
    }

    fn admin(&self) -> ApiClient {
        self.client(Auth::Token(self.admin.clone()))
    }

    async fn enrol(&self, key: &AgentKey) -> EnrolResponse {
        self.client(Auth::None)
            .post_json(
                "/api/v1/enrol",
                &EnrolRequest {
                    schema: SCHEMA.into(),
                    public_key: key.public_key_base64(),
                    hostname: "web-1".into(),
                    secret: SECRET.into(),
                },
            )
            .await
            .expect("enrol")
    }

    /// One HTTP/1.1 request over TLS, as raw bytes; the status and body.
    async fn raw(&self, request: &[u8]) -> (u16, String) {
        let config = client_config(&self.trust).expect("tls config");
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        // A server that refuses early may close before everything is sent;
        // its answer is read all the same.
        let _ = tls.write_all(request).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn listener(port: u16, scope: &str, address: &str) -> ListenerDoc {
    ListenerDoc {
        netns: "host".into(),
        protocol: "tcp".into(),
        address: address.into(),
        port,
        scope: scope.into(),
        owners: vec![OwnerDoc {
            pid: 4242,
            name: "redis-server".into(),
            exe: Some("/opt/redis/bin/redis-server".into()),
            package: None,
            user: "root".into(),
        }],
        reach: None,
    }
}

fn report(key: &AgentKey, seq: u64, full: Option<HostState>, delta: Option<StateDelta>) -> Report {
    Report {
        schema: SCHEMA.into(),
        agent_id: key.agent_id(),
        seq,
        taken_at: OffsetDateTime::now_utc(),
        hostname: "web-1".into(),
        full,
        delta,
        events: Vec::new(),
        dropped_events: 0,
    }
}

fn state(listeners: Vec<ListenerDoc>) -> HostState {
    let mut state = HostState {
        hostname: "web-1".into(),
        listeners,
        findings: Vec::new(),
    };
    state.canonicalise();
    state
}

async fn send(h: &Harness, key: &Arc<AgentKey>, report: &Report) -> Result<ReportAck, String> {
    h.client(Auth::Agent(Arc::clone(key)))
        .post_raw(
            "/api/v1/reports",
            serde_json::to_vec(report).expect("encode"),
        )
        .await
        .map_err(|err| format!("{} {err}", err.code().unwrap_or("-")))
}

async fn host(h: &Harness, id: &str) -> HostDetail {
    h.admin()
        .get_json(&format!("/api/v1/hosts/{id}"))
        .await
        .expect("host")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_chain_and_listeners_are_judged_by_scoped_approvals() {
    let h = Harness::start(false, Limits::default()).await;
    let key = Arc::new(AgentKey::generate());
    let enrolled = h.enrol(&key).await;
    assert_eq!(enrolled.agent_id, key.agent_id());
    assert_eq!(enrolled.status, "accepted");
    // The same key again: where it stands, the same id (not a second host).
    assert_eq!(h.enrol(&key).await.agent_id, key.agent_id());

    let first = state(vec![
        listener(6379, "wildcard", "0.0.0.0"),
        listener(5432, "loopback", "127.0.0.1"),
    ]);
    let r1 = report(&key, 1, Some(first.clone()), None);
    assert_eq!(send(&h, &key, &r1).await.expect("stored").outcome, "stored");
    // The very same report again (a lost acknowledgement): a duplicate.
    assert_eq!(send(&h, &key, &r1).await.expect("dup").outcome, "duplicate");
    // Another report under the same number: two machines share the key.
    let other = report(&key, 1, Some(state(Vec::new())), None);
    let forked = send(&h, &key, &other).await.expect_err("forked");
    assert!(forked.starts_with("forked"), "{forked}");
    // A gap: the server says what it expects.
    let gap = report(&key, 5, None, Some(StateDelta::default()));
    let refused = send(&h, &key, &gap).await.expect_err("out of order");
    assert!(refused.starts_with("out_of_order"), "{refused}");

    let detail = host(&h, &key.agent_id()).await;
    assert_eq!(detail.host.exposed, 1);
    assert_eq!(detail.host.unapproved, 1);
    let redis = detail
        .listeners
        .iter()
        .find(|l| l.listener.port == 6379)
        .expect("6379 listed");
    assert_eq!(redis.approval, "unapproved");
    let pg = detail
        .listeners
        .iter()
        .find(|l| l.listener.port == 5432)
        .expect("5432 listed");
    assert_eq!(pg.approval, "not-needed");

    // A delta: 8080 appears; 5432 goes.
    let next = state(vec![
        listener(6379, "wildcard", "0.0.0.0"),
        listener(8080, "wildcard", "0.0.0.0"),
    ]);
    let r2 = report(&key, 2, None, Some(first.delta_to(&next)));
    assert_eq!(send(&h, &key, &r2).await.expect("stored").outcome, "stored");
    let detail = host(&h, &key.agent_id()).await;
    let ports: Vec<u16> = detail.listeners.iter().map(|l| l.listener.port).collect();
    assert_eq!(ports, [6379, 8080]);
    assert_eq!(detail.host.unapproved, 2);

    // A viewer may read but not approve.
    let approve = NewApprovalDoc {
        schema: SCHEMA.into(),
        scope: format!("host:{}", key.agent_id()),
        netns: None,
        protocol: "tcp".into(),
        address: None,
        bind_scope: Some("wildcard".into()),
        port: 6379,
        exe: Some("/opt/redis/bin/redis-server".into()),
        package: None,
        user: Some("root".into()),
        unowned: false,
        reason: "the cache of web-1, behind the firewall".into(),
        expires: None,
        recorded_by: None,
        recorded_at: None,
    };
    let viewer = h.client(Auth::Token(h.viewer.clone()));
    let denied = viewer
        .post_json::<_, ApprovalDoc>("/api/v1/approvals", &approve)
        .await
        .expect_err("viewer");
    assert_eq!(denied.code(), Some("forbidden"));
    let approval: ApprovalDoc = h
        .admin()
        .post_json("/api/v1/approvals", &approve)
        .await
        .expect("approve");
    assert_eq!(approval.approved_by, "admin");
    // The same keys for the same scope again: a conflict naming the first.
    let again = h
        .admin()
        .post_json::<_, ApprovalDoc>("/api/v1/approvals", &approve)
        .await
        .expect_err("a second identical approval");
    assert_eq!(again.code(), Some("conflict"));
    assert!(
        again
            .to_string()
            .contains(&format!("approval {}", approval.id)),
        "{again}"
    );
    let detail = host(&h, &key.agent_id()).await;
    let redis = detail
        .listeners
        .iter()
        .find(|l| l.listener.port == 6379)
        .expect("6379");
    assert_eq!(redis.approval, "approved");
    assert_eq!(redis.approval_id, Some(approval.id));
    assert_eq!(detail.host.unapproved, 1);

    // The gate's file for this host holds the approval, and parses as an
    // approvals file.
    let text = h
        .admin()
        .get_text(&format!("/api/v1/approvals.toml?host={}", key.agent_id()))
        .await
        .expect("toml");
    let parsed = perimeter_checks::approvals::parse_approvals(&text, std::path::Path::new("x"))
        .expect("parses");
    assert_eq!(parsed.entries.len(), 1);
    assert_eq!(parsed.entries[0].port, 6379);
    // The agent may read its own host's file, and no other's.
    let own = h
        .client(Auth::Agent(Arc::clone(&key)))
        .get_text(&format!("/api/v1/approvals.toml?host={}", key.agent_id()))
        .await
        .expect("own file");
    assert_eq!(own, text);
    let stranger = h
        .client(Auth::Agent(Arc::clone(&key)))
        .get_text("/api/v1/approvals.toml?host=ag_000000000000000000000000")
        .await
        .expect_err("other host");
    assert_eq!(stranger.code(), Some("forbidden"));

    // Revoked: unapproved again, and the trail has both.
    let _: serde_json::Value = h
        .admin()
        .post_json(
            &format!("/api/v1/approvals/{}/revoke", approval.id),
            &Decision {
                schema: SCHEMA.into(),
                reason: "moved to the cache cluster".into(),
            },
        )
        .await
        .expect("revoke");
    assert_eq!(host(&h, &key.agent_id()).await.host.unapproved, 2);
    let trail: TrailList = h.admin().get_json("/api/v1/trail").await.expect("trail");
    let actions: Vec<&str> = trail.entries.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"approval.add"), "{actions:?}");
    assert!(actions.contains(&"approval.revoke"), "{actions:?}");
    assert!(actions.contains(&"agent.enrol"), "{actions:?}");

    // Revoking the agent: its next report is refused.
    let _: serde_json::Value = h
        .admin()
        .post_json(
            &format!("/api/v1/hosts/{}/revoke", key.agent_id()),
            &Decision {
                schema: SCHEMA.into(),
                reason: "decommissioned".into(),
            },
        )
        .await
        .expect("revoke agent");
    let r3 = report(&key, 3, None, Some(StateDelta::default()));
    let refused = send(&h, &key, &r3).await.expect_err("revoked");
    assert!(refused.starts_with("not_accepted"), "{refused}");
    assert!(refused.contains("revoked"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_with_and_without_the_listeners_reach_are_taken_and_the_answer_says_so() {
    let h = Harness::start(false, Limits::default()).await;
    let key = Arc::new(AgentKey::generate());
    h.enrol(&key).await;

    // An older agent's report: no reach on its listeners, not a byte of it.
    let before = state(vec![listener(6379, "wildcard", "0.0.0.0")]);
    let r1 = report(&key, 1, Some(before.clone()), None);
    assert!(
        !serde_json::to_string(&r1).expect("json").contains("reach"),
        "the field is left out when there is none"
    );
    let ack = send(&h, &key, &r1).await.expect("stored");
    assert_eq!(ack.outcome, "stored");
    assert_eq!(ack.accepts, vec![perimeter_api::ACCEPTS_LISTENER_REACH]);
    let detail = host(&h, &key.agent_id()).await;
    assert_eq!(detail.listeners[0].listener.reach, None);

    // A newer agent's: the listener's reach is stored and read back.
    let mut redis = listener(6379, "wildcard", "0.0.0.0");
    redis.reach = Some(ReachDoc {
        allowed: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
        undecided: vec![UndecidedDoc {
            sources: "192.168.0.0/16".into(),
            reason: "a match on the socket's cgroup".into(),
        }],
    });
    let after = state(vec![redis.clone()]);
    let r2 = report(&key, 2, None, Some(before.delta_to(&after)));
    let ack = send(&h, &key, &r2).await.expect("stored");
    assert_eq!(ack.outcome, "stored");
    let detail = host(&h, &key.agent_id()).await;
    assert_eq!(detail.listeners[0].listener.reach, redis.reach);

    // What is not a prefix, an unknown field inside it, a reason with
    // control characters: refused, and nothing stored.
    for (n, bad) in [
        r#"{"allowed":["everyone"]}"#,
        r#"{"allowed":["10.0.0.0/33"]}"#,
        r#"{"allowed":["10.0.0.0/8"],"ports":[1]}"#,
        r#"{"undecided":[{"sources":"10.0.0.0/8","reason":"\u001b[31m"}]}"#,
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = serde_json::to_value(report(
            &key,
            3,
            Some(state(vec![listener(6379, "wildcard", "0.0.0.0")])),
            None,
        ))
        .expect("json");
        body["full"]["listeners"][0]["reach"] = serde_json::from_str(bad).expect("reach json");
        let refused = h
            .client(Auth::Agent(Arc::clone(&key)))
            .post_raw::<ReportAck>(
                "/api/v1/reports",
                serde_json::to_vec(&body).expect("encode"),
            )
            .await
            .expect_err(bad);
        assert_eq!(refused.code(), Some("bad_request"), "{n}: {bad}: {refused}");
    }
    let detail = host(&h, &key.agent_id()).await;
    assert_eq!(detail.listeners[0].listener.reach, redis.reach);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_agents_wait_for_acceptance() {
    let h = Harness::start(true, Limits::default()).await;
    let key = Arc::new(AgentKey::generate());
    assert_eq!(h.enrol(&key).await.status, "pending");
    let r1 = report(&key, 1, Some(state(Vec::new())), None);
    let refused = send(&h, &key, &r1).await.expect_err("pending");
    assert!(refused.starts_with("not_accepted"), "{refused}");
    let _: serde_json::Value = h
        .admin()
        .post_json(
            &format!("/api/v1/hosts/{}/accept", key.agent_id()),
            &Decision {
                schema: SCHEMA.into(),
                reason: "ticket OPS-1".into(),
            },
        )
        .await
        .expect("accept");
    assert_eq!(send(&h, &key, &r1).await.expect("stored").outcome, "stored");
    let hosts: HostList = h.admin().get_json("/api/v1/hosts").await.expect("hosts");
    assert_eq!(hosts.hosts.len(), 1);
    assert_eq!(hosts.hosts[0].status, "accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_with_a_clear_answer() {
    let limits = Limits {
        max_listeners: 50,
        reports_per_minute: 3,
        ..Limits::default()
    };
    let h = Harness::start(false, limits).await;
    let key = Arc::new(AgentKey::generate());
    h.enrol(&key).await;

    // No authentication: only health answers.
    let anonymous = h.client(Auth::None);
    let health: serde_json::Value = anonymous.get_json("/api/v1/health").await.expect("health");
    assert_eq!(health["status"], "ok");
    for path in ["/api/v1/hosts", "/api/v1/approvals", "/api/v1/trail"] {
        let err = anonymous
            .get_json::<serde_json::Value>(path)
            .await
            .expect_err(path);
        assert_eq!(err.code(), Some("unauthenticated"), "{path}");
    }
    let bogus = h.client(Auth::Token("prm_not-a-token".into()));
    assert_eq!(
        bogus
            .get_json::<serde_json::Value>("/api/v1/hosts")
            .await
            .expect_err("bogus")
            .code(),
        Some("unauthenticated")
    );

    // A wrong enrolment secret.
    let other = AgentKey::generate();
    let wrong = anonymous
        .post_json::<_, EnrolResponse>(
            "/api/v1/enrol",
            &EnrolRequest {
                schema: SCHEMA.into(),
                public_key: other.public_key_base64(),
                hostname: "x".into(),
                secret: "guess".into(),
            },
        )
        .await
        .expect_err("wrong secret");
    assert_eq!(wrong.code(), Some("unauthenticated"));

    // A report from an unknown key.
    let stranger = Arc::new(AgentKey::generate());
    let err = send(
        &h,
        &stranger,
        &report(&stranger, 1, Some(state(Vec::new())), None),
    )
    .await
    .expect_err("unknown");
    assert!(err.starts_with("unauthenticated"), "{err}");

    // Too many listeners.
    let many: Vec<ListenerDoc> = (1..=51)
        .map(|p| listener(p, "wildcard", "0.0.0.0"))
        .collect();
    let err = send(&h, &key, &report(&key, 1, Some(state(many)), None))
        .await
        .expect_err("too many");
    assert!(err.starts_with("too_large"), "{err}");

    // Values the server interprets must parse.
    let mut bad = listener(80, "wildcard", "0.0.0.0");
    bad.address = "not-an-address".into();
    let err = send(&h, &key, &report(&key, 1, Some(state(vec![bad])), None))
        .await
        .expect_err("bad address");
    assert!(err.starts_with("bad_request"), "{err}");

    // A tampered body: signed for one report, carrying another.
    let good = serde_json::to_vec(&report(&key, 1, Some(state(Vec::new())), None)).expect("json");
    let mut tampered = good.clone();
    if let Some(byte) = tampered.iter_mut().find(|b| **b == b'1') {
        *byte = b'2';
    }
    let headers = key.sign_request("POST", "/api/v1/reports", &good, OffsetDateTime::now_utc());
    let mut request = format!(
        "POST /api/v1/reports HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        tampered.len()
    );
    for (name, value) in &headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(&tampered);
    let (status, body) = h.raw(&bytes).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("does not verify"), "{body}");

    // A date far from the server's clock (signed, so only the clock is wrong).
    let old = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let headers = key.sign_request("POST", "/api/v1/reports", &good, old);
    let mut request = format!(
        "POST /api/v1/reports HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        good.len()
    );
    for (name, value) in &headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(&good);
    let (status, body) = h.raw(&bytes).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("clock_skew"), "{body}");

    // A body declared over the limit is refused on its headers, before a
    // byte of it is read (none is sent here: the answer must not wait).
    let huge = 9 * 1024 * 1024;
    let request = format!(
        "POST /api/v1/enrol HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {huge}\r\nconnection: close\r\n\r\n"
    );
    let (status, body) = h.raw(request.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("too_large"), "{body}");

    // The rate per agent: the fourth report in a minute waits.
    let mut outcomes = Vec::new();
    let mut tail = state(Vec::new());
    for seq in 1..=4 {
        let next = state(vec![listener(1000 + seq as u16, "wildcard", "0.0.0.0")]);
        let r = if seq == 1 {
            report(&key, seq, Some(next.clone()), None)
        } else {
            report(&key, seq, None, Some(tail.delta_to(&next)))
        };
        tail = next;
        outcomes.push(send(&h, &key, &r).await.map(|a| a.outcome));
    }
    // Every earlier refusal above counted against the minute too, so the
    // ceiling is met within these four at the latest.
    assert!(
        outcomes
            .iter()
            .any(|o| o.as_ref().is_err_and(|e| e.starts_with("rate_limited"))),
        "{outcomes:?}"
    );

    // Agent-sent text is stored as text and comes back as JSON strings,
    // never interpreted.
    let hosts: HostList = h.admin().get_json("/api/v1/hosts").await.expect("hosts");
    assert_eq!(hosts.hosts.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_an_overflow_are_stored_as_event_documents() {
    let h = Harness::start(false, Limits::default()).await;
    let key = Arc::new(AgentKey::generate());
    h.enrol(&key).await;
    let mut r1 = report(&key, 1, Some(state(Vec::new())), None);
    r1.events = vec![perimeter_api::Event {
        at: OffsetDateTime::now_utc(),
        kind: "exec".into(),
        summary: "pid 7 /tmp/xmrig as www-data".into(),
        flags: vec!["unpackaged".into(), "world-writable".into()],
    }];
    r1.dropped_events = 12;
    assert_eq!(send(&h, &key, &r1).await.expect("stored").outcome, "stored");
    // The dashboard's changes page reads the events back as documents.
    let dir_store = {
        // The harness's database, read directly.
        let path = h._dir.path().join("server.db");
        SqliteFleet::open(&path).expect("reopen")
    };
    let events = dir_store
        .events(Some(&key.agent_id()), 0, 10)
        .expect("events");
    let kinds: Vec<String> = events
        .iter()
        .map(|row| {
            serde_json::from_str::<perimeter_api::Event>(&row.event)
                .unwrap_or_else(|err| panic!("{}: {err}", row.event))
                .kind
        })
        .collect();
    assert_eq!(kinds, ["exec", "queue.overflow"]);
    assert!(events[1].event.contains("12 events"), "{}", events[1].event);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_persons_tokens_stop_working() {
    let h = Harness::start(false, Limits::default()).await;
    let viewer = h.client(Auth::Token(h.viewer.clone()));
    let _: HostList = viewer.get_json("/api/v1/hosts").await.expect("works");
    let mut store = SqliteFleet::open(&h._dir.path().join("server.db")).expect("reopen");
    store
        .set_user_disabled("viewer", true, "admin", OffsetDateTime::now_utc())
        .expect("disable");
    let refused = viewer
        .get_json::<HostList>("/api/v1/hosts")
        .await
        .expect_err("disabled");
    assert_eq!(refused.code(), Some("unauthenticated"));
    assert!(refused.to_string().contains("disabled"), "{refused}");
    store
        .set_user_disabled("viewer", false, "admin", OffsetDateTime::now_utc())
        .expect("enable");
    let _: HostList = viewer.get_json("/api/v1/hosts").await.expect("works again");
}

/// A monitor's history with two open conditions of the fleet job, as the
/// monitor inside the server leaves it.
fn seed_history(path: &std::path::Path) -> Vec<i64> {
    use perimeter_store::{ConditionRow, JobKind, MonitorStore as _, SqliteStore};
    let mut store = SqliteStore::open(path).expect("history");
    let now = OffsetDateTime::now_utc();
    let run = store.begin_run("fleet", JobKind::Fleet, now).expect("run");
    let condition = |key: &str, severity: &str, subject: &str| ConditionRow {
        id: 0,
        job: String::new(),
        key: key.into(),
        kind: "listener-unapproved".into(),
        severity: severity.into(),
        subject: subject.into(),
        expected: false,
        first_seen: now,
        last_seen: now,
        absent_runs: 0,
        acked_until: None,
    };
    store
        .complete_run(
            run,
            now,
            None,
            None,
            &[
                condition(
                    "fleet a listener host tcp/0.0.0.0:8080",
                    "medium",
                    "tcp 0.0.0.0:8080 on web-1",
                ),
                condition(
                    "fleet a listener host tcp/0.0.0.0:6379",
                    "high",
                    "tcp 0.0.0.0:6379 <script>x</script> on web-1",
                ),
            ],
            None,
        )
        .expect("complete");
    store
        .open_conditions()
        .expect("conditions")
        .iter()
        .map(|c| c.id)
        .collect()
}

#[tokio::test]
async fn alerts_are_listed_worst_first_and_an_acknowledgement_is_kept_and_in_the_trail() {
    let h = Harness::start_with(false, Limits::default(), Some("history.db")).await;
    let ids = seed_history(&h._dir.path().join("history.db"));
    assert_eq!(ids.len(), 2);
    let viewer = h.client(Auth::Token(h.viewer.clone()));
    let list: AlertList = viewer.get_json("/api/v1/alerts").await.expect("alerts");
    let subjects: Vec<&str> = list.conditions.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "tcp 0.0.0.0:6379 <script>x</script> on web-1",
            "tcp 0.0.0.0:8080 on web-1"
        ],
        "high before medium"
    );
    let redis = list.conditions[0].id;
    let ack = |reason: &str, until: Option<OffsetDateTime>| AckRequest {
        schema: SCHEMA.into(),
        reason: reason.into(),
        until,
    };

    // A viewer may not; a reason is required; the past is refused; an
    // unknown condition is not found.
    let denied = viewer
        .post_json::<_, ConditionDoc>(
            &format!("/api/v1/conditions/{redis}/ack"),
            &ack("mine", None),
        )
        .await
        .expect_err("a viewer acknowledges");
    assert_eq!(denied.code(), Some("forbidden"));
    let admin = h.admin();
    for (body, code) in [
        (ack("  ", None), "bad_request"),
        (
            ack(
                "later",
                Some(OffsetDateTime::now_utc() - time::Duration::hours(1)),
            ),
            "bad_request",
        ),
    ] {
        let err = admin
            .post_json::<_, ConditionDoc>(&format!("/api/v1/conditions/{redis}/ack"), &body)
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Some(code), "{err}");
    }
    let unknown = admin
        .post_json::<_, ConditionDoc>("/api/v1/conditions/999999/ack", &ack("x", None))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Some("not_found"));

    let until = OffsetDateTime::now_utc() + time::Duration::days(7);
    let acked: ConditionDoc = admin
        .post_json(
            &format!("/api/v1/conditions/{redis}/ack"),
            &ack("moving it behind the VPN this week", Some(until)),
        )
        .await
        .expect("ack");
    assert_eq!(acked.id, redis);
    let list: AlertList = viewer.get_json("/api/v1/alerts").await.expect("alerts");
    assert_eq!(list.conditions.len(), 2);
    assert_eq!(
        list.conditions[1].id, redis,
        "an acknowledged condition goes last"
    );
    assert!(list.conditions[1].acknowledged_until.is_some());
    assert!(list.conditions[0].acknowledged_until.is_none());

    let trail: TrailList = viewer.get_json("/api/v1/trail").await.expect("trail");
    let entry = trail
        .entries
        .iter()
        .find(|e| e.action == "alert.ack")
        .expect("an alert.ack trail entry");
    assert_eq!(entry.actor, "admin");
    assert!(
        entry.subject.contains(&format!("condition {redis}")),
        "{entry:?}"
    );
    assert!(
        entry
            .reason
            .starts_with("moving it behind the VPN this week"),
        "{entry:?}"
    );

    // The monitor's own record of who acknowledged it.
    let history = rusqlite::Connection::open(h._dir.path().join("history.db")).expect("history");
    let acks: i64 = history
        .query_row(
            "SELECT count(*) FROM monitor_acks WHERE acked_by = 'admin'",
            [],
            |row| row.get(0),
        )
        .expect("acks");
    assert_eq!(acks, 1);
}

#[tokio::test]
async fn a_server_without_a_monitor_says_so() {
    let h = Harness::start(false, Limits::default()).await;
    let err = h
        .client(Auth::Token(h.viewer.clone()))
        .get_json::<AlertList>("/api/v1/alerts")
        .await
        .expect_err("no monitor");
    assert_eq!(err.code(), Some("no_monitor"));
}
