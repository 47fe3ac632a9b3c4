//! perimeter-notify's channels against real receivers on loopback: an HTTP
//! server that checks the signature with Python's hmac module, aiosmtpd,
//! syslog sockets the tests bind, and shell scripts for the command channel.
//!
//! One test binary with a module per channel, so that the receivers' helpers
//! are shared and linked once.

mod command;
mod common;
mod email;
mod http;
mod syslog;
