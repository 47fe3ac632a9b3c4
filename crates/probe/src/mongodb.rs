//! MongoDB's wire protocol: `OP_MSG` (3.6 and later) and the legacy `OP_QUERY`
//! for older servers, and [`MongoProbe`], which asks `hello` (is it MongoDB?),
//! `buildInfo` (its version; allowed without authentication) and
//! `listDatabases` with `nameOnly` (does it answer an unauthenticated client?).
//! All three are read-only commands on `admin`.

use perimeter_model::{AuthState, ServiceInfo};

use crate::bson::{self, Bson, Document, Encode};
use crate::{Identified, Next, Probe, rules, sniff_not_http as sniff, text};

const OP_REPLY: i32 = 1;
const OP_QUERY: i32 = 2004;
const OP_MSG: i32 = 2013;
/// The most database names quoted in a finding's evidence.
const MAX_NAMES_SHOWN: usize = 10;

/// An `OP_MSG` carrying one command document.
pub fn op_msg(request_id: i32, command: &[(&str, Encode<'_>)]) -> Vec<u8> {
    let doc = bson::encode(command);
    let mut body = 0u32.to_le_bytes().to_vec(); // flagBits
    body.push(0); // section kind 0: the body document
    body.extend_from_slice(&doc);
    frame(request_id, OP_MSG, &body)
}

/// A legacy `OP_QUERY` command on `admin.$cmd`.
pub fn op_query(request_id: i32, command: &[(&str, Encode<'_>)]) -> Vec<u8> {
    let mut body = 0i32.to_le_bytes().to_vec(); // flags
    body.extend_from_slice(b"admin.$cmd\0");
    body.extend_from_slice(&0i32.to_le_bytes()); // numberToSkip
    body.extend_from_slice(&(-1i32).to_le_bytes()); // numberToReturn
    body.extend_from_slice(&bson::encode(command));
    frame(request_id, OP_QUERY, &body)
}

fn frame(request_id: i32, op_code: i32, body: &[u8]) -> Vec<u8> {
    let len = i32::try_from(body.len() + 16).unwrap_or(i32::MAX);
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // responseTo
    out.extend_from_slice(&op_code.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Why a reply is not one we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MongoError {
    #[error("message length {0} out of range")]
    BadLength(i64),
    #[error("unexpected op code {0}")]
    OpCode(i32),
    #[error("reply has no body document")]
    NoDocument,
    #[error("bad document: {0}")]
    Bson(#[from] bson::BsonError),
}

/// Parses one reply (`OP_MSG` or `OP_REPLY`) into its first document.
/// `Ok(None)`: incomplete.
pub fn parse_reply(buf: &[u8], max_len: usize) -> Result<Option<Document>, MongoError> {
    let Some(header) = buf.get(..16) else {
        // The first four bytes are the length: refuse early what cannot be one.
        if let Some(len) = buf
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_le_bytes)
            && !(16..=i32::try_from(max_len).unwrap_or(i32::MAX)).contains(&len)
        {
            return Err(MongoError::BadLength(i64::from(len)));
        }
        return Ok(None);
    };
    let word = |at: usize| {
        header
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_le_bytes)
            .unwrap_or_default()
    };
    let len = word(0);
    let op_code = word(12);
    let len_usize = usize::try_from(len).map_err(|_| MongoError::BadLength(i64::from(len)))?;
    if !(16..=max_len).contains(&len_usize) {
        return Err(MongoError::BadLength(i64::from(len)));
    }
    if op_code != OP_MSG && op_code != OP_REPLY {
        return Err(MongoError::OpCode(op_code));
    }
    let Some(message) = buf.get(16..len_usize) else {
        return Ok(None);
    };
    let doc_at = match op_code {
        // flagBits, then sections; the kind-0 section holds the body document.
        OP_MSG => {
            let mut at = 4;
            loop {
                match message.get(at) {
                    Some(0) => break at + 1,
                    Some(1) => {
                        let size = message
                            .get(at + 1..at + 5)
                            .and_then(|b| b.try_into().ok())
                            .map(i32::from_le_bytes)
                            .and_then(|n| usize::try_from(n).ok())
                            .ok_or(MongoError::NoDocument)?;
                        at = at.saturating_add(1).saturating_add(size.max(4));
                    }
                    _ => return Err(MongoError::NoDocument),
                }
            }
        }
        // responseFlags, cursorID, startingFrom, numberReturned, documents.
        _ => 20,
    };
    let doc = message.get(doc_at..).ok_or(MongoError::NoDocument)?;
    let (document, _) = bson::decode(doc)?;
    Ok(Some(document))
}

fn ok(doc: &Document) -> bool {
    doc.get("ok").and_then(Bson::as_f64) == Some(1.0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Hello,
    BuildInfo,
    ListDatabases,
}

/// Identifies MongoDB and whether it lists databases without authentication.
#[derive(Debug)]
pub struct MongoProbe {
    legacy: bool,
    step: Step,
    service: ServiceInfo,
}

impl MongoProbe {
    /// Speaks `OP_MSG` (MongoDB 3.6 and later).
    pub fn new() -> Self {
        MongoProbe {
            legacy: false,
            step: Step::Hello,
            service: Self::base(),
        }
    }

    /// Speaks `OP_QUERY`, for servers older than 3.6 that close the connection
    /// on `OP_MSG`.
    pub fn legacy() -> Self {
        MongoProbe {
            legacy: true,
            ..MongoProbe::new()
        }
    }

    fn base() -> ServiceInfo {
        let mut service = ServiceInfo::named("mongodb");
        service.product = Some("MongoDB".into());
        service
    }

    fn command(&self, request_id: i32, command: &[(&str, Encode<'_>)]) -> Next {
        if self.legacy {
            Next::Send(op_query(request_id, command))
        } else {
            let mut with_db = command.to_vec();
            with_db.push(("$db", Encode::Str("admin")));
            Next::Send(op_msg(request_id, &with_db))
        }
    }

    fn after_hello(&mut self, doc: &Document) -> Next {
        let is_mongo = doc.get("maxWireVersion").is_some()
            || doc.get("isWritablePrimary").is_some()
            || doc.get("ismaster").is_some();
        if !is_mongo {
            return Next::Done(None);
        }
        if let Some(wire) = doc.get("maxWireVersion").and_then(Bson::as_f64) {
            self.service
                .extra
                .insert("max_wire_version".into(), format!("{wire}"));
        }
        if let Some(set) = doc.get_str("setName") {
            self.service
                .extra
                .insert("replica_set".into(), text::value(set));
        }
        if doc.get_str("msg") == Some("isdbgrid") {
            self.service.extra.insert("role".into(), "mongos".into());
        }
        self.step = Step::BuildInfo;
        self.command(2, &[("buildInfo", Encode::Int32(1))])
    }

    fn after_build_info(&mut self, doc: &Document) -> Next {
        if ok(doc)
            && let Some(version) = doc.get_str("version")
        {
            self.service.version = Some(text::value(version));
        }
        self.step = Step::ListDatabases;
        self.command(
            3,
            &[
                ("listDatabases", Encode::Int32(1)),
                ("nameOnly", Encode::Bool(true)),
            ],
        )
    }

    fn after_list(&mut self, doc: &Document) -> Identified {
        let mut service = self.service.clone();
        if ok(doc)
            && let Some(Bson::Array(databases)) = doc.get("databases")
        {
            service.auth = AuthState::None;
            let names: Vec<String> = databases
                .iter()
                .filter_map(|db| match db {
                    Bson::Document(db) => db.get_str("name").map(text::value),
                    _ => None,
                })
                .take(MAX_NAMES_SHOWN)
                .collect();
            let mut evidence = vec![format!(
                "listDatabases answered without authentication: {} databases ({})",
                databases.len(),
                text::escape(names.join(", ").as_bytes(), text::MAX_BANNER_CHARS)
            )];
            if let Some(version) = &service.version {
                evidence.push(format!("buildInfo version {version}"));
            }
            return Identified {
                service,
                findings: vec![rules::mongodb_noauth(evidence)],
            };
        }
        let code = doc.get("code").and_then(Bson::as_f64);
        let code_name = doc.get_str("codeName").unwrap_or_default();
        if code == Some(13.0) || code_name == "Unauthorized" {
            service.auth = AuthState::Required;
        }
        if let Some(message) = doc.get_str("errmsg") {
            service.extra.insert("error".into(), text::value(message));
        }
        Identified::service_only(service)
    }

    /// What is known when an answer after `hello` is missing or unreadable.
    fn known(&self) -> Option<Identified> {
        match self.step {
            Step::Hello => None,
            _ => Some(Identified::service_only(self.service.clone())),
        }
    }
}

impl Default for MongoProbe {
    fn default() -> Self {
        MongoProbe::new()
    }
}

impl Probe for MongoProbe {
    fn name(&self) -> &'static str {
        if self.legacy {
            "mongodb-legacy"
        } else {
            "mongodb"
        }
    }

    fn start(&mut self) -> Next {
        self.step = Step::Hello;
        self.service = Self::base();
        if self.legacy {
            self.command(1, &[("isMaster", Encode::Int32(1))])
        } else {
            self.command(1, &[("hello", Encode::Int32(1))])
        }
    }

    fn on_data(&mut self, received: &[u8]) -> Next {
        match parse_reply(received, self.max_response()) {
            Ok(None) => Next::Receive,
            Ok(Some(doc)) => match self.step {
                Step::Hello => self.after_hello(&doc),
                Step::BuildInfo => self.after_build_info(&doc),
                Step::ListDatabases => Next::Done(Some(self.after_list(&doc))),
            },
            Err(_) if self.step == Step::Hello => Next::Done(sniff(received)),
            Err(_) => Next::Done(self.known()),
        }
    }

    fn on_end(&mut self, received: &[u8], _timed_out: bool) -> Option<Identified> {
        match self.step {
            Step::Hello => sniff(received),
            _ => self.known(),
        }
    }

    fn max_response(&self) -> usize {
        64 * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server reply as MongoDB frames it: OP_MSG, flags 0, one kind-0 section.
    fn reply(doc: &[u8]) -> Vec<u8> {
        let mut body = 0u32.to_le_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(doc);
        frame(99, OP_MSG, &body)
    }

    /// Raw BSON for documents our encoder cannot build (doubles, arrays).
    fn doc(elements: &[u8]) -> Vec<u8> {
        let mut out = i32::try_from(elements.len() + 5)
            .unwrap_or_default()
            .to_le_bytes()
            .to_vec();
        out.extend_from_slice(elements);
        out.push(0);
        out
    }

    fn double(key: &str, value: f64) -> Vec<u8> {
        let mut out = vec![0x01];
        out.extend_from_slice(key.as_bytes());
        out.push(0);
        out.extend_from_slice(&value.to_le_bytes());
        out
    }

    fn hello_reply() -> Vec<u8> {
        let mut elements = vec![0x08];
        elements.extend_from_slice(b"isWritablePrimary\0\x01");
        elements.extend_from_slice(&[0x10]);
        elements.extend_from_slice(b"maxWireVersion\0");
        elements.extend_from_slice(&21i32.to_le_bytes());
        elements.extend_from_slice(&double("ok", 1.0));
        reply(&doc(&elements))
    }

    fn list_reply(names: &[&str]) -> Vec<u8> {
        let mut array = Vec::new();
        for (idx, name) in names.iter().enumerate() {
            array.push(0x03);
            array.extend_from_slice(idx.to_string().as_bytes());
            array.push(0);
            array.extend_from_slice(&bson::encode(&[("name", Encode::Str(name))]));
        }
        let mut elements = vec![0x04];
        elements.extend_from_slice(b"databases\0");
        elements.extend_from_slice(&doc(&array));
        elements.extend_from_slice(&double("ok", 1.0));
        reply(&doc(&elements))
    }

    #[test]
    fn requests_are_framed() {
        let msg = op_msg(
            7,
            &[("hello", Encode::Int32(1)), ("$db", Encode::Str("admin"))],
        );
        assert_eq!(msg.get(..4), Some(&(msg.len() as i32).to_le_bytes()[..]));
        assert_eq!(msg.get(4..8), Some(&7i32.to_le_bytes()[..]));
        assert_eq!(msg.get(12..16), Some(&OP_MSG.to_le_bytes()[..]));
        let query = op_query(1, &[("isMaster", Encode::Int32(1))]);
        assert_eq!(query.get(12..16), Some(&OP_QUERY.to_le_bytes()[..]));
        assert!(text::find(&query, b"admin.$cmd\0").is_some());
    }

    #[test]
    fn open_mongodb_lists_databases() {
        let mut probe = MongoProbe::new();
        assert!(matches!(probe.start(), Next::Send(_)));
        let hello = hello_reply();
        assert_eq!(probe.on_data(&hello[..20]), Next::Receive);
        assert!(matches!(probe.on_data(&hello), Next::Send(_)));
        let mut elements = vec![0x02];
        elements.extend_from_slice(b"version\0");
        elements.extend_from_slice(&7i32.to_le_bytes());
        elements.extend_from_slice(b"7.0.14\0");
        elements.extend_from_slice(&double("ok", 1.0));
        let build = doc(&elements);
        assert!(matches!(probe.on_data(&reply(&build)), Next::Send(_)));
        let Next::Done(Some(found)) = probe.on_data(&list_reply(&["admin", "config", "shop"]))
        else {
            panic!("identified");
        };
        assert_eq!(found.service.name, "mongodb");
        assert_eq!(found.service.version.as_deref(), Some("7.0.14"));
        assert_eq!(found.service.auth, AuthState::None);
        let [finding] = found.findings.as_slice() else {
            panic!("one finding");
        };
        assert_eq!(finding.rule, rules::MONGODB_NOAUTH);
        assert_eq!(
            finding.evidence.first().map(String::as_str),
            Some(
                "listDatabases answered without authentication: 3 databases (admin, config, shop)"
            )
        );
    }

    #[test]
    fn unauthorized_means_required() {
        let mut probe = MongoProbe::new();
        probe.start();
        probe.on_data(&hello_reply());
        probe.on_data(&reply(&doc(&double("ok", 0.0))));
        let mut elements = double("ok", 0.0);
        elements.push(0x02);
        elements.extend_from_slice(b"errmsg\0");
        let message = b"command listDatabases requires authentication\0";
        elements.extend_from_slice(
            &i32::try_from(message.len())
                .unwrap_or_default()
                .to_le_bytes(),
        );
        elements.extend_from_slice(message);
        elements.push(0x10);
        elements.extend_from_slice(b"code\0");
        elements.extend_from_slice(&13i32.to_le_bytes());
        let Next::Done(Some(found)) = probe.on_data(&reply(&doc(&elements))) else {
            panic!("identified");
        };
        assert_eq!(found.service.auth, AuthState::Required);
        assert!(found.findings.is_empty());
        assert_eq!(
            found.service.extra.get("error").map(String::as_str),
            Some("command listDatabases requires authentication")
        );
    }

    #[test]
    fn strangers_and_bad_lengths() {
        assert_eq!(
            parse_reply(b"\x00\x00\x00\x7f", 65536),
            Err(MongoError::BadLength(0x7f00_0000))
        );
        assert!(parse_reply(b"HTTP/1.1 400 Bad", 65536).is_err());
        let mut probe = MongoProbe::new();
        probe.start();
        assert_eq!(
            probe.on_data(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
            Next::Done(None),
            "left to the HTTP probe"
        );
        let mut probe = MongoProbe::legacy();
        probe.start();
        assert_eq!(probe.on_end(b"", false), None);
    }
}
