//! Read-only protocol probes: request bytes out, hostile bytes in, typed answers
//! back. Nothing here does I/O; a driver (the scan engine, or the audit's Redis
//! check) owns the sockets, the timeouts and the size caps, and feeds each probe
//! what the peer said.
//!
//! Architecture invariant: every byte read from the network is parsed here, by
//! functions that take `&[u8]`, never index unchecked, cap what they keep, and are
//! fuzzed (see `fuzz/`). A probe never sends a command that writes: no SET, no
//! CONFIG SET, no FLUSH.

use perimeter_model::{Finding, ServiceInfo};

/// What a probe wants its driver to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Write these bytes, then read. The driver clears its receive buffer first, so
    /// the next `on_data` sees only the answer to this request.
    Send(Vec<u8>),
    /// The answer so far is incomplete: read more and call `on_data` again with
    /// everything received since the last `Send`.
    Receive,
    /// The probe is finished. `None`: the peer does not speak this protocol (the
    /// driver tries the next probe on a fresh connection).
    Done(Option<Identified>),
}

/// A service identified by what it answered, and the findings its answers prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub service: ServiceInfo,
    /// Findings with `rule`, `severity`, `message` and `evidence` set; the driver
    /// fills `subject` with the address and port.
    pub findings: Vec<Finding>,
}

/// One protocol conversation, as a state machine with no I/O.
///
/// The driver calls `start` on a fresh connection, performs what it asks, and
/// then calls `on_data` with every byte received since the last `Send` (capped
/// at `max_response`) until the probe returns `Done`. When the peer closes the
/// connection or the read times out, the driver calls `on_end` with what it has
/// and stops.
pub trait Probe: Send + std::fmt::Debug {
    /// A short stable name (`banner`, `http`, `redis`, ...), for logs and tests.
    fn name(&self) -> &'static str;

    /// The first action on a fresh connection: `Send` a request, or `Receive` to
    /// wait for a greeting.
    fn start(&mut self) -> Next;

    /// Bytes received since the last `Send` (or since connecting).
    fn on_data(&mut self, received: &[u8]) -> Next;

    /// The peer closed the connection (`timed_out == false`) or stayed silent past
    /// the driver's read timeout (`timed_out == true`). `received` is what arrived
    /// since the last `Send`.
    fn on_end(&mut self, received: &[u8], timed_out: bool) -> Option<Identified>;

    /// The most bytes the driver should buffer for one answer. Anything beyond is
    /// not read.
    fn max_response(&self) -> usize {
        16 * 1024
    }
}
