//! Read-only protocol probes: request bytes out, hostile bytes in, typed answers
//! back. Nothing here does I/O; a driver (the scan engine, or the audit's Redis
//! check) owns the sockets, the timeouts and the size caps, and feeds each probe
//! what the peer said.
//!
//! Architecture invariant: every byte read from the network is parsed here, by
//! functions that take `&[u8]`, never index unchecked, cap what they keep, and are
//! fuzzed (see `fuzz/`). A probe never sends a command that writes: no SET, no
//! CONFIG SET, no FLUSH.
//!
//! What a driver needs: [`probes_for`] (or [`probes_for_address`]) gives the
//! ordered probes to try on an open port, each on a fresh connection, until one
//! returns `Done(Some(..))`; [`sniff`] names a protocol from any answer. The
//! protocol modules expose their encoders and parsers for callers that hold
//! their own sockets (the audit's Redis check uses [`redis`] directly).

use std::net::IpAddr;

use perimeter_model::{AuthState, Finding, ServiceInfo};

pub mod banner;
pub mod bson;
pub mod greeting;
pub mod http;
pub mod memcached;
pub mod mongodb;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod rules;
pub mod ssh;
pub mod text;
pub mod tls;
pub mod udp;
pub mod vnc;

pub use banner::BannerProbe;
pub use http::HttpProbe;
pub use memcached::MemcachedProbe;
pub use mongodb::MongoProbe;
pub use postgres::PostgresProbe;
pub use redis::RedisProbe;
pub use tls::Tls;

/// What a probe wants its driver to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one Next per round trip, moved not copied; boxing Done would change the contract drivers are written against"
)]
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

impl Identified {
    /// An identification that proves nothing wrong.
    pub fn service_only(service: ServiceInfo) -> Self {
        Identified {
            service,
            findings: Vec::new(),
        }
    }
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

    /// Whether the probe only listens for the peer to speak first (the
    /// banner wait). A driver need not wait out its silence before asking:
    /// it may run the probes after it on other connections meanwhile.
    fn waits_for_greeting(&self) -> bool {
        false
    }
}

/// Ports whose usual occupant waits to be asked: its probe goes first, before
/// the banner wait (Redis, memcached, the databases and web servers never
/// speak first, so waiting for them to is time lost).
fn likely_probes(port: u16) -> &'static [&'static str] {
    match port {
        6379 | 6380 | 7000..=7005 | 16379 | 26379 => &["redis"],
        11211 => &["memcached"],
        5432 | 5433 => &["postgresql"],
        27017..=27019 => &["mongodb", "mongodb-legacy"],
        443 | 2376 | 2379 | 2380 | 4443 | 6443 | 8443 | 9443 | 10250 | 10257 | 10259 => {
            &["https", "http"]
        }
        80 | 81 | 591 | 2375 | 3000 | 5000 | 8000 | 8008 | 8080 | 8081 | 8888 | 9000 | 9090
        | 9200 => &["http"],
        _ => &[],
    }
}

/// The order for everything else. Redis goes before HTTP because Redis treats
/// an HTTP request as a cross-protocol attack, closes without a word and logs a
/// security warning, while an HTTP server answers Redis's `PING` with a `400`
/// that [`sniff`] recognises. memcached goes before HTTP because it stays
/// silent on an HTTP request (a timeout) but answers `version` at once, and a
/// Redis answers `version` with an error [`sniff`] knows. TLS comes after the
/// plaintext probes (a TLS server drops them fast); PostgreSQL and MongoDB last,
/// as both close at once on bytes that are not theirs.
const GENERAL_ORDER: [&str; 6] = [
    "redis",
    "memcached",
    "http",
    "https",
    "postgresql",
    "mongodb",
];

fn make_probe(name: &str, port: u16, address: Option<IpAddr>) -> Option<Box<dyn Probe>> {
    let host = match address {
        Some(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        Some(IpAddr::V4(v4)) => format!("{v4}:{port}"),
        None => "localhost".to_string(),
    };
    let probe: Box<dyn Probe> = match name {
        "redis" => Box::new(RedisProbe::new()),
        "memcached" => Box::new(MemcachedProbe::new()),
        "http" => Box::new(HttpProbe::with_host(host).with_port_hint(port)),
        // No SNI: the driver knows an address, not a name.
        "https" => Box::new(Tls::new(
            "https",
            HttpProbe::with_host(host).with_port_hint(port),
            None,
        )),
        "postgresql" => Box::new(PostgresProbe::new()),
        "mongodb" => Box::new(MongoProbe::new()),
        "mongodb-legacy" => Box::new(MongoProbe::legacy()),
        _ => return None,
    };
    Some(probe)
}

fn plan(port: u16, address: Option<IpAddr>) -> Vec<Box<dyn Probe>> {
    let likely = likely_probes(port);
    let mut probes: Vec<Box<dyn Probe>> = likely
        .iter()
        .filter_map(|name| make_probe(name, port, address))
        .collect();
    probes.push(Box::new(BannerProbe::new()));
    probes.extend(
        GENERAL_ORDER
            .iter()
            .filter(|name| !likely.contains(name))
            .filter_map(|name| make_probe(name, port, address)),
    );
    probes
}

/// The probes a driver tries on an open port, in order, each on a fresh
/// connection until one returns `Done(Some(..))`: what usually listens on
/// `port` when that is a service that waits to be asked, then the banner
/// wait (for services that speak first), then the rest in an order safe for
/// all. A driver may run the probes after the banner wait while it waits
/// ([`Probe::waits_for_greeting`]). HTTP requests carry `Host: localhost`;
/// use [`probes_for_address`] when the address is known.
pub fn probes_for(port: u16) -> Vec<Box<dyn Probe>> {
    plan(port, None)
}

/// Like [`probes_for`], with HTTP requests carrying the address literal and
/// port as `Host` (`198.18.0.5:8080`, `[2001:db8::1]:443`).
pub fn probes_for_address(address: IpAddr, port: u16) -> Vec<Box<dyn Probe>> {
    plan(port, Some(address))
}

/// [`sniff`] for probes that are not the HTTP probe: an HTTP answer to their
/// request is left unnamed, so the driver goes on to the HTTP probe, whose own
/// requests learn the product (and Elasticsearch, Docker, etcd, ...) that a
/// `400` to someone else's bytes does not show.
pub(crate) fn sniff_not_http(answer: &[u8]) -> Option<Identified> {
    sniff(answer).filter(|found| found.service.name != "http")
}

/// Redis's own error phrasing, which other `-ERR` speakers (POP3) do not share.
fn is_redis_error(answer: &[u8]) -> bool {
    const PREFIXES: [&[u8]; 8] = [
        b"+PONG\r\n",
        b"-NOAUTH ",
        b"-WRONGPASS ",
        b"-DENIED Redis ",
        b"-ERR unknown command '",
        b"-ERR unknown command `",
        b"-ERR wrong number of arguments for '",
        b"-ERR Protocol error: ",
    ];
    PREFIXES.iter().any(|prefix| answer.starts_with(prefix))
}

/// Names the protocol of any answer, whatever was asked: an HTTP probe that got
/// a Redis error back, a Redis probe answered by a web server. Returns the
/// service with what the answer itself shows (product, version, auth where the
/// answer says) and no findings: a finding needs the probe that asked for it.
pub fn sniff(answer: &[u8]) -> Option<Identified> {
    if answer.is_empty() {
        return None;
    }
    let service = |service: ServiceInfo| Some(Identified::service_only(service));
    if answer.starts_with(b"SSH-") {
        return ssh::parse_banner(answer, true).and_then(|banner| service(banner.service()));
    }
    if answer.starts_with(b"HTTP/") {
        return match http::parse_response(answer, true) {
            Ok(Some(response)) if !http::wants_tls(&response) => {
                service(http::service(&response, answer))
            }
            _ => None,
        };
    }
    if text::starts_with_ignore_case(answer, b"<!DOCTYPE html")
        || text::starts_with_ignore_case(answer, b"<html")
    {
        // An HTTP/0.9-style answer: a body with no status line, as Python's
        // http.server sends to a request line it cannot parse.
        let mut found = ServiceInfo::named("http");
        found.banner = Some(text::banner(text::first_line(answer)));
        if let Some(title) = http::html_title(answer) {
            found.extra.insert("title".into(), title);
        }
        return service(found);
    }
    if is_redis_error(answer) {
        let mut found = ServiceInfo::named("redis");
        found.product = Some("Redis".into());
        found.banner = Some(text::banner(text::first_line(answer)));
        if answer.starts_with(b"-NOAUTH")
            || answer.starts_with(b"-WRONGPASS")
            || answer.starts_with(b"-DENIED")
        {
            found.auth = AuthState::Required;
        }
        return service(found);
    }
    match memcached::parse_answer(answer) {
        Some(memcached::Answer::Version(version)) => {
            let mut found = ServiceInfo::named("memcached");
            found.product = Some("memcached".into());
            found.version = Some(version);
            return service(found);
        }
        Some(memcached::Answer::ClientError(message)) if message.contains("unauthenticated") => {
            let mut found = ServiceInfo::named("memcached");
            found.product = Some("memcached".into());
            found.auth = AuthState::Required;
            return service(found);
        }
        _ => {}
    }
    if let Ok(Some(version)) = vnc::parse_version(answer) {
        let mut found = ServiceInfo::named("vnc");
        found.banner = Some(text::banner(answer.get(..12).unwrap_or(answer)));
        found.version = Some(format!("{}.{}", version.major, version.minor));
        return service(found);
    }
    if let Ok(Some(greeting)) = mysql::parse_greeting(answer) {
        return service(mysql::service(&greeting, answer));
    }
    if let Some(reply) = greeting::parse_code_reply(answer)
        && reply.code == 220
    {
        let kind = greeting::classify(&reply);
        if kind != greeting::Kind::Unclear {
            return service(greeting::service(kind, &reply, answer, None));
        }
    }
    if answer.starts_with(b"+OK") || answer.starts_with(b"* OK") {
        let mut found = ServiceInfo::named(if answer.starts_with(b"+OK") {
            "pop3"
        } else {
            "imap"
        });
        found.banner = Some(text::banner(text::first_line(answer)));
        return service(found);
    }
    if answer.first() == Some(&b'E')
        && let Ok((messages, _)) = postgres::parse_backend(answer)
        && let Some(postgres::Backend::Error { severity, .. }) = messages.first()
        && matches!(severity.as_str(), "FATAL" | "ERROR" | "PANIC")
    {
        return postgres::identify(&messages, true).and_then(service);
    }
    None
}

#[cfg(test)]
mod tests;
