//! The fallback: `/proc/net/{tcp,tcp6,udp,udp6}`, parsed line by line.
//! The tables show every socket of the namespace, so a row's state is
//! checked before anything else is decoded; they cannot tell `IPV6_V6ONLY`
//! or a bound device.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use perimeter_model::{Problem, Protocol};

use super::{Family, RawSocket, TABLES, table_name};

/// A line of a `/proc/net/*` table that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based, counting the header line.
    pub line: usize,
    pub reason: String,
}

/// `st` value of a listening TCP socket.
const PROC_TCP_LISTEN: u8 = 0x0A;

/// `st` value of an unconnected UDP socket (`TCP_CLOSE`).
const PROC_UDP_UNCONNECTED: u8 = 0x07;

/// Reads the four socket tables under `net_dir` (`/proc/thread-self/net`, or
/// `/proc/PID/net` for another process's namespace). A missing IPv6 table means
/// IPv6 is disabled and is not a problem; anything else unreadable is.
pub fn read_proc_net(net_dir: &Path) -> (Vec<RawSocket>, Vec<Problem>) {
    let mut sockets = Vec::new();
    let mut problems = Vec::new();
    for (protocol, family) in TABLES {
        let path = net_dir.join(table_name(protocol, family));
        read_proc_net_table(&path, protocol, family, &mut sockets, &mut problems);
    }
    (sockets, problems)
}

pub(super) fn read_proc_net_table(
    path: &Path,
    protocol: Protocol,
    family: Family,
    sockets: &mut Vec<RawSocket>,
    problems: &mut Vec<Problem>,
) {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let (mut found, errors) = parse_proc_net(&text, protocol, family);
            sockets.append(&mut found);
            problems.extend(
                errors.into_iter().map(|err| {
                    Problem::new(format!("{}:{}", path.display(), err.line), err.reason)
                }),
            );
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound && family == Family::Inet6 => {}
        Err(err) => problems.push(Problem::new(
            path.display().to_string(),
            format!("cannot read socket table: {err}"),
        )),
    }
}

/// Parses a `/proc/net/{tcp,tcp6,udp,udp6}` table, keeping listening TCP
/// sockets (state `0A`) and unconnected UDP sockets (state `07` with a zero
/// remote address). Lines that cannot be read become errors with their line
/// number; the rest of the table is still returned. The table cannot tell
/// `IPV6_V6ONLY` or a bound device, so those stay `None`.
pub fn parse_proc_net(
    text: &str,
    protocol: Protocol,
    family: Family,
) -> (Vec<RawSocket>, Vec<ParseError>) {
    let mut sockets = Vec::new();
    let mut errors = Vec::new();
    for (line_idx, line) in text.lines().enumerate() {
        let line_no = line_idx + 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with("sl ") {
            continue;
        }
        match parse_proc_net_line(trimmed, protocol, family) {
            Ok(Some(socket)) => sockets.push(socket),
            Ok(None) => {}
            Err(reason) => errors.push(ParseError {
                line: line_no,
                reason,
            }),
        }
    }
    (sockets, errors)
}

/// One table row:
/// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`.
fn parse_proc_net_line(
    line: &str,
    protocol: Protocol,
    family: Family,
) -> Result<Option<RawSocket>, String> {
    let mut fields = line.split_ascii_whitespace();
    let mut field = |name: &str| fields.next().ok_or_else(|| format!("missing {name} field"));
    let _slot = field("sl")?;
    let local = field("local_address")?;
    let remote = field("rem_address")?;
    let state = field("st")?;
    let state = u8::from_str_radix(state, 16).map_err(|_| format!("bad state `{state}`"))?;
    let wanted_state = match protocol {
        Protocol::Tcp => PROC_TCP_LISTEN,
        Protocol::Udp => PROC_UDP_UNCONNECTED,
    };
    // Most rows of a busy host are established connections: decide on the state
    // before decoding anything else.
    if state != wanted_state {
        return Ok(None);
    }
    if protocol == Protocol::Udp {
        let (remote_address, remote_port) = parse_endpoint(remote, family)?;
        if remote_port != 0 || !remote_address.is_unspecified() {
            return Ok(None);
        }
    }
    let (address, port) = parse_endpoint(local, family)?;
    let _queues = field("tx_queue:rx_queue")?;
    let _timer = field("tr:tm->when")?;
    let _retransmits = field("retrnsmt")?;
    let uid = field("uid")?;
    let uid: u32 = uid.parse().map_err(|_| format!("bad uid `{uid}`"))?;
    let _timeout = field("timeout")?;
    let inode = field("inode")?;
    let inode: u64 = inode.parse().map_err(|_| format!("bad inode `{inode}`"))?;
    Ok(Some(RawSocket {
        protocol,
        address,
        port,
        v6only: None,
        ifindex: None,
        inode,
        uid,
    }))
}

/// `0100007F:1F90` → 127.0.0.1 port 8080. The kernel prints each 32-bit word of
/// the address as a native-endian integer in hex (`%08X`), so the bytes of each
/// word come back out with `to_ne_bytes`; the port is printed in host order.
fn parse_endpoint(text: &str, family: Family) -> Result<(IpAddr, u16), String> {
    let bad = || format!("bad address `{text}`");
    let (address, port) = text.split_once(':').ok_or_else(bad)?;
    let port = u16::from_str_radix(port, 16).map_err(|_| bad())?;
    let expected_len = match family {
        Family::Inet => 8,
        Family::Inet6 => 32,
    };
    if address.len() != expected_len || !address.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut octets = [0u8; 16];
    for (word_idx, chunk) in octets
        .chunks_exact_mut(4)
        .take(expected_len / 8)
        .enumerate()
    {
        let hex = address
            .get(word_idx * 8..word_idx * 8 + 8)
            .ok_or_else(bad)?;
        let word = u32::from_str_radix(hex, 16).map_err(|_| bad())?;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let address = match family {
        Family::Inet => IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])),
        Family::Inet6 => IpAddr::V6(Ipv6Addr::from(octets)),
    };
    Ok((address, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = include_str!("../../tests/fixtures/sockets/tcp");
    const TCP6: &str = include_str!("../../tests/fixtures/sockets/tcp6");
    const UDP: &str = include_str!("../../tests/fixtures/sockets/udp");
    const UDP6: &str = include_str!("../../tests/fixtures/sockets/udp6");

    fn endpoints(sockets: &[RawSocket]) -> Vec<(String, u16, u64)> {
        sockets
            .iter()
            .map(|s| (s.address.to_string(), s.port, s.inode))
            .collect()
    }

    #[test]
    fn tcp_keeps_only_listeners() {
        // The fixture holds three listeners and eleven TIME_WAIT rows.
        let (sockets, errors) = parse_proc_net(TCP, Protocol::Tcp, Family::Inet);
        assert_eq!(errors, vec![]);
        assert_eq!(
            endpoints(&sockets),
            vec![
                ("0.0.0.0".to_owned(), 2024, 651),
                ("127.0.0.1".to_owned(), 18080, 26073),
                ("127.0.0.53".to_owned(), 47856, 26458),
            ]
        );
        assert!(
            sockets
                .iter()
                .all(|s| s.v6only.is_none() && s.ifindex.is_none())
        );
        assert!(
            sockets
                .iter()
                .all(|s| s.uid == 0 && s.protocol == Protocol::Tcp)
        );
    }

    #[test]
    fn tcp6_decodes_wildcard_loopback_and_mapped() {
        let (sockets, errors) = parse_proc_net(TCP6, Protocol::Tcp, Family::Inet6);
        assert_eq!(errors, vec![]);
        assert_eq!(
            endpoints(&sockets),
            vec![
                ("::ffff:127.0.0.1".to_owned(), 47802, 26454),
                ("::".to_owned(), 47800, 26452),
                ("::1".to_owned(), 47801, 26453),
            ]
        );
    }

    #[test]
    fn udp_keeps_unconnected_sockets_only() {
        // Row 14302 is a UDP socket connected to 127.0.0.1:47853: not a listener.
        let (sockets, errors) = parse_proc_net(UDP, Protocol::Udp, Family::Inet);
        assert_eq!(errors, vec![]);
        assert_eq!(
            endpoints(&sockets),
            vec![("127.0.0.1".to_owned(), 47853, 26455)]
        );
        let (sockets, errors) = parse_proc_net(UDP6, Protocol::Udp, Family::Inet6);
        assert_eq!(errors, vec![]);
        assert_eq!(endpoints(&sockets), vec![("::".to_owned(), 47854, 26456)]);
        assert_eq!(sockets[0].protocol, Protocol::Udp);
    }

    #[test]
    fn malformed_lines_are_errors_with_line_numbers() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000   108        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007Z:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4243 1\n\
   2: 0100007F:1F92 00000000:0000 0A\n\
   3: 0100007F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4245 1\n\
   4: 0100007F:1F94 00000000:0000 0A 00000000:00000000 00:00000000 00000000 nobody   0 4246 1\n\
   5: 0100007F:1F95 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 -1 1\n\
   6: 0100007F:1F96 00000000:0000 zz\n\
   7: 0100007F:1F97 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4249 1\n";
        let (sockets, errors) = parse_proc_net(text, Protocol::Tcp, Family::Inet);
        assert_eq!(
            endpoints(&sockets),
            vec![
                ("127.0.0.1".to_owned(), 8080, 4242),
                ("127.0.0.1".to_owned(), 8087, 4249)
            ]
        );
        assert_eq!(sockets[0].uid, 108);
        let lines: Vec<(usize, &str)> =
            errors.iter().map(|e| (e.line, e.reason.as_str())).collect();
        assert_eq!(
            lines,
            vec![
                (3, "bad address `0100007Z:1F91`"),
                (4, "missing tx_queue:rx_queue field"),
                (5, "bad address `0100007F`"),
                (6, "bad uid `nobody`"),
                (7, "bad inode `-1`"),
                (8, "bad state `zz`"),
            ]
        );
        assert_eq!(errors[0].to_string(), "line 3: bad address `0100007Z:1F91`");
    }

    #[test]
    fn ipv6_address_of_wrong_length_is_an_error() {
        // An IPv4-width address in an IPv6 table.
        let text =
            "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 7 1\n";
        let (sockets, errors) = parse_proc_net(text, Protocol::Tcp, Family::Inet6);
        assert!(sockets.is_empty());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 1);
    }
}
