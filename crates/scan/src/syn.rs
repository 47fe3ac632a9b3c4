//! SYN ("half-open") scanning: one TCP SYN per attempt from a raw socket, the
//! port's state read from the answer (SYN-ACK open, RST closed, silence
//! filtered), and no connection ever completed, so the scanned service never
//! sees one (the kernel answers the SYN-ACK with a RST, as it does for nmap's
//! `-sS`). It needs `CAP_NET_RAW`. Open ports are identified over ordinary
//! connections ([`Transport::connect`](crate::Transport::connect)), as
//! nmap's `-sS -sV` does.
//!
//! Why by hand: the crates that build packets (pnet, etherparse) would add a
//! large dependency for two fixed 24-byte headers and a checksum, and none
//! matches replies to probes; the wire format here is small, pure and
//! fuzzable ([`codec::syn_segment`], [`codec::parse_ipv4_reply`],
//! [`codec::parse_tcp_reply`]).
//!
//! Replies are matched without keeping per-probe state beyond a waiter: every
//! SYN carries a sequence number derived from a per-scan secret, the
//! destination and the port (a SYN cookie, as masscan does), and only an
//! answer acknowledging exactly that number counts. One source port, outside
//! the kernel's ephemeral range, is used for the whole scan.
//!
//! Two rooms: [`codec`] is the wire format (SYNs, checksums, cookies, the
//! parsers of answers), pure and fuzzed; `transport` is [`SynTransport`], the
//! raw sockets, the reader tasks, the waiters and the sweeper.

pub mod codec;
mod transport;

pub use transport::{SynError, SynTransport};
