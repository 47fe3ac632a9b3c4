//! `perimeter envs` as output: each environment of the inventory with the
//! hosts stored scans last saw in it, its owner and its expiry, as the
//! `perimeter.envs/1` document and as human lines.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use perimeter_model::Environment;
use time::OffsetDateTime;

use crate::time_fmt::rfc3339;

/// The schema string of the environments document.
pub const SCHEMA: &str = "perimeter.envs/1";

/// A host stored scans saw in an environment.
#[derive(Debug, Clone, Copy)]
pub struct SeenHost<'a> {
    pub address: IpAddr,
    /// When the newest scan that saw it started.
    pub last_seen: Option<OffsetDateTime>,
    /// The ports open in that scan, in the order they were found.
    pub open_ports: &'a [u16],
}

/// One environment with what was seen of it.
#[derive(Debug, Clone)]
pub struct EnvironmentSeen<'a> {
    pub environment: &'a Environment,
    /// Days past its `expires` date (negative: days left); `None` without one.
    pub days_overdue: Option<i64>,
    pub hosts: Vec<SeenHost<'a>>,
}

fn expiry(days_overdue: Option<i64>) -> String {
    match days_overdue {
        Some(days) if days > 0 => format!("EXPIRED {days} days ago"),
        Some(days) => format!("expires in {} days", -days),
        None => "-".into(),
    }
}

/// The `perimeter.envs/1` document for the inventory read from `inventory`.
pub fn to_json(
    inventory: Option<&Path>,
    environments: &[EnvironmentSeen<'_>],
) -> serde_json::Value {
    let environments: Vec<serde_json::Value> = environments
        .iter()
        .map(|seen| {
            let env = seen.environment;
            serde_json::json!({
                "name": env.name,
                "kind": env.kind.as_str(),
                "ranges": env.ranges.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "hosts": env.hosts,
                "public_ports": env.public_ports,
                "allow_from": env.allow_from.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "owner": env.owner,
                "expires": env.expires.map(|d| d.to_string()),
                "expiry": expiry(seen.days_overdue),
                "seen": seen.hosts.iter().map(|host| serde_json::json!({
                    "address": host.address.to_string(),
                    "last_seen": host.last_seen.map(rfc3339),
                    "open_ports": host.open_ports,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "schema": SCHEMA,
        "inventory": inventory.map(|p| p.display().to_string()),
        "environments": environments,
    })
}

/// Each environment on a line (name, kind, ranges, owner, expiry), then the
/// hosts seen in it with their open ports in order.
pub fn to_human(environments: &[EnvironmentSeen<'_>]) -> String {
    let mut out = String::new();
    for seen in environments {
        let env = seen.environment;
        let ranges: Vec<String> = env.ranges.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "{} ({}) {}  owner {}  {}",
            env.name,
            env.kind,
            ranges.join(" "),
            env.owner.as_deref().unwrap_or("-"),
            expiry(seen.days_overdue)
        );
        if seen.hosts.is_empty() {
            let _ = writeln!(out, "  no hosts seen by stored scans");
        }
        for host in &seen.hosts {
            let mut ports = host.open_ports.to_vec();
            ports.sort_unstable();
            let _ = writeln!(
                out,
                "  {:<40} last seen {}  open {:?}",
                host.address,
                host.last_seen.map(rfc3339).unwrap_or_else(|| "-".into()),
                ports
            );
        }
    }
    out
}
