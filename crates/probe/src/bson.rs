//! A minimal, bounded BSON encoder and decoder: just what the MongoDB probe sends
//! (documents of strings, integers and booleans) and reads (the reply documents
//! of `hello`, `buildInfo` and `listDatabases`).
//!
//! Written here rather than taken from the `bson` crate because that crate brings
//! serde, chrono, uuid, rand and more for a few hundred bytes of parsing, and
//! does not bound nesting or element counts the way hostile input needs.

/// The deepest nesting of documents and arrays accepted.
pub const MAX_DEPTH: usize = 16;
/// The most elements accepted across one top-level document.
pub const MAX_ELEMENTS: usize = 4096;

/// A BSON value, as much of it as a probe needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Bson {
    Double(f64),
    String(String),
    Document(Document),
    /// Arrays keep their elements in order; the keys ("0", "1", ...) are dropped.
    Array(Vec<Bson>),
    Boolean(bool),
    Null,
    Int32(i32),
    Int64(i64),
    /// Binary, ObjectId, dates, timestamps, decimals, regexes, ...: skipped over,
    /// with their type byte kept.
    Other(u8),
}

impl Bson {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Bson::String(text) => Some(text),
            _ => None,
        }
    }

    /// Numbers and booleans as a number: `ok` is a double in some versions and
    /// an int in others.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Bson::Double(value) => Some(*value),
            Bson::Int32(value) => Some(f64::from(*value)),
            #[expect(
                clippy::cast_precision_loss,
                reason = "only compared with small constants"
            )]
            Bson::Int64(value) => Some(*value as f64),
            Bson::Boolean(value) => Some(if *value { 1.0 } else { 0.0 }),
            _ => None,
        }
    }
}

/// A document: its elements in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document(pub Vec<(String, Bson)>);

impl Document {
    pub fn get(&self, key: &str) -> Option<&Bson> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Bson::as_str)
    }
}

/// A value to encode.
#[derive(Debug, Clone, Copy)]
pub enum Encode<'a> {
    Int32(i32),
    Str(&'a str),
    Bool(bool),
}

/// Encodes a flat document. Keys must not contain NUL (ours are constants).
pub fn encode(fields: &[(&str, Encode<'_>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (key, value) in fields {
        let (kind, payload): (u8, Vec<u8>) = match value {
            Encode::Int32(n) => (0x10, n.to_le_bytes().to_vec()),
            Encode::Bool(b) => (0x08, vec![u8::from(*b)]),
            Encode::Str(text) => {
                let mut payload = i32::try_from(text.len() + 1)
                    .unwrap_or(i32::MAX)
                    .to_le_bytes()
                    .to_vec();
                payload.extend_from_slice(text.as_bytes());
                payload.push(0);
                (0x02, payload)
            }
        };
        body.push(kind);
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(&payload);
    }
    body.push(0);
    let mut out = i32::try_from(body.len() + 4)
        .unwrap_or(i32::MAX)
        .to_le_bytes()
        .to_vec();
    out.extend_from_slice(&body);
    out
}

/// Why a document did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BsonError {
    #[error("document truncated at offset {0}")]
    Truncated(usize),
    #[error("invalid length at offset {0}")]
    BadLength(usize),
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("unknown element type 0x{0:02x}")]
    UnknownType(u8),
}

/// Decodes the document at the start of `buf`, returning it and its length.
pub fn decode(buf: &[u8]) -> Result<(Document, usize), BsonError> {
    let mut budget = MAX_ELEMENTS;
    decode_document(buf, 0, 0, &mut budget)
}

fn read_i32(buf: &[u8], at: usize) -> Result<i32, BsonError> {
    let bytes = buf.get(at..at + 4).ok_or(BsonError::Truncated(at))?;
    Ok(i32::from_le_bytes(
        bytes.try_into().map_err(|_| BsonError::Truncated(at))?,
    ))
}

fn read_len(buf: &[u8], at: usize) -> Result<usize, BsonError> {
    usize::try_from(read_i32(buf, at)?).map_err(|_| BsonError::BadLength(at))
}

fn cstring(buf: &[u8], at: usize) -> Result<(String, usize), BsonError> {
    let rest = buf.get(at..).ok_or(BsonError::Truncated(at))?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(BsonError::Truncated(at))?;
    let text = String::from_utf8_lossy(rest.get(..end).unwrap_or_default()).into_owned();
    Ok((text, at + end + 1))
}

fn decode_document(
    buf: &[u8],
    at: usize,
    depth: usize,
    budget: &mut usize,
) -> Result<(Document, usize), BsonError> {
    if depth > MAX_DEPTH {
        return Err(BsonError::TooDeep);
    }
    let len = read_len(buf, at)?;
    if len < 5 {
        return Err(BsonError::BadLength(at));
    }
    let end = at.checked_add(len).ok_or(BsonError::BadLength(at))?;
    // Elements are parsed within the document's own bytes only.
    let doc = buf.get(..end).ok_or(BsonError::Truncated(at))?;
    if doc.last() != Some(&0) {
        return Err(BsonError::BadLength(at));
    }
    let mut elements = Vec::new();
    let mut pos = at + 4;
    while pos < end - 1 {
        *budget = budget.checked_sub(1).ok_or(BsonError::TooManyElements)?;
        let kind = *doc.get(pos).ok_or(BsonError::Truncated(pos))?;
        let (key, value_at) = cstring(doc, pos + 1)?;
        let (value, next) = decode_value(doc, kind, value_at, depth, budget)?;
        elements.push((key, value));
        pos = next;
    }
    if pos != end - 1 {
        return Err(BsonError::BadLength(at));
    }
    Ok((Document(elements), len))
}

fn fixed(buf: &[u8], at: usize, n: usize) -> Result<usize, BsonError> {
    buf.get(at..at + n).ok_or(BsonError::Truncated(at))?;
    Ok(at + n)
}

fn decode_value(
    buf: &[u8],
    kind: u8,
    at: usize,
    depth: usize,
    budget: &mut usize,
) -> Result<(Bson, usize), BsonError> {
    match kind {
        0x01 => {
            let bytes = buf.get(at..at + 8).ok_or(BsonError::Truncated(at))?;
            let value = f64::from_le_bytes(bytes.try_into().map_err(|_| BsonError::Truncated(at))?);
            Ok((Bson::Double(value), at + 8))
        }
        0x02 | 0x0d | 0x0e => {
            let len = read_len(buf, at)?;
            if len == 0 {
                return Err(BsonError::BadLength(at));
            }
            let bytes = buf
                .get(at + 4..at + 4 + len)
                .ok_or(BsonError::Truncated(at))?;
            let text =
                String::from_utf8_lossy(bytes.strip_suffix(&[0]).unwrap_or(bytes)).into_owned();
            let value = if kind == 0x02 {
                Bson::String(text)
            } else {
                Bson::Other(kind)
            };
            Ok((value, at + 4 + len))
        }
        0x03 | 0x04 => {
            let (doc, len) = decode_document(buf, at, depth + 1, budget)?;
            let value = if kind == 0x03 {
                Bson::Document(doc)
            } else {
                Bson::Array(doc.0.into_iter().map(|(_, v)| v).collect())
            };
            Ok((value, at + len))
        }
        0x05 => {
            let len = read_len(buf, at)?;
            Ok((
                Bson::Other(kind),
                fixed(
                    buf,
                    at + 4,
                    len.checked_add(1).ok_or(BsonError::BadLength(at))?,
                )?,
            ))
        }
        0x06 | 0x0a | 0x7f | 0xff => Ok((
            if kind == 0x0a {
                Bson::Null
            } else {
                Bson::Other(kind)
            },
            at,
        )),
        0x07 => Ok((Bson::Other(kind), fixed(buf, at, 12)?)),
        0x08 => {
            let byte = *buf.get(at).ok_or(BsonError::Truncated(at))?;
            Ok((Bson::Boolean(byte != 0), at + 1))
        }
        0x09 | 0x11 => Ok((Bson::Other(kind), fixed(buf, at, 8)?)),
        0x0b => {
            let (_, after_pattern) = cstring(buf, at)?;
            let (_, after_options) = cstring(buf, after_pattern)?;
            Ok((Bson::Other(kind), after_options))
        }
        0x0c => {
            let len = read_len(buf, at)?;
            Ok((
                Bson::Other(kind),
                fixed(
                    buf,
                    at + 4,
                    len.checked_add(12).ok_or(BsonError::BadLength(at))?,
                )?,
            ))
        }
        0x0f => {
            let len = read_len(buf, at)?;
            if len < 4 {
                return Err(BsonError::BadLength(at));
            }
            Ok((Bson::Other(kind), fixed(buf, at, len)?))
        }
        0x10 => Ok((Bson::Int32(read_i32(buf, at)?), at + 4)),
        0x12 => {
            let bytes = buf.get(at..at + 8).ok_or(BsonError::Truncated(at))?;
            let value = i64::from_le_bytes(bytes.try_into().map_err(|_| BsonError::Truncated(at))?);
            Ok((Bson::Int64(value), at + 8))
        }
        0x13 => Ok((Bson::Other(kind), fixed(buf, at, 16)?)),
        other => Err(BsonError::UnknownType(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_what_the_probe_sends() {
        let bytes = encode(&[
            ("hello", Encode::Int32(1)),
            ("helloOk", Encode::Bool(true)),
            ("$db", Encode::Str("admin")),
        ]);
        let Ok((doc, used)) = decode(&bytes) else {
            panic!("decodes");
        };
        assert_eq!(used, bytes.len());
        assert_eq!(doc.get("hello"), Some(&Bson::Int32(1)));
        assert_eq!(doc.get("helloOk"), Some(&Bson::Boolean(true)));
        assert_eq!(doc.get_str("$db"), Some("admin"));
        // The well-known example from bsonspec.org: {"hello": "world"}.
        assert_eq!(
            encode(&[("hello", Encode::Str("world"))]),
            b"\x16\x00\x00\x00\x02hello\x00\x06\x00\x00\x00world\x00\x00"
        );
    }

    #[test]
    fn rejects_hostile_documents() {
        assert_eq!(decode(b"\x05\x00\x00"), Err(BsonError::Truncated(0)));
        assert_eq!(
            decode(b"\xff\xff\xff\x7f\x00"),
            Err(BsonError::Truncated(0))
        );
        assert_eq!(decode(b"\x04\x00\x00\x00"), Err(BsonError::BadLength(0)));
        // A string element whose length runs past the document.
        assert!(decode(b"\x10\x00\x00\x00\x02a\x00\xff\x00\x00\x00x\x00\x00").is_err());
        // Deep nesting is refused, not recursed into without end.
        let mut deep = vec![5, 0, 0, 0, 0];
        for _ in 0..(MAX_DEPTH + 2) {
            let mut body = vec![0x03, b'a', 0];
            body.extend_from_slice(&deep);
            body.push(0);
            let mut framed = i32::try_from(body.len() + 4)
                .unwrap_or_default()
                .to_le_bytes()
                .to_vec();
            framed.extend_from_slice(&body);
            deep = framed;
        }
        assert_eq!(decode(&deep), Err(BsonError::TooDeep));
        assert_eq!(decode(&[5, 0, 0, 0, 0]), Ok((Document(vec![]), 5)));
    }
}
