//! How domain values are spelled in columns, both ways: timestamps as RFC 3339
//! text, lists and maps as JSON text, enums by the names perimeter prints,
//! unsigned 64-bit identifiers as the same bits in a signed integer.
//!
//! Decoders return a short description of what was wrong; the caller adds which
//! row and column it came from, because only the caller knows.

use std::collections::BTreeMap;
use std::net::IpAddr;

use perimeter_model::{AuthState, PortState, Protocol, Scope, Severity};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::StoreError;

/// Formats a timestamp as RFC 3339, keeping its offset and nanoseconds.
///
/// RFC 3339 has no room for an offset with a seconds part (historic local mean
/// times); such a timestamp is stored as the same instant in UTC rather than
/// refused. Years outside 0..=9999 cannot be written at all.
pub(crate) fn encode_time(what: &str, at: OffsetDateTime) -> Result<String, StoreError> {
    let at = if at.offset().seconds_past_minute() == 0 {
        at
    } else {
        at.to_offset(time::UtcOffset::UTC)
    };
    at.format(&Rfc3339)
        .map_err(|err| StoreError::Unrepresentable {
            what: what.to_owned(),
            detail: format!("timestamp {at} has no RFC 3339 form ({err})"),
        })
}

pub(crate) fn decode_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|err| format!("`{text}` is not an RFC 3339 timestamp ({err})"))
}

pub(crate) fn encode_strings(items: &[String]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

pub(crate) fn decode_strings(text: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(text)
        .map_err(|err| format!("`{}` is not a JSON list of strings ({err})", excerpt(text)))
}

pub(crate) fn encode_map(map: &BTreeMap<String, String>) -> String {
    let object: serde_json::Map<String, serde_json::Value> = map
        .iter()
        .map(|(key, value)| (key.clone(), serde_json::Value::from(value.as_str())))
        .collect();
    serde_json::Value::Object(object).to_string()
}

pub(crate) fn decode_map(text: &str) -> Result<BTreeMap<String, String>, String> {
    serde_json::from_str(text).map_err(|err| {
        format!(
            "`{}` is not a JSON object of strings ({err})",
            excerpt(text)
        )
    })
}

/// Host names with the addresses they resolved to: `[["name", ["addr", ..]], ..]`.
pub(crate) fn encode_resolved(resolved: &[(String, Vec<IpAddr>)]) -> String {
    let items: Vec<serde_json::Value> = resolved
        .iter()
        .map(|(name, addresses)| {
            let addresses: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
            serde_json::json!([name, addresses])
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

pub(crate) fn decode_resolved(text: &str) -> Result<Vec<(String, Vec<IpAddr>)>, String> {
    serde_json::from_str(text).map_err(|err| {
        format!(
            "`{}` is not a JSON list of resolved names ({err})",
            excerpt(text)
        )
    })
}

pub(crate) fn encode_pids(pids: &[u32]) -> String {
    serde_json::Value::from(pids.to_vec()).to_string()
}

pub(crate) fn decode_pids(text: &str) -> Result<Vec<u32>, String> {
    serde_json::from_str(text)
        .map_err(|err| format!("`{}` is not a JSON list of pids ({err})", excerpt(text)))
}

/// SQLite integers are signed; an inode keeps its 64 bits, read back unchanged.
pub(crate) fn u64_to_bits(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

pub(crate) fn u64_from_bits(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

/// A count for an INTEGER column; counts beyond `i64::MAX` cannot occur in
/// practice but are refused rather than wrapped.
pub(crate) fn encode_count(what: &str, count: u64) -> Result<i64, StoreError> {
    i64::try_from(count).map_err(|_| StoreError::Unrepresentable {
        what: what.to_owned(),
        detail: format!("{count} exceeds the largest stored integer"),
    })
}

pub(crate) fn decode_count(value: i64) -> Result<u64, String> {
    u64::try_from(value).map_err(|_| format!("negative count {value}"))
}

pub(crate) fn decode_port(value: i64) -> Result<u16, String> {
    u16::try_from(value).map_err(|_| format!("{value} is not a port number"))
}

pub(crate) fn decode_u32(value: i64) -> Result<u32, String> {
    u32::try_from(value).map_err(|_| format!("{value} does not fit 32 bits"))
}

pub(crate) fn decode_bool(value: i64) -> Result<bool, String> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(format!("{other} is not a boolean (0 or 1)")),
    }
}

pub(crate) fn decode_address(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("`{}` is not an IP address", excerpt(text)))
}

pub(crate) fn decode_protocol(text: &str) -> Result<Protocol, String> {
    Protocol::parse(text).ok_or_else(|| format!("`{}` is not a protocol", excerpt(text)))
}

pub(crate) fn decode_port_state(text: &str) -> Result<PortState, String> {
    PortState::parse(text).ok_or_else(|| format!("`{}` is not a port state", excerpt(text)))
}

pub(crate) fn decode_auth(text: &str) -> Result<AuthState, String> {
    AuthState::parse(text)
        .ok_or_else(|| format!("`{}` is not an authentication state", excerpt(text)))
}

pub(crate) fn decode_severity(text: &str) -> Result<Severity, String> {
    text.parse()
        .map_err(|_| format!("`{}` is not a severity", excerpt(text)))
}

pub(crate) fn decode_scope(text: &str) -> Result<Scope, String> {
    Scope::parse(text).ok_or_else(|| format!("`{}` is not a bind scope", excerpt(text)))
}

/// At most 60 characters of a stored value, for error messages: a damaged
/// column can hold anything, and a message should stay one line.
fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 60;
    let mut chars = text.chars();
    let mut short: String = chars.by_ref().take(MAX_CHARS).collect();
    if chars.next().is_some() {
        short.push_str("...");
    }
    short.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timestamps_keep_offset_and_nanoseconds() {
        let at = datetime!(2024-05-01 12:34:56.123456789 +02:00);
        let text = encode_time("test", at).expect("encodes");
        assert_eq!(text, "2024-05-01T12:34:56.123456789+02:00");
        let back = decode_time(&text).expect("decodes");
        assert_eq!(back, at);
        assert_eq!(back.offset(), at.offset());
    }

    #[test]
    fn offsets_with_seconds_are_stored_as_utc() {
        let at = datetime!(1900-01-01 0:00 +00:09:21);
        let text = encode_time("test", at).expect("encodes");
        assert_eq!(text, "1899-12-31T23:50:39Z");
        assert_eq!(decode_time(&text), Ok(at));
    }

    #[test]
    fn inode_bits_round_trip() {
        for value in [0, 1, 4_026_531_840, u64::MAX, 1 << 63] {
            assert_eq!(u64_from_bits(u64_to_bits(value)), value);
        }
        assert_eq!(u64_to_bits(u64::MAX), -1);
    }

    #[test]
    fn damaged_values_are_described() {
        assert_eq!(
            decode_port_state("opne"),
            Err("`opne` is not a port state".into())
        );
        assert_eq!(
            decode_port(70_000),
            Err("70000 is not a port number".into())
        );
        assert_eq!(decode_bool(2), Err("2 is not a boolean (0 or 1)".into()));
        let long = "x".repeat(500);
        let message = decode_protocol(&long).expect_err("not a protocol");
        assert!(message.len() < 100, "{message}");
        assert!(decode_strings("[1, 2]").is_err());
        assert!(decode_resolved(r#"[["a", ["not an address"]]]"#).is_err());
    }

    #[test]
    fn resolved_names_round_trip() {
        let resolved = vec![
            (
                "example.org".to_owned(),
                vec![
                    "198.18.0.1".parse().expect("v4"),
                    "::1".parse().expect("v6"),
                ],
            ),
            ("empty.example".to_owned(), vec![]),
        ];
        assert_eq!(decode_resolved(&encode_resolved(&resolved)), Ok(resolved));
    }
}
