//! Netlink `sock_diag`: one dump per socket table, each on a netlink socket
//! of its own, with the state filter applied in the kernel (LISTEN for TCP,
//! CLOSE for UDP), and a parser of the answer's datagrams that bounds what it
//! keeps and checks the state again.

use std::io;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, TCP_CLOSE, TCP_LISTEN,
};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags,
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr};
use perimeter_model::Protocol;

use super::{Family, RawSocket, TABLES, table_name};

/// Netlink `sock_diag` could not produce the socket list.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink sock_diag socket: {0}")]
    Open(#[source] io::Error),
    #[error("netlink sock_diag i/o failed: {0}")]
    Io(#[source] io::Error),
    #[error("netlink sock_diag dump of {what} was refused by the kernel: {source}")]
    Kernel {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netlink sock_diag answer for {what} is malformed: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("netlink sock_diag message of {len} bytes does not fit the {capacity}-byte buffer")]
    Truncated { len: usize, capacity: usize },
    #[error("netlink sock_diag dump lists more than {limit} listening sockets")]
    TooMany { limit: usize },
}

/// A refusal to keep more than this many listening sockets: a real host has a
/// few thousand; anything beyond this is a kernel or parser gone wrong, and
/// growing without bound would turn it into an out-of-memory.
pub const MAX_SOCKETS: usize = 1 << 18;

/// How long one `recv` on the netlink socket may block. The kernel answers a
/// dump in microseconds; the timeout only guards against a namespace or kernel
/// that never sends `NLMSG_DONE`.
const NETLINK_RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// The kernel caps one dump datagram at 32 KiB (`netlink_recvmsg` limits
/// `max_recvmsg_len`); twice that leaves room and is still a single allocation.
const NETLINK_RECV_BUFFER: usize = 64 * 1024;

/// Dumps listening TCP and unconnected UDP sockets, IPv4 and IPv6, through
/// netlink `sock_diag` in the calling thread's network namespace.
pub fn dump_netlink() -> Result<Vec<RawSocket>, NetlinkError> {
    let mut sockets = Vec::new();
    for (sequence_number, (protocol, family)) in (1u32..).zip(TABLES) {
        sockets.append(&mut dump_netlink_table(protocol, family, sequence_number)?);
    }
    Ok(sockets)
}

/// Dumps one table on a netlink socket of its own, so a dump that fails half
/// way leaves no unread answer behind for the next one.
pub(super) fn dump_netlink_table(
    protocol: Protocol,
    family: Family,
    sequence_number: u32,
) -> Result<Vec<RawSocket>, NetlinkError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(NetlinkError::Open)?;
    socket.bind_auto().map_err(NetlinkError::Open)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(NetlinkError::Open)?;
    rustix::net::sockopt::set_socket_timeout(
        &socket,
        rustix::net::sockopt::Timeout::Recv,
        Some(NETLINK_RECV_TIMEOUT),
    )
    .map_err(|errno| NetlinkError::Open(errno.into()))?;

    let mut sockets = Vec::new();
    let mut datagram = vec![0u8; NETLINK_RECV_BUFFER];
    let request = dump_request(protocol, family, sequence_number);
    socket.send(&request, 0).map_err(NetlinkError::Io)?;
    loop {
        // MSG_TRUNC makes recv report the datagram's real length, so a
        // datagram larger than the buffer is detected instead of silently cut.
        let len = socket
            .recv(&mut &mut datagram[..], libc::MSG_TRUNC)
            .map_err(NetlinkError::Io)?;
        let Some(received) = datagram.get(..len) else {
            return Err(NetlinkError::Truncated {
                len,
                capacity: datagram.len(),
            });
        };
        if parse_sock_diag(received, protocol, family, &mut sockets)? == DumpProgress::Done {
            return Ok(sockets);
        }
    }
}

/// A `SOCK_DIAG_BY_FAMILY` dump request for one table, with the state filter
/// applied in the kernel: LISTEN for TCP, CLOSE (bound, unconnected) for UDP.
/// No extension is requested: the kernel always attaches `INET_DIAG_SKV6ONLY`
/// to IPv6 sockets in the LISTEN and CLOSE states.
fn dump_request(protocol: Protocol, family: Family, sequence_number: u32) -> Vec<u8> {
    let (states, ip_protocol) = match protocol {
        Protocol::Tcp => (StateFlags::LISTEN, IPPROTO_TCP),
        Protocol::Udp => (StateFlags::CLOSE, IPPROTO_UDP),
    };
    let (af, socket_id) = match family {
        Family::Inet => (AF_INET, SocketId::new_v4()),
        Family::Inet6 => (AF_INET6, SocketId::new_v6()),
    };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = sequence_number;
    let mut message = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: af,
            protocol: ip_protocol,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id,
        })
        .into(),
    );
    message.finalize();
    // `serialize` panics on a buffer of the wrong size; `buffer_len` is the size.
    let mut buffer = vec![0u8; message.buffer_len()];
    message.serialize(&mut buffer);
    buffer
}

/// Whether a dump needs more datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpProgress {
    More,
    Done,
}

/// Parses one datagram of a `sock_diag` dump answer (one or more netlink
/// messages), appending listening sockets to `out`. Returns
/// [`DumpProgress::Done`] at `NLMSG_DONE`; `NLMSG_ERROR` becomes an error.
pub fn parse_sock_diag(
    datagram: &[u8],
    protocol: Protocol,
    family: Family,
    out: &mut Vec<RawSocket>,
) -> Result<DumpProgress, NetlinkError> {
    let what = table_name(protocol, family);
    let malformed = |reason: String| NetlinkError::Malformed { what, reason };
    let mut rest = datagram;
    while !rest.is_empty() {
        let buffer = NetlinkBuffer::new_checked(rest).map_err(|err| malformed(err.to_string()))?;
        let len = buffer.length() as usize;
        let Some(bytes) = rest.get(..len) else {
            return Err(malformed(format!(
                "message of {len} bytes overruns the {}-byte datagram",
                rest.len()
            )));
        };
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
            .map_err(|err| malformed(err.to_string()))?;
        match message.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                if let Some(socket) = listening_socket(&response, protocol) {
                    if out.len() >= MAX_SOCKETS {
                        return Err(NetlinkError::TooMany { limit: MAX_SOCKETS });
                    }
                    out.push(socket);
                }
            }
            NetlinkPayload::Done(done) => {
                if done.code < 0 {
                    return Err(NetlinkError::Kernel {
                        what,
                        source: kernel_error(done.code),
                    });
                }
                return Ok(DumpProgress::Done);
            }
            // A zero code is an acknowledgement, not an error.
            NetlinkPayload::Error(error) if error.code.is_some() => {
                return Err(NetlinkError::Kernel {
                    what,
                    source: kernel_error(error.raw_code()),
                });
            }
            NetlinkPayload::Overrun(_) => {
                return Err(malformed("the kernel reported an overrun".to_owned()));
            }
            _ => {}
        }
        // Messages are padded to 4 bytes; the last one may lack its padding.
        let advance = len.next_multiple_of(4).min(rest.len());
        rest = rest.get(advance..).unwrap_or_default();
    }
    Ok(DumpProgress::More)
}

/// The error a netlink error code (a negative errno) stands for. The code
/// comes from the datagram, and `i32::MIN` has no absolute value: negating it
/// (as `ErrorMessage::to_io` does) overflows, so it saturates instead.
fn kernel_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code.saturating_abs())
}

/// The socket, if it listens: TCP in LISTEN, or UDP bound without a peer. The
/// kernel already filtered on state; checking again keeps a misbehaving kernel
/// (or a hand-made datagram) from passing established sockets off as listeners.
fn listening_socket(response: &InetResponse, protocol: Protocol) -> Option<RawSocket> {
    let header = &response.header;
    let id = &header.socket_id;
    let listening = match protocol {
        Protocol::Tcp => header.state == TCP_LISTEN,
        Protocol::Udp => {
            header.state == TCP_CLOSE
                && id.destination_port == 0
                && id.destination_address.is_unspecified()
        }
    };
    if !listening {
        return None;
    }
    let v6only = match header.family {
        AF_INET6 => response.nlas.iter().find_map(|nla| match nla {
            Nla::SkV6Only(v6only) => Some(*v6only),
            _ => None,
        }),
        _ => None,
    };
    Some(RawSocket {
        protocol,
        address: id.source_address,
        port: id.source_port,
        v6only,
        ifindex: (id.interface_id != 0).then_some(id.interface_id),
        inode: u64::from(header.inode),
        uid: header.uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, ErrorMessage};
    use netlink_packet_sock_diag::inet::InetResponseHeader;
    use std::net::IpAddr;
    use std::num::NonZeroI32;

    // Netlink answers are built with the crate's own emitter, the layout the
    // kernel sends, so the parser is tested on real wire bytes.

    fn response_message(
        state: u8,
        local: &str,
        port: u16,
        remote: &str,
        inode: u32,
        nlas: Vec<Nla>,
    ) -> NetlinkMessage<SockDiagMessage> {
        let source_address: IpAddr = local.parse().expect("test address");
        let destination_address: IpAddr = remote.parse().expect("test address");
        let family = if source_address.is_ipv4() {
            AF_INET
        } else {
            AF_INET6
        };
        let response = InetResponse {
            header: InetResponseHeader {
                family,
                state,
                timer: None,
                socket_id: SocketId {
                    source_port: port,
                    destination_port: 0,
                    source_address,
                    destination_address,
                    interface_id: if inode == 3 { 2 } else { 0 },
                    cookie: [0; 8],
                },
                recv_queue: 0,
                send_queue: 128,
                uid: 113,
                inode,
            },
            nlas: nlas.into_iter().collect(),
        };
        let mut header = NetlinkHeader::default();
        header.message_type = netlink_packet_sock_diag::SOCK_DIAG_BY_FAMILY;
        NetlinkMessage::new(
            header,
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(Box::new(response))),
        )
    }

    fn done_message(code: i32) -> NetlinkMessage<SockDiagMessage> {
        let mut done = DoneMessage::default();
        done.code = code;
        NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::Done(done))
    }

    fn datagram(messages: Vec<NetlinkMessage<SockDiagMessage>>) -> Vec<u8> {
        let mut bytes = Vec::new();
        for mut message in messages {
            message.finalize();
            let mut buffer = vec![0u8; message.buffer_len()];
            message.serialize(&mut buffer);
            bytes.extend_from_slice(&buffer);
            bytes.resize(bytes.len().next_multiple_of(4), 0);
        }
        bytes
    }

    #[test]
    fn multi_part_dump_until_done() {
        let first = datagram(vec![
            response_message(
                TCP_LISTEN,
                "::",
                22,
                "::",
                1,
                vec![Nla::Shutdown(0), Nla::SkV6Only(false)],
            ),
            response_message(TCP_LISTEN, "::1", 631, "::", 2, vec![Nla::SkV6Only(true)]),
        ]);
        let second = datagram(vec![
            response_message(TCP_LISTEN, "fe80::1", 8080, "::", 3, vec![]),
            done_message(0),
        ]);
        let mut out = Vec::new();
        let progress = parse_sock_diag(&first, Protocol::Tcp, Family::Inet6, &mut out);
        assert_eq!(progress.ok(), Some(DumpProgress::More));
        let progress = parse_sock_diag(&second, Protocol::Tcp, Family::Inet6, &mut out);
        assert_eq!(progress.ok(), Some(DumpProgress::Done));
        let summary: Vec<_> = out
            .iter()
            .map(|s| {
                (
                    s.address.to_string(),
                    s.port,
                    s.v6only,
                    s.ifindex,
                    s.inode,
                    s.uid,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("::".to_owned(), 22, Some(false), None, 1, 113),
                ("::1".to_owned(), 631, Some(true), None, 2, 113),
                // No SKV6ONLY attribute: unknown, not guessed.
                ("fe80::1".to_owned(), 8080, None, Some(2), 3, 113),
            ]
        );
    }

    #[test]
    fn udp_with_a_peer_and_ipv4_v6only_are_filtered() {
        let bytes = datagram(vec![
            response_message(
                TCP_CLOSE,
                "0.0.0.0",
                53,
                "0.0.0.0",
                10,
                vec![Nla::SkV6Only(true)],
            ),
            response_message(TCP_CLOSE, "127.0.0.1", 5353, "127.0.0.1", 11, vec![]),
            response_message(1, "127.0.0.1", 5354, "0.0.0.0", 12, vec![]),
            done_message(0),
        ]);
        let mut out = Vec::new();
        let progress = parse_sock_diag(&bytes, Protocol::Udp, Family::Inet, &mut out);
        assert_eq!(progress.ok(), Some(DumpProgress::Done));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].port, 53);
        assert_eq!(out[0].protocol, Protocol::Udp);
        // IPv4 sockets never carry a v6only verdict, whatever the attributes say.
        assert_eq!(out[0].v6only, None);
    }

    #[test]
    fn kernel_errors_are_reported() {
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(-libc::ENOENT);
        let bytes = datagram(vec![NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::Error(error),
        )]);
        let mut out = Vec::new();
        let err = parse_sock_diag(&bytes, Protocol::Udp, Family::Inet6, &mut out)
            .expect_err("an NLMSG_ERROR is an error");
        assert!(
            matches!(err, NetlinkError::Kernel { what: "udp6", .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("netlink sock_diag dump of udp6 was refused by the kernel: ")
        );

        let bytes = datagram(vec![done_message(-libc::EPERM)]);
        let err = parse_sock_diag(&bytes, Protocol::Tcp, Family::Inet, &mut out)
            .expect_err("a negative NLMSG_DONE code is an error");
        assert!(
            matches!(err, NetlinkError::Kernel { what: "tcp", .. }),
            "{err}"
        );
    }

    #[test]
    fn the_most_negative_error_code_is_an_error_not_an_overflow() {
        // Found by the host_netlink fuzz target: `-i32::MIN` overflows.
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(i32::MIN);
        let error = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::Error(error));
        for bytes in [
            datagram(vec![error]),
            datagram(vec![done_message(i32::MIN)]),
        ] {
            let mut out = Vec::new();
            let err = parse_sock_diag(&bytes, Protocol::Tcp, Family::Inet, &mut out)
                .expect_err("an error code is an error");
            assert!(
                matches!(err, NetlinkError::Kernel { what: "tcp", .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn truncated_and_garbage_datagrams_are_errors_not_panics() {
        let whole = datagram(vec![
            response_message(TCP_LISTEN, "0.0.0.0", 22, "0.0.0.0", 1, vec![]),
            done_message(0),
        ]);
        for cut in 1..whole.len() {
            let mut out = Vec::new();
            // Every prefix either parses what it holds or is an error; none panics.
            let _ = parse_sock_diag(&whole[..cut], Protocol::Tcp, Family::Inet, &mut out);
            assert!(out.len() <= 1);
        }
        let mut out = Vec::new();
        let err = parse_sock_diag(&whole[..40], Protocol::Tcp, Family::Inet, &mut out)
            .expect_err("a cut message is malformed");
        assert!(
            matches!(err, NetlinkError::Malformed { what: "tcp", .. }),
            "{err}"
        );
        // A header that claims zero length must not loop forever.
        let zero = [0u8; 16];
        assert!(parse_sock_diag(&zero, Protocol::Tcp, Family::Inet, &mut out).is_err());
    }

    #[test]
    fn requests_filter_states_in_the_kernel() {
        let request = dump_request(Protocol::Udp, Family::Inet6, 7);
        let header = NetlinkBuffer::new_checked(&request[..]).expect("our own request parses");
        assert_eq!(header.length() as usize, request.len());
        assert_eq!(header.sequence_number(), 7);
        assert_eq!(header.flags(), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(
            header.message_type(),
            netlink_packet_sock_diag::SOCK_DIAG_BY_FAMILY
        );
        // The inet_diag_req_v2 payload: family, protocol, extensions, pad, then
        // the states bitmask.
        let payload = header.payload();
        assert_eq!(payload[0], AF_INET6);
        assert_eq!(payload[1], IPPROTO_UDP);
        assert_eq!(
            u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]),
            1 << TCP_CLOSE
        );
        let request = dump_request(Protocol::Tcp, Family::Inet, 1);
        let payload = &request[16..];
        assert_eq!(
            u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]),
            1 << TCP_LISTEN
        );
    }
}
