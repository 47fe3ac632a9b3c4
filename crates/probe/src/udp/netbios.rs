//! The NetBIOS name service (port 137): a node status request for the wildcard
//! name `*` (RFC 1002 §4.2.17) and a reader for the node status response
//! (§4.2.18): the names the host has registered and its unit ID (the MAC
//! address, all zeros from Samba).
//!
//! The name service uses the DNS message format (RFC 1002 §4.2.1), so the
//! header and the name are read with [`super::dns`]'s bounded reader.
//! Names and the MAC are facts for the report; no rule fires on them alone
//! (the exposure is SMB's, which the TCP scan covers).

use perimeter_model::ServiceInfo;

use super::{dns, u16_at};
use crate::{Identified, text};

/// The NBSTAT question and record type (RFC 1002 §4.2.1.3).
pub const NBSTAT: u16 = 0x0021;
/// The Internet class.
pub const CLASS_IN: u16 = 0x0001;
/// One NODE_NAME entry: 15 name octets, a suffix octet, two flag octets.
const NODE_NAME_LEN: usize = 18;

/// The wildcard name `*`, padded with NULs to 16 octets and first-level
/// encoded (RFC 1001 §14.1: each half-octet becomes a letter from `A`), as one
/// 32-octet label.
fn encoded_wildcard() -> [u8; 32] {
    let mut name = [0u8; 16];
    if let Some(first) = name.first_mut() {
        *first = b'*';
    }
    let mut out = [0u8; 32];
    for (idx, byte) in name.iter().enumerate() {
        if let Some(pair) = out.get_mut(idx * 2..idx * 2 + 2) {
            pair.copy_from_slice(&[b'A' + (byte >> 4), b'A' + (byte & 0x0f)]);
        }
    }
    out
}

/// A NODE STATUS REQUEST (RFC 1002 §4.2.17): NAME_TRN_ID `id`; OPCODE 0, no
/// NM_FLAGS (not broadcast, no recursion); one question; QUESTION_NAME the
/// encoded `*` with no scope; QUESTION_TYPE NBSTAT; QUESTION_CLASS IN.
pub fn node_status_request(id: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(50);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    out.push(32);
    out.extend_from_slice(&encoded_wildcard());
    out.push(0);
    out.extend_from_slice(&NBSTAT.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

/// One registered name (RFC 1002 §4.2.18 NODE_NAME entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeName {
    /// The 15-octet name, trailing spaces dropped, escaped.
    pub name: String,
    /// The 16th octet, the service suffix (`<00>` workstation, `<20>` file
    /// server, `<1d>` master browser, ...).
    pub suffix: u8,
    /// G: a group name rather than a unique one.
    pub group: bool,
    /// ACT: the name is active.
    pub active: bool,
}

/// What a node status response says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub names: Vec<NodeName>,
    /// UNIT_ID, the first six octets of the statistics, when present.
    pub unit_id: Option<[u8; 6]>,
}

/// Reads a NODE STATUS RESPONSE to the request with `id`: a response (R=1) with
/// RCODE 0 and one answer of type NBSTAT whose RDATA is NUM_NAMES, the
/// NODE_NAME entries and the statistics. The entry count is checked against
/// the RDATA length before anything is allocated.
pub fn parse_node_status(id: u16, reply: &[u8]) -> Option<NodeStatus> {
    let header = dns::Header::parse(reply)?;
    if !header.response || header.id != id || header.rcode != 0 || header.n_answers == 0 {
        return None;
    }
    let mut pos = dns::HEADER_LEN;
    // A response has no question section (§4.2.18), but skip any it has.
    for _ in 0..header.n_questions.min(4) {
        let (_, after) = dns::read_name(reply, pos)?;
        pos = after + 4;
    }
    let (_, after) = dns::read_name(reply, pos)?;
    if u16_at(reply, after)? != NBSTAT {
        return None;
    }
    let rdlength = usize::from(u16_at(reply, after + 8)?);
    let rdata_start = after + 10;
    let rdata = reply.get(rdata_start..rdata_start + rdlength)?;
    let (&n_names, entries) = rdata.split_first()?;
    let table_len = usize::from(n_names) * NODE_NAME_LEN;
    let table = entries.get(..table_len)?;
    let names = table
        .chunks_exact(NODE_NAME_LEN)
        .map(|entry| {
            let raw = entry.get(..15).unwrap_or_default();
            let trimmed_len = raw
                .iter()
                .rposition(|&b| b != b' ' && b != 0)
                .map_or(0, |last| last + 1);
            let flags = u16_at(entry, 16).unwrap_or_default();
            NodeName {
                name: text::escape(raw.get(..trimmed_len).unwrap_or_default(), 64),
                suffix: entry.get(15).copied().unwrap_or_default(),
                group: flags & 0x8000 != 0,
                active: flags & 0x0400 != 0,
            }
        })
        .collect();
    let unit_id = entries
        .get(table_len..table_len + 6)
        .and_then(|bytes| bytes.try_into().ok());
    Some(NodeStatus { names, unit_id })
}

/// Identifies a NetBIOS name service from its reply to
/// [`node_status_request`] with `id`: the host name (the first unique `<00>`
/// name), the workgroup (the first group `<00>` name), every name, and the MAC.
pub fn identify(id: u16, reply: &[u8]) -> Option<Identified> {
    let status = parse_node_status(id, reply)?;
    let mut service = ServiceInfo::named("netbios-ns");
    let host = status.names.iter().find(|n| n.suffix == 0 && !n.group);
    let workgroup = status.names.iter().find(|n| n.suffix == 0 && n.group);
    if let Some(host) = host {
        service
            .extra
            .insert("netbios-name".into(), host.name.clone());
    }
    if let Some(workgroup) = workgroup {
        service
            .extra
            .insert("workgroup".into(), workgroup.name.clone());
    }
    let listed: Vec<String> = status
        .names
        .iter()
        .map(|n| {
            format!(
                "{}<{:02x}>{}",
                n.name,
                n.suffix,
                if n.group { "g" } else { "" }
            )
        })
        .collect();
    if !listed.is_empty() {
        service.extra.insert(
            "names".into(),
            text::escape(listed.join(" ").as_bytes(), text::MAX_BANNER_CHARS),
        );
    }
    if let Some(mac) = status.unit_id {
        let text: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        service.extra.insert("mac".into(), text.join(":"));
    }
    Some(Identified::service_only(service))
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn request_matches_rfc_1002() {
        let request = node_status_request(0x1234);
        assert_eq!(request.len(), 50);
        assert_eq!(
            request.get(12..46),
            Some(&b"\x20CKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\x00"[..])
        );
        // Our own DNS-format reader reads it back.
        let Some(message) = dns::parse_message(&request) else {
            panic!("parses as a DNS-format message");
        };
        assert_eq!(message.questions.len(), 1);
        assert_eq!(message.questions.first().map(|q| q.qtype), Some(NBSTAT));
        assert_eq!(message.end, request.len());
    }

    fn response(id: u16, names: &[(&[u8; 15], u8, u16)], mac: [u8; 6]) -> Vec<u8> {
        let mut rdata = vec![names.len() as u8];
        for (name, suffix, flags) in names {
            rdata.extend_from_slice(&name[..]);
            rdata.push(*suffix);
            rdata.extend_from_slice(&flags.to_be_bytes());
        }
        rdata.extend_from_slice(&mac);
        rdata.extend_from_slice(&[0; 40]);
        let mut out = id.to_be_bytes().to_vec();
        out.extend_from_slice(&[0x84, 0x00, 0, 0, 0, 1, 0, 0, 0, 0]);
        out.push(32);
        out.extend_from_slice(&encoded_wildcard());
        out.push(0);
        out.extend_from_slice(&[0x00, 0x21, 0x00, 0x01, 0, 0, 0, 0]);
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
        out
    }

    #[test]
    fn node_status_names_and_mac() {
        let reply = response(
            0x1234,
            &[
                (b"FILESERVER     ", 0x00, 0x0400),
                (b"FILESERVER     ", 0x20, 0x0400),
                (b"WORKGROUP      ", 0x00, 0x8400),
                (b"WORKGROUP      ", 0x1e, 0x8400),
            ],
            [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
        );
        let Some(found) = identify(0x1234, &reply) else {
            panic!("identified");
        };
        expect![[r#"
            {
                "mac": "52:54:00:12:34:56",
                "names": "FILESERVER<00> FILESERVER<20> WORKGROUP<00>g WORKGROUP<1e>g",
                "netbios-name": "FILESERVER",
                "workgroup": "WORKGROUP",
            }
        "#]]
        .assert_debug_eq(&found.service.extra);
        assert!(found.findings.is_empty());
        assert_eq!(identify(0x4321, &reply), None);
    }

    #[test]
    fn counts_beyond_the_rdata_are_refused() {
        let mut reply = response(7, &[(b"HOST           ", 0, 0)], [0; 6]);
        // Claim 200 names in an RDATA that holds one.
        let at = reply.len() - 1 - 18 - 6 - 40;
        if let Some(count) = reply.get_mut(at) {
            *count = 200;
        }
        assert_eq!(parse_node_status(7, &reply), None);
        for cut in 0..reply.len() {
            let _ = parse_node_status(7, reply.get(..cut).unwrap_or_default());
        }
    }
}
