//! DNS over UDP (RFC 1035): the two questions the UDP scan asks port 53, a
//! bounded parser for any DNS-format message (also used for mDNS and for the
//! NetBIOS name service, which share the format), and what the answers prove.
//!
//! The parser takes nothing on trust: every count is checked against the bytes
//! that are really there, names are capped at RFC 1035's 255 octets, a
//! compression pointer must jump strictly backwards past everything read so far
//! (so pointer loops cannot exist) and at most [`MAX_POINTER_JUMPS`] times, and
//! at most [`MAX_RECORDS`] records are kept from one message.
//!
//! What one reply can prove about recursion, and what it cannot, is written at
//! [`identify_recursion`].

use std::net::{Ipv4Addr, Ipv6Addr};

use perimeter_model::ServiceInfo;

use super::{u16_at, u32_at};
use crate::{Identified, rules, text};

/// The longest name, in wire octets (RFC 1035 §2.3.4 and §3.1).
pub const MAX_NAME_OCTETS: usize = 255;
/// The most compression pointers followed for one name. Pointers must jump
/// backwards, so this is a second bound, not the one that stops loops.
pub const MAX_POINTER_JUMPS: usize = 32;
/// The most questions kept from one message (real ones carry one).
pub const MAX_QUESTIONS: usize = 4;
/// The most resource records kept from one message, all sections together.
pub const MAX_RECORDS: usize = 64;
/// The most character-strings kept from one TXT record.
pub const MAX_TXT_STRINGS: usize = 16;
/// The fixed header length (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;

/// QTYPE and TYPE values used here (RFC 1035 §3.2.2, RFC 3596 §2.1 for AAAA,
/// RFC 2782 for SRV).
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
}

/// CLASS values (RFC 1035 §3.2.4): Internet and CHAOS.
pub mod class {
    pub const IN: u16 = 1;
    pub const CH: u16 = 3;
}

/// RCODE values (RFC 1035 §4.1.1).
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
}

/// The name the recursion question asks for. RFC 6761 §6.5 reserves
/// `example.com` and says caching servers "SHOULD NOT recognize example names as
/// special and SHOULD resolve them normally", so a resolver that serves us
/// answers it like any name, while the only servers authoritative for it are
/// IANA's. (`.invalid` and `.test` would be answered by the resolver itself
/// under RFC 6761 §6.2 and §6.4, from no data, which proves less.)
pub const RECURSION_NAME: &str = "example.com";

/// The name of the CHAOS-class version question. Not in an RFC: BIND's
/// convention, followed by Unbound, dnsmasq, PowerDNS and Knot, and described
/// next to `id.server` in RFC 4892 §2.
pub const VERSION_NAME: &str = "version.bind";

/// The 12-byte header (RFC 1035 §4.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    /// QR: this is a response.
    pub response: bool,
    pub opcode: u8,
    /// AA: the answer is authoritative.
    pub authoritative: bool,
    /// TC: the message was truncated.
    pub truncated: bool,
    /// RD: recursion desired (copied from the query into the response).
    pub recursion_desired: bool,
    /// RA: recursion available.
    pub recursion_available: bool,
    pub rcode: u8,
    pub n_questions: u16,
    pub n_answers: u16,
    pub n_authority: u16,
    pub n_additional: u16,
}

impl Header {
    /// Parses the header; `None` when fewer than 12 bytes arrived.
    pub fn parse(message: &[u8]) -> Option<Header> {
        let flags = u16_at(message, 2)?;
        Some(Header {
            id: u16_at(message, 0)?,
            response: flags & 0x8000 != 0,
            opcode: ((flags >> 11) & 0x0f) as u8,
            authoritative: flags & 0x0400 != 0,
            truncated: flags & 0x0200 != 0,
            recursion_desired: flags & 0x0100 != 0,
            recursion_available: flags & 0x0080 != 0,
            rcode: (flags & 0x000f) as u8,
            n_questions: u16_at(message, 4)?,
            n_answers: u16_at(message, 6)?,
            n_authority: u16_at(message, 8)?,
            n_additional: u16_at(message, 10)?,
        })
    }
}

/// One entry of the question section (RFC 1035 §4.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name as dotted text, each label escaped like a banner (`.` for the
    /// root).
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

/// The parts of RDATA this crate reads; everything else is kept as its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// NS, CNAME and PTR: one domain name.
    Name(String),
    /// TXT: character-strings as sent (each at most 255 bytes by the format),
    /// at most [`MAX_TXT_STRINGS`] of them.
    Txt(Vec<Vec<u8>>),
    /// SRV (RFC 2782): the target host and port.
    Srv {
        port: u16,
        target: String,
    },
    /// SOA: the primary server, the mailbox and the serial.
    Soa {
        mname: String,
        rname: String,
        serial: u32,
    },
    /// Any other type, or data that did not parse as its type says.
    Other {
        len: u16,
    },
}

/// One resource record (RFC 1035 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub rtype: u16,
    /// The CLASS field. mDNS uses its top bit as the cache-flush bit.
    pub class: u16,
    pub ttl: u32,
    pub data: RData,
}

/// Which section a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

/// A parsed message. `complete` is false when a count promised more than the
/// datagram held or the record cap was reached: what was read is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub questions: Vec<Question>,
    /// Records in message order, each with its section.
    pub records: Vec<(Section, Record)>,
    pub complete: bool,
    /// The offset just past the last question or record read.
    pub end: usize,
}

impl Message {
    /// The records of the answer section.
    pub fn answers(&self) -> impl Iterator<Item = &Record> {
        self.records
            .iter()
            .filter(|(section, _)| *section == Section::Answer)
            .map(|(_, record)| record)
    }
}

/// Encodes a query (RFC 1035 §4.1.1 header, §4.1.2 question): one question,
/// opcode QUERY, no other sections. `None` when `name` has an empty label or
/// one longer than 63 octets, or is longer than 255 octets on the wire.
pub fn query(
    id: u16,
    name: &str,
    qtype: u16,
    qclass: u16,
    recursion_desired: bool,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    out.extend_from_slice(&id.to_be_bytes());
    // QR=0, OPCODE=0 (QUERY), AA=0, TC=0, RD as asked, RA=0, Z=0, RCODE=0.
    let flags: u16 = if recursion_desired { 0x0100 } else { 0 };
    out.extend_from_slice(&flags.to_be_bytes());
    // QDCOUNT=1, ANCOUNT=NSCOUNT=ARCOUNT=0.
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    encode_name(name, &mut out)?;
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&qclass.to_be_bytes());
    Some(out)
}

/// Appends `name` as a sequence of labels (RFC 1035 §3.1), uncompressed.
fn encode_name(name: &str, out: &mut Vec<u8>) -> Option<()> {
    let start = out.len();
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            let len = u8::try_from(label.len())
                .ok()
                .filter(|n| (1..=63).contains(n))?;
            out.push(len);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    (out.len() - start <= MAX_NAME_OCTETS).then_some(())
}

/// The recursion question: `example.com. IN A` with RD=1.
pub fn recursion_query(id: u16) -> Vec<u8> {
    query(id, RECURSION_NAME, rtype::A, class::IN, true).unwrap_or_default()
}

/// The version question: `version.bind. CH TXT`, RD=0 (it is never recursive).
pub fn version_query(id: u16) -> Vec<u8> {
    query(id, VERSION_NAME, rtype::TXT, class::CH, false).unwrap_or_default()
}

/// Reads the name at `start`, following compression pointers (RFC 1035
/// §4.1.4). Returns the dotted name and the offset just past the name where it
/// started (after the first pointer, if any).
pub fn read_name(message: &[u8], start: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut pos = start;
    // Every byte read so far lies at or after `lowest`; a pointer must jump
    // below it, so positions only ever move backwards between label runs and no
    // loop can form, whatever the message says.
    let mut lowest = start;
    // A pointer names a prior occurrence (RFC 1035 §4.1.4), so after a jump
    // everything read must lie before the pointer itself. Without this a label
    // reached through a pointer could run on past the pointer into the rest of
    // the record, and a record would mean different things depending on the
    // bytes after it (found by the udp_dns fuzz target).
    let mut limit = message.len();
    let mut end = None;
    let mut jumps = 0;
    let mut octets = 0usize;
    loop {
        if pos >= limit {
            return None;
        }
        let len = *message.get(pos)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                octets += 1;
                if octets > MAX_NAME_OCTETS {
                    return None;
                }
                let end = end.unwrap_or(pos + 1);
                if name.is_empty() {
                    name.push('.');
                }
                return Some((name, end));
            }
            0x00 => {
                let len = usize::from(len);
                octets += 1 + len;
                if octets > MAX_NAME_OCTETS {
                    return None;
                }
                let label = message.get(pos + 1..pos + 1 + len)?;
                if pos + 1 + len > limit {
                    return None;
                }
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(&escape_label(label));
                pos += 1 + len;
            }
            0xc0 => {
                let low = *message.get(pos + 1)?;
                if pos + 2 > limit {
                    return None;
                }
                let target = usize::from(len & 0x3f) << 8 | usize::from(low);
                end.get_or_insert(pos + 2);
                jumps += 1;
                if jumps > MAX_POINTER_JUMPS || target >= lowest {
                    return None;
                }
                lowest = target;
                limit = pos;
                pos = target;
            }
            // 0x40 and 0x80: the extended label types of RFC 6891 §5, which no
            // one uses; a reply with them is not one we can read.
            _ => return None,
        }
    }
}

/// A label as text: printable ASCII kept except `.` and `\`, which are escaped
/// like other bytes so the dotted form stays unambiguous.
fn escape_label(label: &[u8]) -> String {
    let mut out = String::with_capacity(label.len());
    for &byte in label {
        match byte {
            b'.' | b'\\' => out.push_str(&format!("\\{}", char::from(byte))),
            0x21..=0x7e => out.push(char::from(byte)),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    out
}

/// Parses a whole message. `None` when the header is missing or a question does
/// not parse; records are read until one does not parse, the counts are used
/// up, or [`MAX_RECORDS`] are kept (then `complete` is false).
pub fn parse_message(message: &[u8]) -> Option<Message> {
    let header = Header::parse(message)?;
    let mut pos = HEADER_LEN;
    let mut questions = Vec::new();
    for _ in 0..header.n_questions {
        let (name, after) = read_name(message, pos)?;
        let qtype = u16_at(message, after)?;
        let qclass = u16_at(message, after + 2)?;
        pos = after + 4;
        if questions.len() < MAX_QUESTIONS {
            questions.push(Question {
                name,
                qtype,
                qclass,
            });
        }
    }
    let sections = [
        (Section::Answer, header.n_answers),
        (Section::Authority, header.n_authority),
        (Section::Additional, header.n_additional),
    ];
    let mut records = Vec::new();
    let mut complete = true;
    'sections: for (section, count) in sections {
        for _ in 0..count {
            if records.len() >= MAX_RECORDS {
                complete = false;
                break 'sections;
            }
            match read_record(message, pos) {
                Some((record, after)) => {
                    records.push((section, record));
                    pos = after;
                }
                None => {
                    complete = false;
                    break 'sections;
                }
            }
        }
    }
    Some(Message {
        header,
        questions,
        records,
        complete,
        end: pos,
    })
}

/// One resource record at `pos`, and the offset after it.
fn read_record(message: &[u8], pos: usize) -> Option<(Record, usize)> {
    let (name, after) = read_name(message, pos)?;
    let rtype = u16_at(message, after)?;
    let class = u16_at(message, after + 2)?;
    let ttl = u32_at(message, after + 4)?;
    let rdlength = u16_at(message, after + 8)?;
    let rdata_start = after + 10;
    let rdata_end = rdata_start + usize::from(rdlength);
    let rdata = message.get(rdata_start..rdata_end)?;
    let data =
        read_rdata(message, rtype, rdata_start, rdata).unwrap_or(RData::Other { len: rdlength });
    Some((
        Record {
            name,
            rtype,
            class,
            ttl,
            data,
        },
        rdata_end,
    ))
}

/// The RDATA of the types this crate reads. Names inside RDATA may be
/// compressed against the whole message, so they are read from `message` at
/// `start`, and must end inside the RDATA.
fn read_rdata(message: &[u8], rtype: u16, start: usize, rdata: &[u8]) -> Option<RData> {
    let end = start + rdata.len();
    let name_in_rdata = |at: usize| read_name(message, at).filter(|(_, after)| *after <= end);
    match rtype {
        rtype::A => {
            let octets: [u8; 4] = rdata.try_into().ok()?;
            Some(RData::A(Ipv4Addr::from(octets)))
        }
        rtype::AAAA => {
            let octets: [u8; 16] = rdata.try_into().ok()?;
            Some(RData::Aaaa(Ipv6Addr::from(octets)))
        }
        rtype::NS | rtype::CNAME | rtype::PTR => {
            let (name, _) = name_in_rdata(start)?;
            Some(RData::Name(name))
        }
        rtype::TXT => {
            let mut strings = Vec::new();
            let mut rest = rdata;
            while let Some((&len, tail)) = rest.split_first() {
                let piece = tail.get(..usize::from(len))?;
                if strings.len() < MAX_TXT_STRINGS {
                    strings.push(piece.to_vec());
                }
                rest = tail.get(usize::from(len)..)?;
            }
            Some(RData::Txt(strings))
        }
        rtype::SRV => {
            // Priority (2), weight (2), port (2), target.
            let port = u16_at(rdata, 4)?;
            let (target, _) = name_in_rdata(start + 6)?;
            Some(RData::Srv { port, target })
        }
        rtype::SOA => {
            let (mname, after_mname) = name_in_rdata(start)?;
            let (rname, after_rname) = name_in_rdata(after_mname)?;
            let serial = u32_at(message, after_rname).filter(|_| after_rname + 4 <= end)?;
            Some(RData::Soa {
                mname,
                rname,
                serial,
            })
        }
        _ => None,
    }
}

/// A parsed reply to the query with `id`: a response (QR=1) with opcode QUERY
/// and the same ID. Anything else was not an answer to what we asked.
pub fn parse_reply_to(id: u16, reply: &[u8]) -> Option<Message> {
    let message = parse_message(reply)?;
    let header = message.header;
    (header.response && header.id == id && header.opcode == 0).then_some(message)
}

/// The name of an RCODE, for evidence and extras.
pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        rcode::NOERROR => "NOERROR".into(),
        rcode::FORMERR => "FORMERR".into(),
        rcode::SERVFAIL => "SERVFAIL".into(),
        rcode::NXDOMAIN => "NXDOMAIN".into(),
        rcode::NOTIMP => "NOTIMP".into(),
        rcode::REFUSED => "REFUSED".into(),
        other => format!("RCODE{other}"),
    }
}

/// Whether `question` is the one we asked: same name (DNS names compare without
/// regard to ASCII case, RFC 4343), type and class.
fn asks(message: &Message, name: &str, qtype: u16, qclass: u16) -> bool {
    message.questions.first().is_some_and(|question| {
        question.name.eq_ignore_ascii_case(name)
            && question.qtype == qtype
            && question.qclass == qclass
    })
}

/// What a reply to the recursion question says about recursion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recursion {
    /// NOERROR, RA=1, AA=0, the question echoed, and an answer for the name
    /// (directly or through a CNAME chain that starts at it).
    Served { answer: String, n_answers: usize },
    /// Answered, but authoritatively (AA=1): a server that claims the name as
    /// its own proves nothing about serving others' names.
    Authoritative,
    /// REFUSED: the usual answer of a server that does not recurse for us.
    Refused,
    /// Any other outcome (SERVFAIL, NXDOMAIN, NOERROR without an answer, RA=0):
    /// no conclusion either way. The text names the outcome.
    Inconclusive(String),
}

/// Reads a reply to [`recursion_query`].
///
/// What one reply proves: a server that answers `example.com A` with NOERROR,
/// RA=1, AA=0 and an answer record for that name has given an arbitrary client
/// (us) data for a name it is not authoritative for. It either resolved the
/// name for us or served it from a cache it fills by resolving for others; both
/// make it usable to reflect and amplify traffic and to snoop its cache, which
/// is what "open resolver" means. What it cannot prove: whether the operator
/// meant it to be public (a deliberately public resolver fires the rule too),
/// and a forwarder that passes on an upstream's AA=1 unchanged looks
/// authoritative and is not flagged (a false negative, not a false positive).
/// A SERVFAIL with RA=1 can be an open resolver without upstream reachability;
/// it is reported as inconclusive, never as a finding.
pub fn recursion_outcome(message: &Message) -> Recursion {
    let header = message.header;
    if header.rcode == rcode::REFUSED {
        return Recursion::Refused;
    }
    if !asks(message, RECURSION_NAME, rtype::A, class::IN) {
        return Recursion::Inconclusive("the reply does not echo the question".into());
    }
    if header.rcode != rcode::NOERROR {
        return Recursion::Inconclusive(rcode_name(header.rcode));
    }
    if !header.recursion_available {
        return Recursion::Inconclusive("NOERROR with RA=0".into());
    }
    // Follow CNAMEs from the asked name, at most as many as there are records.
    let mut owner = RECURSION_NAME.to_string();
    let mut answer = None;
    for _ in 0..=message.records.len() {
        let next = message
            .answers()
            .find(|record| record.name.eq_ignore_ascii_case(&owner));
        match next.map(|record| &record.data) {
            Some(RData::Name(target)) if next.is_some_and(|r| r.rtype == rtype::CNAME) => {
                owner = target.clone();
            }
            Some(RData::A(address)) => {
                answer = Some(address.to_string());
                break;
            }
            _ => break,
        }
    }
    match answer {
        Some(_) if header.authoritative => Recursion::Authoritative,
        Some(answer) => Recursion::Served {
            answer,
            n_answers: message.answers().count(),
        },
        None => Recursion::Inconclusive("NOERROR without an answer for the name".into()),
    }
}

/// Identifies a DNS server from its reply to [`recursion_query`] with `id`, with
/// [`rules::DNS_OPEN_RESOLVER`] when the reply proves it served recursion (see
/// [`recursion_outcome`]).
pub fn identify_recursion(id: u16, reply: &[u8]) -> Option<Identified> {
    let message = parse_reply_to(id, reply)?;
    let mut service = ServiceInfo::named("domain");
    service
        .extra
        .insert("rcode".into(), rcode_name(message.header.rcode));
    let outcome = recursion_outcome(&message);
    let (recursion, findings) = match &outcome {
        Recursion::Served { answer, n_answers } => (
            "served".to_string(),
            vec![rules::dns_open_resolver(vec![format!(
                "{RECURSION_NAME} A asked with RD=1 was answered NOERROR, RA=1, AA=0 with \
                 {n_answers} answer record(s), first address {answer}"
            )])],
        ),
        Recursion::Authoritative => ("authoritative answer".to_string(), Vec::new()),
        Recursion::Refused => ("refused".to_string(), Vec::new()),
        Recursion::Inconclusive(why) => (format!("inconclusive: {}", text::value(why)), Vec::new()),
    };
    service.extra.insert("recursion".into(), recursion);
    Some(Identified { service, findings })
}

/// Product and version from a `version.bind` string, for the spellings of the
/// common servers; `None` when the text does not say.
pub fn version_product(version: &str) -> Option<(String, Option<String>)> {
    let version = version.trim();
    let known = [
        ("dnsmasq-", "dnsmasq"),
        ("unbound ", "Unbound"),
        ("PowerDNS Recursor ", "PowerDNS Recursor"),
        (
            "PowerDNS Authoritative Server ",
            "PowerDNS Authoritative Server",
        ),
        ("Knot DNS ", "Knot DNS"),
        ("Knot Resolver ", "Knot Resolver"),
        ("NSD ", "NSD"),
    ];
    for (prefix, product) in known {
        if let Some(rest) = version.strip_prefix(prefix) {
            let number = rest.split_whitespace().next().map(text::value);
            return Some((product.to_string(), number.filter(|n| !n.is_empty())));
        }
    }
    // BIND answers with its bare version, `9.18.28-1~deb12u2-Debian`.
    if version.starts_with("9.") && version.as_bytes().get(2).is_some_and(u8::is_ascii_digit) {
        let number = version.split_whitespace().next().map(text::value);
        return Some(("BIND".to_string(), number));
    }
    None
}

/// Identifies a DNS server from its reply to [`version_query`] with `id`:
/// product and version when the TXT answer names them. No finding: hiding the
/// version is hygiene, not a fix.
pub fn identify_version(id: u16, reply: &[u8]) -> Option<Identified> {
    let message = parse_reply_to(id, reply)?;
    let mut service = ServiceInfo::named("domain");
    let txt = message.answers().find_map(|record| match &record.data {
        RData::Txt(strings) if record.rtype == rtype::TXT => Some(strings.concat()),
        _ => None,
    });
    match txt {
        Some(version) if message.header.rcode == rcode::NOERROR => {
            service.banner = Some(text::banner(&version));
            service
                .extra
                .insert("version.bind".into(), text::value_bytes(&version));
            // Products are matched on the escaped text, so a non-ASCII byte can
            // only make a product unknown, never reach the report raw.
            if let Some((product, number)) = version_product(&text::value_bytes(&version)) {
                service.product = Some(product);
                service.version = number;
            }
        }
        _ => {
            service.extra.insert(
                "version.bind".into(),
                format!("no answer ({})", rcode_name(message.header.rcode)),
            );
        }
    }
    Some(Identified::service_only(service))
}

/// Whether `reply` looks like a DNS server's answer to the datagram `sent`,
/// whatever `sent` was: a response with the ID of `sent`'s first two bytes that
/// parses completely and ends where the datagram ends. DNS servers answer most
/// malformed queries with FORMERR in this shape, so this names a DNS server on
/// a port where something else was asked.
pub fn looks_like_reply(sent: &[u8], reply: &[u8]) -> bool {
    let (Some(sent_id), Some(message)) = (u16_at(sent, 0), parse_message(reply)) else {
        return false;
    };
    message.header.response
        && message.header.id == sent_id
        && message.complete
        && message.end == reply.len()
}

#[cfg(test)]
mod tests;
