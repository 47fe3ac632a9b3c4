//! The Exposure page: what the monitor's outside-in scans see. For each set
//! of targets the monitor scans (a job's ranges), its latest complete scan:
//! open ports with the service, version and TLS certificate each answered
//! with, unauthenticated services first; and what changed since the scan
//! before. Every scan has a page of its own (`/exposure/scans/{id}`), a URL
//! to paste into a ticket.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use perimeter_model::{AuthState, PortResult, PortState};
use perimeter_store::{Change, ScanSummary, SqliteStore, Store as _, diff_scan_runs};
use time::OffsetDateTime;

use super::Viewer;
use super::html::{self, Esc};
use crate::error::ApiError;

/// The scans listed under "Recent scans".
const RECENT: usize = 50;
/// The sets of targets shown at most, newest first.
const MAX_TARGET_SETS: usize = 20;
/// A certificate expiring within this many days is flagged.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// One scan as the page shows it.
pub(crate) struct ScanView {
    pub(crate) summary: ScanSummary,
    /// Its open ports, worst first.
    pub(crate) open: Vec<PortResult>,
    /// The complete scan of the same targets before it, and what changed.
    pub(crate) previous: Option<(ScanSummary, Vec<Change>)>,
    /// Open ports in the complete scans of the same targets up to this one,
    /// oldest first (at most [`HISTORY`]): the plot.
    pub(crate) history: Vec<(OffsetDateTime, u64)>,
}

/// The scans a plot shows at most.
const HISTORY: usize = 60;

/// The page's data.
pub(crate) struct Exposure {
    pub(crate) scans: Vec<ScanView>,
    pub(crate) recent: Vec<ScanSummary>,
}

fn store_error(err: perimeter_store::StoreError) -> ApiError {
    ApiError::internal(err)
}

/// How bad an open port looks: unauthenticated first, then by its worst
/// finding, then in address order.
fn badness(result: &PortResult) -> (u8, std::cmp::Reverse<Option<perimeter_model::Severity>>) {
    let unauthenticated = result
        .service
        .as_ref()
        .is_some_and(|s| s.auth == AuthState::None);
    let worst = result.findings.iter().map(|f| f.severity).max();
    (u8::from(!unauthenticated), std::cmp::Reverse(worst))
}

fn view(store: &SqliteStore, summary: ScanSummary) -> Result<ScanView, ApiError> {
    let (info, results) = store.load_scan(summary.info.id).map_err(store_error)?;
    let mut open: Vec<PortResult> = results
        .iter()
        .filter(|r| r.state == PortState::Open)
        .cloned()
        .collect();
    open.sort_by(|a, b| {
        badness(a)
            .cmp(&badness(b))
            .then_with(|| (a.address, a.port).cmp(&(b.address, b.port)))
    });
    let earlier: Vec<ScanSummary> = store
        .previous_scans_of(&summary.target_key, HISTORY + 1)
        .map_err(store_error)?
        .into_iter()
        .filter(|earlier| earlier.info.id <= summary.info.id)
        .collect();
    let mut history: Vec<(OffsetDateTime, u64)> = earlier
        .iter()
        .take(HISTORY)
        .map(|s| (s.info.started, s.n_open))
        .collect();
    history.reverse();
    let before = earlier
        .into_iter()
        .find(|earlier| earlier.info.id < summary.info.id);
    let previous = match before {
        Some(before) => {
            let (before_info, before_results) =
                store.load_scan(before.info.id).map_err(store_error)?;
            let changes = diff_scan_runs(&before_info, &before_results, &info, &results);
            Some((before, changes))
        }
        None => None,
    };
    Ok(ScanView {
        summary,
        open,
        previous,
        history,
    })
}

/// The latest complete scan of each set of targets, or the one scan asked
/// for; `NotFound` for a scan the history does not hold.
pub(crate) fn load(history: &Path, scan: Option<i64>) -> Result<Exposure, ApiError> {
    let store = crate::alerts::open_history(history, false)?;
    let recent = store.list_scans(RECENT).map_err(store_error)?;
    let mut scans = Vec::new();
    match scan {
        Some(id) => {
            let summary = store
                .list_scans(usize::MAX)
                .map_err(store_error)?
                .into_iter()
                .find(|s| s.info.id == id)
                .ok_or_else(|| ApiError::not_found(format!("no scan {id} in the history")))?;
            scans.push(view(&store, summary)?);
        }
        None => {
            let mut seen = BTreeSet::new();
            for summary in &recent {
                if seen.len() >= MAX_TARGET_SETS {
                    break;
                }
                if summary.info.complete && seen.insert(summary.target_key.as_str().to_owned()) {
                    scans.push(view(&store, summary.clone())?);
                }
            }
        }
    }
    Ok(Exposure { scans, recent })
}

fn tls_cell(result: &PortResult, now: OffsetDateTime) -> String {
    let Some(tls) = result.service.as_ref().and_then(|s| s.tls.as_ref()) else {
        return String::new();
    };
    let expiry = match tls.not_after {
        Some(at) => {
            let days = (at - now).whole_days();
            let class = if at <= now {
                "bad"
            } else if days < EXPIRY_WARNING_DAYS {
                "warn"
            } else {
                "quiet"
            };
            let words = if at <= now {
                "EXPIRED".to_owned()
            } else {
                format!("{days} days left")
            };
            format!(
                "<br><small class=\"{class}\">expires {} ({words})</small>",
                html::time(at)
            )
        }
        None => String::new(),
    };
    format!(
        "<code>{}</code><br><small>issuer {}</small>{expiry}",
        Esc(&tls.subject),
        Esc(&tls.issuer)
    )
}

fn scan_title(summary: &ScanSummary) -> String {
    format!(
        "<a href=\"/exposure/scans/{}\">Scan {}</a> of <code>{}</code> <small>(ports {}, profile {})</small>",
        summary.info.id,
        summary.info.id,
        Esc(&summary.info.targets.join(" ")),
        Esc(&summary.info.ports),
        Esc(&summary.info.profile)
    )
}

fn scan_section(out: &mut String, view: &ScanView, now: OffsetDateTime) {
    let info = &view.summary.info;
    let _ = write!(
        out,
        "<section id=\"scan-{}\"><h2>{}</h2><p class=\"hint\">Started {}, {}; {} open of {} results.</p>",
        info.id,
        scan_title(&view.summary),
        html::time(info.started),
        info.finished.map_or_else(
            || "not finished".to_owned(),
            |at| format!("finished {}", html::time(at))
        ),
        view.open.len(),
        view.summary.n_results
    );
    if view.history.len() >= 2 {
        let series = super::plot::Series {
            label: "open ports".to_owned(),
            style: super::plot::STYLES[1],
            points: view
                .history
                .iter()
                .map(|(at, n)| super::plot::Point::new(*at, *n))
                .collect(),
        };
        out.push_str(&super::plot::chart(
            "Open ports in each complete scan of these targets",
            &[series],
        ));
    }
    if view.open.is_empty() {
        out.push_str("<p class=\"ok\">Nothing open.</p>");
    } else {
        out.push_str(
            "<div class=\"scroll\"><table class=\"exposure cards\"><thead><tr><th>Address</th><th>Port</th>\
             <th>Service</th><th>Version</th><th>Authentication</th><th>TLS certificate</th>\
             <th>Findings</th></tr></thead><tbody>",
        );
        for result in &view.open {
            let service = result.service.as_ref();
            let auth = match service.map(|s| s.auth) {
                Some(AuthState::None) => "<strong class=\"bad\">NONE</strong>".to_owned(),
                Some(AuthState::Required) => "<span class=\"ok\">required</span>".to_owned(),
                _ => "<span class=\"quiet\">unknown</span>".to_owned(),
            };
            let version = service
                .map(|s| {
                    [s.product.as_deref(), s.version.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let findings = result
                .findings
                .iter()
                .map(|f| {
                    format!(
                        "{} <code>{}</code>",
                        super::pages::severity_badge(f.severity.as_str()),
                        Esc(&f.rule)
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>");
            // What the service said, as it said it: the evidence a person
            // checks the identification against (and the text a hostile
            // service writes to run in this page, escaped like the rest).
            let banner = service
                .and_then(|s| s.banner.as_deref())
                .filter(|banner| !banner.is_empty())
                .map(|banner| format!("<br><code class=\"banner\">{}</code>", Esc(banner)))
                .unwrap_or_default();
            let _ = write!(
                out,
                "<tr data-port=\"{}\"><td data-label=\"Address\"><code>{}</code></td><td data-label=\"Port\">{}/{}</td>\
                 <td data-label=\"Service\">{}{banner}</td><td data-label=\"Version\">{}</td>\
                 <td data-label=\"Authentication\">{auth}</td><td data-label=\"TLS certificate\">{}</td>\
                 <td data-label=\"Findings\">{findings}</td></tr>",
                result.port,
                Esc(&result.address.to_string()),
                result.port,
                Esc(result.protocol.as_str()),
                Esc(service.map_or("", |s| s.name.as_str())),
                Esc(&version),
                tls_cell(result, now),
            );
        }
        out.push_str("</tbody></table></div>");
    }
    match &view.previous {
        None => out.push_str(
            "<p class=\"quiet\">No earlier complete scan of these targets to compare with.</p>",
        ),
        Some((before, changes)) => {
            let _ = write!(
                out,
                "<h3>Since <a href=\"/exposure/scans/{}\">scan {}</a> ({})</h3>",
                before.info.id,
                before.info.id,
                html::time(before.info.started)
            );
            if changes.is_empty() {
                out.push_str("<p class=\"ok\">No change.</p>");
            } else {
                out.push_str("<ul class=\"scan-changes\">");
                for change in changes {
                    let _ = write!(
                        out,
                        "<li>{} <code>{}</code> {}</li>",
                        super::pages::severity_badge(change.severity.as_str()),
                        Esc(change.kind.as_str()),
                        Esc(&change.message)
                    );
                }
                out.push_str("</ul>");
            }
        }
    }
    out.push_str("</section>");
}

/// The page; `None` when the server runs no monitor. `one` is a single
/// scan's page.
pub(crate) fn page(
    exposure: Option<&Exposure>,
    one: bool,
    viewer: &Viewer,
    now: OffsetDateTime,
) -> String {
    let mut body = String::from("<h1>Exposure</h1>");
    let Some(exposure) = exposure else {
        body.push_str(
            "<p class=\"quiet\">This server runs no monitor. Start it with <code>perimeter server \
             --monitor FILE</code> and scan jobs in that file to see here what the outside sees.</p>",
        );
        return html::page("Exposure", "/exposure", Some(&viewer.reader()), &body);
    };
    if !one {
        body.push_str(
            "<p class=\"hint\">The latest complete scan of each set of targets the monitor scans: \
             unauthenticated services first, then by their worst finding.</p>",
        );
    }
    if exposure.scans.is_empty() {
        body.push_str("<p class=\"quiet\">No complete scan yet.</p>");
    }
    for view in &exposure.scans {
        scan_section(&mut body, view, now);
    }
    if !one {
        body.push_str("<section><h2>Recent scans</h2>");
        if exposure.recent.is_empty() {
            body.push_str("<p class=\"quiet\">None.</p>");
        } else {
            body.push_str(
                "<div class=\"scroll\"><table class=\"scans\"><thead><tr><th>#</th><th>Started</th>\
                 <th>Targets</th><th>Status</th><th>Open</th></tr></thead><tbody>",
            );
            for summary in &exposure.recent {
                let _ = write!(
                    body,
                    "<tr><td><a href=\"/exposure/scans/{}\">{}</a></td><td>{}</td><td><code>{}</code></td>\
                     <td>{}</td><td>{}</td></tr>",
                    summary.info.id,
                    summary.info.id,
                    html::time(summary.info.started),
                    Esc(&summary.info.targets.join(" ")),
                    Esc(&format!("{:?}", summary.status).to_lowercase()),
                    summary.n_open
                );
            }
            body.push_str("</tbody></table></div>");
        }
        body.push_str("</section>");
    }
    html::page("Exposure", "/exposure", Some(&viewer.reader()), &body)
}
