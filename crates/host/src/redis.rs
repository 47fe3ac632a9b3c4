//! Asking a running Redis, read-only, whether it lets a client in without a
//! password: PING, then INFO server (version, config file) and CONFIG GET of
//! protected-mode and bind where allowed. Never a write, never CONFIG GET of
//! requirepass (the answer would be the secret itself).
//!
//! The bytes go through `perimeter_probe::redis`'s bounded RESP parser; this
//! module only owns the blocking socket, its timeouts and the read cap.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use perimeter_model::{Listener, RedisAuth};
use perimeter_probe::redis::{Reply, command, parse_info, parse_reply};

/// Per-read and connect timeout for an instance that looks like Redis. Redis
/// answers PING in microseconds; a local service that takes longer is not worth
/// stalling the audit for.
pub const TIMEOUT: Duration = Duration::from_millis(1500);
/// The timeout for a listener that might be Redis (its owner is unknown or
/// unpackaged): most such services are not, and a silent one must not cost much.
pub const SPECULATIVE_TIMEOUT: Duration = Duration::from_millis(300);
/// The most bytes read for one reply (INFO server is about 1.5 KB).
const MAX_REPLY: usize = 64 * 1024;

/// What one instance said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisAnswer {
    pub probed: SocketAddr,
    pub auth: RedisAuth,
    pub version: Option<String>,
    pub config_file: Option<String>,
    pub protected_mode: Option<bool>,
    pub bind: Option<String>,
}

/// Where to connect to reach a listener from this host: its own address, or
/// loopback for a wildcard bind (which is how a local attacker would come).
pub fn probe_address(listener: &Listener) -> SocketAddr {
    let address = match listener.address {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => {
            if listener.accepts_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            }
        }
        other => other,
    };
    SocketAddr::new(address, listener.port)
}

/// Ask the instance at `address`, waiting at most `timeout` for each step. Must
/// run in the listener's network namespace.
pub fn ask(address: SocketAddr, timeout: Duration) -> RedisAnswer {
    let mut answer = RedisAnswer {
        probed: address,
        auth: RedisAuth::Unreachable(String::new()),
        version: None,
        config_file: None,
        protected_mode: None,
        bind: None,
    };
    let mut conn = match Conn::connect(address, timeout) {
        Ok(conn) => conn,
        Err(err) => {
            answer.auth = RedisAuth::Unreachable(format!("cannot connect to {address}: {err}"));
            return answer;
        }
    };
    let reply = match conn.request(&[b"PING"]) {
        Ok(reply) => reply,
        Err(err) => {
            answer.auth =
                RedisAuth::Unreachable(format!("no answer to PING from {address}: {err}"));
            return answer;
        }
    };
    answer.auth = classify_ping(&reply);
    if answer.auth != RedisAuth::Open {
        return answer;
    }
    if let Ok(Reply::Bulk(bytes)) = conn.request(&[b"INFO", b"server"]) {
        let info = parse_info(&String::from_utf8_lossy(&bytes));
        answer.version = info.get("redis_version").cloned();
        answer.config_file = Some(info.get("config_file").cloned().unwrap_or_default());
    }
    // CONFIG may be renamed or ACL-restricted; then these stay unknown.
    answer.protected_mode = config_get(&mut conn, b"protected-mode").map(|v| v == "yes");
    answer.bind = config_get(&mut conn, b"bind");
    answer
}

/// How Redis treated an unauthenticated PING.
pub fn classify_ping(reply: &Reply) -> RedisAuth {
    match reply {
        Reply::Simple(text) if text == "PONG" => RedisAuth::Open,
        // RESP3 clients get PONG as a bulk string in some versions.
        Reply::Bulk(bytes) if bytes == b"PONG" => RedisAuth::Open,
        Reply::Error(text) => {
            let upper = text.to_ascii_uppercase();
            if upper.starts_with("NOAUTH")
                || upper.starts_with("WRONGPASS")
                || upper.contains("AUTH")
            {
                RedisAuth::Required
            } else if upper.starts_with("DENIED") {
                RedisAuth::ProtectedMode
            } else {
                RedisAuth::NotRedis(format!("PING answered -{}", truncate(text)))
            }
        }
        other => RedisAuth::NotRedis(format!("PING answered {}", truncate(&format!("{other:?}")))),
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

fn config_get(conn: &mut Conn, key: &[u8]) -> Option<String> {
    match conn.request(&[b"CONFIG", b"GET", key]).ok()? {
        Reply::Array(items) => match items.get(1)? {
            Reply::Bulk(value) => Some(String::from_utf8_lossy(value).into_owned()),
            _ => None,
        },
        Reply::Map(pairs) => match &pairs.first()?.1 {
            Reply::Bulk(value) => Some(String::from_utf8_lossy(value).into_owned()),
            _ => None,
        },
        _ => None,
    }
}

struct Conn {
    stream: TcpStream,
    timeout: Duration,
}

impl Conn {
    fn connect(address: SocketAddr, timeout: Duration) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn { stream, timeout })
    }

    /// Send one command and read exactly one reply, within the cap and an
    /// overall deadline.
    fn request(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        self.stream.write_all(&command(args))?;
        let deadline = Instant::now() + self.timeout * 2;
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 4096];
        loop {
            match parse_reply(&buf) {
                Ok(Some((reply, _))) => return Ok(reply),
                Ok(None) => {}
                Err(err) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("not a RESP reply: {err}"),
                    ));
                }
            }
            if buf.len() >= MAX_REPLY || Instant::now() > deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "reply too long or too slow",
                ));
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            let room = MAX_REPLY - buf.len();
            buf.extend_from_slice(&chunk[..n.min(room)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_ping_answers() {
        assert_eq!(
            classify_ping(&Reply::Simple("PONG".into())),
            RedisAuth::Open
        );
        assert_eq!(
            classify_ping(&Reply::Error("NOAUTH Authentication required.".into())),
            RedisAuth::Required
        );
        assert_eq!(
            classify_ping(&Reply::Error(
                "DENIED Redis is running in protected mode because protected mode is enabled"
                    .into()
            )),
            RedisAuth::ProtectedMode
        );
        assert!(matches!(
            classify_ping(&Reply::Error("ERR unknown command".into())),
            RedisAuth::NotRedis(_)
        ));
    }
}
