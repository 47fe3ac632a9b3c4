//! The dashboard: server-rendered HTML pages on the same HTTPS server as the
//! API, for people who would rather look than read JSON.
//!
//! - Sign-in with the server's accounts (`server user add`): the password is
//!   checked with argon2 against the stored hash, an unknown name costs the
//!   same argon2 verification as a wrong password and gets the same answer,
//!   and failures are counted per source address and per user name
//!   ([`session::LoginAttempts`]). Sessions live in memory
//!   ([`session::Sessions`]) behind an HttpOnly, Secure, SameSite=Strict
//!   cookie.
//! - Every form that changes something carries the session's CSRF token, and
//!   a POST that the browser says comes from another site (`Sec-Fetch-Site`,
//!   `Origin`) is refused; the login form has its own double-submit token, so
//!   no other site can sign a browser in.
//! - Roles are the API's: a viewer reads, an approver adds and revokes
//!   approvals, an administrator accepts and revokes agents, checked with the
//!   same [`Principal::require`]; a refusal is a 403 page. Approvals are added
//!   through [`routes::fleet_approval`], the API's own validation.
//! - Every page has a strict Content-Security-Policy (no inline script or
//!   style; everything from /static), `X-Frame-Options: DENY`,
//!   `Referrer-Policy: no-referrer`, `X-Content-Type-Options: nosniff` and
//!   `Cache-Control: no-store`.
//! - Pages work without JavaScript; /static/app.js only shows times in the
//!   reader's time zone. Plots (/trends, the Exposure page) are inline SVG
//!   drawn here ([`plot`]), from the stored states and the monitor's scans.

mod exposure;
mod html;
mod overview_cache;
mod pages;
mod plot;
mod session;
mod trends;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use perimeter_store::fleet::{AgentStatus, Role};
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use self::html::{Esc, Reader};
use self::overview_cache::OverviewCache;
use self::session::{COOKIE, LoginAttempts, SessionLimits, Sessions};
use crate::AppState;
use crate::auth::{Principal, same_secret};
use crate::error::ApiError;
use crate::routes;

/// The largest form a page posts.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Hosts judged per batch while the overview's cache warms at start.
const WARM_BATCH: usize = 100;
/// The cookie that carries the login form's double-submit token.
const LOGIN_COOKIE: &str = "perimeter_login";
/// Failed logins counted over this window...
const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// ...at most this many from one source address...
const MAX_FAILURES_PER_ADDRESS: u32 = 20;
/// ...and this many for one user name.
const MAX_FAILURES_PER_USER: u32 = 10;
/// Password verifications at once: argon2 takes tens of milliseconds of CPU
/// and memory each, so a flood of logins queues rather than starves the API.
const MAX_VERIFICATIONS: usize = 2;

/// The Content-Security-Policy of every answer: nothing inline, nothing from
/// elsewhere, no frames, forms only to this server.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What the dashboard's handlers share.
pub(crate) struct Web {
    app: Arc<AppState>,
    sessions: Sessions,
    attempts: LoginAttempts,
    verifications: Semaphore,
    /// Each host's judgement as the overview last saw it.
    overview: OverviewCache,
    /// Each host's states as the Trends page counted them.
    trends: trends::TrendsCache,
}

type Shared = State<Arc<Web>>;

/// The dashboard's routes, to merge beside the API's.
pub(crate) fn router(app: Arc<AppState>) -> Router {
    let timeout = app.config.limits.request_timeout;
    // Made now, so the first sign-in with an unknown name takes no longer
    // than one with a known name.
    let _ = decoy_hash();
    let web = Arc::new(Web {
        app,
        sessions: Sessions::new(SessionLimits::default()),
        attempts: LoginAttempts::new(
            LOGIN_WINDOW,
            MAX_FAILURES_PER_ADDRESS,
            MAX_FAILURES_PER_USER,
        ),
        verifications: Semaphore::new(MAX_VERIFICATIONS),
        overview: OverviewCache::default(),
        trends: trends::TrendsCache::default(),
    });
    // The first view of a big fleet would judge every host at once (seconds
    // at 10,000): judge them now, a batch at a time, the store taken for one
    // batch only so reports go on being stored in between.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let warming = Arc::clone(&web);
        runtime.spawn(async move {
            let started = Instant::now();
            let mut n = 0;
            loop {
                let web = Arc::clone(&warming);
                let batch = warming
                    .app
                    .with_store(move |store| web.overview.warm(store, WARM_BATCH))
                    .await;
                match batch {
                    Ok(0) => break,
                    Ok(judged) => n += judged,
                    Err(err) => {
                        tracing::warn!("warming the overview: {}", err.message);
                        break;
                    }
                }
                tokio::task::yield_now().await;
            }
            tracing::info!(hosts = n, elapsed = ?started.elapsed(), "overview warmed");
            // Then the Trends page's counts, the same way.
            let started = Instant::now();
            let mut n = 0;
            loop {
                let web = Arc::clone(&warming);
                let batch = warming
                    .app
                    .with_store(move |store| web.trends.warm(store, WARM_BATCH))
                    .await;
                match batch {
                    Ok(0) => break,
                    Ok(read) => n += read,
                    Err(err) => {
                        tracing::warn!("warming the trends: {}", err.message);
                        break;
                    }
                }
                tokio::task::yield_now().await;
            }
            tracing::info!(hosts = n, elapsed = ?started.elapsed(), "trends warmed");
        });
    }
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/hosts/{id}", get(host_page))
        .route("/hosts/{id}/accept", post(accept_agent))
        .route("/hosts/{id}/revoke", post(revoke_agent))
        .route("/hosts/{id}/environment", post(set_environment))
        .route("/approvals", get(approvals_page).post(add_approval))
        .route("/approvals/{id}/revoke", post(revoke_approval))
        .route("/approvals/reject", post(reject_listener))
        .route("/exposure", get(exposure_page))
        .route("/exposure/scans/{id}", get(scan_page))
        .route("/alerts", get(alerts_page))
        .route("/alerts/{id}/ack", post(ack_condition))
        .route("/changes", get(changes_page))
        .route("/trends", get(trends_page))
        .route("/static/{name}", get(asset))
        .layer(axum::middleware::map_response(security_headers))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(web)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// A signed-in person on this request.
pub(crate) struct Viewer {
    pub(crate) user: String,
    pub(crate) role: Role,
    pub(crate) csrf: String,
    session_id: String,
}

impl Viewer {
    pub(crate) fn reader(&self) -> Reader<'_> {
        Reader {
            user: &self.user,
            role: self.role.as_str(),
            csrf: &self.csrf,
        }
    }

    /// The API's role check; a refusal as a page.
    fn refusal(&self, role: Role) -> Option<Response> {
        Principal {
            user: self.user.clone(),
            role: self.role,
        }
        .require(role)
        .err()
        .map(|err| error_page(&err, Some(self)))
    }

    fn can(&self, role: Role) -> bool {
        self.role >= role
    }
}

fn see_login() -> Response {
    Redirect::to("/login").into_response()
}

/// The person behind the session cookie, read afresh from the store on every
/// request: a disabled or removed account, or a changed role, counts at once.
async fn signed_in(web: &Arc<Web>, headers: &HeaderMap) -> Result<Viewer, Response> {
    let Some(id) = session::cookie_value(headers, COOKIE) else {
        return Err(see_login());
    };
    let Some(session) = web.sessions.get(id, Instant::now()) else {
        return Err(see_login());
    };
    let name = session.user.clone();
    let user = web
        .app
        .with_store(move |store| Ok(store.user(&name)?))
        .await
        .map_err(|err| error_page(&err, None))?;
    match user {
        Some(user) if !user.disabled => Ok(Viewer {
            user: user.name,
            role: user.role,
            csrf: session.csrf,
            session_id: id.to_owned(),
        }),
        _ => {
            web.sessions.remove(id);
            Err(see_login())
        }
    }
}

/// Whether a POST comes from a page of this server, as far as the browser
/// says: `Sec-Fetch-Site` (sent by current browsers) must be `same-origin`
/// (or `none`, typed by the person), and an `Origin` must be this server.
/// `Origin: null` says nothing: browsers send it for every form post from a
/// page with `Referrer-Policy: no-referrer`, which ours are. SameSite cookies
/// and the CSRF token are the main defence; this is the second.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    if origin.as_bytes() == b"null" {
        return true;
    }
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(HeaderValue::to_str),
    ) else {
        return false;
    };
    origin.strip_prefix("https://") == Some(host)
}

/// A signed-in person whose form is theirs: same origin, the session's CSRF
/// token.
async fn signed_form(web: &Arc<Web>, headers: &HeaderMap, csrf: &str) -> Result<Viewer, Response> {
    if !same_origin(headers) {
        return Err(plain_error(
            StatusCode::FORBIDDEN,
            "this form was posted from another site",
        ));
    }
    let viewer = signed_in(web, headers).await?;
    let view = session::SessionView {
        user: viewer.user.clone(),
        csrf: viewer.csrf.clone(),
    };
    if !session::csrf_matches(&view, csrf) {
        return Err(error_page(
            &ApiError::forbidden(
                "this form's CSRF token is not your session's: reload the page and try again",
            ),
            Some(&viewer),
        ));
    }
    Ok(viewer)
}

/// A form that carries the session's CSRF token.
trait Signed {
    fn csrf(&self) -> &str;
}

/// The form of a change a person makes: parsed, its CSRF token the
/// session's, and the person allowed `role`; else the answer to send.
async fn decision_form<F: Signed>(
    web: &Arc<Web>,
    headers: &HeaderMap,
    form: Result<Form<F>, FormRejection>,
    role: Role,
) -> Result<(F, Viewer), Response> {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return Err(form_error(&rejection, None)),
    };
    let viewer = signed_form(web, headers, form.csrf()).await?;
    if let Some(response) = viewer.refusal(role) {
        return Err(response);
    }
    Ok((form, viewer))
}

/// An error as a page with its status: a forbidden action, a bad form, a
/// missing host, the store out of reach.
fn error_page(err: &ApiError, viewer: Option<&Viewer>) -> Response {
    let title = err.status.canonical_reason().unwrap_or("Error").to_owned();
    let body = format!(
        "<h1>{}</h1><p class=\"error\">{}</p><p><a href=\"/\">Back to the overview</a></p>",
        Esc(&title),
        Esc(&err.message)
    );
    let reader = viewer.map(Viewer::reader);
    let page = html::page(&title, "", reader.as_ref(), &body);
    (err.status, html_headers(), page).into_response()
}

fn plain_error(status: StatusCode, message: &str) -> Response {
    error_page(&ApiError::new(status, "web", message), None)
}

fn form_error(rejection: &FormRejection, viewer: Option<&Viewer>) -> Response {
    error_page(
        &ApiError::new(
            rejection.status(),
            "bad_request",
            format!("the form could not be read: {}", rejection.body_text()),
        ),
        viewer,
    )
}

fn html_headers() -> [(header::HeaderName, &'static str); 1] {
    [(header::CONTENT_TYPE, "text/html; charset=utf-8")]
}

fn html_page(status: StatusCode, page: String) -> Response {
    (status, html_headers(), page).into_response()
}

// ---- static assets -------------------------------------------------------

async fn asset(Path(name): Path<String>) -> Response {
    let (content_type, body): (&str, &'static str) = match name.as_str() {
        "style.css" => (
            "text/css; charset=utf-8",
            include_str!("../../assets/style.css"),
        ),
        "app.js" => (
            "text/javascript; charset=utf-8",
            include_str!("../../assets/app.js"),
        ),
        "favicon.svg" => ("image/svg+xml", include_str!("../../assets/favicon.svg")),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

// ---- login ---------------------------------------------------------------

/// An argon2 hash no password matches in practice, verified against when the
/// user name is unknown, so that the answer takes as long as for a known one.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let password = hex::encode(rand::random::<[u8; 32]>());
        crate::auth::hash_password(&password).unwrap_or_default()
    })
}

fn cookie(name: &str, value: &str, path: &str, max_age: Duration) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        max_age.as_secs()
    )
}

fn login_form(token: &str, message: Option<&str>, user: &str) -> String {
    let mut body = String::from("<section class=\"login\"><h1>Sign in</h1>");
    if let Some(message) = message {
        body.push_str(&format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            Esc(message)
        ));
    }
    body.push_str(&format!(
        "<form id=\"login\" method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"login_token\" value=\"{}\">\
         <label>User name <input name=\"user\" autocomplete=\"username\" required maxlength=\"255\" value=\"{}\"></label>\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required maxlength=\"1024\"></label>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"hint\">Accounts are made with <code>perimeter server user add</code>.</p></section>",
        Esc(token),
        Esc(user)
    ));
    html::page("Sign in", "/login", None, &body)
}

async fn login_page(State(web): Shared, headers: HeaderMap) -> Response {
    if session::cookie_value(&headers, COOKIE)
        .and_then(|id| web.sessions.get(id, Instant::now()))
        .is_some()
    {
        return Redirect::to("/").into_response();
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let mut response = html_page(StatusCode::OK, login_form(&token, None, ""));
    if let Ok(value) = HeaderValue::from_str(&cookie(
        LOGIN_COOKIE,
        &token,
        "/login",
        Duration::from_secs(3600),
    )) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    login_token: String,
    user: String,
    password: String,
}

async fn login(
    State(web): Shared,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return form_error(&rejection, None),
    };
    if !same_origin(&headers) {
        return plain_error(
            StatusCode::FORBIDDEN,
            "this form was posted from another site",
        );
    }
    let cookie_token = session::cookie_value(&headers, LOGIN_COOKIE).unwrap_or("");
    if cookie_token.is_empty() || !same_secret(cookie_token, &form.login_token) {
        return plain_error(
            StatusCode::FORBIDDEN,
            "the sign-in form has expired: open /login again",
        );
    }
    let user_name = form.user.trim().to_owned();
    let refuse = |status: StatusCode, message: &str| {
        html_page(status, login_form(cookie_token, Some(message), &user_name))
    };
    if user_name.is_empty()
        || user_name.len() > 255
        || form.password.len() > 1024
        || user_name.chars().any(char::is_control)
    {
        return refuse(StatusCode::UNAUTHORIZED, "wrong user name or password");
    }
    let address = peer.map_or_else(
        || "unknown".to_owned(),
        |Extension(ConnectInfo(peer))| peer.ip().to_string(),
    );
    let now = Instant::now();
    if let Some(wait) = web.attempts.blocked(&address, &user_name, now) {
        tracing::warn!(%address, "dashboard login refused: too many failures");
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "too many failed sign-ins: try again in {} minutes",
                wait.as_secs().div_ceil(60).max(1)
            ),
        );
    }
    let name = user_name.clone();
    let user = match web
        .app
        .with_store(move |store| Ok(store.user(&name)?))
        .await
    {
        Ok(user) => user,
        Err(err) => return error_page(&err, None),
    };
    let hash = user.as_ref().map_or_else(
        || decoy_hash().to_owned(),
        |user| user.password_hash.clone(),
    );
    let Ok(_slot) = web.verifications.acquire().await else {
        return plain_error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    };
    let password = form.password;
    let verified =
        tokio::task::spawn_blocking(move || crate::auth::verify_password(&password, &hash))
            .await
            .unwrap_or(false);
    let Some(user) = user.filter(|_| verified) else {
        web.attempts.failed(&address, &user_name, now);
        tracing::info!(%address, "dashboard login failed");
        return refuse(StatusCode::UNAUTHORIZED, "wrong user name or password");
    };
    if user.disabled {
        return refuse(StatusCode::FORBIDDEN, "this account is disabled");
    }
    let new = web.sessions.create(&user.name, Instant::now());
    tracing::info!(user = %user.name, %address, "dashboard sign-in");
    let mut response = Redirect::to("/").into_response();
    let limits = web.sessions.limits();
    for value in [
        cookie(COOKIE, &new.id, "/", limits.absolute),
        cookie(LOGIN_COOKIE, "", "/login", Duration::ZERO),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(web): Shared,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return form_error(&rejection, None),
    };
    let viewer = match signed_form(&web, &headers, &form.csrf).await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    web.sessions.remove(&viewer.session_id);
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie(COOKIE, "", "/", Duration::ZERO)) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

// ---- pages ---------------------------------------------------------------

/// The overview's query: `hosts=all` lists every host of each environment.
#[derive(Debug, Deserialize)]
struct OverviewQuery {
    hosts: Option<String>,
}

async fn overview(
    State(web): Shared,
    headers: HeaderMap,
    Query(query): Query<OverviewQuery>,
) -> Response {
    let viewer = match signed_in(&web, &headers).await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    let cached = Arc::clone(&web);
    match web
        .app
        .with_store(move |store| cached.overview.overview(store))
        .await
    {
        Ok(fleet) => html_page(
            StatusCode::OK,
            pages::overview(
                &fleet,
                &viewer,
                OffsetDateTime::now_utc(),
                query.hosts.as_deref() == Some("all"),
            ),
        ),
        Err(err) => error_page(&err, Some(&viewer)),
    }
}

async fn host_page(State(web): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let viewer = match signed_in(&web, &headers).await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    match web
        .app
        .with_store(move |store| pages::load_host(store, &id))
        .await
    {
        Ok(host) => html_page(
            StatusCode::OK,
            pages::host(&host, &viewer, OffsetDateTime::now_utc()),
        ),
        Err(err) => error_page(&err, Some(&viewer)),
    }
}

#[derive(Debug, Deserialize)]
struct Notice {
    added: Option<i64>,
    revoked: Option<i64>,
    rejected: Option<u16>,
}

async fn approvals_page(
    State(web): Shared,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Response {
    let viewer = match signed_in(&web, &headers).await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    let notice = match (notice.added, notice.revoked, notice.rejected) {
        (Some(id), _, _) => Some(format!("Approval {id} added.")),
        (None, Some(id), _) => Some(format!("Approval {id} revoked.")),
        (None, None, Some(port)) => Some(format!(
            "The listener on port {port} is rejected: it stays pending until it is gone."
        )),
        (None, None, None) => None,
    };
    let cached = Arc::clone(&web);
    let loaded = web
        .app
        .with_store(move |store| {
            let fleet = pages::load_approvals(store, &cached.overview)?;
            let rejected = pages::rejections(store.trail(10_000)?);
            Ok((fleet, rejected))
        })
        .await;
    match loaded {
        Ok((fleet, rejected)) => html_page(
            StatusCode::OK,
            pages::approvals(&fleet, &rejected, &viewer, notice.as_deref()),
        ),
        Err(err) => error_page(&err, Some(&viewer)),
    }
}

async fn changes_page(
    State(web): Shared,
    headers: HeaderMap,
    Query(filter): Query<pages::ChangeFilter>,
) -> Response {
    let viewer = match signed_in(&web, &headers).await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    let query = filter.clone();
    match web
        .app
        .with_store(move |store| pages::load_changes(store, &query))
        .await
    {
        Ok(changes) => html_page(StatusCode::OK, pages::changes(&changes, &filter, &viewer)),
        Err(err) => error_page(&err, Some(&viewer)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckNotice {
    acked: Option<i64>,
}

async fn alerts_page(
    State(web): Shared,
    headers: HeaderMap,
    Query(notice): Query<AckNotice>,
) -> Response {
    let viewer = match signed_in(&web, &headers).await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    let notice = notice
        .acked
        .map(|id| format!("Condition {id} acknowledged."));
    let now = OffsetDateTime::now_utc();
    match crate::alerts::list(&web.app, 100).await {
        Ok(list) => html_page(
            StatusCode::OK,
            pages::alerts(Some(&list), &viewer, notice.as_deref(), now),
        ),
        Err(err) if err.code == "no_monitor" => html_page(
            StatusCode::OK,
            pages::alerts(None, &viewer, notice.as_deref(), now),
        ),
        Err(err) => error_page(&err, Some(&viewer)),
    }
}

async fn exposure_page(State(web): Shared, headers: HeaderMap) -> Response {
    show_exposure(web, headers, None).await
}

async fn scan_page(State(web): Shared, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    show_exposure(web, headers, Some(id)).await
}

async fn show_exposure(web: Arc<Web>, headers: HeaderMap, scan: Option<i64>) -> Response {
    let viewer = match signed_in(&web, &headers).await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    let now = OffsetDateTime::now_utc();
    let history = match crate::alerts::history(&web.app) {
        Ok(history) => history,
        Err(_) => {
            return html_page(
                StatusCode::OK,
                exposure::page(None, scan.is_some(), &viewer, now),
            );
        }
    };
    let loaded = tokio::task::spawn_blocking(move || exposure::load(&history, scan))
        .await
        .map_err(|err| ApiError::internal(format!("the exposure task failed: {err}")))
        .and_then(|loaded| loaded);
    match loaded {
        Ok(exposure) => html_page(
            StatusCode::OK,
            exposure::page(Some(&exposure), scan.is_some(), &viewer, now),
        ),
        Err(err) => error_page(&err, Some(&viewer)),
    }
}

/// The Trends page's query: `range=48h` (the default), `7d` or `30d`.
#[derive(Debug, Deserialize)]
struct TrendsQuery {
    range: Option<String>,
}

async fn trends_page(
    State(web): Shared,
    headers: HeaderMap,
    Query(query): Query<TrendsQuery>,
) -> Response {
    let viewer = match signed_in(&web, &headers).await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    let range = match query.range.as_deref() {
        None => trends::Range::default(),
        Some(text) => match trends::Range::parse(text) {
            Some(range) => range,
            None => {
                let shown: String = text.chars().take(32).collect();
                return error_page(
                    &ApiError::bad_request(format!(
                        "no range `{shown}` on the Trends page: choose 48h, 7d or 30d"
                    )),
                    Some(&viewer),
                );
            }
        },
    };
    let now = OffsetDateTime::now_utc();
    let cached = Arc::clone(&web);
    let fleet = web
        .app
        .with_store(move |store| {
            cached
                .trends
                .trends(store, range, now, trends::READS_PER_VIEW)
        })
        .await;
    let fleet = match fleet {
        Ok(fleet) => fleet,
        Err(err) => return error_page(&err, Some(&viewer)),
    };
    // The monitor's scans, when it runs inside the server and has started
    // its history; without them the page says so.
    let scans = match crate::alerts::history(&web.app) {
        Ok(history) if history.is_file() => {
            let loaded = tokio::task::spawn_blocking(move || trends::load_scans(&history))
                .await
                .map_err(|err| ApiError::internal(format!("the scans' task failed: {err}")))
                .and_then(|loaded| loaded);
            match loaded {
                Ok(scans) => Some(scans),
                Err(err) => return error_page(&err, Some(&viewer)),
            }
        }
        _ => None,
    };
    html_page(
        StatusCode::OK,
        trends::page(&fleet, scans.as_deref(), &viewer, now),
    )
}

// ---- actions -------------------------------------------------------------

/// A reason as the API takes one: required, bounded, no control characters.
fn reason(text: &str) -> Result<String, ApiError> {
    let reason = text.trim();
    if reason.is_empty() {
        return Err(ApiError::bad_request("a reason is required"));
    }
    routes::check_text("reason", reason, 4096)?;
    Ok(reason.to_owned())
}

#[derive(Debug, Deserialize)]
struct ApproveForm {
    #[serde(default)]
    csrf: String,
    host: String,
    netns: String,
    protocol: String,
    address: String,
    port: u16,
    scope: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    expires: String,
}

impl Signed for ApproveForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn add_approval(
    State(web): Shared,
    headers: HeaderMap,
    form: Result<Form<ApproveForm>, FormRejection>,
) -> Response {
    let (form, viewer) = match decision_form(&web, &headers, form, Role::Approver).await {
        Ok(decided) => decided,
        Err(response) => return response,
    };
    let by = viewer.user.clone();
    let added = web
        .app
        .with_store(move |store| {
            let doc = pages::approval_request(
                store,
                &pages::ListenerChoice {
                    host: &form.host,
                    netns: &form.netns,
                    protocol: &form.protocol,
                    address: &form.address,
                    port: form.port,
                },
                &form.scope,
                &reason(&form.reason)?,
                form.expires.trim(),
            )?;
            let new = routes::fleet_approval(&doc, &by, OffsetDateTime::now_utc())?;
            routes::store_approval(store, &new)
        })
        .await;
    match added {
        Ok(row) => {
            tracing::info!(id = row.id, by = %viewer.user, scope = %crate::judge::scope_text(&row.scope), "approval added (dashboard)");
            Redirect::to(&format!("/approvals?added={}", row.id)).into_response()
        }
        Err(err) => error_page(&err, Some(&viewer)),
    }
}

#[derive(Debug, Deserialize)]
struct RejectForm {
    #[serde(default)]
    csrf: String,
    host: String,
    netns: String,
    protocol: String,
    address: String,
    port: u16,
    #[serde(default)]
    reason: String,
}

impl Signed for RejectForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// A person decides a pending listener must not be there: the trail keeps
/// who, when and why (`listener.reject`), the pending list shows it, and it
/// stays unapproved (the gate still fails) until it is gone.
async fn reject_listener(
    State(web): Shared,
    headers: HeaderMap,
    form: Result<Form<RejectForm>, FormRejection>,
) -> Response {
    let (form, viewer) = match decision_form(&web, &headers, form, Role::Approver).await {
        Ok(decided) => decided,
        Err(response) => return response,
    };
    let by = viewer.user.clone();
    let port = form.port;
    let rejected = web
        .app
        .with_store(move |store| {
            let reason = reason(&form.reason)?;
            let choice = pages::ListenerChoice {
                host: &form.host,
                netns: &form.netns,
                protocol: &form.protocol,
                address: &form.address,
                port: form.port,
            };
            // The listener must be one the host reported, as for an approval.
            pages::approval_request(store, &choice, "host", &reason, "")?;
            store.append_trail(&perimeter_store::fleet::NewTrailEntry {
                at: OffsetDateTime::now_utc(),
                actor: by,
                action: "listener.reject".to_owned(),
                subject: pages::rejection_subject(&form.host, &choice),
                reason,
            })?;
            Ok(())
        })
        .await;
    match rejected {
        Ok(()) => {
            tracing::info!(port, by = %viewer.user, "listener rejected (dashboard)");
            Redirect::to(&format!("/approvals?rejected={port}")).into_response()
        }
        Err(err) => error_page(&err, Some(&viewer)),
    }
}

#[derive(Debug, Deserialize)]
struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

impl Signed for DecisionForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn revoke_approval(
    State(web): Shared,
    headers: HeaderMap,
    Path(id): Path<i64>,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Response {
    let (form, viewer) = match decision_form(&web, &headers, form, Role::Approver).await {
        Ok(decided) => decided,
        Err(response) => return response,
    };
    let by = viewer.user.clone();
    let revoked = web
        .app
        .with_store(move |store| {
            let reason = reason(&form.reason)?;
            Ok(store.revoke_approval(id, &by, &reason, OffsetDateTime::now_utc())?)
        })
        .await;
    match revoked {
        Ok(()) => {
            tracing::info!(id, by = %viewer.user, "approval revoked (dashboard)");
            Redirect::to(&format!("/approvals?revoked={id}")).into_response()
        }
        Err(err) => error_page(&err, Some(&viewer)),
    }
}

#[derive(Debug, Deserialize)]
struct AckForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    /// One of [`pages::ACK_CHOICES`].
    #[serde(default)]
    until: String,
}

impl Signed for AckForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn ack_condition(
    State(web): Shared,
    headers: HeaderMap,
    Path(id): Path<i64>,
    form: Result<Form<AckForm>, FormRejection>,
) -> Response {
    let (form, viewer) = match decision_form(&web, &headers, form, Role::Approver).await {
        Ok(decided) => decided,
        Err(response) => return response,
    };
    let reason = match reason(&form.reason) {
        Ok(reason) => reason,
        Err(err) => return error_page(&err, Some(&viewer)),
    };
    let days = match form.until.as_str() {
        "1d" => Some(1),
        "7d" => Some(7),
        "30d" => Some(30),
        "forever" => None,
        _ => {
            return error_page(
                &ApiError::bad_request("choose how long the acknowledgement lasts"),
                Some(&viewer),
            );
        }
    };
    let until = days.map(|days| OffsetDateTime::now_utc() + time::Duration::days(days));
    match crate::alerts::acknowledge(&web.app, id, &viewer.user, &reason, until).await {
        Ok(_) => Redirect::to(&format!("/alerts?acked={id}#condition-{id}")).into_response(),
        Err(err) => error_page(&err, Some(&viewer)),
    }
}

async fn set_agent_status(
    web: Arc<Web>,
    headers: HeaderMap,
    id: String,
    form: Result<Form<DecisionForm>, FormRejection>,
    status: AgentStatus,
) -> Response {
    let (form, viewer) = match decision_form(&web, &headers, form, Role::Admin).await {
        Ok(decided) => decided,
        Err(response) => return response,
    };
    let by = viewer.user.clone();
    let agent_id = id.clone();
    let changed = web
        .app
        .with_store(move |store| {
            let reason = reason(&form.reason)?;
            Ok(store.set_agent_status(
                &agent_id,
                status,
                &by,
                &reason,
                OffsetDateTime::now_utc(),
            )?)
        })
        .await;
    match changed {
        Ok(()) => {
            tracing::info!(agent = %id, by = %viewer.user, status = status.as_str(), "agent status changed (dashboard)");
            Redirect::to(&format!("/hosts/{}", html::url_component(&id))).into_response()
        }
        Err(err) => error_page(&err, Some(&viewer)),
    }
}

#[derive(Debug, Deserialize)]
struct EnvironmentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    environment: String,
}

impl Signed for EnvironmentForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// An administrator puts a host in an environment (or in none), as the API's
/// `POST /hosts/{id}/environment` does; the trail records it.
async fn set_environment(
    State(web): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<EnvironmentForm>, FormRejection>,
) -> Response {
    let (form, viewer) = match decision_form(&web, &headers, form, Role::Admin).await {
        Ok(decided) => decided,
        Err(response) => return response,
    };
    let name = form.environment.trim().to_owned();
    let environment = if name.is_empty() { None } else { Some(name) };
    if let Some(name) = &environment
        && let Err(err) = routes::check_text("environment", name, 255)
    {
        return error_page(&err, Some(&viewer));
    }
    let by = viewer.user.clone();
    let id2 = id.clone();
    let set = web
        .app
        .with_store(move |store| {
            Ok(store.set_agent_environment(
                &id2,
                environment.as_deref(),
                &by,
                OffsetDateTime::now_utc(),
            )?)
        })
        .await;
    match set {
        Ok(()) => {
            tracing::info!(id = %id, by = %viewer.user, "environment set (dashboard)");
            Redirect::to(&format!("/hosts/{}", html::url_component(&id))).into_response()
        }
        Err(err) => error_page(&err, Some(&viewer)),
    }
}

async fn accept_agent(
    State(web): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Response {
    set_agent_status(web, headers, id, form, AgentStatus::Accepted).await
}

async fn revoke_agent(
    State(web): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Response {
    set_agent_status(web, headers, id, form, AgentStatus::Revoked).await
}

#[cfg(test)]
mod tests;
