//! The Trends page: the fleet over time, as plots.
//!
//! - Per environment (as each host is now placed): exposed listeners and,
//!   of them, the ones no approval covered, over a [`Range`] the reader
//!   picks (`?range=48h`, the default: hour by hour; `7d`: every six hours;
//!   `30d`: day by day at midnight UTC) and now; and the hosts that had
//!   reported.
//! - The fleet's findings by severity over the same times.
//! - Scan coverage, from the monitor's history when the server runs one:
//!   per set of targets, the ports each scan decided and found open, scans
//!   that did not complete drawn hollow.
//!
//! Each time's value is the fleet as the server knew it then (an instant,
//! not a sum over the bucket): each host's
//! latest state *received* by that time, judged against the approvals live
//! at that time (added before it, not revoked before it, expiry by its
//! date). So an hour that has passed never changes: a late report does not
//! rewrite it, and an approval given today does not approve yesterday.
//!
//! Reading and judging every host's states at every view would cost what the
//! overview's first view once did (seconds at 10,000 hosts), so the page has
//! a cache of its own, [`TrendsCache`]: per host, each stored state's counts
//! (exposed, findings by severity) and its unapproved count per set of
//! covering approvals, never its listeners. A host's states are read again
//! only when it stored a new state (a report without one, a heartbeat, costs
//! one row's read, not parsed) or a time needs a judgement against
//! approvals not met before; a view reads at most [`READS_PER_VIEW`] hosts'
//! states (the rest are listed as not read yet), and the server warms the
//! cache at start in batches after the overview's (for the default range),
//! so the page stays quick on a big fleet. The counts are per stored state,
//! so every range shares them: a longer range costs a judgement per new
//! (state, approvals) pair it meets, not a read of every state again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Mutex;

use perimeter_store::fleet::{AgentRow, FleetApproval, FleetStore};
use perimeter_store::{ScanSummary, Store as _};
use time::{Duration, OffsetDateTime};

use super::Viewer;
use super::html::{self, Esc};
use super::plot::{self, Point, STYLES, Series};
use crate::error::ApiError;
use crate::{judge, routes};

/// The hours plotted back from now by default.
pub(crate) const HOURS: i64 = 48;
/// The stored states read per host at most: a host whose state changed
/// more often than this within the range is not counted in the times
/// before its oldest state read.
const MAX_STATES: usize = 200;
/// The hosts whose states one view reads at most.
pub(crate) const READS_PER_VIEW: usize = 200;
/// The severities in the order the findings plot draws them.
const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "info"];
/// The scans per set of targets plotted at most, and the sets.
const MAX_SCANS: usize = 500;
const MAX_SCAN_SETS: usize = 10;

/// One stored state as the plots count it.
struct StatePoint {
    seq: u64,
    received_at: OffsetDateTime,
    exposed: u64,
    findings: [u64; 5],
    /// Its unapproved listeners under each set of covering approvals it was
    /// judged against (by approval id; few: approvals change rarely).
    unapproved: Vec<(Vec<i64>, u64)>,
}

/// A host's states as counted, oldest first, and the report chain they
/// were read at.
struct HostHistory {
    last_seq: u64,
    last_digest: String,
    states: Vec<StatePoint>,
    /// The read hit [`MAX_STATES`]: hours before the oldest state are unknown.
    truncated: bool,
}

/// The page's memory, shared by the views.
#[derive(Default)]
pub(crate) struct TrendsCache {
    hosts: Mutex<HashMap<String, HostHistory>>,
}

/// A count per environment and hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) hosts: u64,
    pub(crate) exposed: u64,
    pub(crate) unapproved: u64,
    pub(crate) findings: [u64; 5],
}

/// The plots' data.
pub(crate) struct Trends {
    pub(crate) range: Range,
    /// The times, oldest first, the last one now.
    pub(crate) times: Vec<OffsetDateTime>,
    /// Per environment (`-` for none), one count per time.
    pub(crate) environments: BTreeMap<String, Vec<Counts>>,
    /// Hosts whose states this view could not read yet (not counted).
    pub(crate) n_unread: usize,
    pub(crate) n_hosts: usize,
}

/// How far back the page plots, and how often: `?range=` of its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Range {
    /// Hour by hour over [`HOURS`] hours.
    #[default]
    Hours48,
    /// Every six hours over seven days.
    Days7,
    /// Day by day, at midnight UTC, over thirty days.
    Days30,
}

impl Range {
    pub(crate) const ALL: [Range; 3] = [Range::Hours48, Range::Days7, Range::Days30];

    /// The value of `?range=`; `None` for anything else.
    pub(crate) fn parse(text: &str) -> Option<Range> {
        Range::ALL.into_iter().find(|range| range.as_str() == text)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Range::Hours48 => "48h",
            Range::Days7 => "7d",
            Range::Days30 => "30d",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Range::Hours48 => "48 hours",
            Range::Days7 => "7 days",
            Range::Days30 => "30 days",
        }
    }

    /// The time between two points.
    fn step(self) -> Duration {
        match self {
            Range::Hours48 => Duration::hours(1),
            Range::Days7 => Duration::hours(6),
            Range::Days30 => Duration::days(1),
        }
    }

    /// The points before now.
    fn n_steps(self) -> i64 {
        match self {
            Range::Hours48 => HOURS,
            Range::Days7 => 28,
            Range::Days30 => 30,
        }
    }

    /// How the page says it.
    fn cadence(self) -> &'static str {
        match self {
            Range::Hours48 => "Hour by hour",
            Range::Days7 => "Every six hours",
            Range::Days30 => "Day by day (at midnight UTC)",
        }
    }
}

/// The times plotted: the last [`Range::n_steps`] whole steps (hours, six
/// hours, days from midnight UTC), then now.
pub(crate) fn times(range: Range, now: OffsetDateTime) -> Vec<OffsetDateTime> {
    let now_utc = now.to_offset(time::UtcOffset::UTC);
    let hour = now_utc
        .replace_minute(0)
        .and_then(|t| t.replace_second(0))
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap_or(now_utc);
    let top = match range {
        Range::Hours48 => hour,
        Range::Days7 => hour - Duration::hours(i64::from(hour.hour() % 6)),
        Range::Days30 => hour - Duration::hours(i64::from(hour.hour())),
    };
    let mut times: Vec<OffsetDateTime> = (0..range.n_steps())
        .rev()
        .map(|back| top - Duration::seconds(range.step().whole_seconds().saturating_mul(back)))
        .collect();
    if times.last() != Some(&now) {
        times.push(now);
    }
    times
}

/// The hours plotted by default: each whole hour of the last [`HOURS`],
/// then now.
pub(crate) fn hours(now: OffsetDateTime) -> Vec<OffsetDateTime> {
    times(Range::Hours48, now)
}

/// The approvals live at `at`, as `judge::covering` takes them (a revocation
/// after `at` did not count yet).
fn live_at(approvals: &[FleetApproval], at: OffsetDateTime) -> Vec<FleetApproval> {
    approvals
        .iter()
        .filter(|row| row.approved_at <= at)
        .filter(|row| row.revoked.as_ref().is_none_or(|r| r.at > at))
        .map(|row| FleetApproval {
            revoked: None,
            ..row.clone()
        })
        .collect()
}

fn severity_index(severity: &str) -> Option<usize> {
    SEVERITIES.iter().position(|s| *s == severity)
}

/// Reads the agent's stored states into a history, judging none yet.
fn read_history(
    store: &dyn FleetStore,
    agent: &AgentRow,
) -> Result<(HostHistory, HashMap<u64, perimeter_api::HostState>), ApiError> {
    let rows = store.states(&agent.id, MAX_STATES)?;
    let truncated = rows.len() >= MAX_STATES;
    let mut states = Vec::with_capacity(rows.len());
    let mut decoded = HashMap::with_capacity(rows.len());
    for row in rows.into_iter().rev() {
        let state = routes::decode_state(&agent.id, &row.state)?;
        let mut findings = [0; 5];
        for finding in &state.findings {
            if let Some(idx) = severity_index(&finding.severity) {
                findings[idx] += 1;
            }
        }
        states.push(StatePoint {
            seq: row.seq,
            received_at: row.received_at,
            exposed: state.listeners.iter().filter(|l| l.is_exposed()).count() as u64,
            findings,
            unapproved: Vec::new(),
        });
        decoded.insert(row.seq, state);
    }
    Ok((
        HostHistory {
            last_seq: agent.last_seq,
            last_digest: agent.last_digest.clone(),
            states,
            truncated,
        },
        decoded,
    ))
}

/// The index of the state in effect at `at`: the latest received by then.
fn state_at(history: &HostHistory, at: OffsetDateTime) -> Option<usize> {
    let after = history.states.partition_point(|s| s.received_at <= at);
    after.checked_sub(1)
}

impl TrendsCache {
    /// Counts every host at every hour, reading the states of at most
    /// `budget` hosts the cache cannot answer for (the others, if any, are
    /// counted in `n_unread`).
    pub(crate) fn trends(
        &self,
        store: &dyn FleetStore,
        range: Range,
        now: OffsetDateTime,
        budget: usize,
    ) -> Result<Trends, ApiError> {
        let agents = store.agents()?;
        let approvals = store.approvals(true)?;
        let times = times(range, now);
        let live: Vec<Vec<FleetApproval>> =
            times.iter().map(|at| live_at(&approvals, *at)).collect();
        let mut hosts = self
            .hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let listed: HashSet<&str> = agents.iter().map(|agent| agent.id.as_str()).collect();
        hosts.retain(|id, _| listed.contains(id.as_str()));
        let mut reads = 0;
        let mut n_unread = 0;
        let mut environments: BTreeMap<String, Vec<Counts>> = BTreeMap::new();
        for agent in &agents {
            let counts =
                match counts_of(&mut hosts, store, agent, &times, &live, &mut reads, budget)? {
                    Some(counts) => counts,
                    None => {
                        n_unread += 1;
                        continue;
                    }
                };
            let series = environments
                .entry(agent.environment.clone().unwrap_or_else(|| "-".to_owned()))
                .or_insert_with(|| vec![Counts::default(); times.len()]);
            for (total, one) in series.iter_mut().zip(counts) {
                if let Some(one) = one {
                    total.hosts += 1;
                    total.exposed += one.exposed;
                    total.unapproved += one.unapproved;
                    for (sum, n) in total.findings.iter_mut().zip(one.findings) {
                        *sum += n;
                    }
                }
            }
        }
        Ok(Trends {
            range,
            times,
            environments,
            n_unread,
            n_hosts: agents.len(),
        })
    }

    /// Reads and judges at most `limit` hosts the cache holds nothing
    /// current for; how many it read (the server's warm-up, in batches: 0
    /// when the cache is warm).
    pub(crate) fn warm(&self, store: &dyn FleetStore, limit: usize) -> Result<usize, ApiError> {
        let agents = store.agents()?;
        let approvals = store.approvals(true)?;
        let times = hours(OffsetDateTime::now_utc());
        let live: Vec<Vec<FleetApproval>> =
            times.iter().map(|at| live_at(&approvals, *at)).collect();
        let mut hosts = self
            .hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut reads = 0;
        for agent in &agents {
            if reads >= limit {
                break;
            }
            // Only hosts never read: the warm-up ends, however often the
            // others report meanwhile (the views keep them current).
            if hosts.contains_key(&agent.id) {
                continue;
            }
            counts_of(&mut hosts, store, agent, &times, &live, &mut reads, limit)?;
        }
        Ok(reads)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// One host's counts at each time (`None`: no state received by then, or
/// not known), or `None` when its states are not current in the cache and
/// the view's reads are spent.
fn counts_of(
    hosts: &mut HashMap<String, HostHistory>,
    store: &dyn FleetStore,
    agent: &AgentRow,
    times: &[OffsetDateTime],
    live: &[Vec<FleetApproval>],
    reads: &mut usize,
    budget: usize,
) -> Result<Option<Vec<Option<Counts>>>, ApiError> {
    let mut current = hosts.get(&agent.id).is_some_and(|history| {
        history.last_seq == agent.last_seq && history.last_digest == agent.last_digest
    });
    if !current && let Some(history) = hosts.get_mut(&agent.id) {
        // The chain moved: a report came. Most bring no new state (an
        // agent's heartbeat); the latest state's number says so with one
        // row read and nothing parsed, and costs no read of the view's.
        let newest = history.states.last().map(|s| s.seq);
        let latest = store.latest_state(&agent.id)?.map(|row| row.seq);
        if latest == newest {
            history.last_seq = agent.last_seq;
            history.last_digest.clone_from(&agent.last_digest);
            current = true;
        }
    }
    let mut decoded = None;
    if !current {
        if *reads >= budget {
            return Ok(None);
        }
        *reads += 1;
        let (history, states) = read_history(store, agent)?;
        hosts.insert(agent.id.clone(), history);
        decoded = Some(states);
    }
    let Some(history) = hosts.get_mut(&agent.id) else {
        return Ok(None);
    };
    // Which (state, covering approvals) each time needs.
    let mut needs = Vec::with_capacity(times.len());
    for (at, live) in times.iter().zip(live) {
        let Some(idx) = state_at(history, *at) else {
            needs.push(None);
            continue;
        };
        if idx == 0 && history.truncated {
            // Older states were not read: whether this one was in effect
            // then is not known.
            needs.push(None);
            continue;
        }
        let rows = judge::covering(live, agent);
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        needs.push(Some((idx, ids, *at)));
    }
    let missing = needs.iter().flatten().any(|(idx, ids, _)| {
        history
            .states
            .get(*idx)
            .is_none_or(|s| !s.unapproved.iter().any(|(known, _)| known == ids))
    });
    if missing && decoded.is_none() {
        if *reads >= budget {
            return Ok(None);
        }
        *reads += 1;
        let (_, states) = read_history(store, agent)?;
        decoded = Some(states);
    }
    let mut out = Vec::with_capacity(times.len());
    for (need, live) in needs.into_iter().zip(live) {
        let Some((idx, ids, at)) = need else {
            out.push(None);
            continue;
        };
        let Some(point) = history.states.get_mut(idx) else {
            out.push(None);
            continue;
        };
        let unapproved = match point.unapproved.iter().find(|(known, _)| *known == ids) {
            Some((_, n)) => *n,
            None => {
                let Some(state) = decoded.as_ref().and_then(|d| d.get(&point.seq)) else {
                    // Pruned between the two reads: not counted.
                    out.push(None);
                    continue;
                };
                let rows = judge::covering(live, agent);
                let parsed = judge::parsed(&rows).map_err(ApiError::internal)?;
                let n = judge::judge(&state.listeners, &rows, &parsed, at.date())
                    .iter()
                    .filter(|l| l.approval == "unapproved" || l.approval == "expired")
                    .count() as u64;
                point.unapproved.push((ids, n));
                n
            }
        };
        out.push(Some(Counts {
            hosts: 1,
            exposed: point.exposed,
            unapproved,
            findings: point.findings,
        }));
    }
    Ok(Some(out))
}

/// Scan coverage from the monitor's history: per set of targets (newest
/// first, at most [`MAX_SCAN_SETS`]), its scans oldest first.
pub(crate) fn load_scans(
    history: &std::path::Path,
) -> Result<Vec<(String, Vec<ScanSummary>)>, ApiError> {
    let store = crate::alerts::open_history(history, false)?;
    let recent = store.list_scans(MAX_SCANS).map_err(ApiError::internal)?;
    let mut sets: Vec<(String, Vec<ScanSummary>)> = Vec::new();
    for summary in recent {
        let key = summary.target_key.as_str().to_owned();
        if let Some((_, scans)) = sets.iter_mut().find(|(k, _)| *k == key) {
            scans.push(summary);
        } else if sets.len() < MAX_SCAN_SETS {
            sets.push((key, vec![summary]));
        }
    }
    for (_, scans) in &mut sets {
        scans.reverse();
    }
    Ok(sets)
}

fn series(label: &str, style: usize, times: &[OffsetDateTime], values: &[u64]) -> Series {
    Series {
        label: label.to_owned(),
        style: STYLES[style % STYLES.len()],
        points: times
            .iter()
            .zip(values)
            .map(|(at, n)| Point::new(*at, *n))
            .collect(),
    }
}

/// The times at which at least one host of the series had reported: the
/// plots start there.
fn from_first(times: &[OffsetDateTime], counts: &[Counts]) -> usize {
    counts
        .iter()
        .position(|c| c.hosts > 0)
        .unwrap_or(times.len())
}

fn scan_note(summary: &ScanSummary) -> &'static str {
    match summary.status {
        perimeter_store::ScanStatus::Complete => "",
        perimeter_store::ScanStatus::Running => "running",
        perimeter_store::ScanStatus::Incomplete => "incomplete",
        perimeter_store::ScanStatus::Interrupted => "interrupted",
    }
}

/// The page. `scans` is `None` when the server runs no monitor (or its
/// history is not there yet).
pub(crate) fn page(
    trends: &Trends,
    scans: Option<&[(String, Vec<ScanSummary>)]>,
    viewer: &Viewer,
    now: OffsetDateTime,
) -> String {
    let mut body = String::from("<h1>Trends</h1>");
    // The ranges as plain links: stable URLs to paste, no script needed.
    body.push_str("<nav class=\"ranges\" aria-label=\"range\">");
    for range in Range::ALL {
        if range == trends.range {
            let _ = write!(
                body,
                "<strong aria-current=\"page\">{}</strong> ",
                range.label()
            );
        } else {
            let _ = write!(
                body,
                "<a href=\"/trends?range={}\">{}</a> ",
                range.as_str(),
                range.label()
            );
        }
    }
    body.push_str("</nav>");
    let _ = write!(
        body,
        "<p class=\"hint\">{} over the last {}, as the server knew the fleet then: \
         each host's latest state received by that time, judged against the approvals live at \
         that time. Hosts are grouped by the environment they are in now. Drawn {}.</p>",
        trends.range.cadence(),
        trends.range.label(),
        html::time(now)
    );
    if trends.n_unread > 0 {
        let _ = write!(
            body,
            "<p class=\"notice\" role=\"status\">{} of {} hosts are not counted yet: their states \
             are being read. Reload in a moment.</p>",
            trends.n_unread, trends.n_hosts
        );
    }
    body.push_str("<section><h2>Exposed listeners by environment</h2>");
    if trends.environments.is_empty() {
        body.push_str("<p class=\"quiet\">No host has reported yet.</p>");
    }
    body.push_str("<div class=\"plots\">");
    let mut fleet = vec![Counts::default(); trends.times.len()];
    for (name, counts) in &trends.environments {
        for (total, one) in fleet.iter_mut().zip(counts) {
            total.hosts += one.hosts;
            for (sum, n) in total.findings.iter_mut().zip(one.findings) {
                *sum += n;
            }
        }
        let start = from_first(&trends.times, counts);
        let times = trends.times.get(start..).unwrap_or_default();
        let counts = counts.get(start..).unwrap_or_default();
        let exposed: Vec<u64> = counts.iter().map(|c| c.exposed).collect();
        let unapproved: Vec<u64> = counts.iter().map(|c| c.unapproved).collect();
        let hosts: Vec<u64> = counts.iter().map(|c| c.hosts).collect();
        let label = if name == "-" {
            "hosts in no environment".to_owned()
        } else {
            format!("environment {name}")
        };
        let _ = write!(
            body,
            "<div class=\"plot-box\" data-environment=\"{}\"><h3>{}</h3>{}</div>",
            Esc(name),
            Esc(&label),
            plot::chart(
                &format!("Exposed and unapproved listeners, {label}"),
                &[
                    series("exposed", 0, times, &exposed),
                    series("unapproved", 1, times, &unapproved),
                    series("hosts reporting", 2, times, &hosts),
                ],
            )
        );
    }
    body.push_str("</div></section>");

    body.push_str("<section><h2>Findings by severity</h2>");
    let start = from_first(&trends.times, &fleet);
    let times = trends.times.get(start..).unwrap_or_default();
    let counts = fleet.get(start..).unwrap_or_default();
    if times.is_empty() {
        body.push_str("<p class=\"quiet\">No host has reported yet.</p>");
    } else {
        let all: Vec<Series> = SEVERITIES
            .iter()
            .enumerate()
            .map(|(idx, severity)| {
                let values: Vec<u64> = counts.iter().map(|c| c.findings[idx]).collect();
                // Critical in vermillion with squares, high in orange with
                // crosses, the rest in blue, green and purple.
                let style = [1, 4, 0, 2, 3][idx];
                series(severity, style, times, &values)
            })
            .collect();
        let _ = write!(
            body,
            "<div class=\"plots\"><div class=\"plot-box\">{}</div></div>",
            plot::chart("Findings the agents report, by severity, whole fleet", &all)
        );
    }
    body.push_str("</section>");

    body.push_str("<section><h2>Scan coverage</h2>");
    match scans {
        None => body.push_str(
            "<p class=\"quiet\">This server runs no monitor (or its history is not there yet): \
             start it with <code>perimeter server --monitor FILE</code> and scan jobs in that \
             file to see its scans here.</p>",
        ),
        Some([]) => body.push_str("<p class=\"quiet\">No scan yet.</p>"),
        Some(sets) => {
            body.push_str(
                "<p class=\"hint\">Each scan of a set of targets: the ports it decided (open, \
                 closed or filtered) and those open. A hollow marker is a scan that did not \
                 complete: its ports are fewer and it is never compared with.</p><div class=\"plots\">",
            );
            for (_, scans) in sets {
                let Some(last) = scans.last() else { continue };
                let decided = Series {
                    label: "ports decided".to_owned(),
                    style: STYLES[0],
                    points: scans
                        .iter()
                        .map(|s| Point {
                            at: s.info.started,
                            value: s.n_results,
                            hollow: !s.info.complete,
                            note: scan_note(s),
                        })
                        .collect(),
                };
                let open = Series {
                    label: "open".to_owned(),
                    style: STYLES[1],
                    points: scans
                        .iter()
                        .map(|s| Point {
                            at: s.info.started,
                            value: s.n_open,
                            hollow: !s.info.complete,
                            note: scan_note(s),
                        })
                        .collect(),
                };
                let n_incomplete = scans.iter().filter(|s| !s.info.complete).count();
                let targets = last.info.targets.join(" ");
                let _ = write!(
                    body,
                    "<div class=\"plot-box\"><h3><code>{}</code> <small>ports {}</small></h3>\
                     <p class=\"hint\">{} {}, {} not complete; the latest \
                     <a href=\"/exposure/scans/{}\">scan {}</a>, {}.</p>{}</div>",
                    Esc(&targets),
                    Esc(&last.info.ports),
                    scans.len(),
                    if scans.len() == 1 { "scan" } else { "scans" },
                    n_incomplete,
                    last.info.id,
                    last.info.id,
                    html::time(last.info.started),
                    plot::chart(&format!("Scans of {targets}"), &[decided, open])
                );
            }
            body.push_str("</div>");
        }
    }
    body.push_str("</section>");
    html::page("Trends", "/trends", Some(&viewer.reader()), &body)
}

#[cfg(test)]
mod tests {
    use perimeter_api::{FindingDoc, HostState, ListenerDoc, NewApprovalDoc, OwnerDoc, SCHEMA};
    use perimeter_store::fleet::{AgentStatus, NewAgent, NewReport, SqliteFleet};

    use super::*;

    fn listener(address: &str, port: u16, scope: &str) -> ListenerDoc {
        ListenerDoc {
            netns: "host".into(),
            protocol: "tcp".into(),
            address: address.into(),
            port,
            scope: scope.into(),
            owners: vec![OwnerDoc {
                pid: 1,
                name: "redis-server".into(),
                exe: Some("/usr/bin/redis-server".into()),
                package: Some("redis-server".into()),
                user: "redis".into(),
            }],
            reach: None,
        }
    }

    fn enrol(store: &mut SqliteFleet, id: &str, environment: Option<&str>, at: OffsetDateTime) {
        store
            .enrol_agent(&NewAgent {
                id: id.into(),
                public_key: id.as_bytes().to_vec(),
                hostname: id.into(),
                status: AgentStatus::Accepted,
                enrolled_at: at,
            })
            .expect("enrol");
        store
            .set_agent_environment(id, environment, "test", at)
            .expect("environment");
    }

    fn report(store: &mut SqliteFleet, id: &str, seq: u64, at: OffsetDateTime, state: &HostState) {
        store
            .record_report(&NewReport {
                agent_id: id.into(),
                seq,
                digest: format!("{id}-{seq}"),
                hostname: id.into(),
                taken_at: at,
                received_at: at,
                state: Some(serde_json::to_string(state).expect("json")),
                events: Vec::new(),
            })
            .expect("report");
    }

    #[test]
    fn each_hour_counts_the_state_received_by_then_judged_by_the_approvals_live_then() {
        let now = OffsetDateTime::now_utc();
        let times = hours(now);
        assert_eq!(times.len() as i64, HOURS + 1);
        let half = Duration::minutes(30);
        let mut store = SqliteFleet::open_in_memory().expect("store");
        enrol(&mut store, "ag_a", Some("prod"), times[30]);
        // Two exposed listeners and a critical finding, then one of them gone.
        let first = HostState {
            hostname: "a".into(),
            listeners: vec![
                listener("0.0.0.0", 6379, "wildcard"),
                listener("10.0.0.5", 31337, "private"),
                listener("127.0.0.1", 5432, "loopback"),
            ],
            findings: vec![FindingDoc {
                rule: "redis.no-auth".into(),
                severity: "critical".into(),
                subject: "tcp 0.0.0.0:6379".into(),
                message: "no password".into(),
                evidence: Vec::new(),
                remedy: String::new(),
            }],
        };
        report(&mut store, "ag_a", 1, times[40] - half, &first);
        let second = HostState {
            hostname: "a".into(),
            listeners: vec![
                listener("0.0.0.0", 6379, "wildcard"),
                listener("127.0.0.1", 5432, "loopback"),
            ],
            findings: Vec::new(),
        };
        report(&mut store, "ag_a", 2, times[44] - half, &second);
        // Redis approved fleet-wide half an hour before hour 46.
        let doc = NewApprovalDoc {
            schema: SCHEMA.into(),
            scope: "fleet".into(),
            netns: Some("host".into()),
            protocol: "tcp".into(),
            address: None,
            bind_scope: Some("wildcard".into()),
            port: 6379,
            exe: Some("/usr/bin/redis-server".into()),
            package: Some("redis-server".into()),
            user: Some("redis".into()),
            unowned: false,
            reason: "the cache".into(),
            expires: None,
            recorded_by: None,
            recorded_at: None,
        };
        let approval = routes::fleet_approval(&doc, "alice", times[46] - half).expect("approval");
        store.add_approval(&approval).expect("stored");
        // A second host in no environment, never reported.
        enrol(&mut store, "ag_b", None, times[30]);

        let cache = TrendsCache::default();
        let trends = cache
            .trends(&store, Range::Hours48, now, 10)
            .expect("trends");
        assert_eq!(trends.n_unread, 0);
        let prod = &trends.environments["prod"];
        let at = |idx: usize| {
            (
                prod[idx].hosts,
                prod[idx].exposed,
                prod[idx].unapproved,
                prod[idx].findings[0],
            )
        };
        assert_eq!(at(39), (0, 0, 0, 0), "nothing received yet");
        assert_eq!(at(40), (1, 2, 2, 1));
        assert_eq!(at(43), (1, 2, 2, 1));
        assert_eq!(at(44), (1, 1, 1, 0), "31337 gone, the finding resolved");
        assert_eq!(at(45), (1, 1, 1, 0), "not yet approved");
        assert_eq!(at(46), (1, 1, 0, 0), "approved from then on");
        assert_eq!(at(times.len() - 1), (1, 1, 0, 0));
        assert!(trends.environments["-"].iter().all(|c| c.hosts == 0));

        // Revoked now: the hours before stay as they were; only now changes.
        let id = store.approvals(false).expect("approvals")[0].id;
        store
            .revoke_approval(id, "alice", "no longer", now - Duration::seconds(1))
            .expect("revoke");
        let again = cache
            .trends(&store, Range::Hours48, now, 10)
            .expect("trends");
        let prod = &again.environments["prod"];
        assert_eq!(prod[46].unapproved, 0);
        assert_eq!(prod[times.len() - 1].unapproved, 1);
        assert_eq!(cache.len(), 2);

        // The page draws it, escaped, without a style attribute.
        let html = page(
            &again,
            None,
            &crate::web::Viewer {
                user: "<vera>".into(),
                role: perimeter_store::fleet::Role::Viewer,
                csrf: "t".into(),
                session_id: String::new(),
            },
            now,
        );
        assert!(html.contains("environment prod"));
        assert!(html.contains("This server runs no monitor"));
        assert!(!html.contains("<vera>") && !html.contains("style="));
    }

    #[test]
    fn each_range_steps_back_from_a_whole_step_and_ends_now() {
        let now = time::macros::datetime!(2026-12-02 22:43:10.5 UTC);
        for (range, n, first, last_whole) in [
            (
                Range::Hours48,
                49,
                time::macros::datetime!(2026-11-30 23:00 UTC),
                time::macros::datetime!(2026-12-02 22:00 UTC),
            ),
            (
                Range::Days7,
                29,
                time::macros::datetime!(2026-11-26 00:00 UTC),
                time::macros::datetime!(2026-12-02 18:00 UTC),
            ),
            (
                Range::Days30,
                31,
                time::macros::datetime!(2026-11-03 00:00 UTC),
                time::macros::datetime!(2026-12-02 00:00 UTC),
            ),
        ] {
            let times = times(range, now);
            assert_eq!(times.len(), n, "{range:?}");
            assert_eq!(times[0], first, "{range:?}");
            assert_eq!(times[n - 2], last_whole, "{range:?}");
            assert_eq!(times[n - 1], now, "{range:?}");
            assert!(times.is_sorted(), "{range:?}");
            assert_eq!(Range::parse(range.as_str()), Some(range));
        }
        assert_eq!(Range::parse("1y"), None);
        assert_eq!(Range::parse("48H"), None);
    }

    #[test]
    fn a_long_range_counts_day_by_day_from_the_same_cache() {
        let now = OffsetDateTime::now_utc();
        let mut store = SqliteFleet::open_in_memory().expect("store");
        enrol(&mut store, "ag_a", Some("prod"), now - Duration::days(20));
        let two = HostState {
            hostname: "a".into(),
            listeners: vec![
                listener("0.0.0.0", 6379, "wildcard"),
                listener("10.0.0.5", 31337, "private"),
            ],
            findings: Vec::new(),
        };
        report(&mut store, "ag_a", 1, now - Duration::days(10), &two);
        let one = HostState {
            hostname: "a".into(),
            listeners: vec![listener("0.0.0.0", 6379, "wildcard")],
            findings: Vec::new(),
        };
        report(&mut store, "ag_a", 2, now - Duration::days(3), &one);

        let cache = TrendsCache::default();
        let month = cache
            .trends(&store, Range::Days30, now, 10)
            .expect("trends");
        assert_eq!(month.range, Range::Days30);
        let exposed: Vec<(OffsetDateTime, u64, u64)> = month
            .times
            .iter()
            .zip(&month.environments["prod"])
            .map(|(at, c)| (*at, c.hosts, c.exposed))
            .collect();
        for (at, hosts, n) in &exposed {
            let expected = if *at < now - Duration::days(10) {
                (0, 0)
            } else if *at < now - Duration::days(3) {
                (1, 2)
            } else {
                (1, 1)
            };
            assert_eq!((*hosts, *n), expected, "at {at}");
        }
        assert!(exposed.iter().any(|(_, _, n)| *n == 2), "{exposed:?}");
        assert!(exposed.iter().any(|(_, h, _)| *h == 0), "{exposed:?}");
        // The week and the default two days, from the cache (no read left).
        let week = cache.trends(&store, Range::Days7, now, 0).expect("trends");
        assert_eq!(week.n_unread, 0);
        let prod = &week.environments["prod"];
        assert_eq!((prod[0].hosts, prod[0].exposed), (1, 2), "a week ago");
        assert_eq!(prod[prod.len() - 1].exposed, 1);
        let days = cache
            .trends(&store, Range::Hours48, now, 0)
            .expect("trends");
        assert!(days.environments["prod"].iter().all(|c| c.exposed == 1));
    }

    #[test]
    fn a_view_reads_at_most_its_budget_of_hosts_and_counts_the_rest_as_unread() {
        let now = OffsetDateTime::now_utc();
        let mut store = SqliteFleet::open_in_memory().expect("store");
        let state = HostState {
            hostname: "h".into(),
            listeners: vec![listener("0.0.0.0", 22, "wildcard")],
            findings: Vec::new(),
        };
        for idx in 0..5 {
            let id = format!("ag_{idx}");
            enrol(&mut store, &id, Some("dev"), now - Duration::hours(3));
            report(&mut store, &id, 1, now - Duration::hours(2), &state);
        }
        let cache = TrendsCache::default();
        let first = cache
            .trends(&store, Range::Hours48, now, 2)
            .expect("trends");
        assert_eq!((first.n_unread, cache.len()), (3, 2));
        assert_eq!(cache.warm(&store, 2).expect("warm"), 2);
        assert_eq!(cache.warm(&store, 2).expect("warm"), 1);
        assert_eq!(cache.warm(&store, 2).expect("warm"), 0);
        let warm = cache
            .trends(&store, Range::Hours48, now, 0)
            .expect("trends");
        assert_eq!(warm.n_unread, 0);
        // A heartbeat (a report without a new state) needs no read.
        store
            .record_report(&NewReport {
                agent_id: "ag_0".into(),
                seq: 2,
                digest: "ag_0-2".into(),
                hostname: "ag_0".into(),
                taken_at: now - Duration::minutes(5),
                received_at: now - Duration::minutes(5),
                state: None,
                events: Vec::new(),
            })
            .expect("heartbeat");
        let warm = cache
            .trends(&store, Range::Hours48, now, 0)
            .expect("trends");
        assert_eq!(warm.n_unread, 0);
        // A new state does.
        report(&mut store, "ag_1", 2, now - Duration::minutes(5), &state);
        assert_eq!(
            cache
                .trends(&store, Range::Hours48, now, 0)
                .expect("trends")
                .n_unread,
            1
        );
        let dev = &warm.environments["dev"];
        assert_eq!(
            (dev[dev.len() - 1].hosts, dev[dev.len() - 1].exposed),
            (5, 5)
        );
    }
}
