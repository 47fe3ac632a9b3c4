//! `perimeter alerts`: what the monitor raised and where it went, the
//! conditions it still sees, how each channel is doing; `alerts ack ID`
//! acknowledges a condition (who, why, until when are kept). With --server,
//! the same of the monitor inside a `perimeter server`.

use anyhow::{Result, bail};
use perimeter_report::alert::one_line;
use perimeter_report::monitor::{
    AckView, AlertView, ChannelView, ConditionView, alerts_to_human, alerts_to_json,
};
use perimeter_store::MonitorStore as _;
use time::OffsetDateTime;

use crate::args::{AckArgs, AlertsAction, AlertsArgs, Format};
use crate::exit_codes::ExitCode;
use crate::pipeline::fleet::{As, Session};
use crate::pipeline::store;
use crate::settings::{Zero, parse_duration};
use crate::terminal::Terminal;

pub(crate) fn run(args: AlertsArgs, _terminal: &Terminal) -> Result<ExitCode> {
    if let Some(AlertsAction::Ack(ack)) = args.action {
        return acknowledge(ack);
    }
    if args.server.server.is_some() {
        return from_server(&args);
    }
    let db = store::open_read_only(&args.db)?;
    let now = OffsetDateTime::now_utc();
    let alerts = db.alerts(args.limit)?;
    let conditions = db.open_conditions()?;
    let acknowledgements = db.latest_acknowledgements()?;
    let channels = db.channel_tallies()?;
    let alert_views: Vec<AlertView<'_>> = alerts
        .iter()
        .map(|a| AlertView {
            id: a.id,
            job: &a.job,
            created: a.created,
            severity: &a.severity,
            n_changes: a.n_changes,
            deliveries: &a.deliveries,
        })
        .collect();
    let condition_views: Vec<ConditionView<'_>> = conditions
        .iter()
        .map(|c| ConditionView {
            id: c.id,
            job: &c.job,
            kind: &c.kind,
            severity: &c.severity,
            subject: &c.subject,
            first_seen: c.first_seen,
            last_seen: c.last_seen,
            acked_until: c.acked_until,
            acked_by: acknowledgements
                .iter()
                .find(|ack| ack.job == c.job && ack.key == c.key)
                .map(|ack| AckView {
                    by: &ack.by,
                    at: ack.at,
                    reason: &ack.reason,
                }),
        })
        .collect();
    let channel_views: Vec<ChannelView<'_>> = channels
        .iter()
        .map(|c| ChannelView {
            channel: &c.channel,
            sent: c.sent,
            pending: c.pending,
            failed: c.failed,
            last_error: c.last_error.as_deref(),
        })
        .collect();
    match args.format {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&alerts_to_json(
                &alert_views,
                &condition_views,
                &channel_views,
                now
            ))?
        ),
        Format::Human => out!(
            "{}",
            alerts_to_human(
                &alert_views,
                &condition_views,
                &channel_views,
                db.path(),
                now
            )
        ),
    }
    Ok(ExitCode::Clean)
}

/// What the monitor inside a `perimeter server` raised, as the local
/// listing shows a history (the server does not list its channels).
fn from_server(args: &AlertsArgs) -> Result<ExitCode> {
    let session = Session::open(&args.server, As::Person)?;
    let list = session.alerts(args.limit)?;
    let now = OffsetDateTime::now_utc();
    let alert_views: Vec<AlertView<'_>> = list
        .alerts
        .iter()
        .map(|a| AlertView {
            id: a.id,
            job: &a.job,
            created: a.created,
            severity: &a.severity,
            n_changes: a.changes,
            deliveries: &a.deliveries,
        })
        .collect();
    let condition_views: Vec<ConditionView<'_>> = list
        .conditions
        .iter()
        .map(|c| ConditionView {
            id: c.id,
            job: &c.job,
            kind: &c.kind,
            severity: &c.severity,
            subject: &c.subject,
            first_seen: c.first_seen,
            last_seen: c.last_seen,
            acked_until: c.acknowledged_until,
            acked_by: c.acknowledgement.as_ref().map(|ack| AckView {
                by: &ack.by,
                at: ack.at,
                reason: &ack.reason,
            }),
        })
        .collect();
    match args.format {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&alerts_to_json(
                &alert_views,
                &condition_views,
                &[],
                now
            ))?
        ),
        Format::Human => out!(
            "{}",
            alerts_to_human(
                &alert_views,
                &condition_views,
                &[],
                std::path::Path::new(args.server.server.as_deref().unwrap_or("the server")),
                now
            )
        ),
    }
    Ok(ExitCode::Clean)
}

fn acknowledge(args: AckArgs) -> Result<ExitCode> {
    let reason = args.reason.trim();
    if reason.is_empty() {
        bail!("--reason must say why");
    }
    let now = OffsetDateTime::now_utc();
    let until = match args.until.as_deref() {
        None => None,
        Some(text) => Some(until(text, now)?),
    };
    if args.server.server.is_some() {
        let session = Session::open(&args.server, As::Person)?;
        let condition = session.acknowledge(args.condition, reason, until)?;
        match until {
            Some(until) => outln!(
                "condition {} ({}) acknowledged on the server until {until}",
                condition.id,
                one_line(&condition.subject)
            ),
            None => outln!(
                "condition {} ({}) acknowledged on the server for good",
                condition.id,
                one_line(&condition.subject)
            ),
        }
        return Ok(ExitCode::Clean);
    }
    let by = args
        .by
        .clone()
        .or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let mut db = store::open_existing(&args.db)?;
    if !db.acknowledge(args.condition, &by, reason, now, until)? {
        bail!(
            "no condition {} in {} (see `perimeter alerts`)",
            args.condition,
            db.path().display()
        );
    }
    match until {
        Some(until) => outln!(
            "condition {} acknowledged by {by} until {until}",
            args.condition
        ),
        None => outln!("condition {} acknowledged by {by} for good", args.condition),
    }
    Ok(ExitCode::Clean)
}

/// `7d` from now, or the end of a day given as YYYY-MM-DD (UTC).
fn until(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime> {
    if let Ok(date) = time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    ) {
        let end = date.with_hms(23, 59, 59)?.assume_utc();
        if end <= now {
            bail!("--until {text} is in the past");
        }
        return Ok(end);
    }
    let wait = parse_duration("--until", text, Zero::Refused)?;
    Ok(now + wait)
}
