//! SNMP v1 and v2c (port 161): a GetRequest for `sysDescr.0` with the
//! community `public`, and a bounded reader for the Response.
//!
//! Message layout (RFC 1157 §4 for v1, RFC 3416 §3 and RFC 1901 §3 for v2c):
//!
//! ```text
//! Message ::= SEQUENCE { version INTEGER (0 = v1, 1 = v2c),
//!                        community OCTET STRING,
//!                        data PDU }
//! GetRequest-PDU ::= [0] IMPLICIT SEQUENCE { request-id INTEGER,
//!                        error-status INTEGER, error-index INTEGER,
//!                        variable-bindings SEQUENCE OF
//!                            SEQUENCE { name OBJECT IDENTIFIER, value NULL } }
//! ```
//!
//! The reply is the same shape with tag `[2]` (GetResponse in v1, Response in
//! v2c). An agent drops a request whose community it does not accept without
//! a word (RFC 1157 §4.1, RFC 3584 §4.1), so any Response to ours, even one
//! carrying an error status, proves `public` was accepted:
//! [`rules::SNMP_PUBLIC`].

use perimeter_model::{AuthState, ServiceInfo};

use super::ber::{self, tag};
use crate::{Identified, rules, text};

/// `sysDescr.0` (RFC 1213 §6.4 / RFC 3418: `1.3.6.1.2.1.1.1.0`).
pub const SYS_DESCR: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 1, 0];
/// The community asked with: the factory default read community.
pub const COMMUNITY: &[u8] = b"public";
/// The most varbinds kept from one Response.
pub const MAX_VARBINDS: usize = 16;
/// The most octets kept from one OCTET STRING value.
pub const MAX_OCTETS: usize = 1024;
/// The most octets kept of the community echoed back.
pub const MAX_COMMUNITY: usize = 64;

/// The protocol version field (RFC 1157 §4: 0; RFC 1901 §3: 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V1,
    V2c,
}

impl Version {
    pub fn number(self) -> i64 {
        match self {
            Version::V1 => 0,
            Version::V2c => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2c => "v2c",
        }
    }
}

/// A GetRequest for `sysDescr.0` with community `public` and request-id `id`.
pub fn get_request(version: Version, id: u16) -> Vec<u8> {
    let mut varbind = Vec::new();
    ber::encode_tlv(
        tag::OID,
        &ber::encode_oid(&SYS_DESCR).unwrap_or_default(),
        &mut varbind,
    );
    ber::encode_tlv(tag::NULL, &[], &mut varbind);
    let mut varbinds = Vec::new();
    ber::encode_tlv(tag::SEQUENCE, &varbind, &mut varbinds);
    let mut pdu = Vec::new();
    ber::encode_tlv(tag::INTEGER, &ber::encode_integer(i64::from(id)), &mut pdu);
    // error-status and error-index are 0 in a request.
    ber::encode_tlv(tag::INTEGER, &[0], &mut pdu);
    ber::encode_tlv(tag::INTEGER, &[0], &mut pdu);
    ber::encode_tlv(tag::SEQUENCE, &varbinds, &mut pdu);
    let mut message = Vec::new();
    ber::encode_tlv(
        tag::INTEGER,
        &ber::encode_integer(version.number()),
        &mut message,
    );
    ber::encode_tlv(tag::OCTET_STRING, COMMUNITY, &mut message);
    ber::encode_tlv(tag::GET_REQUEST, &pdu, &mut message);
    let mut out = Vec::new();
    ber::encode_tlv(tag::SEQUENCE, &message, &mut out);
    out
}

/// A varbind value (RFC 3416 §3 ObjectSyntax, and the three v2 exceptions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Integer(i64),
    /// At most [`MAX_OCTETS`] of the string.
    OctetString(Vec<u8>),
    Null,
    Oid(Vec<u32>),
    IpAddress([u8; 4]),
    /// Counter32, Gauge32, TimeTicks and Counter64, with their tag.
    Unsigned {
        tag: u8,
        value: u64,
    },
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
    /// Anything else (Opaque included): its tag and length.
    Other {
        tag: u8,
        len: usize,
    },
}

impl Value {
    fn parse(tag: u8, value: &[u8]) -> Option<Value> {
        Some(match tag {
            tag::INTEGER => Value::Integer(ber::decode_integer(value)?),
            tag::OCTET_STRING => {
                Value::OctetString(value.get(..MAX_OCTETS).unwrap_or(value).to_vec())
            }
            tag::NULL => Value::Null,
            tag::OID => Value::Oid(ber::decode_oid(value)?),
            tag::IP_ADDRESS => Value::IpAddress(value.try_into().ok()?),
            tag::COUNTER32 | tag::GAUGE32 | tag::TIMETICKS | tag::COUNTER64 => Value::Unsigned {
                tag,
                value: ber::decode_unsigned(value)?,
            },
            tag::NO_SUCH_OBJECT => Value::NoSuchObject,
            tag::NO_SUCH_INSTANCE => Value::NoSuchInstance,
            tag::END_OF_MIB_VIEW => Value::EndOfMibView,
            _ => Value::Other {
                tag,
                len: value.len(),
            },
        })
    }
}

/// A Response (or any PDU) as read from a v1/v2c message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The version field as sent (0 = v1, 1 = v2c; anything else is kept).
    pub version: i64,
    /// The community echoed, at most [`MAX_COMMUNITY`] octets.
    pub community: Vec<u8>,
    pub pdu_tag: u8,
    pub request_id: i64,
    pub error_status: i64,
    pub error_index: i64,
    /// At most [`MAX_VARBINDS`], in order.
    pub varbinds: Vec<(Vec<u32>, Value)>,
}

/// Reads a v1 or v2c message. The structure is walked level by level (message,
/// PDU, varbind list, varbind, value: five levels by construction, no
/// recursion), every length checked by [`ber::read_tlv`]. `None` when a required
/// field is missing or of the wrong type, or the PDU is a v1 Trap (which has
/// another layout).
pub fn parse_message(reply: &[u8]) -> Option<Response> {
    let (message, _) = ber::expect_tlv(reply, tag::SEQUENCE)?;
    let (version, rest) = ber::expect_tlv(message, tag::INTEGER)?;
    let version = ber::decode_integer(version)?;
    let (community, rest) = ber::expect_tlv(rest, tag::OCTET_STRING)?;
    let (pdu_tag, pdu, _) = ber::read_tlv(rest)?;
    if pdu_tag & 0xe0 != 0xa0 || pdu_tag == tag::TRAP_V1 {
        return None;
    }
    let (request_id, rest) = ber::expect_tlv(pdu, tag::INTEGER)?;
    let (error_status, rest) = ber::expect_tlv(rest, tag::INTEGER)?;
    let (error_index, rest) = ber::expect_tlv(rest, tag::INTEGER)?;
    let (mut list, _) = ber::expect_tlv(rest, tag::SEQUENCE)?;
    let mut varbinds = Vec::new();
    while !list.is_empty() && varbinds.len() < MAX_VARBINDS {
        let (varbind, rest) = ber::expect_tlv(list, tag::SEQUENCE)?;
        let (name, value_tlv) = ber::expect_tlv(varbind, tag::OID)?;
        let (value_tag, value, _) = ber::read_tlv(value_tlv)?;
        varbinds.push((ber::decode_oid(name)?, Value::parse(value_tag, value)?));
        list = rest;
    }
    Some(Response {
        version,
        community: community.get(..MAX_COMMUNITY).unwrap_or(community).to_vec(),
        pdu_tag,
        request_id: ber::decode_integer(request_id)?,
        error_status: ber::decode_integer(error_status)?,
        error_index: ber::decode_integer(error_index)?,
        varbinds,
    })
}

/// The name of an error-status (RFC 3416 §3).
pub fn error_name(status: i64) -> String {
    const NAMES: [&str; 19] = [
        "noError",
        "tooBig",
        "noSuchName",
        "badValue",
        "readOnly",
        "genErr",
        "noAccess",
        "wrongType",
        "wrongLength",
        "wrongEncoding",
        "wrongValue",
        "noCreation",
        "inconsistentValue",
        "resourceUnavailable",
        "commitFailed",
        "undoFailed",
        "authorizationError",
        "notWritable",
        "inconsistentName",
    ];
    usize::try_from(status)
        .ok()
        .and_then(|idx| NAMES.get(idx))
        .map_or_else(|| format!("error {status}"), |name| (*name).to_string())
}

/// Identifies an SNMP agent from its reply to [`get_request`] with `version`
/// and `id`: a Response with our request-id, version and community. The
/// finding is raised whatever the error status, since an agent answers only a
/// community it accepts; `sysDescr` becomes the banner.
pub fn identify(version: Version, id: u16, reply: &[u8]) -> Option<Identified> {
    let response = parse_message(reply).filter(|r| {
        r.pdu_tag == tag::RESPONSE
            && r.request_id == i64::from(id)
            && r.version == version.number()
            && r.community == COMMUNITY
    })?;
    let mut service = ServiceInfo::named("snmp");
    service.auth = AuthState::None;
    service.extra.insert("community".into(), "public".into());
    service
        .extra
        .insert("snmp-versions".into(), version.name().into());
    let descr = response
        .varbinds
        .iter()
        .find_map(|(name, value)| match value {
            Value::OctetString(bytes) if name == &SYS_DESCR => Some(bytes.clone()),
            _ => None,
        });
    let mut evidence = vec![format!(
        "GetRequest sysDescr.0 with community \"public\" ({}) answered{}",
        version.name(),
        if response.error_status == 0 {
            String::new()
        } else {
            format!(" with {}", error_name(response.error_status))
        }
    )];
    if let Some(descr) = descr {
        service.banner = Some(text::banner(&descr));
        service
            .extra
            .insert("sysdescr".into(), text::value_bytes(&descr));
        evidence.push(format!("sysDescr: {}", text::value_bytes(&descr)));
    }
    Some(Identified {
        service,
        findings: vec![rules::snmp_public(evidence)],
    })
}

/// Whether `reply` is an SNMP message an agent sends (Response or Report) in
/// any version, for naming a service on an unexpected port. v3 messages have
/// another layout after the version, so for them only the version is checked.
pub fn looks_like_reply(reply: &[u8]) -> bool {
    if let Some(response) = parse_message(reply) {
        return matches!(response.version, 0 | 1)
            && matches!(response.pdu_tag, tag::RESPONSE | tag::REPORT);
    }
    let v3 = ber::expect_tlv(reply, tag::SEQUENCE)
        .and_then(|(message, _)| ber::expect_tlv(message, tag::INTEGER))
        .and_then(|(version, _)| ber::decode_integer(version));
    v3 == Some(3)
}

#[cfg(test)]
mod tests;
