//! The MySQL/MariaDB initial handshake (protocol version 10), which the server
//! sends as soon as a client connects, or the error packet it sends instead
//! (`Host '...' is not allowed to connect`). Nothing is sent back.

use perimeter_model::{AuthState, ServiceInfo};

use crate::text;

/// The longest handshake packet accepted. Real ones are under 100 bytes.
const MAX_PACKET: usize = 1024;

/// What the server's first packet says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    Handshake {
        /// `8.0.36`, `5.5.5-10.11.6-MariaDB-0+deb12u1`, as sent (sanitised).
        server_version: String,
        connection_id: u32,
        /// `mysql_native_password`, `caching_sha2_password`, when sent.
        auth_plugin: Option<String>,
        /// CLIENT_SSL in the server's capability flags.
        tls: bool,
    },
    /// An error packet instead of a handshake.
    Error { code: u16, message: String },
}

/// Parses the first packet. `Ok(None)`: incomplete. `Err(())`: not MySQL.
#[expect(
    clippy::result_unit_err,
    reason = "the only failure is \"not this protocol\"; there is nothing to say"
)]
pub fn parse_greeting(buf: &[u8]) -> Result<Option<Greeting>, ()> {
    let Some(header) = buf.get(..4) else {
        return if buf.is_empty() || plausible_prefix(buf) {
            Ok(None)
        } else {
            Err(())
        };
    };
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    if header[3] != 0 || !(2..=MAX_PACKET).contains(&len) {
        return Err(());
    }
    let Some(payload) = buf.get(4..4 + len) else {
        return match buf.get(4) {
            None | Some(0x0a | 0xff) => Ok(None),
            Some(_) => Err(()),
        };
    };
    match payload.first() {
        Some(0x0a) => parse_handshake(payload.get(1..).unwrap_or_default()).map(Some),
        Some(0xff) => {
            let code = u16::from_le_bytes([*payload.get(1).ok_or(())?, *payload.get(2).ok_or(())?]);
            let mut message = payload.get(3..).unwrap_or_default();
            // Newer servers put `#` and a five-character SQL state first.
            if message.first() == Some(&b'#') {
                message = message.get(6..).unwrap_or_default();
            }
            Ok(Some(Greeting::Error {
                code,
                message: text::value_bytes(message),
            }))
        }
        _ => Err(()),
    }
}

/// A handshake header whose length bytes are still arriving looks like this: a
/// length under [`MAX_PACKET`] means the second and third bytes are small.
fn plausible_prefix(buf: &[u8]) -> bool {
    match buf {
        [_] => true,
        [_, b1] => usize::from(*b1) << 8 <= MAX_PACKET,
        [_, b1, 0] => usize::from(*b1) << 8 <= MAX_PACKET,
        _ => false,
    }
}

fn parse_handshake(body: &[u8]) -> Result<Greeting, ()> {
    let nul = body.iter().position(|&b| b == 0).ok_or(())?;
    let version = body.get(..nul).ok_or(())?;
    if version.is_empty() || !version.iter().all(|b| b.is_ascii_graphic()) {
        return Err(());
    }
    let rest = body.get(nul + 1..).unwrap_or_default();
    let connection_id = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(())?;
    // 8 bytes of scramble, a filler byte, then the low capability flags.
    let caps_low = rest
        .get(13..15)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .unwrap_or(0);
    let caps_high = rest
        .get(18..20)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .unwrap_or(0);
    let capabilities = u32::from(caps_low) | u32::from(caps_high) << 16;
    const CLIENT_SSL: u32 = 0x0800;
    const CLIENT_PLUGIN_AUTH: u32 = 0x0008_0000;
    let auth_plugin = if capabilities & CLIENT_PLUGIN_AUTH != 0 {
        // After the high flags: scramble length (1), reserved (10), the second
        // part of the scramble (max(13, len - 8)), then the plugin name.
        let scramble_len = usize::from(*rest.get(20).unwrap_or(&0));
        let part2 = scramble_len.saturating_sub(8).max(13);
        rest.get(31 + part2..).map(|tail| {
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            text::value_bytes(tail.get(..end).unwrap_or_default())
        })
    } else {
        None
    };
    Ok(Greeting::Handshake {
        server_version: text::value_bytes(version),
        connection_id,
        auth_plugin: auth_plugin.filter(|p| !p.is_empty()),
        tls: capabilities & CLIENT_SSL != 0,
    })
}

/// `(product, version)` from a server version string. MariaDB before 11 prefixes
/// `5.5.5-` so old clients do not mistake it for MySQL 10.
pub fn product_version(server_version: &str) -> (String, String) {
    let trimmed = server_version
        .strip_prefix("5.5.5-")
        .unwrap_or(server_version);
    if let Some(idx) = trimmed.find("-MariaDB") {
        return (
            "MariaDB".into(),
            trimmed.get(..idx).unwrap_or(trimmed).to_string(),
        );
    }
    let version = trimmed.split('-').next().unwrap_or(trimmed);
    ("MySQL".into(), version.to_string())
}

pub fn service(greeting: &Greeting, raw: &[u8]) -> ServiceInfo {
    let mut service = ServiceInfo::named("mysql");
    service.banner = Some(text::banner(raw));
    match greeting {
        Greeting::Handshake {
            server_version,
            auth_plugin,
            tls,
            ..
        } => {
            let (product, version) = product_version(server_version);
            service.product = Some(product);
            service.version = Some(version);
            service
                .extra
                .insert("server_version".into(), server_version.clone());
            if let Some(plugin) = auth_plugin {
                service.extra.insert("auth_plugin".into(), plugin.clone());
            }
            service
                .extra
                .insert("tls".into(), if *tls { "yes" } else { "no" }.into());
        }
        Greeting::Error { code, message } => {
            // 1130: this client's host may not connect at all.
            if *code == 1130 {
                service.auth = AuthState::Required;
            }
            service
                .extra
                .insert("error".into(), format!("{code}: {message}"));
            if message.contains("MariaDB") {
                service.product = Some("MariaDB".into());
            }
        }
    }
    service
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MariaDB 10.11 on Debian 12, captured.
    const MARIADB: &[u8] = include_bytes!("../tests/fixtures/mysql-mariadb-handshake.bin");

    #[test]
    fn parses_captured_mariadb_handshake() {
        let Ok(Some(greeting)) = parse_greeting(MARIADB) else {
            panic!("handshake parses");
        };
        let service = service(&greeting, MARIADB);
        assert_eq!(service.name, "mysql");
        assert_eq!(service.product.as_deref(), Some("MariaDB"));
        assert!(
            service
                .version
                .as_deref()
                .is_some_and(|v| v.starts_with("10.11."))
        );
        assert_eq!(
            service.extra.get("auth_plugin").map(String::as_str),
            Some("mysql_native_password")
        );
        for cut in 0..MARIADB.len() {
            assert_eq!(parse_greeting(&MARIADB[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn error_packets_and_strangers() {
        let mut packet = vec![0x45, 0, 0, 0, 0xff, 0x6a, 0x04];
        packet.extend_from_slice(
            b"Host '198.18.0.9' is not allowed to connect to this MariaDB server",
        );
        packet.truncate(4 + 0x45);
        let Ok(Some(greeting)) = parse_greeting(&packet) else {
            panic!("error packet parses");
        };
        assert!(
            matches!(&greeting, Greeting::Error { code: 1130, message } if message.starts_with("Host '198.18.0.9'"))
        );
        let service = service(&greeting, &packet);
        assert_eq!(service.auth, AuthState::Required);
        assert_eq!(service.product.as_deref(), Some("MariaDB"));
        assert_eq!(parse_greeting(b"SSH-2.0-OpenSSH_9.2p1\r\n"), Err(()));
        assert_eq!(parse_greeting(b"HTTP/1.1 200 OK"), Err(()));
        assert_eq!(parse_greeting(b"\xff\xff\xff\x00\x0a"), Err(()));
        assert_eq!(
            product_version("8.0.36-0ubuntu0.22.04.1"),
            ("MySQL".to_string(), "8.0.36".to_string())
        );
        assert_eq!(
            product_version("5.5.5-10.11.6-MariaDB-0+deb12u1"),
            ("MariaDB".to_string(), "10.11.6".to_string())
        );
    }
}
