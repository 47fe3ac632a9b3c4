//! How a host state is kept in SQLite since fleet schema 2: compressed, as a
//! BLOB of one format byte and the compressed JSON. A state of 100 listeners
//! is about 20 KB of JSON that repeats its keys and owners; zlib takes it to
//! a tenth or less. PostgreSQL needs none of this: TOAST compresses it.
//!
//! Rows written before schema 2 are TEXT, the JSON as it came, and are read
//! as they are (never rewritten): the column's type says which is which. A
//! perimeter that knows only schema 1 refuses a schema 2 file as too new, so
//! no binary ever reads a BLOB as JSON.

use std::io::{Read as _, Write as _};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

/// The format byte of a zlib stream (RFC 1950: it carries its own checksum,
/// so a damaged row is an error, never another state).
const ZLIB: u8 = 1;

/// The largest state unpacked: far above the largest report the server takes
/// (8 MiB of body), so only a damaged row reaches it.
const MAX_UNPACKED_BYTES: u64 = 64 * 1024 * 1024;

/// The state as stored: the format byte and the compressed JSON.
pub(super) fn pack(state: &str) -> Result<Vec<u8>, String> {
    let mut packed = Vec::with_capacity(state.len() / 8 + 16);
    packed.push(ZLIB);
    let mut encoder = ZlibEncoder::new(packed, Compression::default());
    encoder
        .write_all(state.as_bytes())
        .and_then(|()| encoder.finish())
        .map_err(|err| format!("cannot compress the state: {err}"))
}

/// The JSON of a stored BLOB; what went wrong when it is not one [`pack`]
/// made.
pub(super) fn unpack(packed: &[u8]) -> Result<String, String> {
    let Some((&format, compressed)) = packed.split_first() else {
        return Err("an empty state".to_owned());
    };
    if format != ZLIB {
        return Err(format!("a state in an unknown format ({format})"));
    }
    let mut bytes = Vec::with_capacity(compressed.len().saturating_mul(8));
    ZlibDecoder::new(compressed)
        .take(MAX_UNPACKED_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("a compressed state that does not decompress: {err}"))?;
    if bytes.len() as u64 > MAX_UNPACKED_BYTES {
        return Err(format!(
            "a compressed state of more than {MAX_UNPACKED_BYTES} bytes"
        ));
    }
    String::from_utf8(bytes).map_err(|err| format!("a state that is not UTF-8: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_shrink() {
        let listener = r#"{"protocol":"tcp","address":"0.0.0.0","port":8080,"owners":[{"pid":1234,"name":"nginx","exe":"/usr/sbin/nginx","package":"nginx","user":"www-data"}]}"#;
        let state = format!(
            "{{\"listeners\":[{}],\"note\":\"é ✓\"}}",
            [listener; 100].join(",")
        );
        let packed = pack(&state).expect("packs");
        assert_eq!(packed[0], ZLIB);
        assert!(
            packed.len() * 10 < state.len(),
            "{} of {}",
            packed.len(),
            state.len()
        );
        assert_eq!(unpack(&packed).expect("unpacks"), state);
        assert_eq!(unpack(&pack("").expect("packs")).expect("unpacks"), "");
    }

    #[test]
    fn damaged_rows_are_errors() {
        let mut packed = pack("{\"listeners\":[]}").expect("packs");
        assert!(unpack(&[]).is_err());
        assert!(
            unpack(&[7, 1, 2])
                .expect_err("unknown")
                .contains("unknown format (7)")
        );
        let last = packed.len() - 1;
        packed[last] ^= 0xff;
        assert!(unpack(&packed).is_err(), "a bad checksum");
        assert!(unpack(&packed[..4]).is_err(), "cut short");
    }
}
