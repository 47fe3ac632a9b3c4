//! Timestamps as text: RFC 3339 (to the second for documents, to the
//! millisecond for watch events) and the time of day for watch lines.

use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339, UTC, to the second (`2026-11-25T12:07:16Z`).
pub fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// RFC 3339, UTC, to the millisecond (`2026-11-18T11:06:40.123Z`): the time
/// of a watch event.
pub(crate) fn rfc3339_millis(at: SystemTime) -> String {
    let at = OffsetDateTime::from(at);
    at.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// The time of day, UTC, to the second (`11:06:40`): how human watch lines
/// are stamped.
pub fn time_of_day(at: SystemTime) -> String {
    let at = OffsetDateTime::from(at);
    at.format(time::macros::format_description!(
        "[hour]:[minute]:[second]"
    ))
    .unwrap_or_else(|_| at.unix_timestamp().to_string())
}
