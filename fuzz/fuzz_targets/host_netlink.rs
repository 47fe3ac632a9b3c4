#![no_main]
//! The netlink answers the host reads, all on the same bytes: a `sock_diag`
//! dump datagram (every table; what it keeps is of the protocol asked for and
//! bounded by the datagram's size) and the process events connector's
//! messages and datagrams (a message alone in a datagram, or twice over,
//! parses as it does by itself).

use libfuzzer_sys::fuzz_target;
use perimeter_host::sockets::{self, Family};
use perimeter_watch::{self as watch, ProcEvent, ProcEventError};
use perimeter_model::Protocol;

/// `sizeof(struct nlmsghdr)`: the least a netlink message takes.
const NLMSG_HEADER_LEN: usize = 16;

fuzz_target!(|bytes: &[u8]| {
    sock_diag(bytes);
    proc_events(bytes);
});

fn sock_diag(bytes: &[u8]) {
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        for family in [Family::Inet, Family::Inet6] {
            let mut found = Vec::new();
            let _ = sockets::parse_sock_diag(bytes, protocol, family, &mut found);
            assert!(found.len() <= bytes.len() / NLMSG_HEADER_LEN);
            assert!(found.iter().all(|socket| socket.protocol == protocol));
        }
    }
}

fn proc_events(bytes: &[u8]) {
    let events = watch::parse_proc_datagram(bytes);
    assert!(events.len() <= bytes.len() / NLMSG_HEADER_LEN + 1);

    // The same bytes as one whole message: its length field says so.
    let Ok(len) = u32::try_from(bytes.len()) else {
        return;
    };
    if bytes.len() < NLMSG_HEADER_LEN {
        return;
    }
    let mut message = bytes.to_vec();
    message[..4].copy_from_slice(&len.to_ne_bytes());
    let alone = expected(watch::parse_proc_event(&message));
    assert_eq!(watch::parse_proc_datagram(&message), alone);

    // Twice over, the first padded to 4 bytes as netlink aligns messages.
    let mut datagram = message.clone();
    datagram.resize(message.len().next_multiple_of(4), 0);
    datagram.extend_from_slice(&message);
    let twice: Vec<_> = alone.iter().chain(&alone).cloned().collect();
    assert_eq!(watch::parse_proc_datagram(&datagram), twice);
}

/// What a datagram holding only `message` yields for it.
fn expected(
    parsed: Result<Option<ProcEvent>, ProcEventError>,
) -> Vec<Result<ProcEvent, ProcEventError>> {
    match parsed {
        Ok(Some(event)) => vec![Ok(event)],
        Ok(None) => Vec::new(),
        Err(err) => vec![Err(err)],
    }
}
