//! When a job runs next: every N (an interval), or at the times of a cron
//! expression, each with an optional random jitter. Pure: the caller gives the
//! time of the job's last start and the current time.
//!
//! A run that fell due while the monitor was not running runs once, at once,
//! when it starts again: one run, not one per missed slot (no catch-up
//! storm). A job that never ran runs at once when it has an interval, and at
//! the next time its cron expression names otherwise (a daily 03:00 scan does
//! not start at 14:27 because the service was installed then;
//! `perimeter monitor --once JOB` runs it now).

use std::str::FromStr as _;
use std::time::Duration;

use time::OffsetDateTime;

/// How often a job runs.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Every `every`, counted from the start of the previous run.
    Every(Duration),
    /// At the times a five-field cron expression (minute hour day-of-month
    /// month day-of-week, in UTC) names.
    Cron(Box<CronSchedule>),
}

/// A parsed cron expression, with the text it came from.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    text: String,
    cron: croner::Cron,
}

impl CronSchedule {
    /// Parses a standard five-field expression (`0 3 * * *`, `*/15 * * * 1-5`),
    /// or one of the `@hourly`, `@daily`, `@weekly`, `@monthly` nicknames.
    pub fn parse(text: &str) -> Result<CronSchedule, String> {
        let trimmed = text.trim();
        let n_fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && n_fields != 5 {
            return Err(format!(
                "`{trimmed}` has {n_fields} fields; a cron expression has five (minute hour day-of-month month day-of-week), like `0 3 * * *`"
            ));
        }
        let cron = croner::Cron::from_str(trimmed)
            .map_err(|err| format!("`{trimmed}` is not a cron expression: {err}"))?;
        Ok(CronSchedule {
            text: trimmed.to_owned(),
            cron,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first time strictly after `after` that the expression names, or
    /// `None` when there is none (an expression such as `0 0 31 2 *`).
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let after = to_chrono(after)?;
        let next = self.cron.find_next_occurrence(&after, false).ok()?;
        from_chrono(next)
    }
}

impl Schedule {
    /// When a job with this schedule runs next: given when it last started
    /// (`None`: never) and the time now. Never earlier than `now`.
    pub fn next_run(
        &self,
        last_started: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        match (self, last_started) {
            (Schedule::Every(_), None) => Some(now),
            (Schedule::Every(every), Some(last)) => {
                let due = last + *every;
                Some(due.max(now))
            }
            (Schedule::Cron(cron), None) => cron.next_after(now),
            (Schedule::Cron(cron), Some(last)) => {
                let due = cron.next_after(last)?;
                // Missed while the monitor was down: once, now.
                Some(due.max(now))
            }
        }
    }

    /// For messages: `every 6h`, `cron 0 3 * * *`.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Every(every) => format!("every {}", humantime::format_duration(*every)),
            Schedule::Cron(cron) => format!("cron {}", cron.as_str()),
        }
    }
}

/// A delay in `[0, jitter)` drawn from `draw` (a uniform number in [0, 1)),
/// so that many monitors (or many jobs) scheduled alike do not all start in
/// the same second.
pub fn jitter_delay(jitter: Duration, draw: f64) -> Duration {
    if jitter.is_zero() || !(0.0..1.0).contains(&draw) {
        return Duration::ZERO;
    }
    jitter.mul_f64(draw)
}

fn to_chrono(at: OffsetDateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    let nanos = at.unix_timestamp_nanos();
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    chrono::DateTime::from_timestamp(secs, sub)
}

fn from_chrono(at: chrono::DateTime<chrono::Utc>) -> Option<OffsetDateTime> {
    let nanos =
        i128::from(at.timestamp()) * 1_000_000_000 + i128::from(at.timestamp_subsec_nanos());
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn cron(text: &str) -> Schedule {
        Schedule::Cron(Box::new(CronSchedule::parse(text).expect("parses")))
    }

    #[test]
    fn an_interval_counts_from_the_last_start_and_a_missed_run_runs_once_now() {
        let every = Schedule::Every(Duration::from_secs(6 * 3600));
        let now = datetime!(2026-12-02 12:00 UTC);
        assert_eq!(every.next_run(None, now), Some(now));
        assert_eq!(
            every.next_run(Some(datetime!(2026-12-02 10:00 UTC)), now),
            Some(datetime!(2026-12-02 16:00 UTC))
        );
        // Down for three days: one run, now, not twelve.
        assert_eq!(
            every.next_run(Some(datetime!(2026-11-29 10:00 UTC)), now),
            Some(now)
        );
    }

    #[test]
    fn a_cron_job_runs_at_its_times_and_once_after_a_gap() {
        let daily = cron("0 3 * * *");
        let now = datetime!(2026-12-02 14:27 UTC);
        // Never ran: waits for its time instead of starting at install time.
        assert_eq!(
            daily.next_run(None, now),
            Some(datetime!(2026-12-03 03:00 UTC))
        );
        // Ran this morning: tomorrow.
        assert_eq!(
            daily.next_run(Some(datetime!(2026-12-02 03:00 UTC)), now),
            Some(datetime!(2026-12-03 03:00 UTC))
        );
        // Last ran a week ago: once, now.
        assert_eq!(
            daily.next_run(Some(datetime!(2026-11-25 03:00 UTC)), now),
            Some(now)
        );
        let quarter = cron("*/15 * * * *");
        assert_eq!(
            quarter.next_run(
                Some(datetime!(2026-12-02 14:15 UTC)),
                datetime!(2026-12-02 14:16 UTC)
            ),
            Some(datetime!(2026-12-02 14:30 UTC))
        );
        assert_eq!(cron("@hourly").describe(), "cron @hourly");
    }

    #[test]
    fn bad_expressions_say_why() {
        let err = CronSchedule::parse("0 3 * *").expect_err("four fields");
        assert!(err.contains("has 4 fields"), "{err}");
        let err = CronSchedule::parse("61 3 * * *").expect_err("minute 61");
        assert!(
            err.starts_with("`61 3 * * *` is not a cron expression"),
            "{err}"
        );
        let err = CronSchedule::parse("0 0 * * * *").expect_err("six fields");
        assert!(err.contains("has 6 fields"), "{err}");
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let jitter = Duration::from_secs(600);
        assert_eq!(jitter_delay(jitter, 0.0), Duration::ZERO);
        assert_eq!(jitter_delay(jitter, 0.5), Duration::from_secs(300));
        assert!(jitter_delay(jitter, 0.999_999) < jitter);
        assert_eq!(jitter_delay(jitter, 1.0), Duration::ZERO);
        assert_eq!(jitter_delay(Duration::ZERO, 0.7), Duration::ZERO);
    }
}
