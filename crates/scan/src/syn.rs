//! SYN ("half-open") scanning: one TCP SYN per attempt from a raw socket, the
//! port's state read from the answer (SYN-ACK open, RST closed, an ICMP
//! unreachable or silence filtered), and no connection ever completed, so the
//! scanned service never sees one (the kernel answers the SYN-ACK with a RST,
//! as it does for nmap's `-sS`). It needs `CAP_NET_RAW`. Open ports are
//! identified over ordinary connections, as nmap's `-sS -sV` does.
//!
//! Why by hand: the crates that build packets (pnet, etherparse) would add a
//! large dependency for two fixed 24-byte headers and a checksum, and none
//! matches replies to probes; the wire format here is small, pure and
//! fuzzable ([`codec::syn_segment`], [`codec::parse_ipv4_reply`],
//! [`codec::parse_tcp_reply`]).
//!
//! Replies are matched without keeping per-probe state beyond the table of
//! ports in flight: every SYN carries a sequence number derived from a
//! per-scan secret, the destination and the port (a SYN cookie, as masscan
//! does), and only an answer acknowledging exactly that number counts. One
//! source port, outside the kernel's ephemeral range, is used for the whole
//! scan.
//!
//! Three rooms: [`codec`] is the wire format (SYNs, checksums, cookies, the
//! parsers of answers), pure and fuzzed; `sweep` is the bookkeeping (ports
//! in flight, per-batch deadlines, retries, what an answer decides), pure
//! too, behind the [`PacketIo`] trait; `sockets` is [`SynSockets`], the raw
//! sockets that move the packets in batches (`sendmmsg`, `recvmmsg`). The
//! loop that drives them is the engine's (`run_syn`).

pub mod codec;
mod sockets;
mod sweep;

pub use sockets::{BATCH, SynError, SynSockets};
pub(crate) use sweep::{Decided, Outcome, Sweep, SweepSettings};
pub use sweep::{PacketIo, Syn};
