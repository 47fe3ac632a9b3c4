//! Timestamps as RFC 3339 text.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339, UTC, to the second (`2026-11-25T12:07:16Z`).
pub fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}
