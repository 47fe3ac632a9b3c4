//! ufw read right, end to end: Debian's real `ufw` configures a dev host's
//! namespace in a veth lab, real connections from an admin client
//! (198.18.99.0/24, ufw's allow_from) and an outside client are the oracle,
//! and `perimeter audit --inventory` in the dev host's namespace must agree
//! with them: each listener's `reachable_from`, `env.dev-open` for the port
//! open to everyone and not for the one limited to allow_from, and
//! `firewall.none` exactly when ufw's default lets new connections in.
//!
//! ufw runs only inside `ip netns exec` of the lab namespace and, inside
//! that, in a private mount namespace where a copy of its configuration
//! (from /usr/share/ufw's templates) is bound over /etc/ufw and
//! /etc/default/ufw, and a tmpfs over /run (its lock file): the host's own
//! firewall and ufw configuration are never touched. Its sysctl file is
//! empty, so it changes no kernel setting either.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{private_ufw_config, ufw};
use perimeter_testlab::{Daemon, Lab, Ns, Requirement, require};

const INVENTORY: &str = r#"
[[environment]]
name = "dev"
kind = "dev"
ranges = ["198.18.20.0/29"]
allow_from = ["198.18.99.0/24"]
"#;

const DEV: &str = "198.18.20.5";
const ADMIN: &str = "198.18.99.1";
const OUTSIDE: &str = "198.18.50.1";

/// The ports the dev host listens on: allowed from the admin network, allowed
/// from everyone, and named by no ufw rule.
const LIMITED: u16 = 8080;
const PUBLIC: u16 = 443;
const UNNAMED: u16 = 2222;

fn require_ufw_lab() -> bool {
    require(Requirement::Netns)
        && require(Requirement::Tool("ufw"))
        && require(Requirement::Tool("nft"))
        && require(Requirement::Tool("iptables-nft-save"))
        && require(Requirement::Tool("unshare"))
        && require(Requirement::Tool("/usr/bin/python3"))
}

fn listen(ns: &Ns, port: u16) -> Daemon {
    common::start_listening(
        ns,
        "/usr/bin/python3",
        &[
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            DEV,
            "--directory",
            "/",
        ],
        &format!("{DEV}:{port}"),
    )
}

/// Whether a TCP connection from `client` to the dev host's `port` opens.
fn connects(client: &Ns, port: u16) -> bool {
    let address = SocketAddr::new(DEV.parse().expect("address"), port);
    client
        .enter(move || TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok())
        .expect("enter the client's namespace")
}

/// The lab: a dev host configured by `configure` (ufw commands), listening
/// on the three ports, an admin client and an outside client. Returns the
/// audit of the dev host and what really connected, per port and client.
fn audit_ufw_host(configure: &[&[&str]]) -> (serde_json::Value, Vec<(u16, &'static str, bool)>) {
    let mut lab = Lab::new().expect("lab");
    let dev = lab.add_host("ufw", &["198.18.20.5/16"]).expect("dev host");
    let admin = lab.add_host("adm", &["198.18.99.1/16"]).expect("admin");
    let outside = lab.add_host("out", &["198.18.50.1/16"]).expect("outside");
    let dir = tempfile::tempdir().expect("tempdir");
    private_ufw_config(dir.path());
    for args in configure {
        ufw(&dev, dir.path(), args);
    }
    ufw(&dev, dir.path(), &["--force", "enable"]);
    let _servers = [
        listen(&dev, LIMITED),
        listen(&dev, PUBLIC),
        listen(&dev, UNNAMED),
    ];

    let mut connected = Vec::new();
    for port in [LIMITED, PUBLIC, UNNAMED] {
        for (client, name) in [(&admin, ADMIN), (&outside, OUTSIDE)] {
            connected.push((port, name, connects(client, port)));
        }
    }

    let inventory = dir.path().join("perimeter.toml");
    std::fs::write(&inventory, INVENTORY).expect("write");
    let approvals = dir.path().join("approvals.toml");
    std::fs::write(&approvals, "version = 1\n").expect("write");
    let (_, doc) = common::audit_json(
        Some(&dev),
        &approvals,
        &[
            "--no-service-probes",
            "--inventory",
            &inventory.to_string_lossy(),
        ],
    );
    (doc, connected)
}

/// Every listener's `reachable_from` agrees with the real connections, and
/// decides every source.
fn assert_reachability_matches(doc: &serde_json::Value, connected: &[(u16, &str, bool)]) {
    for &(port, client, really) in connected {
        let listener = common::listener(doc, port);
        let reach = &listener["reachable_from"];
        assert_eq!(
            reach["unknown"].as_array().map_or(0, Vec::len),
            0,
            "port {port}: {reach:#}"
        );
        assert_eq!(
            common::in_prefixes(&reach["allowed"], client),
            really,
            "port {port} from {client}: perimeter says {reach:#}, a real connection {}",
            if really { "opened" } else { "did not open" }
        );
    }
}

#[test]
fn ufw_default_deny_reads_right() {
    if !require_ufw_lab() {
        return;
    }
    let (doc, connected) = audit_ufw_host(&[
        &["default", "deny", "incoming"],
        &[
            "allow",
            "from",
            "198.18.99.0/24",
            "to",
            "any",
            "port",
            "8080",
        ],
        &["allow", "443"],
    ]);
    // The oracle first: ufw does what it was told.
    assert_eq!(
        connected,
        vec![
            (LIMITED, ADMIN, true),
            (LIMITED, OUTSIDE, false),
            (PUBLIC, ADMIN, true),
            (PUBLIC, OUTSIDE, true),
            (UNNAMED, ADMIN, false),
            (UNNAMED, OUTSIDE, false),
        ]
    );
    assert_reachability_matches(&doc, &connected);
    assert_eq!(
        common::listener(&doc, LIMITED)["reachable_from"]["allowed"],
        serde_json::json!(["198.18.99.0/24"])
    );

    let public = common::rules_about(&doc, &[&format!("{DEV}:{PUBLIC}")]);
    assert!(public.contains(&"env.dev-open".to_owned()), "{public:?}");
    let limited = common::rules_about(&doc, &[&format!("{DEV}:{LIMITED}")]);
    assert!(
        !limited.iter().any(|r| r.starts_with("env.")),
        "{limited:?}"
    );
    let unnamed = common::rules_about(&doc, &[&format!("{DEV}:{UNNAMED}")]);
    assert!(
        !unnamed.iter().any(|r| r.starts_with("env.")),
        "{unnamed:?}"
    );
    assert!(
        common::finding(&doc, "firewall.none", "netns").is_none(),
        "{doc:#}"
    );
}

#[test]
fn ufw_default_allow_is_firewall_none() {
    if !require_ufw_lab() {
        return;
    }
    let (doc, connected) = audit_ufw_host(&[
        &["default", "allow", "incoming"],
        &[
            "allow",
            "from",
            "198.18.99.0/24",
            "to",
            "any",
            "port",
            "8080",
        ],
        &["allow", "443"],
    ]);
    assert!(
        connected.iter().all(|&(_, _, really)| really),
        "{connected:?}"
    );
    assert_reachability_matches(&doc, &connected);
    let finding = common::finding(&doc, "firewall.none", "netns")
        .unwrap_or_else(|| panic!("ufw's default allow lets every connection in: {doc:#}"));
    assert!(
        finding["evidence"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|line| line.as_str().unwrap_or("").contains("ufw-track-input")),
        "{finding:#}"
    );
    let unnamed = common::rules_about(&doc, &[&format!("{DEV}:{UNNAMED}")]);
    assert!(unnamed.contains(&"env.dev-open".to_owned()), "{unnamed:?}");
}
