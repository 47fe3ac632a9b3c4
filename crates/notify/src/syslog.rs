//! Syslog: the RFC 5424 messages `perimeter-report` renders (one per
//! change), to the local log socket or to a collector over UDP or TCP.
//!
//! - A unix datagram socket (`/dev/log` by default): one message per
//!   datagram. A missing socket (no syslog daemon yet, a container without
//!   one) or one nobody reads is transient: the daemon may come back.
//! - UDP (RFC 5426): one message per datagram. UDP says nothing of delivery,
//!   so "delivered" means "sent"; prefer TCP to a remote collector.
//! - TCP (RFC 6587) with octet-counting framing, `LEN SP MSG`, which no
//!   byte of a message can break.
//!
//! A delivery that fails half-way is retried whole; the messages sent the
//! first time come again with the same idempotency key and change number,
//! so a collector can drop the repeats.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use perimeter_model::Alert;
use perimeter_report::alert::{Facility, SyslogOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket, UnixDatagram};

use crate::{ConfigError, Delivery, Failure, Timeouts, seconds};

/// Where syslog messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// A local unix datagram socket.
    Unix(PathBuf),
    Udp(SocketAddr),
    Tcp(SocketAddr),
}

impl Default for SyslogTarget {
    fn default() -> Self {
        SyslogTarget::Unix(PathBuf::from("/dev/log"))
    }
}

impl std::fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyslogTarget::Unix(path) => write!(f, "unix {}", path.display()),
            SyslogTarget::Udp(address) => write!(f, "udp {address}"),
            SyslogTarget::Tcp(address) => write!(f, "tcp {address}"),
        }
    }
}

/// A syslog channel's configuration.
#[derive(Debug, Clone, Default)]
pub struct SyslogConfig {
    pub target: SyslogTarget,
    /// `daemon` by default.
    pub facility: Facility,
    pub timeouts: Timeouts,
}

/// A syslog channel, ready to deliver.
#[derive(Debug)]
pub struct Syslog {
    config: SyslogConfig,
}

impl Syslog {
    pub fn new(config: SyslogConfig) -> Result<Syslog, ConfigError> {
        if let SyslogTarget::Unix(path) = &config.target
            && path.as_os_str().is_empty()
        {
            return Err(ConfigError::Syslog("the socket path is empty".to_owned()));
        }
        Ok(Syslog { config })
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        self.config.timeouts
    }

    pub(crate) async fn deliver(&self, alert: &Alert) -> Result<Delivery, Failure> {
        let options = SyslogOptions {
            facility: self.config.facility,
            procid: Some(std::process::id()),
        };
        let messages = perimeter_report::alert::syslog_messages(alert, options);
        let target = &self.config.target;
        let sent = tokio::time::timeout(self.config.timeouts.overall, self.send(&messages)).await;
        match sent {
            Ok(Ok(())) => Ok(Delivery {
                receipt: format!(
                    "{} to {target}",
                    perimeter_report::count(messages.len(), "message")
                ),
                answer_bytes_read: 0,
            }),
            // Every failure here may pass: a daemon restarting, a collector
            // down, a full queue.
            Ok(Err(err)) => Err(Failure::transient(format!("{target}: {err}"))),
            Err(_) => Err(Failure::transient(format!(
                "{target}: not sent within {}",
                seconds(self.config.timeouts.overall)
            ))),
        }
    }

    async fn send(&self, messages: &[String]) -> io::Result<()> {
        let connect = self.config.timeouts.connect;
        match &self.config.target {
            SyslogTarget::Unix(path) => {
                let socket = UnixDatagram::unbound()?;
                // Connected, so that a full queue makes `send` wait (until the
                // timeout) rather than fail, and a missing socket fails here.
                socket.connect(path).map_err(|err| match err.kind() {
                    io::ErrorKind::NotFound => io::Error::new(
                        err.kind(),
                        "no syslog socket there (is a syslog daemon running?)",
                    ),
                    io::ErrorKind::ConnectionRefused => io::Error::new(
                        err.kind(),
                        "nobody reads the socket (is the syslog daemon running?)",
                    ),
                    _ => err,
                })?;
                for message in messages {
                    socket.send(message.as_bytes()).await?;
                }
            }
            SyslogTarget::Udp(address) => {
                let local: SocketAddr = if address.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let socket = UdpSocket::bind(local).await?;
                socket.connect(address).await?;
                for message in messages {
                    socket.send(message.as_bytes()).await?;
                }
            }
            SyslogTarget::Tcp(address) => {
                let mut stream = tokio::time::timeout(connect, TcpStream::connect(address))
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no connection within {}", seconds(connect)),
                        )
                    })??;
                let mut framed = Vec::new();
                for message in messages {
                    framed.extend_from_slice(octet_counted(message).as_bytes());
                }
                stream.write_all(&framed).await?;
                stream.shutdown().await?;
            }
        }
        Ok(())
    }
}

/// RFC 6587 octet-counting: the message's length in bytes, a space, the
/// message.
fn octet_counted(message: &str) -> String {
    format!("{} {message}", message.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octet_counting_counts_bytes() {
        // 19 characters, 20 bytes.
        assert_eq!(
            octet_counted("<30>1 - - - - - - é"),
            "20 <30>1 - - - - - - é"
        );
    }
}
