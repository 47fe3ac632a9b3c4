//! The monitor's memory: its runs, each job's current conditions, its
//! alerts and the outbox that delivers them, and the acknowledgements people
//! gave. Behind [`MonitorStore`], like the rest of the history behind
//! [`crate::Store`].
//!
//! The store keeps the monitor's values as it is given them (change kinds
//! and severities as text, alert documents as `perimeter.alert/1` text): it
//! decides nothing. What must hold together is written together: a run's
//! conditions, its alert and every channel's delivery are one transaction,
//! so a monitor killed at any moment leaves either the run judged and its
//! alerts queued, or neither.

use rusqlite::{OptionalExtension, params};
use time::OffsetDateTime;

use crate::codec::{decode_time, encode_time};
use crate::error::StoreError;
use crate::sqlite::SqliteStore;

/// What kind of job a run was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Scan,
    Audit,
    Verify,
    /// The fleet's hosts as their agents reported them (a monitor inside
    /// `perimeter server`).
    Fleet,
    /// The monitor watching itself (its channels).
    Monitor,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Scan => "scan",
            JobKind::Audit => "audit",
            JobKind::Verify => "verify",
            JobKind::Fleet => "fleet",
            JobKind::Monitor => "monitor",
        }
    }

    fn parse(text: &str) -> Option<JobKind> {
        match text {
            "scan" => Some(JobKind::Scan),
            "audit" => Some(JobKind::Audit),
            "verify" => Some(JobKind::Verify),
            "fleet" => Some(JobKind::Fleet),
            "monitor" => Some(JobKind::Monitor),
            _ => None,
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    /// It covered everything and was judged.
    Complete,
    /// It stopped early (a scan interrupted by a stop): not judged.
    Incomplete,
    /// It could not run (an error): not judged.
    Failed,
    /// Its monitor died mid-run.
    Abandoned,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Complete => "complete",
            RunStatus::Incomplete => "incomplete",
            RunStatus::Failed => "failed",
            RunStatus::Abandoned => "abandoned",
        }
    }

    fn parse(text: &str) -> Option<RunStatus> {
        match text {
            "running" => Some(RunStatus::Running),
            "complete" => Some(RunStatus::Complete),
            "incomplete" => Some(RunStatus::Incomplete),
            "failed" => Some(RunStatus::Failed),
            "abandoned" => Some(RunStatus::Abandoned),
            _ => None,
        }
    }
}

/// One run of a monitor job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorRun {
    pub id: i64,
    pub job: String,
    pub kind: JobKind,
    pub started: OffsetDateTime,
    pub finished: Option<OffsetDateTime>,
    pub status: RunStatus,
    pub scan_id: Option<i64>,
    pub audit_id: Option<i64>,
    pub n_changes: u64,
    pub error: Option<String>,
}

/// A condition a job has seen, as stored (see the monitor's change rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionRow {
    /// Its row id: what `perimeter alerts ack` names.
    pub id: i64,
    pub job: String,
    pub key: String,
    pub kind: String,
    pub severity: String,
    pub subject: String,
    pub expected: bool,
    pub first_seen: OffsetDateTime,
    pub last_seen: OffsetDateTime,
    pub absent_runs: u32,
    pub acked_until: Option<OffsetDateTime>,
}

/// A person's acknowledgement of a condition, as the history keeps it: the
/// latest one given for its job and key (see
/// [`MonitorStore::latest_acknowledgements`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcknowledgementRow {
    pub job: String,
    /// The condition's key within its job.
    pub key: String,
    /// The account that acknowledged it.
    pub by: String,
    pub reason: String,
    pub at: OffsetDateTime,
    /// Until when; `None` for good.
    pub until: Option<OffsetDateTime>,
}

/// An alert to store with the run that found it, and what each channel gets.
#[derive(Debug, Clone)]
pub struct NewAlert<'a> {
    pub created: OffsetDateTime,
    pub severity: &'a str,
    pub n_changes: u64,
    /// The whole digest, `perimeter.alert/1`.
    pub document: &'a str,
    /// One per channel that accepted some of the changes.
    pub deliveries: Vec<NewDelivery<'a>>,
}

#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub channel: &'a str,
    pub idempotency_key: &'a str,
    /// That channel's alert, `perimeter.alert/1`.
    pub document: &'a str,
}

/// A delivery the outbox still owes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    pub id: i64,
    pub channel: String,
    pub idempotency_key: String,
    pub document: String,
    pub attempts: u32,
    pub next_attempt: OffsetDateTime,
}

/// Where one channel's deliveries stand, for metrics and for the report of a
/// channel that keeps failing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelTally {
    pub channel: String,
    pub sent: u64,
    pub pending: u64,
    pub failed: u64,
    /// Attempts of the oldest pending delivery (how long it has been failing).
    pub max_pending_attempts: u32,
    pub last_error: Option<String>,
}

/// A stored alert, for `perimeter alerts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    pub id: i64,
    pub run_id: i64,
    pub job: String,
    pub created: OffsetDateTime,
    pub severity: String,
    pub n_changes: u64,
    /// (channel, state) per delivery.
    pub deliveries: Vec<(String, String)>,
}

/// The monitor's memory.
pub trait MonitorStore {
    /// Records the start of a run and returns its id.
    fn begin_run(
        &mut self,
        job: &str,
        kind: JobKind,
        started: OffsetDateTime,
    ) -> Result<i64, StoreError>;

    /// Ends a run that was not judged (incomplete or failed).
    fn end_run(
        &mut self,
        run_id: i64,
        finished: OffsetDateTime,
        status: RunStatus,
        scan_id: Option<i64>,
        error: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Ends a complete run in one transaction: its conditions replace the
    /// job's, its alert (if any) and every channel's delivery are queued.
    fn complete_run(
        &mut self,
        run_id: i64,
        finished: OffsetDateTime,
        scan_id: Option<i64>,
        audit_id: Option<i64>,
        conditions: &[ConditionRow],
        alert: Option<&NewAlert<'_>>,
    ) -> Result<Option<i64>, StoreError>;

    /// Marks runs left `running` by a monitor that is gone as `abandoned`;
    /// returns how many.
    fn abandon_dead_runs(&mut self, now: OffsetDateTime) -> Result<u64, StoreError>;

    /// The latest run of `job` in any state (its start is what schedules the
    /// next).
    fn last_run(&self, job: &str) -> Result<Option<MonitorRun>, StoreError>;

    /// The latest complete run of `job`: what a new run is compared with.
    fn last_complete_run(&self, job: &str) -> Result<Option<MonitorRun>, StoreError>;

    fn runs(&self, limit: usize) -> Result<Vec<MonitorRun>, StoreError>;

    /// The job's stored conditions.
    fn conditions(&self, job: &str) -> Result<Vec<ConditionRow>, StoreError>;

    /// Every job's conditions that are not expected: the open problems.
    fn open_conditions(&self) -> Result<Vec<ConditionRow>, StoreError>;

    /// Silences a condition's escalations until `until` (for good when
    /// `None`), recording who and why; false when there is no such condition.
    fn acknowledge(
        &mut self,
        condition_id: i64,
        by: &str,
        reason: &str,
        at: OffsetDateTime,
        until: Option<OffsetDateTime>,
    ) -> Result<bool, StoreError>;

    /// The latest acknowledgement given for each (job, key) that was ever
    /// acknowledged, in (job, key) order: who, when and why, for the
    /// conditions whose `acked_until` is set. Acknowledgements are a person's
    /// acts, so they are few; the table is read whole.
    fn latest_acknowledgements(&self) -> Result<Vec<AcknowledgementRow>, StoreError>;

    /// Deliveries due at `now`, oldest first.
    fn due_deliveries(&self, now: OffsetDateTime) -> Result<Vec<PendingDelivery>, StoreError>;

    /// The earliest time a pending delivery is due, if any.
    fn next_delivery_due(&self) -> Result<Option<OffsetDateTime>, StoreError>;

    fn delivery_sent(
        &mut self,
        delivery_id: i64,
        at: OffsetDateTime,
        receipt: &str,
    ) -> Result<(), StoreError>;

    /// A failed attempt: retried at `retry_at`, or never again (`None`:
    /// the receiver refused it for good).
    fn delivery_failed(
        &mut self,
        delivery_id: i64,
        error: &str,
        retry_at: Option<OffsetDateTime>,
    ) -> Result<(), StoreError>;

    fn channel_tallies(&self) -> Result<Vec<ChannelTally>, StoreError>;

    fn alerts(&self, limit: usize) -> Result<Vec<AlertRow>, StoreError>;
}

/// The schema version that added the monitor's tables.
const MONITOR_SCHEMA: i64 = 4;

const RUN_COLUMNS: &str =
    "id, job, kind, started, finished, status, scan_id, audit_id, n_changes, error";
const CONDITION_COLUMNS: &str = "id, job, key, kind, severity, subject, expected, first_seen, \
                                 last_seen, absent_runs, acked_until";

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl SqliteStore {
    fn query_runs(
        &self,
        tail: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<MonitorRun>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM monitor_runs {tail}");
        let mut statement = self
            .conn
            .prepare_cached(&sql)
            .map_err(self.sql_error("list monitor runs"))?;
        type Raw = (
            i64,
            String,
            String,
            String,
            Option<String>,
            String,
            Option<i64>,
            Option<i64>,
            i64,
            Option<String>,
        );
        let rows: Vec<Raw> = statement
            .query_map(params, |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                    row.get(7)?,
                    row.get(8)?,
                    row.get(9)?,
                ))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(self.sql_error("list monitor runs"))?;
        rows.into_iter()
            .map(
                |(
                    id,
                    job,
                    kind,
                    started,
                    finished,
                    status,
                    scan_id,
                    audit_id,
                    n_changes,
                    error,
                )| {
                    let bad = |detail: String| self.corrupt(&format!("monitor run {id}"), detail);
                    Ok(MonitorRun {
                        id,
                        job,
                        kind: JobKind::parse(&kind)
                            .ok_or_else(|| bad(format!("unknown job kind `{kind}`")))?,
                        started: decode_time(&started).map_err(bad)?,
                        finished: finished
                            .as_deref()
                            .map(decode_time)
                            .transpose()
                            .map_err(bad)?,
                        status: RunStatus::parse(&status)
                            .ok_or_else(|| bad(format!("unknown run status `{status}`")))?,
                        scan_id,
                        audit_id,
                        n_changes: u64::try_from(n_changes).unwrap_or(0),
                        error,
                    })
                },
            )
            .collect()
    }

    fn query_conditions(
        &self,
        tail: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<ConditionRow>, StoreError> {
        let sql = format!("SELECT {CONDITION_COLUMNS} FROM monitor_conditions {tail}");
        let mut statement = self
            .conn
            .prepare_cached(&sql)
            .map_err(self.sql_error("read monitor conditions"))?;
        type Raw = (
            i64,
            String,
            String,
            String,
            String,
            String,
            i64,
            String,
            String,
            i64,
            Option<String>,
        );
        let rows: Vec<Raw> = statement
            .query_map(params, |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                    row.get(7)?,
                    row.get(8)?,
                    row.get(9)?,
                    row.get(10)?,
                ))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(self.sql_error("read monitor conditions"))?;
        rows.into_iter()
            .map(
                |(
                    id,
                    job,
                    key,
                    kind,
                    severity,
                    subject,
                    expected,
                    first_seen,
                    last_seen,
                    absent_runs,
                    acked_until,
                )| {
                    let bad =
                        |detail: String| self.corrupt(&format!("monitor condition {id}"), detail);
                    Ok(ConditionRow {
                        id,
                        job,
                        key,
                        kind,
                        severity,
                        subject,
                        expected: expected != 0,
                        first_seen: decode_time(&first_seen).map_err(bad)?,
                        last_seen: decode_time(&last_seen).map_err(bad)?,
                        absent_runs: u32::try_from(absent_runs).unwrap_or(u32::MAX),
                        acked_until: acked_until
                            .as_deref()
                            .map(decode_time)
                            .transpose()
                            .map_err(bad)?,
                    })
                },
            )
            .collect()
    }
}

impl MonitorStore for SqliteStore {
    fn begin_run(
        &mut self,
        job: &str,
        kind: JobKind,
        started: OffsetDateTime,
    ) -> Result<i64, StoreError> {
        let started = encode_time("run start", started)?;
        self.conn
            .execute(
                "INSERT INTO monitor_runs (job, kind, started, status, writer) VALUES (?1, ?2, ?3, 'running', ?4)",
                params![job, kind.as_str(), started, crate::writer::current_writer()],
            )
            .map_err(self.sql_error("record the start of a monitor run"))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn end_run(
        &mut self,
        run_id: i64,
        finished: OffsetDateTime,
        status: RunStatus,
        scan_id: Option<i64>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let finished = encode_time("run end", finished)?;
        self.conn
            .execute(
                "UPDATE monitor_runs SET finished = ?2, status = ?3, scan_id = ?4, error = ?5 WHERE id = ?1",
                params![run_id, finished, status.as_str(), scan_id, error],
            )
            .map_err(self.sql_error("record the end of a monitor run"))?;
        Ok(())
    }

    fn complete_run(
        &mut self,
        run_id: i64,
        finished: OffsetDateTime,
        scan_id: Option<i64>,
        audit_id: Option<i64>,
        conditions: &[ConditionRow],
        alert: Option<&NewAlert<'_>>,
    ) -> Result<Option<i64>, StoreError> {
        let finished_text = encode_time("run end", finished)?;
        let path = self.path().to_path_buf();
        let tx = self.write_transaction("record a monitor run")?;
        let job: String = tx
            .query_row(
                "SELECT job FROM monitor_runs WHERE id = ?1",
                [run_id],
                |row| row.get(0),
            )
            .map_err(|source| StoreError::Sqlite {
                path: path.clone(),
                action: format!("find monitor run {run_id}"),
                source,
            })?;
        let sql = |action: &'static str| {
            let path = path.clone();
            move |source| StoreError::Sqlite {
                path,
                action: action.to_owned(),
                source,
            }
        };
        // The job's conditions become the run's, row by row rather than
        // replaced wholesale: a condition keeps its id while it lasts (the id
        // a person acknowledges by, in `perimeter alerts ack` or on the
        // dashboard), and an acknowledgement made while this run was under
        // way (after it read the conditions) is kept, not overwritten.
        let keys: std::collections::HashSet<&str> =
            conditions.iter().map(|c| c.key.as_str()).collect();
        let stored: Vec<(String, Option<String>)> = {
            let mut select = tx
                .prepare_cached("SELECT key, acked_until FROM monitor_conditions WHERE job = ?1")
                .map_err(sql("replace the job's conditions"))?;
            select
                .query_map([&job], |row| Ok((row.get(0)?, row.get(1)?)))
                .and_then(|rows| rows.collect::<Result<_, _>>())
                .map_err(sql("replace the job's conditions"))?
        };
        let mut stored_acks = std::collections::HashMap::new();
        for (key, acked_until) in stored {
            if !keys.contains(key.as_str()) {
                tx.execute(
                    "DELETE FROM monitor_conditions WHERE job = ?1 AND key = ?2",
                    params![job, key],
                )
                .map_err(sql("replace the job's conditions"))?;
            } else if let Some(text) = acked_until {
                let until = decode_time(&text).map_err(|detail| StoreError::Corrupt {
                    path: path.clone(),
                    detail: format!("monitor condition {key}: {detail}"),
                })?;
                stored_acks.insert(key, until);
            }
        }
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO monitor_conditions (job, key, kind, severity, subject, expected, \
                     first_seen, last_seen, absent_runs, acked_until) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                     ON CONFLICT (job, key) DO UPDATE SET kind = excluded.kind, \
                     severity = excluded.severity, subject = excluded.subject, \
                     expected = excluded.expected, first_seen = excluded.first_seen, \
                     last_seen = excluded.last_seen, absent_runs = excluded.absent_runs, \
                     acked_until = excluded.acked_until",
                )
                .map_err(sql("replace the job's conditions"))?;
            for condition in conditions {
                let acked_until = match (
                    condition.acked_until,
                    stored_acks.get(&condition.key).copied(),
                ) {
                    (Some(run), Some(stored)) => Some(run.max(stored)),
                    (run, stored) => run.or(stored),
                };
                upsert
                    .execute(params![
                        job,
                        condition.key,
                        condition.kind,
                        condition.severity,
                        condition.subject,
                        i64::from(condition.expected),
                        encode_time("first seen", condition.first_seen)?,
                        encode_time("last seen", condition.last_seen)?,
                        i64::from(condition.absent_runs),
                        acked_until
                            .map(|at| encode_time("acknowledged until", at))
                            .transpose()?,
                    ])
                    .map_err(sql("replace the job's conditions"))?;
            }
        }
        let mut alert_id = None;
        if let Some(alert) = alert {
            tx.execute(
                "INSERT INTO monitor_alerts (run_id, job, created, severity, n_changes, document) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    run_id,
                    job,
                    encode_time("alert time", alert.created)?,
                    alert.severity,
                    i64::try_from(alert.n_changes).unwrap_or(i64::MAX),
                    alert.document,
                ],
            )
            .map_err(sql("queue the alert"))?;
            let id = tx.last_insert_rowid();
            alert_id = Some(id);
            let due = encode_time("delivery time", alert.created)?;
            for delivery in &alert.deliveries {
                tx.execute(
                    "INSERT INTO monitor_deliveries (alert_id, channel, idempotency_key, document, state, next_attempt) \
                     VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
                    params![id, delivery.channel, delivery.idempotency_key, delivery.document, due],
                )
                .map_err(sql("queue a delivery"))?;
            }
        }
        let n_changes = alert.map_or(0, |a| a.n_changes);
        tx.execute(
            "UPDATE monitor_runs SET finished = ?2, status = 'complete', scan_id = ?3, audit_id = ?4, n_changes = ?5 WHERE id = ?1",
            params![
                run_id,
                finished_text,
                scan_id,
                audit_id,
                i64::try_from(n_changes).unwrap_or(i64::MAX)
            ],
        )
        .map_err(sql("record the end of a monitor run"))?;
        tx.commit().map_err(sql("commit a monitor run"))?;
        Ok(alert_id)
    }

    fn abandon_dead_runs(&mut self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT id, writer FROM monitor_runs WHERE status = 'running'")
            .map_err(self.sql_error("find running monitor runs"))?;
        let running: Vec<(i64, Option<String>)> = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(self.sql_error("find running monitor runs"))?;
        drop(statement);
        let now = encode_time("now", now)?;
        let mut n_abandoned = 0;
        for (id, writer) in running {
            if writer.as_deref().and_then(crate::writer::writer_alive) == Some(true) {
                continue;
            }
            self.conn
                .execute(
                    "UPDATE monitor_runs SET status = 'abandoned', finished = ?2, \
                     error = 'the monitor stopped before the run ended' WHERE id = ?1",
                    params![id, now],
                )
                .map_err(self.sql_error("mark an abandoned monitor run"))?;
            n_abandoned += 1;
        }
        Ok(n_abandoned)
    }

    fn last_run(&self, job: &str) -> Result<Option<MonitorRun>, StoreError> {
        Ok(self
            .query_runs("WHERE job = ?1 ORDER BY id DESC LIMIT 1", [job])?
            .into_iter()
            .next())
    }

    fn last_complete_run(&self, job: &str) -> Result<Option<MonitorRun>, StoreError> {
        Ok(self
            .query_runs(
                "WHERE job = ?1 AND status = 'complete' ORDER BY id DESC LIMIT 1",
                [job],
            )?
            .into_iter()
            .next())
    }

    fn runs(&self, n: usize) -> Result<Vec<MonitorRun>, StoreError> {
        if self.schema_version < MONITOR_SCHEMA {
            // A read-only look at a history older than the monitor.
            return Ok(Vec::new());
        }
        self.query_runs("ORDER BY id DESC LIMIT ?1", [limit(n)])
    }

    fn conditions(&self, job: &str) -> Result<Vec<ConditionRow>, StoreError> {
        self.query_conditions("WHERE job = ?1 ORDER BY key", [job])
    }

    fn open_conditions(&self) -> Result<Vec<ConditionRow>, StoreError> {
        if self.schema_version < MONITOR_SCHEMA {
            // A read-only look at a history older than the monitor.
            return Ok(Vec::new());
        }
        self.query_conditions("WHERE expected = 0 ORDER BY job, key", [])
    }

    fn acknowledge(
        &mut self,
        condition_id: i64,
        by: &str,
        reason: &str,
        at: OffsetDateTime,
        until: Option<OffsetDateTime>,
    ) -> Result<bool, StoreError> {
        let at = encode_time("acknowledgement time", at)?;
        // "For good" is stored as a date far away, so that escalations stay
        // silent without a special case in the change rules.
        let until_text = match until {
            Some(until) => encode_time("acknowledged until", until)?,
            None => "9999-12-31T23:59:59Z".to_owned(),
        };
        let path = self.path().to_path_buf();
        let tx = self.write_transaction("acknowledge a condition")?;
        let found: Option<(String, String, String)> = tx
            .query_row(
                "SELECT job, key, subject FROM monitor_conditions WHERE id = ?1",
                [condition_id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(|source| StoreError::Sqlite {
                path: path.clone(),
                action: "find the condition".to_owned(),
                source,
            })?;
        let Some((job, key, subject)) = found else {
            return Ok(false);
        };
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            action: "acknowledge a condition".to_owned(),
            source,
        };
        tx.execute(
            "UPDATE monitor_conditions SET acked_until = ?2 WHERE id = ?1",
            params![condition_id, until_text],
        )
        .map_err(sql)?;
        tx.execute(
            "INSERT INTO monitor_acks (job, key, subject, acked_by, reason, acked_at, until) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![job, key, subject, by, reason, at, until.map(|_| until_text.clone())],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(true)
    }

    fn latest_acknowledgements(&self) -> Result<Vec<AcknowledgementRow>, StoreError> {
        if self.schema_version < MONITOR_SCHEMA {
            // A read-only look at a history older than the monitor.
            return Ok(Vec::new());
        }
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT id, job, key, acked_by, reason, acked_at, until FROM monitor_acks \
                 WHERE id IN (SELECT max(id) FROM monitor_acks GROUP BY job, key) ORDER BY job, key",
            )
            .map_err(self.sql_error("read acknowledgements"))?;
        type Raw = (i64, String, String, String, String, String, Option<String>);
        let rows: Vec<Raw> = statement
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                ))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(self.sql_error("read acknowledgements"))?;
        rows.into_iter()
            .map(|(id, job, key, by, reason, at, until)| {
                let bad = |detail: String| self.corrupt(&format!("acknowledgement {id}"), detail);
                Ok(AcknowledgementRow {
                    job,
                    key,
                    by,
                    reason,
                    at: decode_time(&at).map_err(bad)?,
                    until: until.as_deref().map(decode_time).transpose().map_err(bad)?,
                })
            })
            .collect()
    }

    fn due_deliveries(&self, now: OffsetDateTime) -> Result<Vec<PendingDelivery>, StoreError> {
        let now = encode_time("now", now)?;
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT id, channel, idempotency_key, document, attempts, next_attempt \
                 FROM monitor_deliveries WHERE state = 'pending' AND next_attempt <= ?1 ORDER BY id",
            )
            .map_err(self.sql_error("read the outbox"))?;
        let rows: Vec<(i64, String, String, String, i64, String)> = statement
            .query_map([now], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(self.sql_error("read the outbox"))?;
        rows.into_iter()
            .map(|(id, channel, key, document, attempts, next_attempt)| {
                Ok(PendingDelivery {
                    id,
                    channel,
                    idempotency_key: key,
                    document,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    next_attempt: decode_time(&next_attempt)
                        .map_err(|detail| self.corrupt(&format!("delivery {id}"), detail))?,
                })
            })
            .collect()
    }

    fn next_delivery_due(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        let next: Option<String> = self
            .conn
            .query_row(
                "SELECT min(next_attempt) FROM monitor_deliveries WHERE state = 'pending'",
                [],
                |row| row.get(0),
            )
            .map_err(self.sql_error("read the outbox"))?;
        next.as_deref()
            .map(decode_time)
            .transpose()
            .map_err(|detail| self.corrupt("the outbox", detail))
    }

    fn delivery_sent(
        &mut self,
        delivery_id: i64,
        at: OffsetDateTime,
        receipt: &str,
    ) -> Result<(), StoreError> {
        let at = encode_time("delivery time", at)?;
        self.conn
            .execute(
                "UPDATE monitor_deliveries SET state = 'sent', sent_at = ?2, receipt = ?3, \
                 attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                params![delivery_id, at, receipt],
            )
            .map_err(self.sql_error("record a delivery"))?;
        Ok(())
    }

    fn delivery_failed(
        &mut self,
        delivery_id: i64,
        error: &str,
        retry_at: Option<OffsetDateTime>,
    ) -> Result<(), StoreError> {
        let (state, next) = match retry_at {
            Some(at) => ("pending", Some(encode_time("retry time", at)?)),
            None => ("failed", None),
        };
        self.conn
            .execute(
                "UPDATE monitor_deliveries SET state = ?2, attempts = attempts + 1, last_error = ?3, \
                 next_attempt = coalesce(?4, next_attempt) WHERE id = ?1",
                params![delivery_id, state, error, next],
            )
            .map_err(self.sql_error("record a failed delivery"))?;
        Ok(())
    }

    fn channel_tallies(&self) -> Result<Vec<ChannelTally>, StoreError> {
        if self.schema_version < MONITOR_SCHEMA {
            // A read-only look at a history older than the monitor.
            return Ok(Vec::new());
        }
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT channel, \
                 sum(state = 'sent'), sum(state = 'pending'), sum(state = 'failed'), \
                 max(CASE WHEN state = 'pending' THEN attempts ELSE 0 END), \
                 (SELECT last_error FROM monitor_deliveries AS d \
                  WHERE d.channel = monitor_deliveries.channel AND d.last_error IS NOT NULL \
                  ORDER BY d.id DESC LIMIT 1) \
                 FROM monitor_deliveries GROUP BY channel ORDER BY channel",
            )
            .map_err(self.sql_error("tally the deliveries"))?;
        statement
            .query_map([], |row| {
                let count = |idx: usize| -> rusqlite::Result<u64> {
                    Ok(u64::try_from(row.get::<_, Option<i64>>(idx)?.unwrap_or(0)).unwrap_or(0))
                };
                Ok(ChannelTally {
                    channel: row.get(0)?,
                    sent: count(1)?,
                    pending: count(2)?,
                    failed: count(3)?,
                    max_pending_attempts: u32::try_from(count(4)?).unwrap_or(u32::MAX),
                    last_error: row.get(5)?,
                })
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(self.sql_error("tally the deliveries"))
    }

    fn alerts(&self, n: usize) -> Result<Vec<AlertRow>, StoreError> {
        if self.schema_version < MONITOR_SCHEMA {
            // A read-only look at a history older than the monitor.
            return Ok(Vec::new());
        }
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT id, run_id, job, created, severity, n_changes FROM monitor_alerts ORDER BY id DESC LIMIT ?1",
            )
            .map_err(self.sql_error("list alerts"))?;
        let rows: Vec<(i64, i64, String, String, String, i64)> = statement
            .query_map([limit(n)], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(self.sql_error("list alerts"))?;
        drop(statement);
        let mut deliveries = self
            .conn
            .prepare_cached(
                "SELECT channel, state FROM monitor_deliveries WHERE alert_id = ?1 ORDER BY channel",
            )
            .map_err(self.sql_error("list alerts"))?;
        let mut alerts = Vec::with_capacity(rows.len());
        for (id, run_id, job, created, severity, n_changes) in rows {
            let states: Vec<(String, String)> = deliveries
                .query_map([id], |row| Ok((row.get(0)?, row.get(1)?)))
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(self.sql_error("list alerts"))?;
            alerts.push(AlertRow {
                id,
                run_id,
                job,
                created: decode_time(&created)
                    .map_err(|detail| self.corrupt(&format!("alert {id}"), detail))?,
                severity,
                n_changes: u64::try_from(n_changes).unwrap_or(0),
                deliveries: states,
            });
        }
        Ok(alerts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn condition(key: &str, expected: bool) -> ConditionRow {
        ConditionRow {
            id: 0,
            job: String::new(),
            key: key.to_owned(),
            kind: "port-opened".into(),
            severity: "medium".into(),
            subject: key.trim_start_matches("port ").to_owned(),
            expected,
            first_seen: datetime!(2026-12-02 00:00 UTC),
            last_seen: datetime!(2026-12-02 00:00 UTC),
            absent_runs: 0,
            acked_until: None,
        }
    }

    #[test]
    fn a_run_its_conditions_alert_and_outbox_round_trip() {
        let mut store = SqliteStore::open_in_memory().expect("store");
        let t0 = datetime!(2026-12-02 00:00 UTC);
        let run = store
            .begin_run("outside", JobKind::Scan, t0)
            .expect("begin");
        assert_eq!(
            store.last_run("outside").expect("last").map(|r| r.status),
            Some(RunStatus::Running)
        );
        let alert = NewAlert {
            created: t0,
            severity: "high",
            n_changes: 2,
            document: "{\"schema\":\"perimeter.alert/1\"}",
            deliveries: vec![
                NewDelivery {
                    channel: "hook",
                    idempotency_key: "outside:1:hook",
                    document: "{}",
                },
                NewDelivery {
                    channel: "mail",
                    idempotency_key: "outside:1:mail",
                    document: "{}",
                },
            ],
        };
        let conditions = [
            condition("port 198.18.0.7:6379/tcp", false),
            condition("port 198.18.0.7:443/tcp", true),
        ];
        let alert_id = store
            .complete_run(run, t0, None, None, &conditions, Some(&alert))
            .expect("complete");
        assert!(alert_id.is_some());
        let last = store
            .last_complete_run("outside")
            .expect("last")
            .expect("a run");
        assert_eq!((last.status, last.n_changes), (RunStatus::Complete, 2));
        assert_eq!(store.conditions("outside").expect("conditions").len(), 2);
        let open = store.open_conditions().expect("open");
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].job, "outside");

        // The outbox: both due at once; one sent, one failed and retried later.
        let due = store.due_deliveries(t0).expect("due");
        assert_eq!(due.len(), 2);
        store
            .delivery_sent(due[0].id, t0, "HTTP 200")
            .expect("sent");
        let later = datetime!(2026-12-02 00:05 UTC);
        store
            .delivery_failed(due[1].id, "connection refused", Some(later))
            .expect("failed");
        assert!(store.due_deliveries(t0).expect("due").is_empty());
        assert_eq!(store.next_delivery_due().expect("next"), Some(later));
        let due = store.due_deliveries(later).expect("due");
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].attempts, 1);
        let tallies = store.channel_tallies().expect("tallies");
        assert_eq!(
            tallies
                .iter()
                .map(|t| (
                    t.channel.as_str(),
                    t.sent,
                    t.pending,
                    t.failed,
                    t.last_error.as_deref()
                ))
                .collect::<Vec<_>>(),
            vec![
                ("hook", 1, 0, 0, None),
                ("mail", 0, 1, 0, Some("connection refused"))
            ]
        );
        // Refused for good.
        store
            .delivery_failed(due[0].id, "550 no", None)
            .expect("failed");
        assert!(store.next_delivery_due().expect("next").is_none());
        let alerts = store.alerts(10).expect("alerts");
        assert_eq!(
            alerts[0].deliveries,
            vec![
                ("hook".into(), "sent".into()),
                ("mail".into(), "failed".into())
            ]
        );

        // A person acknowledges the open condition.
        assert!(
            store
                .acknowledge(open[0].id, "alice", "known, migrating", t0, None)
                .expect("ack")
        );
        assert!(
            store.conditions("outside").expect("c")[1]
                .acked_until
                .is_some()
        );
        assert!(
            !store
                .acknowledge(9999, "alice", "x", t0, None)
                .expect("ack")
        );
        // Who, when and why are kept, and only the latest per condition is
        // read back.
        let later = t0 + time::Duration::hours(1);
        let until = t0 + time::Duration::days(7);
        assert!(
            store
                .acknowledge(
                    open[0].id,
                    "bob",
                    "<b>still</b> migrating",
                    later,
                    Some(until)
                )
                .expect("ack")
        );
        let acks = store.latest_acknowledgements().expect("acks");
        assert_eq!(
            acks.iter()
                .map(|a| (
                    a.key.as_str(),
                    a.by.as_str(),
                    a.reason.as_str(),
                    a.at,
                    a.until
                ))
                .collect::<Vec<_>>(),
            vec![(
                open[0].key.as_str(),
                "bob",
                "<b>still</b> migrating",
                later,
                Some(until)
            )]
        );
        assert_eq!(acks[0].job, open[0].job);
    }

    #[test]
    fn a_condition_keeps_its_id_and_an_acknowledgement_made_during_a_run() {
        let mut store = SqliteStore::open_in_memory().expect("store");
        let t0 = datetime!(2026-12-02 00:00 UTC);
        let first = store
            .begin_run("outside", JobKind::Scan, t0)
            .expect("begin");
        let conditions = [
            condition("port 198.18.0.7:6379/tcp", false),
            condition("port 198.18.0.7:22/tcp", false),
        ];
        store
            .complete_run(first, t0, None, None, &conditions, None)
            .expect("complete");
        let before = store.conditions("outside").expect("conditions");
        let redis = before
            .iter()
            .find(|c| c.key.contains("6379"))
            .expect("redis")
            .clone();

        // The next run reads the conditions (no acknowledgement yet), a person
        // acknowledges Redis while it runs, then the run ends with Redis
        // still there and port 22 gone.
        let second = store
            .begin_run("outside", JobKind::Scan, t0)
            .expect("begin");
        assert!(
            store
                .acknowledge(redis.id, "alice", "moving it behind the VPN", t0, None)
                .expect("ack")
        );
        let t1 = datetime!(2026-12-02 01:00 UTC);
        let mut still = condition("port 198.18.0.7:6379/tcp", false);
        still.last_seen = t1;
        store
            .complete_run(second, t1, None, None, &[still], None)
            .expect("complete");
        let after = store.conditions("outside").expect("conditions");
        assert_eq!(after.len(), 1, "{after:?}");
        assert_eq!(after[0].id, redis.id, "the same condition keeps its id");
        assert_eq!(after[0].last_seen, t1);
        assert!(
            after[0]
                .acked_until
                .is_some_and(|until| until.year() == 9999),
            "the acknowledgement made during the run is kept: {after:?}"
        );

        // A later acknowledgement from the run wins over an earlier stored one.
        let third = store
            .begin_run("outside", JobKind::Scan, t1)
            .expect("begin");
        let mut later = condition("port 198.18.0.7:6379/tcp", false);
        later.acked_until = Some(datetime!(9999-12-31 23:59:59 UTC));
        store
            .complete_run(third, t1, None, None, &[later], None)
            .expect("complete");
        assert_eq!(store.conditions("outside").expect("c")[0].id, redis.id);
    }

    #[test]
    fn runs_of_a_dead_monitor_are_abandoned() {
        let mut store = SqliteStore::open_in_memory().expect("store");
        let t0 = datetime!(2026-12-02 00:00 UTC);
        let mine = store.begin_run("a", JobKind::Audit, t0).expect("begin");
        let theirs = store.begin_run("b", JobKind::Audit, t0).expect("begin");
        store
            .conn
            .execute(
                "UPDATE monitor_runs SET writer = 'an-earlier-boot/1/1' WHERE id = ?1",
                [theirs],
            )
            .expect("update");
        assert_eq!(store.abandon_dead_runs(t0).expect("abandon"), 1);
        let runs = store.runs(10).expect("runs");
        let status = |id: i64| runs.iter().find(|r| r.id == id).map(|r| r.status);
        assert_eq!(status(mine), Some(RunStatus::Running));
        assert_eq!(status(theirs), Some(RunStatus::Abandoned));
    }
}
