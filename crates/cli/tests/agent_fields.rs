//! The agent and the server agree on the optional report fields: the
//! agent's queue and flush (`perimeter_agent`) against a real server on
//! loopback (`perimeter_server::serve`), in one process.
//!
//! A listener's reach goes out only once the server's answer said it takes
//! it; a report carrying it that the server refuses (what an older server,
//! which knows no `reach`, answers) is sent again without it, and the agent
//! leaves it out until a server's answer names it again. The refusal is
//! provoked here with a reach this server refuses (not a prefix), which takes
//! the agent down the same path an older server's refusal does.

use std::time::Duration;

use perimeter_agent::{Agent, AgentConfig};
use perimeter_api::client::{ApiClient, Auth, Trust};
use perimeter_api::{HostDetail, HostState, ListenerDoc, ReachDoc};
use perimeter_server::{Limits, ServerConfig, TlsSource, new_token, serve};
use perimeter_store::fleet::{FleetStore, Role, SqliteFleet};
use time::OffsetDateTime;

const SECRET: &str = "an-enrolment-secret-for-tests";

fn state(reach: &[&str]) -> HostState {
    let mut state = HostState {
        hostname: "web-1".into(),
        listeners: vec![ListenerDoc {
            netns: "host".into(),
            protocol: "tcp".into(),
            address: "0.0.0.0".into(),
            port: 6379,
            scope: "wildcard".into(),
            owners: Vec::new(),
            reach: Some(ReachDoc {
                allowed: reach.iter().map(|p| (*p).to_owned()).collect(),
                undecided: Vec::new(),
            }),
        }],
        findings: Vec::new(),
    };
    state.canonicalise();
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listeners_reach_goes_to_a_server_that_accepts_it_and_a_refusal_drops_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = SqliteFleet::open(&dir.path().join("server.db")).expect("store");
    let now = OffsetDateTime::now_utc();
    store
        .add_user("admin", Role::Admin, "unused", "test", now)
        .expect("admin");
    let admin = new_token();
    store
        .add_token(&admin.hash, "admin", "test", now, None)
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
        require_acceptance: false,
        limits: Limits::default(),
        monitor_history: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve(listener, tls.config, Box::new(store), config, async move {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    let url = format!("https://{addr}");
    let admin = ApiClient::new(&url, &trust, Auth::Token(admin.token)).expect("client");

    let mut agent = Agent::new(AgentConfig {
        server: url.clone(),
        trust: trust.clone(),
        state_dir: dir.path().join("agent"),
        enrol_secret: Some(SECRET.into()),
        interval: Duration::from_secs(300),
        queue_limit: 10,
        max_events: 10,
        machine_id: Some("m1".into()),
        hostname: "web-1".into(),
    })
    .expect("agent");
    agent.ensure_enrolled().await.expect("enrolled");
    let id = agent.agent_id().expect("an id").to_owned();
    let reach_on_server = |admin: &ApiClient| {
        let admin = admin.clone();
        let id = id.clone();
        async move {
            let detail: HostDetail = admin
                .get_json(&format!("/api/v1/hosts/{id}"))
                .await
                .expect("host");
            detail
                .listeners
                .first()
                .expect("the listener")
                .listener
                .reach
                .clone()
        }
    };

    // Nothing heard from the server yet: the first report leaves it out.
    agent.queue_report(state(&["10.0.0.0/8"])).expect("queue 1");
    let flushed = agent.flush().await.expect("flush 1");
    assert_eq!((flushed.acknowledged, flushed.queued), (1, 0));
    assert_eq!(reach_on_server(&admin).await, None);

    // The answer named it: the next report carries it.
    agent.queue_report(state(&["10.0.0.0/8"])).expect("queue 2");
    agent.flush().await.expect("flush 2");
    assert_eq!(
        reach_on_server(&admin).await,
        Some(
            state(&["10.0.0.0/8"]).listeners[0]
                .reach
                .clone()
                .expect("reach")
        )
    );

    // A report carrying it is refused: the state goes again, whole and
    // without it, and is taken; nothing stays queued.
    agent.queue_report(state(&["everyone"])).expect("queue 3");
    let flushed = agent.flush().await.expect("flush 3");
    assert_eq!(
        (flushed.acknowledged, flushed.queued),
        (1, 0),
        "{flushed:?}"
    );
    assert_eq!(reach_on_server(&admin).await, None);

    // Left out until a server's answer names it again (that last answer
    // did): the report after it carries it once more.
    agent
        .queue_report(state(&["192.0.2.0/24"]))
        .expect("queue 4");
    agent.flush().await.expect("flush 4");
    assert_eq!(
        reach_on_server(&admin).await,
        Some(
            state(&["192.0.2.0/24"]).listeners[0]
                .reach
                .clone()
                .expect("reach")
        )
    );

    let _ = stop.send(());
    server.await.expect("the server stopped");
}
