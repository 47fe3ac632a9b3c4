//! The dashboard's pages: what each loads from the store (in one blocking
//! call, through `AppState::with_store`) and how it renders, as pure functions
//! from loaded data to HTML so the tests can feed them hostile values.
//!
//! Hosts are judged exactly as the API judges them ([`routes::summarise`]),
//! so a page and `GET /api/v1/hosts/{id}` never disagree.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use perimeter_api::{
    Event, FindingDoc, HostState, HostSummary, JudgedListener, ListenerDoc, NewApprovalDoc,
};
use perimeter_store::fleet::{AgentStatus, FleetApproval, FleetStore, Role, TrailEntry};
use serde::Deserialize;
use time::OffsetDateTime;

use super::Viewer;
use super::html::{self, Esc};
use super::overview_cache::{HostProblem, MAX_HOST_PROBLEMS, Overview, OverviewCache};
use crate::error::ApiError;
use crate::judge;
use crate::routes::{self, Judged};

/// An agent not heard from for this long is listed among the problems.
const SILENT_AFTER: time::Duration = time::Duration::hours(1);
/// The most problems the overview lists.
const MAX_PROBLEMS: usize = 200;
/// The most hosts the overview lists per environment, worst first, unless
/// every host is asked for (`/?hosts=all`): a page of 10,000 rows is
/// megabytes to send and to lay out.
const MAX_HOSTS_PER_ENVIRONMENT: usize = 100;
/// The most pending listeners the approvals page lists: each is a form, and
/// a fleet of 10,000 hosts with 75 unapproved listeners each would make a
/// page of hundreds of megabytes.
const MAX_PENDING_ROWS: usize = 500;
/// The most rows of the changes page's two tables.
const MAX_CHANGES: usize = 200;
/// Events are read in pages of this many...
const EVENT_PAGE: usize = 5_000;
/// ...at most this many pages per request (see [`newest_events`]).
const MAX_EVENT_PAGES: usize = 40;

/// The hosts with pending listeners the approvals page lists (judged), the
/// approvals (revoked ones too, for the record), and how many listeners are
/// pending on how many hosts in all.
pub(crate) struct Fleet {
    pub(crate) hosts: Vec<Judged>,
    pub(crate) approvals: Vec<FleetApproval>,
    pub(crate) n_pending: u64,
    pub(crate) n_hosts_pending: usize,
}

fn judge_agent(
    store: &dyn FleetStore,
    agent: perimeter_store::fleet::AgentRow,
    approvals: &[FleetApproval],
) -> Result<Judged, ApiError> {
    let latest = match store.latest_state(&agent.id)? {
        Some(row) => Some((row.taken_at, routes::decode_state(&agent.id, &row.state)?)),
        None => None,
    };
    routes::summarise(agent, latest, approvals)
}

/// What the approvals page shows: the hosts' counts from the overview's
/// cache, and the listeners of only as many hosts (in the store's order) as
/// fill [`MAX_PENDING_ROWS`] rows.
pub(crate) fn load_approvals(
    store: &mut dyn FleetStore,
    cache: &OverviewCache,
) -> Result<Fleet, ApiError> {
    let overview = cache.overview(store)?;
    let approvals = store.approvals(true)?;
    let live: Vec<FleetApproval> = approvals
        .iter()
        .filter(|row| row.revoked.is_none())
        .cloned()
        .collect();
    let mut hosts = Vec::new();
    let mut n_listed = 0;
    let mut n_pending = 0;
    let mut n_hosts_pending = 0;
    for host in overview
        .hosts
        .iter()
        .filter(|host| host.summary.unapproved > 0)
    {
        n_pending += host.summary.unapproved;
        n_hosts_pending += 1;
        if n_listed >= MAX_PENDING_ROWS as u64 {
            continue;
        }
        // Gone since the overview read it: nothing to list.
        let Some(agent) = store.agent(&host.summary.agent_id)? else {
            continue;
        };
        let judged = judge_agent(store, agent, &live)?;
        n_listed += judged.summary.unapproved;
        hosts.push(judged);
    }
    Ok(Fleet {
        hosts,
        approvals,
        n_pending,
        n_hosts_pending,
    })
}

/// One stored state compared with the one before it.
pub(crate) struct TimelineEntry {
    pub(crate) taken_at: OffsetDateTime,
    pub(crate) n_listeners: usize,
    pub(crate) appeared: Vec<String>,
    pub(crate) gone: Vec<String>,
    pub(crate) findings_before: Option<usize>,
    pub(crate) findings: usize,
}

/// An agent's event, decoded when it can be.
pub(crate) struct EventView {
    pub(crate) id: i64,
    pub(crate) agent_id: String,
    pub(crate) received_at: OffsetDateTime,
    pub(crate) event: Option<Event>,
    /// The stored text, shown when it does not decode.
    pub(crate) raw: String,
}

impl EventView {
    fn kind(&self) -> &str {
        self.event.as_ref().map_or("?", |event| event.kind.as_str())
    }
}

pub(crate) struct HostPage {
    pub(crate) judged: Judged,
    pub(crate) approvals: Vec<FleetApproval>,
    pub(crate) timeline: Vec<TimelineEntry>,
    pub(crate) events: Vec<EventView>,
}

pub(crate) fn load_host(store: &mut dyn FleetStore, id: &str) -> Result<HostPage, ApiError> {
    let agent = store
        .agent(id)?
        .ok_or_else(|| ApiError::not_found(format!("no host {id}")))?;
    let approvals: Vec<FleetApproval> = store.approvals(false)?;
    let agent_id = agent.id.clone();
    let judged = judge_agent(store, agent, &approvals)?;
    // Newest first; one more than shown, to compare the oldest shown.
    let states = store.states(&agent_id, 21)?;
    let decoded: Vec<(OffsetDateTime, HostState)> = states
        .iter()
        .map(|row| Ok((row.taken_at, routes::decode_state(&agent_id, &row.state)?)))
        .collect::<Result<_, ApiError>>()?;
    let mut timeline = Vec::new();
    for (index, (taken_at, state)) in decoded.iter().enumerate().take(20) {
        let before = decoded.get(index + 1).map(|(_, state)| state);
        let keys = |state: &HostState| -> BTreeMap<_, String> {
            state
                .listeners
                .iter()
                .map(|l| (l.key(), l.endpoint()))
                .collect()
        };
        let now_keys = keys(state);
        let (appeared, gone) = match before {
            Some(before) => {
                let before_keys = keys(before);
                (
                    now_keys
                        .iter()
                        .filter(|(key, _)| !before_keys.contains_key(*key))
                        .map(|(_, text)| text.clone())
                        .collect(),
                    before_keys
                        .iter()
                        .filter(|(key, _)| !now_keys.contains_key(*key))
                        .map(|(_, text)| text.clone())
                        .collect(),
                )
            }
            None => (Vec::new(), Vec::new()),
        };
        timeline.push(TimelineEntry {
            taken_at: *taken_at,
            n_listeners: state.listeners.len(),
            appeared,
            gone,
            findings_before: before.map(|state| state.findings.len()),
            findings: state.findings.len(),
        });
    }
    let events = newest_events(store, Some(&agent_id), 50, |_| true)?;
    Ok(HostPage {
        judged,
        approvals,
        timeline,
        events,
    })
}

/// The newest `n` events (of one agent or all) that `keep` keeps, newest
/// first. The store lists events oldest first from an id on, so this pages
/// through them keeping the last `n`; it reads at most
/// `EVENT_PAGE * MAX_EVENT_PAGES` events per request, the newest of which
/// may then be missed (a store query newest-first would lift this).
fn newest_events(
    store: &dyn FleetStore,
    agent_id: Option<&str>,
    n: usize,
    keep: impl Fn(&EventView) -> bool,
) -> Result<Vec<EventView>, ApiError> {
    let mut kept = std::collections::VecDeque::with_capacity(n + 1);
    let mut after = 0;
    for _ in 0..MAX_EVENT_PAGES {
        let rows = store.events(agent_id, after, EVENT_PAGE)?;
        let n_rows = rows.len();
        for row in rows {
            after = after.max(row.id);
            let view = EventView {
                id: row.id,
                agent_id: row.agent_id,
                received_at: row.received_at,
                event: serde_json::from_str(&row.event).ok(),
                raw: row.event,
            };
            if keep(&view) {
                kept.push_back(view);
                if kept.len() > n {
                    kept.pop_front();
                }
            }
        }
        if n_rows < EVENT_PAGE {
            break;
        }
    }
    Ok(kept.into_iter().rev().collect())
}

/// The changes page's filters, from its query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ChangeFilter {
    #[serde(default)]
    pub(crate) host: Option<String>,
    #[serde(default)]
    pub(crate) kind: Option<String>,
    /// The hosts of one environment (`-` for hosts in none).
    #[serde(default)]
    pub(crate) environment: Option<String>,
    /// Only agents' events at least this severe (the trail, people's
    /// decisions, has no severity and is left out).
    #[serde(default)]
    pub(crate) severity: Option<String>,
}

impl ChangeFilter {
    fn environment(&self) -> Option<&str> {
        self.environment
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }

    fn severity(&self) -> Option<usize> {
        let wanted = self.severity.as_deref().map(str::trim)?;
        SEVERITIES.iter().position(|s| *s == wanted)
    }

    fn host(&self) -> Option<&str> {
        self.host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
    }

    fn kind(&self) -> Option<&str> {
        self.kind
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
    }
}

pub(crate) struct Changes {
    pub(crate) trail: Vec<TrailEntry>,
    pub(crate) events: Vec<EventView>,
    /// Every host, id and name, for the filter and the links.
    pub(crate) hosts: Vec<(String, String)>,
    /// Every environment a host is in, for the filter.
    pub(crate) environments: Vec<String>,
}

/// How severe an agent's event is: a suspicious exec is high (critical when
/// its executable is deleted or a memfd, the way fileless malware runs), a
/// new listener medium, a lost batch of events medium, the rest info.
pub(crate) fn event_severity(event: &EventView) -> &'static str {
    match &event.event {
        Some(e) if e.kind == "exec" => {
            if e.flags.iter().any(|f| f == "deleted" || f == "memfd") {
                "critical"
            } else {
                "high"
            }
        }
        Some(e) if e.kind == "listener.new" || e.kind == "queue.overflow" => "medium",
        _ => "info",
    }
}

pub(crate) fn load_changes(
    store: &mut dyn FleetStore,
    filter: &ChangeFilter,
) -> Result<Changes, ApiError> {
    let agents = store.agents()?;
    let mut environments: Vec<String> = agents
        .iter()
        .filter_map(|agent| agent.environment.clone())
        .collect();
    environments.sort();
    environments.dedup();
    // The hosts of the environment asked for, when one is.
    let in_environment: Option<BTreeSet<String>> = filter.environment().map(|wanted| {
        agents
            .iter()
            .filter(|agent| agent.environment.as_deref().unwrap_or("-") == wanted)
            .map(|agent| agent.id.clone())
            .collect()
    });
    let hosts: Vec<(String, String)> = agents
        .into_iter()
        .map(|agent| (agent.id, agent.hostname))
        .collect();
    let kind = filter.kind();
    let host = filter.host();
    let min_severity = filter.severity();
    let of_hosts = |id: &str| in_environment.as_ref().is_none_or(|set| set.contains(id));
    let trail = if min_severity.is_some_and(|rank| rank < SEVERITIES.len() - 1) {
        Vec::new()
    } else {
        store
            .trail(10_000)?
            .into_iter()
            .filter(|entry| {
                host.is_none_or(|host| {
                    entry.subject.split(' ').next() == Some(host)
                        || entry.actor == format!("agent:{host}")
                })
            })
            .filter(|entry| {
                in_environment.is_none()
                    || of_hosts(entry.subject.split(' ').next().unwrap_or(""))
                    || entry.actor.strip_prefix("agent:").is_some_and(&of_hosts)
            })
            .filter(|entry| kind.is_none_or(|kind| entry.action.starts_with(kind)))
            .take(MAX_CHANGES)
            .collect()
    };
    let events = newest_events(store, host, MAX_CHANGES, |event| {
        kind.is_none_or(|kind| event.kind().starts_with(kind))
            && of_hosts(&event.agent_id)
            && min_severity.is_none_or(|rank| {
                SEVERITIES
                    .iter()
                    .position(|s| *s == event_severity(event))
                    .is_some_and(|at| at <= rank)
            })
    })?;
    Ok(Changes {
        trail,
        events,
        hosts,
        environments,
    })
}

/// The listener an approve form names.
pub(crate) struct ListenerChoice<'a> {
    pub(crate) host: &'a str,
    pub(crate) netns: &'a str,
    pub(crate) protocol: &'a str,
    pub(crate) address: &'a str,
    pub(crate) port: u16,
}

/// The API's approval request for a listener of a host's latest state, keyed
/// as `perimeter approve` keys one: its namespace, protocol, port and main
/// owner (executable, package, user), and either its address (a host's own
/// approval) or its bind scope (an environment's or the fleet's, whose hosts
/// have addresses of their own). The listener is looked up in the stored
/// state, so the form cannot approve what the host did not report.
pub(crate) fn approval_request(
    store: &mut dyn FleetStore,
    choice: &ListenerChoice<'_>,
    scope: &str,
    reason: &str,
    expires: &str,
) -> Result<NewApprovalDoc, ApiError> {
    let agent = store
        .agent(choice.host)?
        .ok_or_else(|| ApiError::not_found(format!("no host {}", choice.host)))?;
    let state = match store.latest_state(&agent.id)? {
        Some(row) => routes::decode_state(&agent.id, &row.state)?,
        None => return Err(ApiError::not_found("this host has reported no state")),
    };
    let listener = state
        .listeners
        .iter()
        .find(|l| {
            l.netns == choice.netns
                && l.protocol == choice.protocol
                && l.address == choice.address
                && l.port == choice.port
        })
        .ok_or_else(|| {
            ApiError::not_found("the host no longer reports this listener: reload the page")
        })?;
    let (scope, address, bind_scope) = match scope {
        "host" => (
            format!("host:{}", agent.id),
            Some(listener.address.clone()),
            None,
        ),
        "environment" => match &agent.environment {
            Some(name) => (
                format!("environment:{name}"),
                None,
                Some(listener.scope.clone()),
            ),
            None => {
                return Err(ApiError::bad_request(
                    "this host is in no environment: approve it for the host or the fleet",
                ));
            }
        },
        "fleet" => ("fleet".to_owned(), None, Some(listener.scope.clone())),
        _ => {
            return Err(ApiError::bad_request(
                "the scope must be host, environment or fleet",
            ));
        }
    };
    let (exe, package, user, unowned) = match listener.owners.first() {
        None => (None, None, None, true),
        Some(owner) => {
            if owner.exe.is_none() && owner.package.is_none() {
                return Err(ApiError::bad_request(format!(
                    "the agent could not see the executable behind {}: run it as root before approving",
                    listener.endpoint()
                )));
            }
            (
                owner.exe.clone(),
                owner.package.clone(),
                Some(owner.user.clone()),
                false,
            )
        }
    };
    Ok(NewApprovalDoc {
        schema: perimeter_api::SCHEMA.to_owned(),
        scope,
        netns: Some(listener.netns.clone()),
        protocol: listener.protocol.clone(),
        address,
        bind_scope,
        port: listener.port,
        exe,
        package,
        user,
        unowned,
        reason: reason.to_owned(),
        expires: (!expires.is_empty()).then(|| expires.to_owned()),
        recorded_by: None,
        recorded_at: None,
    })
}

// ---- rendering helpers ---------------------------------------------------

fn host_link(id: &str, name: &str) -> String {
    format!(
        "<a href=\"/hosts/{}\">{}</a>",
        html::url_component(id),
        Esc(name)
    )
}

const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "info"];

fn severity_rank(severity: &str) -> usize {
    SEVERITIES
        .iter()
        .position(|s| *s == severity)
        .unwrap_or(SEVERITIES.len())
}

/// A severity as a badge: its name is always written, so colour is never
/// the only sign.
pub(crate) fn severity_badge(severity: &str) -> String {
    let class = if SEVERITIES.contains(&severity) {
        severity
    } else {
        "unknown"
    };
    format!("<span class=\"sev sev-{class}\">{}</span>", Esc(severity))
}

fn verdict_badge(verdict: &str) -> String {
    let (class, text) = match verdict {
        "approved" => ("ok", "approved"),
        "not-needed" => ("quiet", "loopback"),
        "expired" => ("warn", "EXPIRED"),
        _ => ("bad", "UNAPPROVED"),
    };
    format!("<span class=\"verdict verdict-{class}\">{text}</span>")
}

fn status_badge(status: &str) -> String {
    let class = match status {
        "accepted" => "ok",
        "pending" => "warn",
        _ => "bad",
    };
    format!(
        "<span class=\"verdict verdict-{class}\">{}</span>",
        Esc(status)
    )
}

/// The main owner of a listener: its process and pid, user, and package (or
/// UNPACKAGED when the agent saw an executable no package installed).
struct OwnerCells {
    process: String,
    user: String,
    package: String,
}

fn owner_cells(listener: &ListenerDoc) -> OwnerCells {
    match listener.owners.first() {
        None => OwnerCells {
            process: "<span class=\"quiet\">no process (kernel socket?)</span>".to_owned(),
            user: String::new(),
            package: String::new(),
        },
        Some(owner) => {
            let mut process = format!("{} <small>({})</small>", Esc(&owner.name), owner.pid);
            if let Some(exe) = &owner.exe {
                let _ = write!(process, "<br><code>{}</code>", Esc(exe));
            }
            if listener.owners.len() > 1 {
                let _ = write!(
                    process,
                    " <small>+{} more</small>",
                    listener.owners.len() - 1
                );
            }
            let package = match (&owner.package, &owner.exe) {
                (Some(package), _) => Esc(package).to_string(),
                (None, Some(_)) => "<strong class=\"bad\">UNPACKAGED</strong>".to_owned(),
                (None, None) => "<span class=\"quiet\">unknown</span>".to_owned(),
            };
            OwnerCells {
                process,
                user: Esc(&owner.user).to_string(),
                package,
            }
        }
    }
}

fn is_unpackaged(listener: &ListenerDoc) -> bool {
    listener
        .owners
        .iter()
        .any(|owner| owner.exe.is_some() && owner.package.is_none())
}

fn approval_note(row: &FleetApproval) -> String {
    let mut out = format!(
        "#{} {} by {} on {}: {}",
        row.id,
        Esc(&judge::scope_text(&row.scope)),
        Esc(&row.approved_by),
        html::time(row.approved_at),
        Esc(&row.reason)
    );
    if let Some(expires) = row.expires {
        let _ = write!(out, " <small>(expires {})</small>", html::time(expires));
    }
    out
}

fn csrf_field(viewer: &Viewer) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        Esc(&viewer.csrf)
    )
}

/// The administrator's accept / revoke forms of an agent, each with a
/// required reason.
fn agent_forms(viewer: &Viewer, agent_id: &str, status: &str) -> String {
    if !viewer.can(Role::Admin) {
        return String::new();
    }
    let mut out = String::new();
    let actions: &[(&str, &str)] = match status {
        "pending" => &[("accept", "Accept"), ("revoke", "Revoke")],
        "accepted" => &[("revoke", "Revoke")],
        _ => &[],
    };
    for (action, label) in actions {
        let _ = write!(
            out,
            "<form class=\"inline decide\" method=\"post\" action=\"/hosts/{}/{action}\">{}\
             <input name=\"reason\" required maxlength=\"4096\" placeholder=\"reason\" aria-label=\"reason to {action}\">\
             <button type=\"submit\" class=\"{action}\">{label}</button></form>",
            html::url_component(agent_id),
            csrf_field(viewer),
        );
    }
    out
}

// ---- overview ------------------------------------------------------------

/// The problems of a host's latest state, in the order found (its listeners
/// in the state's order, then its findings): exposed listeners no approval
/// covers, unpackaged executables, critical and high findings.
pub(crate) fn state_problems(host: &Judged) -> Vec<HostProblem> {
    let mut problems = Vec::new();
    let mut push = |rank: u8, html: String| problems.push(HostProblem { rank, html });
    for judged in &host.listeners {
        let listener = &judged.listener;
        let owner = listener
            .owners
            .first()
            .map(|o| format!(" held by {} ({})", Esc(&o.name), Esc(&o.user)))
            .unwrap_or_default();
        if listener.is_exposed() && judged.approval != "approved" {
            push(
                if judged.approval == "expired" { 1 } else { 0 },
                format!(
                    "{} <code>{}</code>{owner}",
                    verdict_badge(&judged.approval),
                    Esc(&listener.endpoint()),
                ),
            );
        }
        if is_unpackaged(listener) {
            let exes: BTreeSet<&str> = listener
                .owners
                .iter()
                .filter(|o| o.package.is_none())
                .filter_map(|o| o.exe.as_deref())
                .collect();
            for exe in exes {
                push(
                    if listener.is_exposed() { 1 } else { 3 },
                    format!(
                        "<strong class=\"bad\">UNPACKAGED</strong> <code>{}</code> listens on <code>{}</code>",
                        Esc(exe),
                        Esc(&listener.endpoint())
                    ),
                );
            }
        }
    }
    for finding in &host.findings {
        if severity_rank(&finding.severity) <= 1 {
            push(
                2,
                format!(
                    "{} {}: {}",
                    severity_badge(&finding.severity),
                    Esc(&finding.subject),
                    Esc(&finding.message)
                ),
            );
        }
    }
    problems
}

/// One line of the overview's problems.
struct Problem<'a> {
    /// Lower is worse.
    rank: u8,
    host: &'a HostSummary,
    /// Escaped HTML.
    html: Cow<'a, str>,
    /// The line that says how many more a host has, not a problem itself.
    more: bool,
}

/// The fleet's problems, worst first, and how many there are in all (a host
/// lists at most [`MAX_HOST_PROBLEMS`] of its own, then how many more).
fn problems(fleet: &Overview, now: OffsetDateTime) -> (Vec<Problem<'_>>, usize) {
    let mut problems = Vec::new();
    let mut n_all = 0;
    for host in &fleet.hosts {
        let summary = &host.summary;
        let judgement = &host.judgement;
        let mut push = |rank: u8, html: Cow<'static, str>| {
            problems.push(Problem {
                rank,
                host: summary,
                html,
                more: false,
            });
        };
        if summary.status == AgentStatus::Pending.as_str() {
            push(
                4,
                Cow::Borrowed("waits for an administrator to accept its agent"),
            );
            n_all += 1;
        }
        if summary.status == AgentStatus::Accepted.as_str() {
            match summary.last_seen {
                Some(seen) if now - seen > SILENT_AFTER => {
                    push(
                        3,
                        Cow::Owned(format!("has not reported since {}", html::age(seen, now))),
                    );
                    n_all += 1;
                }
                None => {
                    push(3, Cow::Borrowed("has never reported"));
                    n_all += 1;
                }
                Some(_) => {}
            }
        }
        for problem in &judgement.problems {
            problems.push(Problem {
                rank: problem.rank,
                host: summary,
                html: Cow::Borrowed(&problem.html),
                more: false,
            });
        }
        n_all += judgement.n_problems;
        let n_hidden = judgement
            .n_problems
            .saturating_sub(judgement.problems.len());
        if let Some(last) = judgement.problems.last().filter(|_| n_hidden > 0) {
            problems.push(Problem {
                rank: last.rank,
                host: summary,
                html: Cow::Owned(format!(
                    "and {n_hidden} more on <a href=\"/hosts/{}\">its page</a>",
                    html::url_component(&summary.agent_id)
                )),
                more: true,
            });
        }
    }
    // Stable: a host's lines of one rank stay in the order found.
    problems.sort_by(|a, b| {
        a.rank
            .cmp(&b.rank)
            .then_with(|| a.host.hostname.cmp(&b.host.hostname))
    });
    (problems, n_all)
}

fn findings_cell(findings: &BTreeMap<String, u64>) -> String {
    let mut counted: Vec<(&String, &u64)> = findings.iter().filter(|(_, n)| **n > 0).collect();
    counted.sort_by_key(|(severity, _)| severity_rank(severity));
    if counted.is_empty() {
        return "<span class=\"quiet\">none</span>".to_owned();
    }
    counted
        .iter()
        .map(|(severity, n)| format!("{} {n}", severity_badge(severity)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How bad a host looks, for its place in its environment: unapproved
/// listeners, then critical and high findings.
fn host_badness(
    summary: &HostSummary,
) -> (
    std::cmp::Reverse<u64>,
    std::cmp::Reverse<u64>,
    std::cmp::Reverse<u64>,
) {
    let count = |severity: &str| summary.findings.get(severity).copied().unwrap_or(0);
    (
        std::cmp::Reverse(summary.unapproved),
        std::cmp::Reverse(count("critical")),
        std::cmp::Reverse(count("high")),
    )
}

/// The overview: the fleet's totals, its worst problems, and each
/// environment's hosts worst first (at most [`MAX_HOSTS_PER_ENVIRONMENT`] of
/// each unless `all_hosts`).
pub(crate) fn overview(
    fleet: &Overview,
    viewer: &Viewer,
    now: OffsetDateTime,
    all_hosts: bool,
) -> String {
    let mut body = String::from("<h1>Overview</h1>");
    let n_unapproved: u64 = fleet.hosts.iter().map(|h| h.summary.unapproved).sum();
    let n_exposed: u64 = fleet.hosts.iter().map(|h| h.summary.exposed).sum();
    let _ = write!(
        body,
        "<p class=\"totals\"><strong>{}</strong> hosts · <strong>{n_exposed}</strong> exposed listeners · \
         <strong class=\"{}\">{n_unapproved}</strong> unapproved</p>",
        fleet.hosts.len(),
        if n_unapproved > 0 { "bad" } else { "ok" }
    );

    let (problems, n_all) = problems(fleet, now);
    body.push_str("<section><h2>Problems, worst first</h2>");
    if problems.is_empty() {
        body.push_str(
            "<p class=\"ok\">Nothing unexpected: every exposed listener is approved.</p>",
        );
    } else {
        body.push_str("<ol class=\"problems\">");
        let mut n_shown = 0;
        for problem in problems.iter().take(MAX_PROBLEMS) {
            let _ = write!(
                body,
                "<li class=\"rank-{}{}\">{}: {}",
                problem.rank,
                if problem.more { " more" } else { "" },
                host_link(&problem.host.agent_id, &problem.host.hostname),
                problem.html
            );
            if problem.rank == 4 {
                body.push_str(&agent_forms(viewer, &problem.host.agent_id, "pending"));
            }
            body.push_str("</li>");
            if !problem.more {
                n_shown += 1;
            }
        }
        body.push_str("</ol>");
        if n_all > n_shown {
            let _ = write!(
                body,
                "<p>{} problems in all: here the worst, at most {MAX_HOST_PROBLEMS} a host; \
                 each host's page lists all of its own.</p>",
                n_all
            );
        }
        if n_unapproved > 0 {
            body.push_str("<p><a href=\"/approvals\">Review the unapproved listeners</a></p>");
        }
    }
    body.push_str("</section>");

    let mut by_environment: BTreeMap<Option<&str>, Vec<&HostSummary>> = BTreeMap::new();
    for host in &fleet.hosts {
        by_environment
            .entry(host.summary.environment.as_deref())
            .or_default()
            .push(&host.summary);
    }
    if fleet.hosts.is_empty() {
        body.push_str(
            "<section><h2>Hosts</h2><p>No agent has enrolled yet: run <code>perimeter agent --server URL</code> on a host.</p></section>",
        );
    }
    for (environment, mut hosts) in by_environment {
        hosts.sort_by(|a, b| {
            host_badness(a)
                .cmp(&host_badness(b))
                .then_with(|| a.hostname.cmp(&b.hostname))
        });
        let _ = write!(
            body,
            "<section><h2>{}</h2><div class=\"scroll\"><table class=\"hosts\"><thead><tr>\
             <th>Host</th><th>Agent</th><th>Last report</th><th class=\"num\">Exposed</th>\
             <th class=\"num\">Unapproved</th><th>Findings</th></tr></thead><tbody>",
            match environment {
                Some(name) => format!("Environment {}", Esc(name)),
                None => "No environment".to_owned(),
            }
        );
        let n_listed = if all_hosts {
            hosts.len()
        } else {
            hosts.len().min(MAX_HOSTS_PER_ENVIRONMENT)
        };
        for summary in hosts.iter().take(n_listed) {
            let last = match summary.last_seen {
                Some(seen) => format!(
                    "{} <small>{}</small>",
                    html::age(seen, now),
                    html::time(seen)
                ),
                None => "<span class=\"quiet\">never</span>".to_owned(),
            };
            let _ = write!(
                body,
                "<tr><td>{}<br><small><code>{}</code></small></td><td>{}</td><td>{last}</td>\
                 <td class=\"num\">{}</td><td class=\"num {}\">{}</td><td>{}</td></tr>",
                host_link(&summary.agent_id, &summary.hostname),
                Esc(&summary.agent_id),
                status_badge(&summary.status),
                summary.exposed,
                if summary.unapproved > 0 { "bad" } else { "" },
                summary.unapproved,
                findings_cell(&summary.findings)
            );
        }
        body.push_str("</tbody></table></div>");
        if hosts.len() > n_listed {
            let _ = write!(
                body,
                "<p class=\"more\">and {} more hosts in this environment, none worse than these: \
                 <a href=\"/?hosts=all\">list every host</a></p>",
                hosts.len() - n_listed
            );
        }
        body.push_str("</section>");
    }
    html::page("Overview", "/", Some(&viewer.reader()), &body)
}

// ---- host ----------------------------------------------------------------

fn listeners_table(listeners: &[JudgedListener], approvals: &[FleetApproval]) -> String {
    let mut out = String::from(
        "<div class=\"scroll\"><table class=\"listeners\"><thead><tr><th>Scope</th><th>Address</th>\
         <th class=\"num\">Port</th><th>Process</th><th>User</th><th>Package</th><th>Reachable from</th>\
         <th>Approval</th></tr></thead><tbody>",
    );
    // Exposed and unapproved first, as the CLI's table sorts by concern.
    let mut sorted: Vec<&JudgedListener> = listeners.iter().collect();
    sorted.sort_by_key(|l| {
        (
            match l.approval.as_str() {
                "unapproved" => 0,
                "expired" => 1,
                "approved" => 2,
                _ => 3,
            },
            l.listener.port,
        )
    });
    for judged in sorted {
        let listener = &judged.listener;
        let owner = owner_cells(listener);
        let note = judged
            .approval_id
            .and_then(|id| approvals.iter().find(|row| row.id == id))
            .map(|row| format!("<br><small>{}</small>", approval_note(row)))
            .unwrap_or_default();
        let netns = if listener.netns == "host" {
            String::new()
        } else {
            format!("<br><small>netns {}</small>", Esc(&listener.netns))
        };
        let _ = write!(
            out,
            "<tr data-port=\"{}\"><td>{}</td><td><code>{} {}</code>{netns}</td><td class=\"num\">{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td class=\"reach\">{}</td><td>{}{note}</td></tr>",
            listener.port,
            Esc(&listener.scope),
            Esc(&listener.protocol),
            Esc(&listener.address),
            listener.port,
            owner.process,
            owner.user,
            owner.package,
            reach_cell(listener),
            verdict_badge(&judged.approval),
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

/// The most source ranges listed in one cell; the rest are counted.
const MAX_RANGES_SHOWN: usize = 8;

/// Whom the host's firewall lets through to a listener, worded as the CLI
/// words it: everyone, these ranges, nobody, or unknown (with what could not
/// be decided, and why).
pub(super) fn reach_cell(listener: &ListenerDoc) -> String {
    if listener.scope == "loopback" {
        return "<span class=\"quiet\">this host only</span>".to_owned();
    }
    let Some(reach) = &listener.reach else {
        return "<span class=\"quiet\" title=\"the agent did not tell: its firewall could not be read, \
                or the agent or the server that took its report predates this\">unknown</span>"
            .to_owned();
    };
    let ranges = |prefixes: &mut dyn Iterator<Item = &String>| {
        let prefixes: Vec<&String> = prefixes.collect();
        let mut out = prefixes
            .iter()
            .take(MAX_RANGES_SHOWN)
            .map(|prefix| format!("<code>{}</code>", Esc(prefix)))
            .collect::<Vec<_>>()
            .join(", ");
        if prefixes.len() > MAX_RANGES_SHOWN {
            let _ = write!(out, " and {} more", prefixes.len() - MAX_RANGES_SHOWN);
        }
        out
    };
    let mut out = if reach.from_anywhere() {
        "<strong class=\"bad\">everyone</strong>".to_owned()
    } else if reach.allowed.is_empty() && reach.undecided.is_empty() {
        "<span class=\"ok\">nobody</span>".to_owned()
    } else if reach.allowed.is_empty() {
        String::new()
    } else {
        ranges(&mut reach.allowed.iter())
    };
    if !reach.undecided.is_empty() {
        if !out.is_empty() {
            out.push_str("<br>");
        }
        let mut reasons: Vec<&str> = reach.undecided.iter().map(|u| u.reason.as_str()).collect();
        reasons.sort_unstable();
        reasons.dedup();
        let _ = write!(
            out,
            "<small>unknown for {}: {}</small>",
            ranges(&mut reach.undecided.iter().map(|u| &u.sources)),
            reasons
                .iter()
                .take(MAX_RANGES_SHOWN)
                .map(|reason| Esc(reason).to_string())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    out
}

fn findings_list(findings: &[FindingDoc]) -> String {
    if findings.is_empty() {
        return "<p class=\"quiet\">No findings.</p>".to_owned();
    }
    let mut sorted: Vec<&FindingDoc> = findings.iter().collect();
    sorted.sort_by_key(|f| severity_rank(&f.severity));
    let mut out = String::from("<ul class=\"findings\">");
    for finding in sorted {
        let _ = write!(
            out,
            "<li>{} <strong>{}</strong> <code>{}</code><p>{}</p>",
            severity_badge(&finding.severity),
            Esc(&finding.subject),
            Esc(&finding.rule),
            Esc(&finding.message)
        );
        if !finding.evidence.is_empty() {
            out.push_str("<pre class=\"evidence\">");
            for line in &finding.evidence {
                let _ = writeln!(out, "{}", Esc(line));
            }
            out.push_str("</pre>");
        }
        if !finding.remedy.is_empty() {
            let _ = write!(
                out,
                "<p class=\"remedy\">Remedy: {}</p>",
                Esc(&finding.remedy)
            );
        }
        out.push_str("</li>");
    }
    out.push_str("</ul>");
    out
}

fn event_line(event: &EventView) -> String {
    match &event.event {
        Some(decoded) => {
            let flags = decoded
                .flags
                .iter()
                .map(|flag| format!("<span class=\"flag\">{}</span>", Esc(flag)))
                .collect::<Vec<_>>()
                .join(" ");
            format!(
                "{} <code>{}</code> {} {flags}",
                html::time(decoded.at),
                Esc(&decoded.kind),
                Esc(&decoded.summary)
            )
        }
        None => format!(
            "{} <code>{}</code>",
            html::time(event.received_at),
            Esc(&event.raw)
        ),
    }
}

pub(crate) fn host(page: &HostPage, viewer: &Viewer, now: OffsetDateTime) -> String {
    let summary = &page.judged.summary;
    let mut body = format!(
        "<p class=\"crumbs\"><a href=\"/\">Overview</a> ›</p><h1>{}</h1>\
         <dl class=\"facts\"><dt>Agent</dt><dd><code>{}</code> {}</dd>\
         <dt>Environment</dt><dd>{}</dd><dt>Enrolled</dt><dd>{}</dd><dt>Last report</dt><dd>{}</dd>\
         <dt>State taken</dt><dd>{}</dd><dt>Exposed</dt><dd>{} listeners, <span class=\"{}\">{} unapproved</span></dd></dl>",
        Esc(&summary.hostname),
        Esc(&summary.agent_id),
        status_badge(&summary.status),
        summary.environment.as_deref().map_or_else(
            || "<span class=\"quiet\">none</span>".to_owned(),
            |e| Esc(e).to_string()
        ),
        html::time(summary.enrolled_at),
        summary.last_seen.map_or_else(
            || "never".to_owned(),
            |seen| format!("{} ({})", html::age(seen, now), html::time(seen))
        ),
        page.judged
            .taken_at
            .map_or_else(|| "no state yet".to_owned(), html::time),
        summary.exposed,
        if summary.unapproved > 0 { "bad" } else { "ok" },
        summary.unapproved,
    );
    body.push_str(&agent_forms(viewer, &summary.agent_id, &summary.status));
    if viewer.can(Role::Admin) {
        let _ = write!(
            body,
            "<form class=\"inline environment\" method=\"post\" action=\"/hosts/{}/environment\">{}\
             <label>Environment <input name=\"environment\" maxlength=\"255\" value=\"{}\" \
             placeholder=\"prod, dev, experiment-...\"></label>\
             <button type=\"submit\">Set</button> <small class=\"quiet\">empty: none</small></form>",
            html::url_component(&summary.agent_id),
            csrf_field(viewer),
            Esc(summary.environment.as_deref().unwrap_or("")),
        );
    }
    let _ = write!(
        body,
        "<section><h2>Listeners</h2>{}",
        listeners_table(&page.judged.listeners, &page.approvals)
    );
    if summary.unapproved > 0 {
        body.push_str("<p><a href=\"/approvals\">Approve or fix the unapproved ones</a></p>");
    }
    let _ = write!(
        body,
        "</section><section><h2>Findings</h2>{}</section>",
        findings_list(&page.judged.findings)
    );
    body.push_str("<section><h2>Timeline</h2>");
    if page.timeline.is_empty() {
        body.push_str("<p class=\"quiet\">No state stored yet.</p>");
    } else {
        body.push_str("<ol class=\"timeline\">");
        for entry in &page.timeline {
            let _ = write!(
                body,
                "<li>{} · {} listeners",
                html::time(entry.taken_at),
                entry.n_listeners
            );
            match entry.findings_before {
                Some(before) if before != entry.findings => {
                    let _ = write!(body, " · findings {before} → {}", entry.findings);
                }
                None => body.push_str(" · first stored state"),
                Some(_) => {}
            }
            for text in &entry.appeared {
                let _ = write!(body, "<br><span class=\"bad\">+ {}</span>", Esc(text));
            }
            for text in &entry.gone {
                let _ = write!(body, "<br><span class=\"quiet\">− {}</span>", Esc(text));
            }
            body.push_str("</li>");
        }
        body.push_str("</ol>");
    }
    body.push_str("</section><section><h2>Events</h2>");
    if page.events.is_empty() {
        body.push_str("<p class=\"quiet\">No events.</p>");
    } else {
        body.push_str("<ul class=\"events\">");
        for event in &page.events {
            let _ = write!(body, "<li>{}</li>", event_line(event));
        }
        body.push_str("</ul>");
    }
    let _ = write!(
        body,
        "<p><a href=\"/changes?host={}\">Every change of this host</a></p></section>",
        html::url_component(&summary.agent_id)
    );
    html::page(&summary.hostname, "", Some(&viewer.reader()), &body)
}

// ---- approvals -----------------------------------------------------------

/// The trail's subject of a rejected listener: the host's agent id, then
/// the listener as approvals key it (namespace, protocol, address, port).
pub(crate) fn rejection_subject(agent_id: &str, listener: &ListenerChoice<'_>) -> String {
    format!(
        "{agent_id} {} {} {}:{}",
        listener.netns, listener.protocol, listener.address, listener.port
    )
}

/// A person's rejection of a listener: who, when, why.
pub(crate) struct Rejection {
    pub(crate) by: String,
    pub(crate) at: OffsetDateTime,
    pub(crate) reason: String,
}

/// The latest rejection of each listener, by its trail subject.
pub(crate) fn rejections(trail: Vec<TrailEntry>) -> BTreeMap<String, Rejection> {
    let mut found = BTreeMap::new();
    // The trail comes newest first: the first seen of a subject is its latest.
    for entry in trail.into_iter().filter(|e| e.action == "listener.reject") {
        found.entry(entry.subject).or_insert(Rejection {
            by: entry.actor,
            at: entry.at,
            reason: entry.reason,
        });
    }
    found
}

fn reject_form(viewer: &Viewer, host: &Judged, listener: &ListenerDoc) -> String {
    format!(
        "<form class=\"reject\" method=\"post\" action=\"/approvals/reject\" data-host=\"{}\" data-port=\"{}\">{}\
         <input type=\"hidden\" name=\"host\" value=\"{}\">\
         <input type=\"hidden\" name=\"netns\" value=\"{}\">\
         <input type=\"hidden\" name=\"protocol\" value=\"{}\">\
         <input type=\"hidden\" name=\"address\" value=\"{}\">\
         <input type=\"hidden\" name=\"port\" value=\"{}\">\
         <label>Reason <input name=\"reason\" required maxlength=\"4096\" placeholder=\"why it must go\"></label>\
         <button type=\"submit\" class=\"revoke\">Reject</button></form>",
        Esc(&host.summary.agent_id),
        listener.port,
        csrf_field(viewer),
        Esc(&host.summary.agent_id),
        Esc(&listener.netns),
        Esc(&listener.protocol),
        Esc(&listener.address),
        listener.port,
    )
}

fn approve_form(viewer: &Viewer, host: &Judged, listener: &ListenerDoc) -> String {
    let environment = match &host.summary.environment {
        Some(name) => format!(
            "<option value=\"environment\">environment {}</option>",
            Esc(name)
        ),
        None => String::new(),
    };
    format!(
        "<form class=\"approve\" method=\"post\" action=\"/approvals\" data-host=\"{}\" data-port=\"{}\">{}\
         <input type=\"hidden\" name=\"host\" value=\"{}\">\
         <input type=\"hidden\" name=\"netns\" value=\"{}\">\
         <input type=\"hidden\" name=\"protocol\" value=\"{}\">\
         <input type=\"hidden\" name=\"address\" value=\"{}\">\
         <input type=\"hidden\" name=\"port\" value=\"{}\">\
         <label>For <select name=\"scope\"><option value=\"host\" selected>this host</option>{environment}\
         <option value=\"fleet\">the whole fleet</option></select></label>\
         <label>Reason <input name=\"reason\" required maxlength=\"4096\" placeholder=\"why it should be there\"></label>\
         <label>Expires <input name=\"expires\" type=\"date\"></label>\
         <button type=\"submit\">Approve</button></form>",
        Esc(&host.summary.agent_id),
        listener.port,
        csrf_field(viewer),
        Esc(&host.summary.agent_id),
        Esc(&listener.netns),
        Esc(&listener.protocol),
        Esc(&listener.address),
        listener.port,
    )
}

pub(crate) fn approvals(
    fleet: &Fleet,
    rejected: &BTreeMap<String, Rejection>,
    viewer: &Viewer,
    notice: Option<&str>,
) -> String {
    let mut body = String::from("<h1>Approvals</h1>");
    if let Some(notice) = notice {
        let _ = write!(
            body,
            "<p class=\"notice\" role=\"status\">{}</p>",
            Esc(notice)
        );
    }
    let can_approve = viewer.can(Role::Approver);
    body.push_str(
        "<section><h2>Pending</h2><p class=\"hint\">Every listener beyond loopback that no approval covers. \
         An approval for this host keys on the address; one for an environment or the fleet keys on the \
         bind scope (wildcard, private, public), since their hosts have addresses of their own.</p>",
    );
    let mut n_rows = 0;
    let mut rows = String::new();
    for host in &fleet.hosts {
        for judged in &host.listeners {
            if !judged.listener.is_exposed() || judged.approval == "approved" {
                continue;
            }
            if n_rows == MAX_PENDING_ROWS {
                break;
            }
            n_rows += 1;
            let owner = owner_cells(&judged.listener);
            let subject = rejection_subject(
                &host.summary.agent_id,
                &ListenerChoice {
                    host: &host.summary.agent_id,
                    netns: &judged.listener.netns,
                    protocol: &judged.listener.protocol,
                    address: &judged.listener.address,
                    port: judged.listener.port,
                },
            );
            let verdict = match rejected.get(&subject) {
                Some(r) => format!(
                    "{}<br><small class=\"bad rejection\">REJECTED by {} {}: {}</small>",
                    verdict_badge(&judged.approval),
                    Esc(&r.by),
                    html::time(r.at),
                    Esc(&r.reason)
                ),
                None => verdict_badge(&judged.approval),
            };
            let _ = write!(
                rows,
                "<tr data-port=\"{}\"><td>{}</td><td><code>{}</code><br><small>{}</small></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                judged.listener.port,
                host_link(&host.summary.agent_id, &host.summary.hostname),
                Esc(&judged.listener.endpoint()),
                Esc(&judged.listener.scope),
                owner.process,
                owner.package,
                verdict,
                if can_approve {
                    format!(
                        "{}{}",
                        approve_form(viewer, host, &judged.listener),
                        if rejected.contains_key(&subject) {
                            String::new()
                        } else {
                            reject_form(viewer, host, &judged.listener)
                        }
                    )
                } else {
                    "<small class=\"quiet\">an approver decides</small>".to_owned()
                }
            );
        }
    }
    if n_rows == 0 {
        body.push_str("<p class=\"ok\">Nothing pending: every exposed listener is approved.</p>");
    } else {
        let _ = write!(
            body,
            "<div class=\"scroll\"><table class=\"pending\"><thead><tr><th>Host</th><th>Listener</th><th>Process</th>\
             <th>Package</th><th>Verdict</th><th>Decision</th></tr></thead><tbody>{rows}</tbody></table></div>"
        );
        if fleet.n_pending > n_rows as u64 {
            let _ = write!(
                body,
                "<p class=\"more\">{} listeners are pending on {} {} in all: the first {n_rows} here; \
                 the next appear as these are approved.</p>",
                fleet.n_pending,
                fleet.n_hosts_pending,
                if fleet.n_hosts_pending == 1 {
                    "host"
                } else {
                    "hosts"
                }
            );
        }
    }
    body.push_str("</section><section><h2>Approved</h2>");
    let live: Vec<&FleetApproval> = fleet
        .approvals
        .iter()
        .filter(|row| row.revoked.is_none())
        .collect();
    if live.is_empty() {
        body.push_str("<p class=\"quiet\">No approvals yet.</p>");
    } else {
        body.push_str(
            "<div class=\"scroll\"><table class=\"approved\"><thead><tr><th>#</th><th>Scope</th><th>Listener</th>\
             <th>By</th><th>When</th><th>Why</th><th>Expires</th><th></th></tr></thead><tbody>",
        );
        for row in live.iter().rev() {
            let revoke = if can_approve {
                format!(
                    "<form class=\"inline revoke\" method=\"post\" action=\"/approvals/{}/revoke\">{}\
                     <input name=\"reason\" required maxlength=\"4096\" placeholder=\"reason\" aria-label=\"reason to revoke\">\
                     <button type=\"submit\">Revoke</button></form>",
                    row.id,
                    csrf_field(viewer)
                )
            } else {
                String::new()
            };
            let _ = write!(
                body,
                "<tr data-approval=\"{}\"><td>{}</td><td>{}</td><td><pre class=\"selector\">{}</pre></td><td>{}</td><td>{}</td>\
                 <td class=\"reason\">{}</td><td>{}</td><td>{revoke}</td></tr>",
                row.id,
                row.id,
                Esc(&judge::scope_text(&row.scope)),
                Esc(row.selector.trim()),
                Esc(&row.approved_by),
                html::time(row.approved_at),
                Esc(&row.reason),
                row.expires.map_or_else(String::new, html::time),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    let revoked: Vec<&FleetApproval> = fleet
        .approvals
        .iter()
        .filter(|row| row.revoked.is_some())
        .collect();
    if !revoked.is_empty() {
        let _ = write!(
            body,
            "<details><summary>{} revoked</summary><ul>",
            revoked.len()
        );
        for row in revoked.iter().rev() {
            if let Some(revocation) = &row.revoked {
                let _ = write!(
                    body,
                    "<li>{}<br><small>revoked by {} on {}: {}</small></li>",
                    approval_note(row),
                    Esc(&revocation.by),
                    html::time(revocation.at),
                    Esc(&revocation.reason)
                );
            }
        }
        body.push_str("</ul></details>");
    }
    body.push_str("</section>");
    html::page("Approvals", "/approvals", Some(&viewer.reader()), &body)
}

// ---- changes -------------------------------------------------------------

pub(crate) fn changes(changes: &Changes, filter: &ChangeFilter, viewer: &Viewer) -> String {
    let names: BTreeMap<&str, &str> = changes
        .hosts
        .iter()
        .map(|(id, name)| (id.as_str(), name.as_str()))
        .collect();
    let mut body = String::from("<h1>Changes</h1>");
    body.push_str("<form class=\"filter\" method=\"get\" action=\"/changes\"><label>Host <select name=\"host\"><option value=\"\">every host</option>");
    for (id, name) in &changes.hosts {
        let selected = if filter.host() == Some(id.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            body,
            "<option value=\"{}\"{selected}>{} ({})</option>",
            Esc(id),
            Esc(name),
            Esc(id)
        );
    }
    body.push_str("</select></label><label>Environment <select name=\"environment\"><option value=\"\">every environment</option>");
    for name in changes
        .environments
        .iter()
        .map(String::as_str)
        .chain(std::iter::once("-"))
    {
        let selected = if filter.environment() == Some(name) {
            " selected"
        } else {
            ""
        };
        let label = if name == "-" { "in none" } else { name };
        let _ = write!(
            body,
            "<option value=\"{}\"{selected}>{}</option>",
            Esc(name),
            Esc(label)
        );
    }
    body.push_str("</select></label><label>Severity <select name=\"severity\"><option value=\"\">any</option>");
    for (rank, name) in SEVERITIES.iter().enumerate() {
        let selected = if filter.severity() == Some(rank) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            body,
            "<option value=\"{name}\"{selected}>{name} or worse</option>"
        );
    }
    let _ = write!(
        body,
        "</select></label><label>Kind <input name=\"kind\" value=\"{}\" placeholder=\"approval, agent, exec, listener\"></label>\
         <button type=\"submit\">Filter</button></form>",
        Esc(filter.kind().unwrap_or(""))
    );
    body.push_str("<section><h2>Trail</h2><p class=\"hint\">Every approval, revocation and decision about agents, newest first.</p>");
    if changes.trail.is_empty() {
        body.push_str("<p class=\"quiet\">Nothing recorded.</p>");
    } else {
        body.push_str(
            "<div class=\"scroll\"><table class=\"trail\"><thead><tr><th>When</th><th>Who</th><th>What</th>\
             <th>Subject</th><th>Why</th></tr></thead><tbody>",
        );
        for entry in &changes.trail {
            let subject = match names.get(entry.subject.as_str()) {
                Some(name) => host_link(&entry.subject, name),
                None => format!("<code>{}</code>", Esc(&entry.subject)),
            };
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{subject}</td><td>{}</td></tr>",
                html::time(entry.at),
                Esc(&entry.actor),
                Esc(&entry.action),
                Esc(&entry.reason)
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("</section><section><h2>Agents' events</h2>");
    if changes.events.is_empty() {
        body.push_str("<p class=\"quiet\">No events.</p>");
    } else {
        body.push_str("<ul class=\"events\">");
        for event in &changes.events {
            let name = names
                .get(event.agent_id.as_str())
                .copied()
                .unwrap_or(event.agent_id.as_str());
            let _ = write!(
                body,
                "<li id=\"event-{}\">{} {}: {}</li>",
                event.id,
                severity_badge(event_severity(event)),
                host_link(&event.agent_id, name),
                event_line(event)
            );
        }
        body.push_str("</ul>");
    }
    body.push_str("</section>");
    html::page("Changes", "/changes", Some(&viewer.reader()), &body)
}

// ---- alerts --------------------------------------------------------------

/// How long an acknowledgement from the page lasts: the form's choices.
pub(crate) const ACK_CHOICES: [(&str, &str); 4] = [
    ("1d", "a day"),
    ("7d", "a week"),
    ("30d", "30 days"),
    ("forever", "for good"),
];

/// The monitor's open conditions (what a person resolves or acknowledges)
/// and its latest alerts; `None` when the server runs no monitor.
pub(crate) fn alerts(
    list: Option<&perimeter_api::AlertList>,
    viewer: &Viewer,
    notice: Option<&str>,
    now: OffsetDateTime,
) -> String {
    let mut body = String::from("<h1>Alerts</h1>");
    if let Some(notice) = notice {
        let _ = write!(
            body,
            "<p class=\"notice\" role=\"status\">{}</p>",
            Esc(notice)
        );
    }
    let Some(list) = list else {
        body.push_str(
            "<p class=\"quiet\">This server runs no monitor. Start it with <code>perimeter server \
             --monitor FILE</code> to have scheduled scans, audits and the fleet job raise alerts \
             here.</p>",
        );
        return html::page("Alerts", "/alerts", Some(&viewer.reader()), &body);
    };
    let can_ack = viewer.can(Role::Approver);
    body.push_str(
        "<section><h2>Open conditions</h2><p class=\"hint\">What the monitor still sees, worst \
         first. Acknowledging one silences its escalations until the date chosen; it stays \
         listed, and its end is still told.</p>",
    );
    if list.conditions.is_empty() {
        body.push_str("<p class=\"ok\">No open conditions.</p>");
    } else {
        body.push_str(
            "<div class=\"scroll\"><table class=\"conditions cards\"><thead><tr><th>#</th><th>Severity</th>\
             <th>Kind</th><th>Subject</th><th>Job</th><th>Since</th><th>Acknowledged</th><th></th>\
             </tr></thead><tbody>",
        );
        for c in &list.conditions {
            let mut acked = match c.acknowledged_until {
                Some(until) if until.year() >= 9999 => "for good".to_owned(),
                Some(until) => format!("until {}", html::time(until)),
                None => "<span class=\"quiet\">no</span>".to_owned(),
            };
            // Who acknowledged it, when and why: the reason is a person's
            // text, escaped like everything else.
            if let (Some(_), Some(ack)) = (c.acknowledged_until, &c.acknowledgement) {
                let _ = write!(
                    acked,
                    "<br><small class=\"acknowledgement\">by {} on {}: <span class=\"reason\">{}</span></small>",
                    Esc(&ack.by),
                    html::time(ack.at),
                    Esc(&ack.reason)
                );
            }
            let form = if can_ack && c.acknowledged_until.is_none() {
                let mut choices = String::new();
                for (value, label) in ACK_CHOICES {
                    let selected = if value == "7d" { " selected" } else { "" };
                    let _ = write!(
                        choices,
                        "<option value=\"{value}\"{selected}>{label}</option>"
                    );
                }
                format!(
                    "<form class=\"inline ack\" method=\"post\" action=\"/alerts/{}/ack\">{}\
                     <input name=\"reason\" required maxlength=\"4096\" placeholder=\"reason\" \
                     aria-label=\"reason to acknowledge\"><select name=\"until\" aria-label=\"for how long\">\
                     {choices}</select><button type=\"submit\">Acknowledge</button></form>",
                    c.id,
                    csrf_field(viewer)
                )
            } else {
                String::new()
            };
            let _ = write!(
                body,
                "<tr id=\"condition-{}\" data-condition=\"{}\"><td data-label=\"#\"><a href=\"#condition-{}\">{}</a></td>\
                 <td data-label=\"Severity\">{}</td><td data-label=\"Kind\"><code>{}</code></td>\
                 <td data-label=\"Subject\">{}</td><td data-label=\"Job\">{}</td><td data-label=\"Since\">{}</td>\
                 <td data-label=\"Acknowledged\">{acked}</td><td data-label=\"\">{form}</td></tr>",
                c.id,
                c.id,
                c.id,
                c.id,
                severity_badge(&c.severity),
                Esc(&c.kind),
                Esc(&c.subject),
                Esc(&c.job),
                html::age(c.first_seen, now),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("</section><section><h2>Alerts raised</h2>");
    if list.alerts.is_empty() {
        body.push_str("<p class=\"quiet\">No alerts raised.</p>");
    } else {
        body.push_str(
            "<div class=\"scroll\"><table class=\"alerts cards\"><thead><tr><th>#</th><th>When</th><th>Job</th>\
             <th>Severity</th><th>Changes</th><th>Delivered</th></tr></thead><tbody>",
        );
        for a in &list.alerts {
            let deliveries = if a.deliveries.is_empty() {
                "<span class=\"quiet\">no channel</span>".to_owned()
            } else {
                a.deliveries
                    .iter()
                    .map(|(channel, state)| format!("{}: {}", Esc(channel), Esc(state)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = write!(
                body,
                "<tr id=\"alert-{}\"><td data-label=\"#\"><a href=\"#alert-{}\">{}</a></td><td data-label=\"When\">{}</td>\
                 <td data-label=\"Job\">{}</td><td data-label=\"Severity\">{}</td>\
                 <td data-label=\"Changes\">{}</td><td data-label=\"Delivered\">{deliveries}</td></tr>",
                a.id,
                a.id,
                a.id,
                html::time(a.created),
                Esc(&a.job),
                severity_badge(&a.severity),
                a.changes,
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("</section>");
    html::page("Alerts", "/alerts", Some(&viewer.reader()), &body)
}
