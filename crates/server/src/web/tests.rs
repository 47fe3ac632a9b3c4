//! The dashboard through its router, as a browser would drive it: sign-in,
//! sessions, CSRF, roles, escaping of hostile agent data, security headers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use perimeter_api::{FindingDoc, HostState, ListenerDoc, OwnerDoc, ReachDoc, UndecidedDoc};
use perimeter_store::fleet::{
    AgentStatus, FleetStore, NewAgent, NewReport, ReportOutcome, Role, SqliteFleet,
};
use time::OffsetDateTime;
use tower::ServiceExt as _;

use crate::{AppState, Limits, ServerConfig};

const PASSWORD: &str = "correct horse battery staple";
const HOSTILE: &str = "<script>alert(1)</script>\"'&\u{1b}[31m";

fn listener(port: u16, address: &str, scope: &str, owner: OwnerDoc) -> ListenerDoc {
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

fn owner(name: &str, exe: &str, package: Option<&str>) -> OwnerDoc {
    OwnerDoc {
        pid: 4242,
        name: name.into(),
        exe: Some(exe.into()),
        package: package.map(str::to_owned),
        user: "redis".into(),
    }
}

/// A store with three people and one host whose state holds an unapproved
/// Redis, a hostile unpackaged process and a critical finding.
fn store() -> (SqliteFleet, String) {
    let mut store = SqliteFleet::open_in_memory().expect("store");
    let now = OffsetDateTime::now_utc();
    let hash = crate::hash_password(PASSWORD).expect("hash");
    for (name, role) in [
        ("vera", Role::Viewer),
        ("alice", Role::Approver),
        ("root", Role::Admin),
    ] {
        store
            .add_user(name, role, &hash, "test", now)
            .expect("user");
    }
    let id = "ag_0123456789abcdef".to_owned();
    store
        .enrol_agent(&NewAgent {
            id: id.clone(),
            public_key: vec![7; 32],
            hostname: format!("web-1{HOSTILE}"),
            status: AgentStatus::Accepted,
            enrolled_at: now,
        })
        .expect("enrol");
    // Redis reachable from everyone, the hostile process from one range
    // and, behind a rule perimeter cannot evaluate, maybe another; the
    // loopback listener carries none.
    let mut redis = listener(
        6379,
        "0.0.0.0",
        "wildcard",
        owner(
            "redis-server",
            "/usr/bin/redis-server",
            Some("redis-server"),
        ),
    );
    redis.reach = Some(ReachDoc {
        allowed: vec!["0.0.0.0/0".into()],
        undecided: Vec::new(),
    });
    let mut hostile = listener(
        31337,
        "10.0.0.5",
        "private",
        owner(HOSTILE, "/tmp/\"><img src=x onerror=alert(2)>", None),
    );
    hostile.reach = Some(ReachDoc {
        allowed: vec!["10.0.0.0/8".into()],
        undecided: vec![UndecidedDoc {
            sources: "192.168.0.0/16".into(),
            reason: format!("a match on cgroup {HOSTILE}"),
        }],
    });
    let state = HostState {
        hostname: "web-1".into(),
        listeners: vec![
            redis,
            hostile,
            listener(
                5432,
                "127.0.0.1",
                "loopback",
                owner(
                    "postgres",
                    "/usr/lib/postgresql/15/bin/postgres",
                    Some("postgresql-15"),
                ),
            ),
        ],
        findings: vec![FindingDoc {
            rule: "redis.no-auth".into(),
            severity: "critical".into(),
            subject: "tcp 0.0.0.0:6379".into(),
            message: format!("Redis answers without a password {HOSTILE}"),
            evidence: vec![format!("PING -> +PONG {HOSTILE}")],
            remedy: "set requirepass".into(),
        }],
    };
    let outcome = store
        .record_report(&NewReport {
            agent_id: id.clone(),
            seq: 1,
            digest: "d1".into(),
            hostname: "web-1".into(),
            taken_at: now,
            received_at: now,
            state: Some(serde_json::to_string(&state).expect("json")),
            events: vec![
                serde_json::json!({"at": now.unix_timestamp(), "kind": "exec", "summary": HOSTILE})
                    .to_string(),
            ],
        })
        .expect("report");
    assert_eq!(outcome, ReportOutcome::Stored);
    (store, id)
}

struct Harness {
    app: axum::Router,
    state: Arc<AppState>,
    agent_id: String,
}

fn harness() -> Harness {
    harness_with(None)
}

/// With a monitor whose history is `history`.
fn harness_with(history: Option<std::path::PathBuf>) -> Harness {
    let (store, agent_id) = store();
    let state = Arc::new(AppState::new(
        Box::new(store),
        ServerConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            enrol_secret: None,
            require_acceptance: false,
            limits: Limits::default(),
            monitor_history: history,
        },
    ));
    let app = super::router(Arc::clone(&state));
    Harness {
        app,
        state,
        agent_id,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// The value of the first hidden input named `name`.
    fn hidden(&self, name: &str) -> String {
        let needle = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&needle).expect("the field") + needle.len();
        let end = self.body[start..].find('"').expect("its end") + start;
        self.body[start..end].to_owned()
    }
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.expect("answer");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .expect("body");
        Answer {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).expect("utf-8"),
        }
    }

    async fn get(&self, path: &str, session: Option<&str>) -> Answer {
        let mut request = Request::get(path);
        if let Some(session) = session {
            request = request.header(header::COOKIE, format!("perimeter_session={session}"));
        }
        self.send(request.body(Body::empty()).expect("request"))
            .await
    }

    async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> Answer {
        let body = form
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    super::html::url_component(k),
                    super::html::url_component(v)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, cookie)
            .header(header::HOST, "dash.example")
            .body(Body::from(body))
            .expect("request");
        self.send(request).await
    }

    async fn try_login(&self, user: &str, password: &str) -> Answer {
        let page = self.get("/login", None).await;
        let token = page.hidden("login_token");
        self.post(
            "/login",
            &format!("perimeter_login={token}"),
            &[
                ("login_token", &token),
                ("user", user),
                ("password", password),
            ],
        )
        .await
    }

    /// Signs in; the session id and the CSRF token of its pages.
    async fn login(&self, user: &str) -> (String, String) {
        let answer = self.try_login(user, PASSWORD).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        let cookie = answer
            .set_cookie("perimeter_session")
            .expect("session cookie");
        let id = cookie
            .trim_start_matches("perimeter_session=")
            .split(';')
            .next()
            .expect("value")
            .to_owned();
        let page = self.get("/", Some(&id)).await;
        assert_eq!(page.status, StatusCode::OK);
        let csrf = page.hidden("csrf");
        (id, csrf)
    }

    fn approvals_in_store(&self) -> usize {
        self.state
            .store
            .lock()
            .expect("lock")
            .approvals(false)
            .expect("approvals")
            .len()
    }
}

fn approve_form<'a>(agent_id: &'a str, csrf: &'a str, reason: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("host", agent_id),
        ("netns", "host"),
        ("protocol", "tcp"),
        ("address", "0.0.0.0"),
        ("port", "6379"),
        ("scope", "host"),
        ("reason", reason),
        ("expires", ""),
    ]
}

#[tokio::test]
async fn pages_need_a_session_and_carry_the_security_headers() {
    let h = harness();
    for path in ["/", "/approvals", "/changes", "/hosts/ag_0123456789abcdef"] {
        let answer = h.get(path, None).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(answer.location(), "/login", "{path}");
        let forged = h.get(path, Some(&"ab".repeat(32))).await;
        assert_eq!(forged.location(), "/login", "{path}: an unknown session");
    }
    let login = h.get("/login", None).await;
    assert_eq!(login.status, StatusCode::OK);
    let csp = login.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("csp");
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(login.headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(login.headers[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(login.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(login.headers[header::CACHE_CONTROL], "no-store");
    let css = h.get("/static/style.css", None).await;
    assert_eq!(css.status, StatusCode::OK, "assets need no session");
    assert!(
        css.headers[header::CONTENT_TYPE]
            .to_str()
            .expect("type")
            .starts_with("text/css")
    );
    assert_eq!(
        h.get("/static/../Cargo.toml", None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn sign_in_sets_a_strict_cookie_and_refuses_alike_unknown_and_wrong() {
    let h = harness();
    let wrong = h.try_login("alice", "not the password at all").await;
    let unknown = h.try_login("nobody", "not the password at all").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("wrong user name or password"));
    // The same page but for the name typed and the form's fresh token.
    let same = |answer: &Answer, name: &str| {
        answer
            .body
            .replace(name, "X")
            .replace(&answer.hidden("login_token"), "T")
    };
    assert_eq!(
        same(&wrong, "alice"),
        same(&unknown, "nobody"),
        "the same answer"
    );
    assert!(wrong.set_cookie("perimeter_session").is_none());

    // Without the login form's own token (a cross-site post): refused.
    let forged = h
        .post(
            "/login",
            "",
            &[
                ("user", "alice"),
                ("password", PASSWORD),
                ("login_token", "x"),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let ok = h.try_login("alice", PASSWORD).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location(), "/");
    let cookie = ok.set_cookie("perimeter_session").expect("cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }

    let (session, csrf) = h.login("alice").await;
    // Logout needs the CSRF token, then ends the session.
    let refused = h
        .post(
            "/logout",
            &format!("perimeter_session={session}"),
            &[("csrf", "nope")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(h.get("/", Some(&session)).await.status, StatusCode::OK);
    let out = h
        .post(
            "/logout",
            &format!("perimeter_session={session}"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(h.get("/", Some(&session)).await.location(), "/login");
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_user_name() {
    let h = harness();
    for _ in 0..super::MAX_FAILURES_PER_USER {
        let answer = h.try_login("root", "guess guess guess").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let blocked = h.try_login("root", PASSWORD).await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(blocked.body.contains("too many failed sign-ins"));
    assert!(blocked.set_cookie("perimeter_session").is_none());
}

#[tokio::test]
async fn hostile_agent_values_render_as_text_on_every_page() {
    let h = harness();
    let (session, _) = h.login("root").await;
    let pages = [
        "/".to_owned(),
        "/approvals".to_owned(),
        "/changes".to_owned(),
        format!("/hosts/{}", h.agent_id),
    ];
    for path in &pages {
        let page = h.get(path, Some(&session)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(!page.body.contains("<script>alert"), "{path}");
        assert!(!page.body.contains("<img"), "{path}");
        assert!(!page.body.contains('\u{1b}'), "{path}");
        assert_eq!(
            page.body.matches("<script").count(),
            1,
            "{path}: only app.js"
        );
        assert!(
            page.body
                .contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;\\u{1b}[31m"),
            "{path}"
        );
    }
    let overview = h.get("/", Some(&session)).await;
    // The worst first: the unapproved Redis leads the problems.
    let problems = &overview.body[overview
        .body
        .find("<ol class=\"problems\">")
        .expect("problems")..];
    let redis = problems.find("0.0.0.0:6379").expect("redis listed");
    let finding = problems.find("sev-critical").expect("the finding listed");
    assert!(redis < finding);
    assert!(problems.contains("UNPACKAGED"));
    let host = h
        .get(&format!("/hosts/{}", h.agent_id), Some(&session))
        .await;
    assert!(host.body.contains("UNPACKAGED"));
    assert!(host.body.contains("redis-server"));
    assert!(host.body.contains("set requirepass"));
}

/// The cell of the host page's listener table for `port`.
fn reach_of_port(page: &str, port: u16) -> String {
    page.split(&format!("<tr data-port=\"{port}\">"))
        .nth(1)
        .and_then(|row| row.split("<td class=\"reach\">").nth(1))
        .and_then(|cell| cell.split("</td>").next())
        .unwrap_or_else(|| panic!("no reach cell for port {port}: {page}"))
        .to_owned()
}

#[tokio::test]
async fn the_host_page_shows_whom_the_firewall_lets_through_to_each_listener() {
    let h = harness();
    let (vera, _) = h.login("vera").await;
    let host = h.get(&format!("/hosts/{}", h.agent_id), Some(&vera)).await;
    assert_eq!(host.status, StatusCode::OK, "{}", host.body);
    assert!(host.body.contains("<th>Reachable from</th>"));
    assert_eq!(
        reach_of_port(&host.body, 6379),
        "<strong class=\"bad\">everyone</strong>"
    );
    assert_eq!(
        reach_of_port(&host.body, 31337),
        "<code>10.0.0.0/8</code><br><small>unknown for <code>192.168.0.0/16</code>: \
         a match on cgroup &lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;\\u{1b}[31m</small>"
    );
    assert_eq!(
        reach_of_port(&host.body, 5432),
        "<span class=\"quiet\">this host only</span>"
    );
}

#[tokio::test]
async fn roles_and_csrf_guard_every_change() {
    let h = harness();
    let id = h.agent_id.clone();

    // A viewer sees no approve form and is refused the post with a page.
    let (vera, vera_csrf) = h.login("vera").await;
    let page = h.get("/approvals", Some(&vera)).await;
    assert!(!page.body.contains("action=\"/approvals\""));
    let refused = h
        .post(
            "/approvals",
            &format!("perimeter_session={vera}"),
            &approve_form(&id, &vera_csrf, "viewer tries"),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused
            .body
            .contains("this needs the approver role; vera has viewer")
    );
    assert!(
        refused.headers[header::CONTENT_TYPE]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );

    // An approver with another session's token, or from another site: refused.
    let (alice, alice_csrf) = h.login("alice").await;
    let cross = h
        .post(
            "/approvals",
            &format!("perimeter_session={alice}"),
            &approve_form(&id, &vera_csrf, "wrong token"),
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert!(cross.body.contains("CSRF"));
    let request = Request::post("/approvals")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, format!("perimeter_session={alice}"))
        .header(header::HOST, "dash.example")
        .header(header::ORIGIN, "https://evil.example")
        .body(Body::from(format!("csrf={alice_csrf}&host={id}&netns=host&protocol=tcp&address=0.0.0.0&port=6379&scope=host&reason=x")))
        .expect("request");
    assert_eq!(h.send(request).await.status, StatusCode::FORBIDDEN);
    let request = Request::post("/approvals")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, format!("perimeter_session={alice}"))
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(format!("csrf={alice_csrf}&host={id}&netns=host&protocol=tcp&address=0.0.0.0&port=6379&scope=host&reason=x")))
        .expect("request");
    assert_eq!(h.send(request).await.status, StatusCode::FORBIDDEN);
    // A reason is required.
    let no_reason = h
        .post(
            "/approvals",
            &format!("perimeter_session={alice}"),
            &approve_form(&id, &alice_csrf, "   "),
        )
        .await;
    assert_eq!(no_reason.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.approvals_in_store(), 0);

    // The approver's own post goes through the API's validation and store.
    let added = h
        .post(
            "/approvals",
            &format!("perimeter_session={alice}"),
            &approve_form(&id, &alice_csrf, "the cache of the web tier <b>"),
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    assert_eq!(added.location(), "/approvals?added=1");
    assert_eq!(h.approvals_in_store(), 1);
    let host = h.get(&format!("/hosts/{id}"), Some(&alice)).await;
    let row = &host.body[host.body.find("data-port=\"6379\"").expect("row")..];
    let row = &row[..row.find("</tr>").expect("end")];
    assert!(row.contains("verdict-ok"), "{row}");
    assert!(
        row.contains("by alice") && row.contains("the cache of the web tier &lt;b&gt;"),
        "{row}"
    );

    // Accepting or revoking agents is the administrator's.
    let refused = h
        .post(
            &format!("/hosts/{id}/revoke"),
            &format!("perimeter_session={alice}"),
            &[("csrf", &alice_csrf), ("reason", "decommissioned")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let (root, root_csrf) = h.login("root").await;
    let revoked = h
        .post(
            &format!("/hosts/{id}/revoke"),
            &format!("perimeter_session={root}"),
            &[("csrf", &root_csrf), ("reason", "decommissioned")],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    let trail = h
        .state
        .store
        .lock()
        .expect("lock")
        .trail(10)
        .expect("trail");
    assert_eq!(trail[0].action, "agent.revoke");
    assert_eq!(trail[0].actor, "root");
    assert_eq!(trail[1].action, "approval.add");
    assert_eq!(trail[1].actor, "alice");

    // The approver revokes the approval, with a reason.
    let revoke = h
        .post(
            "/approvals/1/revoke",
            &format!("perimeter_session={alice}"),
            &[
                ("csrf", &alice_csrf),
                ("reason", "moved to a private address"),
            ],
        )
        .await;
    assert_eq!(revoke.status, StatusCode::SEE_OTHER);
    assert_eq!(h.approvals_in_store(), 0);
    let changes = h.get("/changes?kind=approval&host=", Some(&alice)).await;
    assert!(changes.body.contains("approval.revoke"));
    assert!(changes.body.contains("moved to a private address"));
    assert!(!changes.body.contains("agent.revoke"), "filtered by kind");
}

#[tokio::test]
async fn the_alerts_page_lists_conditions_as_text_and_an_approver_acknowledges_one() {
    use perimeter_store::{ConditionRow, JobKind, MonitorStore as _, SqliteStore};
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("history.db");
    let now = OffsetDateTime::now_utc();
    let id = {
        let mut history = SqliteStore::open(&path).expect("history");
        let run = history
            .begin_run("fleet", JobKind::Fleet, now)
            .expect("run");
        let row = ConditionRow {
            id: 0,
            job: String::new(),
            key: "fleet a listener host tcp/0.0.0.0:6379".into(),
            kind: "listener-unapproved".into(),
            severity: "high".into(),
            subject: format!("tcp 0.0.0.0:6379 on web-1{HOSTILE}"),
            expected: false,
            first_seen: now,
            last_seen: now,
            absent_runs: 0,
            acked_until: None,
        };
        history
            .complete_run(run, now, None, None, &[row], None)
            .expect("complete");
        history.open_conditions().expect("open")[0].id
    };
    let h = harness_with(Some(path.clone()));

    // A viewer reads the page, with the hostile subject as text, and no form.
    let (vera, vera_csrf) = h.login("vera").await;
    let page = h.get("/alerts", Some(&vera)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains(&format!("id=\"condition-{id}\"")));
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.body.contains("<script>alert(1)"));
    assert!(!page.body.contains("action=\"/alerts/"));
    let refused = h
        .post(
            &format!("/alerts/{id}/ack"),
            &format!("perimeter_session={vera}"),
            &[("csrf", &vera_csrf), ("reason", "mine"), ("until", "7d")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // An approver: a reason and a known duration are required, then it holds.
    let (alice, alice_csrf) = h.login("alice").await;
    let page = h.get("/alerts", Some(&alice)).await;
    assert!(page.body.contains(&format!("action=\"/alerts/{id}/ack\"")));
    for (reason, until) in [("  ", "7d"), ("known", "a century")] {
        let bad = h
            .post(
                &format!("/alerts/{id}/ack"),
                &format!("perimeter_session={alice}"),
                &[("csrf", &alice_csrf), ("reason", reason), ("until", until)],
            )
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{reason} {until}");
    }
    let done = h
        .post(
            &format!("/alerts/{id}/ack"),
            &format!("perimeter_session={alice}"),
            &[
                ("csrf", &alice_csrf),
                ("reason", "moving it behind the VPN"),
                ("until", "7d"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(
        done.location(),
        format!("/alerts?acked={id}#condition-{id}")
    );
    let history = SqliteStore::open_read_only(&path).expect("history");
    let until = history.open_conditions().expect("open")[0]
        .acked_until
        .expect("acknowledged");
    assert!(until > now + time::Duration::days(6) && until < now + time::Duration::days(8));
    let trail = h
        .state
        .store
        .lock()
        .expect("store")
        .trail(10)
        .expect("trail");
    assert!(
        trail
            .iter()
            .any(|e| e.action == "alert.ack" && e.actor == "alice"),
        "{trail:?}"
    );
    let page = h.get(&format!("/alerts?acked={id}"), Some(&alice)).await;
    assert!(page.body.contains(&format!("Condition {id} acknowledged.")));
    assert!(!page.body.contains(&format!("action=\"/alerts/{id}/ack\"")));
    // Who acknowledged it, when (a <time> the reader's zone applies to) and
    // why, in the condition's row.
    let row = page
        .body
        .split(&format!("<tr id=\"condition-{id}\""))
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .expect("the condition's row");
    assert!(
        row.contains("<small class=\"acknowledgement\">by alice on <time datetime=\""),
        "{row}"
    );
    assert!(
        row.contains("<span class=\"reason\">moving it behind the VPN</span>"),
        "{row}"
    );

    // A hostile reason renders as text, and the latest acknowledgement is
    // the one shown. (A reason with control characters is refused.)
    const HOSTILE_REASON: &str = "<script>alert(1)</script>\"'&";
    let again = h
        .post(
            &format!("/alerts/{id}/ack"),
            &format!("perimeter_session={alice}"),
            &[
                ("csrf", &alice_csrf),
                ("reason", HOSTILE_REASON),
                ("until", "30d"),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    let page = h.get("/alerts", Some(&vera)).await;
    assert!(!page.body.contains("<script>alert(1)"));
    let row = page
        .body
        .split(&format!("<tr id=\"condition-{id}\""))
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .expect("the condition's row");
    assert!(
        row.contains("<span class=\"reason\">&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{row}"
    );
    assert!(!row.contains("moving it behind the VPN"), "{row}");
    // The API tells the same.
    let list = crate::alerts::list(&h.state, 10).await.expect("list");
    let ack = list.conditions[0]
        .acknowledgement
        .as_ref()
        .expect("who acknowledged it");
    assert_eq!(
        (ack.by.as_str(), ack.reason.as_str()),
        ("alice", HOSTILE_REASON)
    );
}

#[tokio::test]
async fn the_trends_page_offers_its_ranges_as_links_and_refuses_an_unknown_one() {
    let h = harness();
    // Signed out, even a bad range goes to the sign-in page first.
    let anonymous = h.get("/trends?range=1y", None).await;
    assert_ne!(anonymous.status, StatusCode::BAD_REQUEST);
    assert_ne!(anonymous.status, StatusCode::OK);

    let (vera, _) = h.login("vera").await;
    for (path, current, cadence) in [
        ("/trends", "48 hours", "Hour by hour over the last 48 hours"),
        ("/trends?range=48h", "48 hours", "Hour by hour"),
        (
            "/trends?range=7d",
            "7 days",
            "Every six hours over the last 7 days",
        ),
        (
            "/trends?range=30d",
            "30 days",
            "Day by day (at midnight UTC) over the last 30 days",
        ),
    ] {
        let page = h.get(path, Some(&vera)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(
            page.body
                .contains(&format!("<strong aria-current=\"page\">{current}</strong>")),
            "{path}"
        );
        assert!(page.body.contains(cadence), "{path}");
        // The other ranges are links to paste.
        for (value, label) in [("48h", "48 hours"), ("7d", "7 days"), ("30d", "30 days")] {
            if label != current {
                assert!(
                    page.body
                        .contains(&format!("<a href=\"/trends?range={value}\">{label}</a>")),
                    "{path}: {value}"
                );
            }
        }
        assert!(page.body.contains("environment") || page.body.contains("hosts in no environment"));
    }
    for bad in ["1y", "7D", "<script>alert(1)</script>", ""] {
        let page = h
            .get(
                &format!(
                    "/trends?range={}",
                    bad.replace('<', "%3C").replace('>', "%3E")
                ),
                Some(&vera),
            )
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(page.body.contains("choose 48h, 7d or 30d"), "{}", page.body);
        assert!(!page.body.contains("<script>alert"), "{bad}");
    }
}

#[tokio::test]
async fn the_alerts_page_of_a_server_without_a_monitor_says_how_to_start_one() {
    let h = harness();
    let (vera, _) = h.login("vera").await;
    let page = h.get("/alerts", Some(&vera)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("runs no monitor"), "{}", page.body);
}

#[tokio::test]
async fn the_exposure_page_shows_unauthenticated_services_first_with_certificates_and_changes() {
    use perimeter_model::{
        AuthState, PortResult, PortState, Protocol, ScanInfo, ServiceInfo, TlsInfo,
    };
    use perimeter_store::{SqliteStore, Store as _};
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("history.db");
    let now = OffsetDateTime::now_utc();
    let port = |port: u16, service: ServiceInfo| PortResult {
        address: "198.18.0.7".parse().expect("address"),
        port,
        protocol: Protocol::Tcp,
        state: PortState::Open,
        service: Some(service),
        findings: Vec::new(),
    };
    let mut https = ServiceInfo::named("https");
    https.product = Some(format!("nginx{HOSTILE}"));
    https.tls = Some(TlsInfo {
        subject: format!("CN=www{HOSTILE}"),
        issuer: "CN=lab CA".into(),
        not_after: Some(now + time::Duration::days(3)),
        subject_alt_names: Vec::new(),
    });
    let mut redis = ServiceInfo::named("redis");
    redis.auth = AuthState::None;
    let (first, second) = {
        let mut store = SqliteStore::open(&path).expect("history");
        let mut scan = |results: Vec<PortResult>, minutes: i64| {
            let info = ScanInfo {
                id: 0,
                targets: vec!["198.18.0.0/24".into()],
                resolved: Vec::new(),
                excluded: Vec::new(),
                ports: "top:100".into(),
                profile: "normal".into(),
                seed: 7,
                options: BTreeMap::new(),
                started: now - time::Duration::minutes(minutes),
                finished: None,
                complete: false,
                n_probes: 0,
            };
            let id = store.begin_scan(&info).expect("begin");
            store.record_results(id, &results).expect("results");
            store
                .finish_scan(id, now - time::Duration::minutes(minutes - 1), true, 100)
                .expect("finish");
            id
        };
        let first = scan(vec![port(443, https.clone())], 60);
        let second = scan(vec![port(443, https), port(6379, redis)], 10);
        (first, second)
    };
    let h = harness_with(Some(path));
    let (vera, _) = h.login("vera").await;
    let page = h.get("/exposure", Some(&vera)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    let redis_at = body.find("data-port=\"6379\"").expect("redis listed");
    let https_at = body.find("data-port=\"443\"").expect("https listed");
    assert!(redis_at < https_at, "the unauthenticated Redis comes first");
    assert!(body.contains("<strong class=\"bad\">NONE</strong>"));
    assert!(
        body.contains("3 days left") || body.contains("2 days left"),
        "{body}"
    );
    assert!(
        body.contains("CN=www&lt;script&gt;"),
        "the certificate subject as text"
    );
    assert!(!body.contains("<script>alert(1)"));
    assert!(body.contains(&format!("href=\"/exposure/scans/{first}\"")));
    assert!(
        body.contains("opened"),
        "the diff against the scan before: {body}"
    );
    let one = h
        .get(&format!("/exposure/scans/{second}"), Some(&vera))
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert!(one.body.contains(&format!("id=\"scan-{second}\"")));
    let missing = h.get("/exposure/scans/999999", Some(&vera)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let nothing = harness();
    let (vera, _) = nothing.login("vera").await;
    let page = nothing.get("/exposure", Some(&vera)).await;
    assert!(page.body.contains("runs no monitor"));
}

#[tokio::test]
async fn an_administrator_sets_a_hosts_environment_from_its_page() {
    let h = harness();
    let id = h.agent_id.clone();
    let path = format!("/hosts/{id}/environment");
    let (alice, alice_csrf) = h.login("alice").await;
    let page = h.get(&format!("/hosts/{id}"), Some(&alice)).await;
    assert!(!page.body.contains(&format!("action=\"{path}\"")));
    let refused = h
        .post(
            &path,
            &format!("perimeter_session={alice}"),
            &[("csrf", &alice_csrf), ("environment", "prod")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let (root, root_csrf) = h.login("root").await;
    let page = h.get(&format!("/hosts/{id}"), Some(&root)).await;
    assert!(page.body.contains(&format!("action=\"{path}\"")));
    let set = h
        .post(
            &path,
            &format!("perimeter_session={root}"),
            &[("csrf", &root_csrf), ("environment", " prod ")],
        )
        .await;
    assert_eq!(set.status, StatusCode::SEE_OTHER, "{}", set.body);
    let environment = |h: &Harness| {
        h.state
            .store
            .lock()
            .expect("store")
            .agent(&id)
            .expect("agent")
            .expect("known")
            .environment
    };
    assert_eq!(environment(&h).as_deref(), Some("prod"));
    let page = h.get(&format!("/hosts/{id}"), Some(&root)).await;
    assert!(page.body.contains("value=\"prod\""));
    // Empty: no environment.
    let cleared = h
        .post(
            &path,
            &format!("perimeter_session={root}"),
            &[("csrf", &root_csrf), ("environment", "")],
        )
        .await;
    assert_eq!(cleared.status, StatusCode::SEE_OTHER);
    assert_eq!(environment(&h), None);
}

#[tokio::test]
async fn changes_filter_by_environment_and_severity() {
    let h = harness();
    let id = h.agent_id.clone();
    h.state
        .store
        .lock()
        .expect("store")
        .set_agent_environment(&id, Some("prod"), "root", OffsetDateTime::now_utc())
        .expect("environment");
    // A second report: an exec from a memfd (critical) and a new listener
    // (medium), beside the first report's event that does not decode (info).
    let now = OffsetDateTime::now_utc();
    let event = |kind: &str, flags: &[&str]| {
        serde_json::to_string(&perimeter_api::Event {
            at: now,
            kind: kind.into(),
            summary: format!("{kind} on web-1"),
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
        })
        .expect("json")
    };
    let outcome = h
        .state
        .store
        .lock()
        .expect("store")
        .record_report(&NewReport {
            agent_id: id.clone(),
            seq: 2,
            digest: "d2".into(),
            hostname: "web-1".into(),
            taken_at: now,
            received_at: now,
            state: None,
            events: vec![
                event("exec", &["memfd", "deleted"]),
                event("listener.new", &[]),
            ],
        })
        .expect("report");
    assert_eq!(outcome, ReportOutcome::Stored);
    let (vera, _) = h.login("vera").await;
    let events = |body: &str| body.matches("<li id=\"event-").count();
    let all = h.get("/changes", Some(&vera)).await;
    assert_eq!(events(&all.body), 3, "{}", all.body);
    assert!(all.body.contains("<option value=\"prod\">prod</option>"));
    let critical = h.get("/changes?severity=critical", Some(&vera)).await;
    assert_eq!(events(&critical.body), 1, "{}", critical.body);
    assert!(critical.body.contains("exec on web-1"));
    assert!(
        critical.body.contains("Nothing recorded."),
        "no trail with a severity"
    );
    let medium = h.get("/changes?severity=medium", Some(&vera)).await;
    assert_eq!(events(&medium.body), 2);
    let prod = h.get("/changes?environment=prod", Some(&vera)).await;
    assert_eq!(events(&prod.body), 3);
    assert!(prod.body.contains("agent.environment"), "{}", prod.body);
    let dev = h.get("/changes?environment=dev", Some(&vera)).await;
    assert_eq!(events(&dev.body), 0);
    assert!(dev.body.contains("Nothing recorded."));
}

#[tokio::test]
async fn an_approver_rejects_a_pending_listener_and_it_stays_pending_with_the_reason() {
    let h = harness();
    let id = h.agent_id.clone();
    let reject = |csrf: &str, port: &'static str, reason: &str| -> Vec<(String, String)> {
        [
            ("csrf", csrf),
            ("host", id.as_str()),
            ("netns", "host"),
            ("protocol", "tcp"),
            ("address", "0.0.0.0"),
            ("port", port),
            ("reason", reason),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    };
    let post = |cookie: String, form: Vec<(String, String)>| {
        let h = &h;
        async move {
            let pairs: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            h.post("/approvals/reject", &cookie, &pairs).await
        }
    };
    let (vera, vera_csrf) = h.login("vera").await;
    let refused = post(
        format!("perimeter_session={vera}"),
        reject(&vera_csrf, "6379", "not mine to say"),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let (alice, alice_csrf) = h.login("alice").await;
    let page = h.get("/approvals", Some(&alice)).await;
    assert!(page.body.contains("action=\"/approvals/reject\""));
    // A listener the host did not report cannot be rejected; a reason is required.
    let unknown = post(
        format!("perimeter_session={alice}"),
        reject(&alice_csrf, "6380", "no such listener"),
    )
    .await;
    assert!(unknown.status.is_client_error(), "{}", unknown.status);
    let no_reason = post(
        format!("perimeter_session={alice}"),
        reject(&alice_csrf, "6379", "  "),
    )
    .await;
    assert_eq!(no_reason.status, StatusCode::BAD_REQUEST);

    let done = post(
        format!("perimeter_session={alice}"),
        reject(&alice_csrf, "6379", "a forgotten Redis <b>: remove it"),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let page = h.get("/approvals?rejected=6379", Some(&alice)).await;
    assert!(
        page.body.contains("REJECTED by alice"),
        "the pending row says who rejected it: {}",
        page.body
    );
    assert!(page.body.contains("a forgotten Redis &lt;b&gt;: remove it"));
    assert!(page.body.contains("The listener on port 6379 is rejected"));
    let trail = h
        .state
        .store
        .lock()
        .expect("store")
        .trail(10)
        .expect("trail");
    let entry = trail
        .iter()
        .find(|e| e.action == "listener.reject")
        .expect("a trail entry");
    assert_eq!(entry.subject, format!("{id} host tcp 0.0.0.0:6379"));
    assert_eq!(entry.actor, "alice");
    // The host's changes list it.
    let changes = h.get(&format!("/changes?host={id}"), Some(&alice)).await;
    assert!(changes.body.contains("listener.reject"), "{}", changes.body);
}

/// The overview's problems, from its list to the end of the page.
fn problems_of(page: &Answer) -> &str {
    page.body
        .find("<ol class=\"problems\">")
        .map_or("", |start| &page.body[start..])
}

#[tokio::test]
async fn the_overview_shows_a_new_approval_and_a_new_state_on_the_next_view() {
    let h = harness();
    let (alice, alice_csrf) = h.login("alice").await;
    let redis = "UNAPPROVED</span> <code>tcp 0.0.0.0:6379</code>";
    let before = h.get("/", Some(&alice)).await;
    assert!(problems_of(&before).contains(redis));
    assert!(problems_of(&before).contains("10.0.0.5:31337"));

    let added = h
        .post(
            "/approvals",
            &format!("perimeter_session={alice}"),
            &approve_form(&h.agent_id, &alice_csrf, "the session cache"),
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let approved = h.get("/", Some(&alice)).await;
    assert!(!problems_of(&approved).contains(redis));
    assert!(problems_of(&approved).contains("10.0.0.5:31337"));

    // A new state without the hostile listener.
    let now = OffsetDateTime::now_utc();
    let state = HostState {
        hostname: "web-1".into(),
        listeners: Vec::new(),
        findings: Vec::new(),
    };
    let outcome = h
        .state
        .store
        .lock()
        .expect("store")
        .record_report(&NewReport {
            agent_id: h.agent_id.clone(),
            seq: 2,
            digest: "d2".into(),
            hostname: "web-1".into(),
            taken_at: now,
            received_at: now,
            state: Some(serde_json::to_string(&state).expect("json")),
            events: Vec::new(),
        })
        .expect("report");
    assert_eq!(outcome, ReportOutcome::Stored);
    let quiet = h.get("/", Some(&alice)).await;
    assert!(
        quiet
            .body
            .contains("Nothing unexpected: every exposed listener is approved."),
        "{}",
        quiet.body
    );
}

#[tokio::test]
async fn the_overview_lists_the_worst_hosts_of_each_environment_and_all_on_request() {
    let h = harness();
    let now = OffsetDateTime::now_utc();
    {
        let mut store = h.state.store.lock().expect("store");
        // 120 hosts in production that never reported, beside web-1 (whose
        // key is sevens).
        for n in 0..120_u8 {
            let id = format!("ag_quiet{n:03}");
            store
                .enrol_agent(&NewAgent {
                    id: id.clone(),
                    public_key: vec![n + 128; 32],
                    hostname: format!("quiet-{n:03}"),
                    status: AgentStatus::Accepted,
                    enrolled_at: now,
                })
                .expect("enrol");
            store
                .set_agent_environment(&id, Some("production"), "root", now)
                .expect("environment");
        }
        store
            .set_agent_environment(&h.agent_id, Some("production"), "root", now)
            .expect("environment");
    }
    let (vera, _) = h.login("vera").await;
    let page = h.get("/", Some(&vera)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<strong>121</strong> hosts"));
    // The worst first: web-1 and its unapproved listeners lead its
    // environment's table, then 99 of the quiet ones.
    let table = &page.body[page.body.find("Environment production").expect("listed")..];
    assert!(table.find("web-1").expect("web-1") < table.find("quiet-000").expect("quiet-000"));
    assert_eq!(table.matches("<tr><td>").count(), 100);
    assert!(table.contains("and 21 more hosts in this environment"));
    assert!(table.contains("href=\"/?hosts=all\""));
    // Every environment is there, with no host left out of the totals.
    let all = h.get("/?hosts=all", Some(&vera)).await;
    let table = &all.body[all.body.find("Environment production").expect("listed")..];
    assert_eq!(table.matches("<tr><td>").count(), 121);
    assert!(!table.contains("more hosts in this environment"));
    // web-1's problems come first; the silent hosts' after.
    let problems = problems_of(&page);
    assert!(
        problems
            .find("UNAPPROVED</span> <code>tcp 0.0.0.0:6379")
            .expect("redis")
            < problems.find("has never reported").expect("the quiet ones")
    );
}

#[tokio::test]
async fn the_approvals_page_lists_a_bounded_number_of_pending_listeners() {
    let h = harness();
    let now = OffsetDateTime::now_utc();
    let state = HostState {
        hostname: "web-1".into(),
        listeners: (0..600)
            .map(|n| {
                listener(
                    10_000 + n,
                    "0.0.0.0",
                    "wildcard",
                    owner("svc", "/usr/sbin/svc", Some("svc")),
                )
            })
            .collect(),
        findings: Vec::new(),
    };
    let outcome = h
        .state
        .store
        .lock()
        .expect("store")
        .record_report(&NewReport {
            agent_id: h.agent_id.clone(),
            seq: 2,
            digest: "d2".into(),
            hostname: "web-1".into(),
            taken_at: now,
            received_at: now,
            state: Some(serde_json::to_string(&state).expect("json")),
            events: Vec::new(),
        })
        .expect("report");
    assert_eq!(outcome, ReportOutcome::Stored);
    let (alice, _) = h.login("alice").await;
    let page = h.get("/approvals", Some(&alice)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body.matches("<form class=\"approve\"").count(), 500);
    assert!(
        page.body
            .contains("600 listeners are pending on 1 host in all: the first 500 here"),
        "{}",
        page.body
    );
    let overview = h.get("/", Some(&alice)).await;
    assert!(
        overview
            .body
            .contains("<strong class=\"bad\">600</strong> unapproved")
    );
    assert!(overview.body.contains("and 592 more on <a href=\"/hosts/"));
}

#[test]
fn a_listener_no_one_reaches_says_nobody_and_one_without_its_reach_says_unknown() {
    let mut exposed = listener(
        8080,
        "0.0.0.0",
        "wildcard",
        owner("nginx", "/usr/sbin/nginx", Some("nginx")),
    );
    assert!(super::pages::reach_cell(&exposed).contains(">unknown</span>"));
    exposed.reach = Some(ReachDoc::default());
    assert_eq!(
        super::pages::reach_cell(&exposed),
        "<span class=\"ok\">nobody</span>"
    );
    exposed.reach = Some(ReachDoc {
        allowed: (0..10).map(|n| format!("10.{n}.0.0/16")).collect(),
        undecided: Vec::new(),
    });
    let cell = super::pages::reach_cell(&exposed);
    assert!(
        cell.ends_with("<code>10.7.0.0/16</code> and 2 more"),
        "{cell}"
    );
}
