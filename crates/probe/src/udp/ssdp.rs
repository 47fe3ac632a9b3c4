//! SSDP (port 1900): a unicast M-SEARCH per the UPnP Device Architecture 1.1
//! §1.3.2 (unchanged in 2.0), and a reader for the HTTPU search response
//! (§1.3.3) with its header lines capped.
//!
//! A device answering a unicast search from us tells its make and model
//! (`SERVER`), where its description lives (`LOCATION`, often an internal
//! address) and its identity (`USN`); `ssdp:all` makes it answer once per
//! device and service it has, a reflection of a few times the request per
//! answer. On a home network that is SSDP working as designed; reachable from
//! outside it is the exposure US-CERT TA14-017A lists: [`rules::SSDP`]
//! (medium).

use perimeter_model::ServiceInfo;

use crate::{Identified, rules, text};

/// The most header lines kept from one response.
pub const MAX_HEADERS: usize = 32;
/// The longest header line read; a longer one ends the header block.
pub const MAX_LINE: usize = 1024;

/// The SSDP multicast group and port, the `HOST` a search carries when the
/// target's address is not known.
pub const MULTICAST_HOST: &str = "239.255.255.250:1900";

/// An M-SEARCH for `ssdp:all`, unicast to `host` (`address:port`, or
/// [`MULTICAST_HOST`]).
///
/// UDA 1.1 §1.3.2: the request line `M-SEARCH * HTTP/1.1`; `HOST` the target
/// (for a unicast search, its address and port); `MAN: "ssdp:discover"` with
/// the quotes; `ST` the search target, `ssdp:all` for every device and
/// service. `MX` is only defined for multicast searches, but devices that do
/// not tell the two apart discard a search without one (the multicast rule), so
/// it is sent with 1 second, the shortest allowed. `USER-AGENT` is optional and
/// left out: the scanner has no UPnP product to name.
pub fn m_search(host: &str) -> Vec<u8> {
    format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: {host}\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n"
    )
    .into_bytes()
}

/// A search response: the status code and the header lines, names lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchResponse {
    pub status: u16,
    /// At most [`MAX_HEADERS`], values escaped and capped like banners.
    pub headers: Vec<(String, String)>,
}

impl SearchResponse {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Reads an HTTPU response: `HTTP/1.x NNN ...`, then header lines until a blank
/// line or the end of the datagram. `None` when the status line is not HTTP.
pub fn parse_response(datagram: &[u8]) -> Option<SearchResponse> {
    let mut lines = datagram
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let status_line = lines.next()?;
    let rest = status_line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix(b"HTTP/1.0 "))?;
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let status = std::str::from_utf8(code).ok()?.parse().ok()?;
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() || line.len() > MAX_LINE || headers.len() >= MAX_HEADERS {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = text::value_bytes(line.get(..colon).unwrap_or_default()).to_ascii_lowercase();
        let value = line.get(colon + 1..).unwrap_or_default().trim_ascii();
        headers.push((name, text::escape(value, text::MAX_BANNER_CHARS)));
    }
    Some(SearchResponse { status, headers })
}

/// Product and version from a `SERVER` header, `OS/version UPnP/1.1
/// product/version` (UDA 1.1 §1.3.3): the token after the `UPnP/` one, or
/// failing that the last token.
pub fn server_product(server: &str) -> Option<(String, Option<String>)> {
    let tokens: Vec<&str> = server.split_whitespace().take(16).collect();
    let upnp = tokens
        .iter()
        .position(|token| token.to_ascii_lowercase().starts_with("upnp/"));
    let product = match upnp {
        Some(idx) => tokens.get(idx + 1),
        None => tokens.last(),
    }?;
    let (name, version) = text::split_product_version(product, '/');
    (!name.is_empty()).then_some((name, version))
}

/// Identifies a UPnP device from a `200` answer to [`m_search`] carrying the
/// headers a search response must have (`ST` or `USN`), with
/// [`rules::SSDP`].
pub fn identify(datagram: &[u8]) -> Option<Identified> {
    let response = parse_response(datagram)
        .filter(|r| r.status == 200 && (r.header("st").is_some() || r.header("usn").is_some()))?;
    let mut service = ServiceInfo::named("upnp");
    let mut evidence = vec!["M-SEARCH ssdp:all answered by unicast".to_string()];
    if let Some(server) = response.header("server") {
        service.banner = Some(text::banner(server.as_bytes()));
        if let Some((product, version)) = server_product(server) {
            service.product = Some(product);
            service.version = version;
        }
        evidence.push(format!("SERVER: {}", text::value(server)));
    }
    for (header, key) in [("location", "location"), ("st", "st"), ("usn", "usn")] {
        if let Some(value) = response.header(header) {
            service.extra.insert(key.into(), text::value(value));
        }
    }
    if let Some(location) = response.header("location") {
        evidence.push(format!("LOCATION: {}", text::value(location)));
    }
    Some(Identified {
        service,
        findings: vec![rules::ssdp(evidence)],
    })
}

/// Whether `datagram` is an SSDP search response, for naming a service on an
/// unexpected port.
pub fn looks_like_reply(datagram: &[u8]) -> bool {
    parse_response(datagram).is_some_and(|r| r.header("st").is_some() && r.header("usn").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    // A search response as miniupnpd writes one (UDA 1.1 §1.3.3 headers).
    const MINIUPNPD: &[u8] = b"HTTP/1.1 200 OK\r\n\
CACHE-CONTROL: max-age=120\r\n\
ST: upnp:rootdevice\r\n\
USN: uuid:5e2c9a3e-0000-4a5b-9c5d-000000000001::upnp:rootdevice\r\n\
EXT:\r\n\
SERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\n\
LOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n\
OPT: \"http://schemas.upnp.org/upnp/1/0/\"; ns=01\r\n\
01-NLS: 1700000000\r\n\
BOOTID.UPNP.ORG: 1700000000\r\n\
CONFIGID.UPNP.ORG: 1337\r\n\
\r\n";

    #[test]
    fn search_is_well_formed() {
        let request = m_search("198.18.0.5:1900");
        let text = String::from_utf8_lossy(&request);
        expect![[r#"
            M-SEARCH * HTTP/1.1
            HOST: 198.18.0.5:1900
            MAN: "ssdp:discover"
            MX: 1
            ST: ssdp:all

        "#]]
        .assert_eq(&text.replace("\r\n", "\n"));
        assert!(request.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn response_identifies_the_device() {
        let Some(found) = identify(MINIUPNPD) else {
            panic!("identified");
        };
        expect![[r#"
            Identified {
                service: ServiceInfo {
                    name: "upnp",
                    product: Some(
                        "MiniUPnPd",
                    ),
                    version: Some(
                        "2.3.1",
                    ),
                    banner: Some(
                        "Debian/12 UPnP/1.1 MiniUPnPd/2.3.1",
                    ),
                    tls: None,
                    auth: Unknown,
                    extra: {
                        "location": "http://192.168.1.1:5000/rootDesc.xml",
                        "st": "upnp:rootdevice",
                        "usn": "uuid:5e2c9a3e-0000-4a5b-9c5d-000000000001::upnp:rootdevice",
                    },
                },
                findings: [
                    Finding {
                        rule: "exposed.ssdp",
                        severity: Medium,
                        subject: "",
                        message: "the host answers SSDP searches (UPnP discovery) sent to it directly",
                        evidence: [
                            "M-SEARCH ssdp:all answered by unicast",
                            "SERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1",
                            "LOCATION: http://192.168.1.1:5000/rootDesc.xml",
                        ],
                        remedy: "stop the UPnP/SSDP service or bind it to the LAN interface, and drop UDP 1900 from untrusted networks at the firewall",
                    },
                ],
            }
        "#]]
        .assert_debug_eq(&found);
        assert!(looks_like_reply(MINIUPNPD));
    }

    #[test]
    fn other_http_is_not_ssdp() {
        assert_eq!(identify(b"HTTP/1.1 200 OK\r\nServer: nginx\r\n\r\n"), None);
        assert_eq!(identify(b"HTTP/1.1 400 Bad Request\r\nST: x\r\n\r\n"), None);
        assert_eq!(identify(b"NOTIFY * HTTP/1.1\r\nNT: x\r\n\r\n"), None);
        assert_eq!(parse_response(b"HTTP/1.1 2"), None);
        // Caps: a long line ends the block, only MAX_HEADERS are kept.
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for idx in 0..100 {
            many.extend_from_slice(format!("X-{idx}: y\r\n").as_bytes());
        }
        assert_eq!(
            parse_response(&many).map(|r| r.headers.len()),
            Some(MAX_HEADERS)
        );
        let long = [
            b"HTTP/1.1 200 OK\r\nST: a\r\nUSN: ".to_vec(),
            vec![b'x'; 5000],
        ]
        .concat();
        assert_eq!(parse_response(&long).map(|r| r.headers.len()), Some(1));
    }
}
