//! The monitor inside the server (`perimeter server --monitor`), as the API
//! and the dashboard see it: its open conditions and alerts from its history
//! database, and a person's acknowledgement of a condition, which the
//! history keeps (who, why, until when) and the fleet's trail records.
//!
//! The monitor owns its history; the server opens it per request (SQLite,
//! WAL: readers never wait for the monitor's writes) and writes only
//! acknowledgements, each in one transaction of the history's own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::HashMap;

use perimeter_api::{AcknowledgementDoc, AlertDoc, AlertList, ConditionDoc, SCHEMA};
use perimeter_model::Severity;
use perimeter_store::fleet::NewTrailEntry;
use perimeter_store::{MonitorStore as _, SqliteStore};
use time::OffsetDateTime;

use crate::AppState;
use crate::error::ApiError;

/// The alerts listed at most.
pub(crate) const MAX_ALERTS: usize = 1_000;

pub(crate) fn history(state: &AppState) -> Result<PathBuf, ApiError> {
    state.config.monitor_history.clone().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "no_monitor",
            "this server runs no monitor: start it with --monitor FILE",
        )
    })
}

pub(crate) fn open_history(path: &Path, write: bool) -> Result<SqliteStore, ApiError> {
    if !path.is_file() {
        tracing::warn!("the monitor's history {} is not there yet", path.display());
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the monitor has not started its history yet; try again later",
        ));
    }
    let opened = if write {
        SqliteStore::open(path)
    } else {
        SqliteStore::open_read_only(path)
    };
    opened.map_err(ApiError::unavailable)
}

fn condition_doc(
    row: perimeter_store::ConditionRow,
    acknowledged_until: Option<OffsetDateTime>,
    acknowledgement: Option<AcknowledgementDoc>,
) -> ConditionDoc {
    ConditionDoc {
        id: row.id,
        job: row.job,
        kind: row.kind,
        severity: row.severity,
        subject: row.subject,
        first_seen: row.first_seen,
        last_seen: row.last_seen,
        acknowledged_until,
        acknowledgement,
    }
}

fn rank(severity: &str) -> Option<Severity> {
    severity.parse().ok()
}

/// The open conditions, worst first (unacknowledged before acknowledged),
/// and the latest `limit` alerts, newest first.
pub(crate) async fn list(state: &Arc<AppState>, limit: usize) -> Result<AlertList, ApiError> {
    let path = history(state)?;
    let limit = limit.min(MAX_ALERTS);
    tokio::task::spawn_blocking(move || {
        let store = open_history(&path, false)?;
        let now = OffsetDateTime::now_utc();
        // Who acknowledged each condition, when and why: the latest
        // acknowledgement of its job and key, shown while one holds.
        let mut acknowledgements: HashMap<(String, String), AcknowledgementDoc> = store
            .latest_acknowledgements()
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|ack| {
                let doc = AcknowledgementDoc {
                    by: ack.by,
                    at: ack.at,
                    reason: ack.reason,
                };
                ((ack.job, ack.key), doc)
            })
            .collect();
        let mut conditions: Vec<ConditionDoc> = store
            .open_conditions()
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|row| {
                let until = row.acked_until.filter(|until| *until > now);
                let acknowledgement = until
                    .and_then(|_| acknowledgements.remove(&(row.job.clone(), row.key.clone())));
                condition_doc(row, until, acknowledgement)
            })
            .collect();
        conditions.sort_by(|a, b| {
            a.acknowledged_until
                .is_some()
                .cmp(&b.acknowledged_until.is_some())
                .then_with(|| rank(&b.severity).cmp(&rank(&a.severity)))
                .then_with(|| a.first_seen.cmp(&b.first_seen))
                .then_with(|| a.id.cmp(&b.id))
        });
        let alerts = store
            .alerts(limit)
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|row| AlertDoc {
                id: row.id,
                job: row.job,
                created: row.created,
                severity: row.severity,
                changes: row.n_changes,
                deliveries: row.deliveries,
            })
            .collect();
        Ok(AlertList {
            schema: SCHEMA.to_owned(),
            conditions,
            alerts,
        })
    })
    .await
    .map_err(|err| ApiError::internal(format!("the alerts' task failed: {err}")))?
}

/// A person acknowledges condition `id`: kept in the monitor's history, and
/// an `alert.ack` entry in the trail. `NotFound` when the monitor no longer
/// sees the condition (it ended, or the id was never one).
pub(crate) async fn acknowledge(
    state: &Arc<AppState>,
    id: i64,
    by: &str,
    reason: &str,
    until: Option<OffsetDateTime>,
) -> Result<ConditionDoc, ApiError> {
    let path = history(state)?;
    let now = OffsetDateTime::now_utc();
    if until.is_some_and(|until| until <= now) {
        return Err(ApiError::bad_request("`until` is in the past"));
    }
    let (by_owned, reason_owned) = (by.to_owned(), reason.to_owned());
    let condition = tokio::task::spawn_blocking(move || {
        let mut store = open_history(&path, true)?;
        let Some(row) = store
            .open_conditions()
            .map_err(ApiError::internal)?
            .into_iter()
            .find(|row| row.id == id)
        else {
            return Err(ApiError::not_found(format!(
                "the monitor sees no open condition {id} (it may have ended)"
            )));
        };
        if !store
            .acknowledge(id, &by_owned, &reason_owned, now, until)
            .map_err(ApiError::internal)?
        {
            return Err(ApiError::not_found(format!(
                "condition {id} ended before it was acknowledged"
            )));
        }
        let acknowledged = until.unwrap_or(time::macros::datetime!(9999-12-31 23:59:59 UTC));
        let acknowledgement = AcknowledgementDoc {
            by: by_owned,
            at: now,
            reason: reason_owned,
        };
        Ok(condition_doc(
            row,
            Some(acknowledged),
            Some(acknowledgement),
        ))
    })
    .await
    .map_err(|err| ApiError::internal(format!("the acknowledgement's task failed: {err}")))??;
    let entry = NewTrailEntry {
        at: now,
        actor: by.to_owned(),
        action: "alert.ack".to_owned(),
        subject: format!(
            "condition {} ({}: {} {})",
            condition.id, condition.job, condition.kind, condition.subject
        ),
        reason: match until {
            Some(until) => format!("{reason} (until {until})"),
            None => format!("{reason} (for good)"),
        },
    };
    state
        .with_store(move |store| Ok(store.append_trail(&entry)?))
        .await
        .inspect_err(|err| {
            tracing::error!(
                id,
                "condition acknowledged in the monitor's history, but the trail entry failed: {}",
                err.message
            );
        })?;
    tracing::info!(id, by, "condition acknowledged");
    Ok(condition)
}
