//! Environment rules on a host's own view: `env.dev-open`,
//! `env.prod-unexpected-port`, `firewall.allows-any`, `env.expired` and
//! `env.shared-host`, from the environments file, the host's addresses and the local
//! firewall reachability of each listener.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use perimeter_model::{
    EnvKind, Environment, Finding, HostSnapshot, Listener, PortResult, PortState, Reach, Severity,
};

use crate::rules::{
    ENV_DEV_OPEN, ENV_DEV_REACHABLE, ENV_EXPIRED, ENV_PROD_UNEXPECTED_PORT, ENV_SHARED_HOST,
    ENV_UNKNOWN_HOST, FIREWALL_ALLOWS_ANY,
};
use crate::{CheckConfig, listener_subject};
use perimeter_model::addrset::{covers_family, subtract_nets};

/// The environments a namespace's non-loopback addresses fall in.
fn namespace_environments<'a>(
    snapshot: &HostSnapshot,
    config: &'a CheckConfig,
    netns: u64,
) -> Vec<&'a Environment> {
    let mut found: Vec<&Environment> = Vec::new();
    if let Some(ns) = snapshot.namespace(netns) {
        for interface in &ns.interfaces {
            if interface.address.is_loopback() {
                continue;
            }
            if let Some(env) = config.environments.environment_of(interface.address)
                && !found.iter().any(|e| e.name == env.name)
            {
                found.push(env);
            }
        }
    }
    found
}

/// The environment a listener belongs to: `--env` when given, else the one
/// holding its bind address, else (wildcard) the one holding the namespace's
/// addresses when that is unambiguous.
fn environment_of<'a>(
    snapshot: &HostSnapshot,
    config: &'a CheckConfig,
    listener: &Listener,
) -> Option<&'a Environment> {
    if let Some(name) = &config.forced_env {
        return config.environments.by_name(name);
    }
    if !listener.address.is_unspecified()
        && let Some(env) = config.environments.environment_of(listener.address)
    {
        return Some(env);
    }
    match namespace_environments(snapshot, config, listener.netns.inode).as_slice() {
        [only] => Some(*only),
        _ => None,
    }
}

fn show(nets: &[IpNet]) -> String {
    let mut shown: Vec<String> = nets.iter().take(4).map(ToString::to_string).collect();
    if nets.len() > 4 {
        shown.push(format!("and {} more", nets.len() - 4));
    }
    shown.join(", ")
}

/// Source prefixes beyond `allow_from` that the firewall lets through, and
/// those it might (rules we cannot evaluate).
fn beyond(
    reach: &perimeter_model::Reach,
    allow_from: &[IpNet],
) -> (Vec<IpNet>, Vec<(IpNet, String)>) {
    let allowed = subtract_nets(&reach.allowed, allow_from);
    let unknown = reach
        .unknown
        .iter()
        .filter(|(net, _)| !subtract_nets(&[*net], allow_from).is_empty())
        .cloned()
        .collect();
    (allowed, unknown)
}

pub(crate) fn check(snapshot: &HostSnapshot, config: &CheckConfig) -> Vec<Finding> {
    if config.environments.is_empty() {
        return Vec::new();
    }
    let mut findings = Vec::new();
    for (listener, reach, subject) in judged(snapshot) {
        let Some(env) = environment_of(snapshot, config, listener) else {
            continue;
        };
        let (outside, unknown) = beyond(reach, &env.allow_from);
        let public = env.public_ports.contains(&listener.port);
        let from_anywhere = covers_family(&reach.allowed, listener.address);

        if env.kind.is_restricted() && (!outside.is_empty() || !unknown.is_empty()) {
            let decided = !outside.is_empty();
            let mut finding = Finding::new(
                ENV_DEV_OPEN,
                if decided { Severity::High } else { Severity::Low },
                &subject,
                if decided {
                    format!(
                        "{} environment `{}`: {} is reachable from {} beyond allow_from",
                        env.kind,
                        env.name,
                        listener.endpoint(),
                        if from_anywhere { "anywhere".to_owned() } else { show(&outside) }
                    )
                } else {
                    format!(
                        "{} environment `{}`: perimeter could not decide whether {} is reachable beyond allow_from",
                        env.kind,
                        env.name,
                        listener.endpoint()
                    )
                },
            )
            .with_evidence(format!("allow_from: {}", show(&env.allow_from)));
            for (net, why) in unknown.iter().take(3) {
                finding = finding.with_evidence(format!("unknown for {net}: {why}"));
            }
            for line in reach.evidence.iter().take(4) {
                finding = finding.with_evidence(line.clone());
            }
            findings.push(finding.with_remedy(format!(
                "accept this port only from {} in the input chain (and drop the rest), or bind the service to loopback",
                show(&env.allow_from)
            )));
        }

        if env.kind == EnvKind::Prod && !public && !outside.is_empty() {
            let mut finding = Finding::new(
                ENV_PROD_UNEXPECTED_PORT,
                Severity::High,
                &subject,
                format!(
                    "prod environment `{}`: port {} is reachable from {} but is not in public_ports",
                    env.name,
                    listener.port,
                    if from_anywhere { "anywhere".to_owned() } else { show(&outside) }
                ),
            )
            .with_evidence(format!("public_ports: {:?}", env.public_ports))
            .with_evidence(format!("allow_from: {}", show(&env.allow_from)));
            for line in reach.evidence.iter().take(4) {
                finding = finding.with_evidence(line.clone());
            }
            findings.push(finding.with_remedy(
                "restrict the port to allow_from in the firewall, or add it to public_ports if it is meant to be public",
            ));
        }

        if !public && !reach.unrestricted_accepts.is_empty() {
            let mut finding = Finding::new(
                FIREWALL_ALLOWS_ANY,
                Severity::Medium,
                &subject,
                format!(
                    "an accept rule with no source restriction lets anyone reach {} (not a public port of `{}`)",
                    listener.endpoint(),
                    env.name
                ),
            );
            for rule in reach.unrestricted_accepts.iter().take(3) {
                finding = finding.with_evidence(format!("rule: {rule}"));
            }
            findings
                .push(finding.with_remedy("add a source match (ip saddr @allowed) to the rule"));
        }
    }
    findings.extend(host_findings(snapshot, config));
    findings
}

/// What the environment rules judge: each listener beyond loopback whose
/// reach is known. A port a DNAT forwards with nothing on the host listening
/// (Docker without its userland proxy, a port forwarded to a VM) is among
/// them as the listener it stands for ([`HostSnapshot::published`]): to the
/// network it is a port of the host, reached as the forward path allows.
fn judged(snapshot: &HostSnapshot) -> Vec<(&Listener, &Reach, String)> {
    snapshot
        .listeners
        .iter()
        .filter(|l| l.scope.is_exposed())
        .filter_map(|l| {
            let reach = snapshot.reach_of(l)?;
            Some((l, reach, listener_subject(snapshot, l)))
        })
        .collect()
}

/// Findings about the host as a whole: it belongs to an expired experiment, or
/// it carries addresses of environments of different kinds.
fn host_findings(snapshot: &HostSnapshot, config: &CheckConfig) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut envs: BTreeMap<String, &Environment> = BTreeMap::new();
    let mut addresses: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    if let Some(name) = &config.forced_env
        && let Some(env) = config.environments.by_name(name)
    {
        envs.insert(env.name.clone(), env);
    }
    for ns in &snapshot.namespaces {
        for interface in &ns.interfaces {
            if let Some(env) = config.environments.environment_of(interface.address) {
                envs.insert(env.name.clone(), env);
                addresses
                    .entry(env.name.clone())
                    .or_default()
                    .push(interface.address);
            }
        }
    }
    let subject = format!("host {}", snapshot.hostname);
    for env in envs.values() {
        if env.kind != EnvKind::Experiment {
            continue;
        }
        let Some(days) = env.days_overdue(config.today).filter(|d| *d > 0) else {
            continue;
        };
        findings.push(
            Finding::new(
                ENV_EXPIRED,
                Severity::High,
                &subject,
                format!(
                    "experiment `{}` expired on {} ({days} days ago) and this host still reports",
                    env.name,
                    env.expires.map(|d| d.to_string()).unwrap_or_default()
                ),
            )
            .with_evidence(format!(
                "addresses in {}: {}",
                env.name,
                addresses
                    .get(&env.name)
                    .map(|a| a
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_else(|| "(--env)".into())
            ))
            .with_evidence(format!(
                "owner: {}",
                env.owner.as_deref().unwrap_or("(none)")
            ))
            .with_remedy(
                "tear the experiment down, or extend `expires` in the inventory with a reason",
            ),
        );
    }
    let kinds: Vec<(&str, EnvKind)> = envs.values().map(|e| (e.name.as_str(), e.kind)).collect();
    let prod = kinds.iter().any(|(_, k)| *k == EnvKind::Prod);
    let restricted = kinds.iter().any(|(_, k)| k.is_restricted());
    if prod && restricted {
        let names: Vec<String> = kinds.iter().map(|(n, k)| format!("{n} ({k})")).collect();
        findings.push(
            Finding::new(
                ENV_SHARED_HOST,
                Severity::High,
                &subject,
                format!(
                    "this host is in production and development at once: {}",
                    names.join(", ")
                ),
            )
            .with_remedy("separate production and development onto different hosts"),
        );
    }
    findings
}

/// `perimeter verify`'s judgement: the environment findings for the open
/// results of a scan made from `vantage` (the scanner's own addresses), as
/// (result index, finding). A scanner with any address in an environment's
/// `allow_from` counts as allowed; with no known address it is outside.
pub fn verify_findings<'a>(
    results: &[PortResult],
    vantage: &[IpAddr],
    today: time::Date,
    environment_of: impl Fn(IpAddr) -> Option<&'a Environment>,
) -> Vec<(usize, Finding)> {
    let mut findings = Vec::new();
    let mut hosts_done: BTreeSet<IpAddr> = BTreeSet::new();
    let from = if vantage.is_empty() {
        "this scanner".to_owned()
    } else {
        vantage
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (idx, result) in results.iter().enumerate() {
        if result.state != PortState::Open {
            continue;
        }
        let subject = match result.address {
            IpAddr::V6(v6) => format!("[{v6}]:{}", result.port),
            v4 => format!("{v4}:{}", result.port),
        };
        let Some(env) = environment_of(result.address) else {
            if hosts_done.insert(result.address) {
                findings.push((
                    idx,
                    Finding::new(
                        ENV_UNKNOWN_HOST,
                        Severity::Medium,
                        &subject,
                        format!(
                            "{} answers but belongs to no environment of the inventory",
                            result.address
                        ),
                    )
                    .with_evidence(format!("tcp/{} open", result.port))
                    .with_remedy("add the host to an environment (and an owner), or take it down"),
                ));
            }
            continue;
        };
        // The scanner counts as allowed when any of its addresses is in
        // allow_from; with no known address it is treated as outside.
        let allowed = vantage.iter().any(|v| env.allows_source(*v));
        if env.kind.is_restricted() && !allowed {
            findings.push((
                idx,
                Finding::new(
                    ENV_DEV_REACHABLE,
                    Severity::High,
                    &subject,
                    format!(
                        "{} environment `{}`: {subject} answered {from}, which is outside allow_from",
                        env.kind, env.name
                    ),
                )
                .with_evidence(format!(
                    "allow_from: {}",
                    env.allow_from.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ))
                .with_remedy("firewall the host to allow_from only"),
            ));
        }
        if env.kind == EnvKind::Prod && !allowed && !env.public_ports.contains(&result.port) {
            findings.push((
                idx,
                Finding::new(
                    ENV_PROD_UNEXPECTED_PORT,
                    Severity::High,
                    &subject,
                    format!(
                        "prod environment `{}`: port {} answered {from} but is not in public_ports {:?}",
                        env.name, result.port, env.public_ports
                    ),
                )
                .with_remedy("close the port to the outside, or add it to public_ports if it is meant to be public"),
            ));
        }
        if env.kind == EnvKind::Experiment
            && let Some(days) = env.days_overdue(today).filter(|d| *d > 0)
            && hosts_done.insert(result.address)
        {
            findings.push((
                idx,
                Finding::new(
                    ENV_EXPIRED,
                    Severity::High,
                    &subject,
                    format!(
                        "experiment `{}` expired {days} days ago and {} still answers",
                        env.name, result.address
                    ),
                )
                .with_evidence(format!(
                    "expires: {}",
                    env.expires.map(|d| d.to_string()).unwrap_or_default()
                ))
                .with_evidence(format!(
                    "owner: {}",
                    env.owner.as_deref().unwrap_or("(none)")
                ))
                .with_remedy("tear the experiment down, or extend `expires` with a reason"),
            ));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use perimeter_model::{FirewallVerdict, Interface, Netns, NetnsFacts, Reach};

    use super::*;
    use crate::environments::{Environments, parse_environments};
    use crate::fixtures::{container, listener, render, snapshot};

    fn environments() -> Environments {
        parse_environments(
            r#"
[[environment]]
name = "prod"
kind = "prod"
ranges = ["203.0.113.0/24"]
public_ports = [443]
allow_from = ["198.51.100.0/24"]

[[environment]]
name = "dev"
kind = "dev"
ranges = ["192.0.2.0/26"]
allow_from = ["198.51.100.0/24"]

[[environment]]
name = "scratch"
kind = "experiment"
ranges = ["192.0.2.64/26"]
allow_from = ["198.51.100.0/24"]
expires = 2026-11-01
"#,
            std::path::Path::new("perimeter.toml"),
        )
        .expect("environments")
    }

    fn config() -> CheckConfig {
        let mut config = CheckConfig::new(time::macros::date!(2026 - 11 - 25));
        config.environments = environments();
        config
    }

    /// The environment family's findings about `snapshot` under `config`,
    /// worst first.
    fn check(snapshot: &HostSnapshot, config: &CheckConfig, expect: Expect) {
        let mut findings = super::check(snapshot, config);
        crate::sort_findings(&mut findings);
        expect.assert_eq(&render(&findings));
    }

    fn host(addresses: &[&str], listeners: Vec<Listener>, reach: &[(u64, Reach)]) -> HostSnapshot {
        let mut snap = snapshot(listeners, vec![]);
        snap.namespaces.push(NetnsFacts {
            netns: Netns {
                inode: 1,
                name: "host".into(),
            },
            interfaces: addresses
                .iter()
                .map(|a| Interface {
                    name: "eth0".into(),
                    address: a.parse().expect("ip"),
                    prefix_len: 24,
                })
                .collect(),
            firewall: FirewallVerdict::Open { evidence: vec![] },
        });
        for (inode, r) in reach {
            snap.reach.insert((1, *inode), r.clone());
        }
        snap
    }

    fn reach(allowed: &[&str]) -> Reach {
        Reach {
            allowed: allowed.iter().map(|n| n.parse().expect("net")).collect(),
            ..Reach::default()
        }
    }

    #[test]
    fn dev_listener_open_to_the_world() {
        let l = listener("tcp", "0.0.0.0", 8080, &[]);
        let snap = host(
            &["192.0.2.10"],
            vec![l.clone()],
            &[(l.inode, reach(&["0.0.0.0/0"]))],
        );
        check(
            &snap,
            &config(),
            expect![[r#"
            high env.dev-open tcp 0.0.0.0:8080 (owner unknown)
              dev environment `dev`: tcp 0.0.0.0:8080 is reachable from anywhere beyond allow_from
              | allow_from: 198.51.100.0/24
        "#]],
        );
    }

    /// Docker without its userland proxy: nothing on the host listens on the
    /// published port, the kernel's DNAT answers. The environment rules judge
    /// it as the port of the host it is, by the forward path's reach.
    #[test]
    fn a_published_port_with_no_listener_is_a_port_of_the_host() {
        let mut snap = host(&["192.0.2.10"], vec![], &[]);
        let mut cache = container("ab12", "cache", "172.17.0.2", 1);
        let binding = perimeter_model::Binding {
            protocol: perimeter_model::Protocol::Tcp,
            host_ip: "0.0.0.0".parse().expect("address"),
            host_port: 6379,
            container_port: 6379,
        };
        cache.published = vec![binding.clone()];
        snap.containers = vec![cache];
        let mut open = snap.clone();
        crate::fixtures::publish(
            &mut open,
            binding.clone(),
            "172.17.0.2:6379",
            Some(0),
            reach(&["0.0.0.0/0"]),
        );
        check(
            &open,
            &config(),
            expect![[r#"
            high env.dev-open tcp 0.0.0.0:6379 published by container cache (redis:7)
              dev environment `dev`: tcp 0.0.0.0:6379 is reachable from anywhere beyond allow_from
              | allow_from: 198.51.100.0/24
        "#]],
        );
        // Published to allow_from only (a DOCKER-USER rule): quiet.
        crate::fixtures::publish(
            &mut snap,
            binding,
            "172.17.0.2:6379",
            Some(0),
            reach(&["198.51.100.0/24"]),
        );
        check(
            &snap,
            &config(),
            expect![[r#"
            no findings
        "#]],
        );
    }

    #[test]
    fn dev_listener_limited_to_allow_from_is_fine() {
        let l = listener("tcp", "192.0.2.10", 8080, &[]);
        let snap = host(
            &["192.0.2.10"],
            vec![l.clone()],
            &[(l.inode, reach(&["198.51.100.0/25"]))],
        );
        check(
            &snap,
            &config(),
            expect![[r#"
            no findings
        "#]],
        );
        let snap = host(
            &["192.0.2.10"],
            vec![l.clone()],
            &[(l.inode, reach(&["198.51.100.0/24", "10.9.0.0/16"]))],
        );
        check(
            &snap,
            &config(),
            expect![[r#"
            high env.dev-open tcp 192.0.2.10:8080 (owner unknown)
              dev environment `dev`: tcp 192.0.2.10:8080 is reachable from 10.9.0.0/16 beyond allow_from
              | allow_from: 198.51.100.0/24
        "#]],
        );
    }

    #[test]
    fn dev_listener_the_firewall_cannot_decide_is_low() {
        let l = listener("tcp", "192.0.2.10", 9090, &[]);
        let mut undecided = reach(&["198.51.100.0/24"]);
        undecided.unknown.push((
            "0.0.0.0/0".parse().expect("net"),
            "rule handle 9 matches on a socket mark".into(),
        ));
        undecided
            .evidence
            .push("nftables: inet filter input (priority 0): ...".into());
        let snap = host(&["192.0.2.10"], vec![l.clone()], &[(l.inode, undecided)]);
        check(
            &snap,
            &config(),
            expect![[r#"
            low env.dev-open tcp 192.0.2.10:9090 (owner unknown)
              dev environment `dev`: perimeter could not decide whether tcp 192.0.2.10:9090 is reachable beyond allow_from
              | allow_from: 198.51.100.0/24
              | unknown for 0.0.0.0/0: rule handle 9 matches on a socket mark
              | nftables: inet filter input (priority 0): ...
        "#]],
        );
    }

    #[test]
    fn prod_ports_public_and_unexpected() {
        let web = listener("tcp", "203.0.113.5", 443, &[]);
        let admin = listener("tcp", "203.0.113.5", 8443, &[]);
        let mut open = reach(&["0.0.0.0/0"]);
        open.unrestricted_accepts
            .push("tcp dport { 443, 8443 } accept".into());
        let snap = host(
            &["203.0.113.5"],
            vec![web.clone(), admin.clone()],
            &[(web.inode, open.clone()), (admin.inode, open)],
        );
        check(
            &snap,
            &config(),
            expect![[r#"
            high env.prod-unexpected-port tcp 203.0.113.5:8443 (owner unknown)
              prod environment `prod`: port 8443 is reachable from anywhere but is not in public_ports
              | public_ports: [443]
              | allow_from: 198.51.100.0/24
            medium firewall.allows-any tcp 203.0.113.5:8443 (owner unknown)
              an accept rule with no source restriction lets anyone reach tcp 203.0.113.5:8443 (not a public port of `prod`)
              | rule: tcp dport { 443, 8443 } accept
        "#]],
        );
    }

    #[test]
    fn expired_experiment_and_shared_host() {
        let snap = host(&["192.0.2.70", "203.0.113.9"], vec![], &[]);
        check(
            &snap,
            &config(),
            expect![[r#"
            high env.expired host testhost
              experiment `scratch` expired on 2026-11-01 (24 days ago) and this host still reports
              | addresses in scratch: 192.0.2.70
              | owner: (none)
            high env.shared-host host testhost
              this host is in production and development at once: prod (prod), scratch (experiment)
        "#]],
        );
    }

    #[test]
    fn forced_env_overrides_the_addresses() {
        // `--env scratch` on a host whose addresses say nothing: the
        // experiment still expired, and its listener is judged as scratch's.
        let l = listener("tcp", "0.0.0.0", 8080, &[]);
        let snap = host(
            &["10.1.2.3"],
            vec![l.clone()],
            &[(l.inode, reach(&["10.0.0.0/8"]))],
        );
        let mut config = config();
        config.forced_env = Some("scratch".into());
        check(
            &snap,
            &config,
            expect![[r#"
            high env.dev-open tcp 0.0.0.0:8080 (owner unknown)
              experiment environment `scratch`: tcp 0.0.0.0:8080 is reachable from 10.0.0.0/8 beyond allow_from
              | allow_from: 198.51.100.0/24
            high env.expired host testhost
              experiment `scratch` expired on 2026-11-01 (24 days ago) and this host still reports
              | addresses in scratch: (--env)
              | owner: (none)
        "#]],
        );
    }

    #[test]
    fn no_environments_no_env_findings() {
        let l = listener("tcp", "0.0.0.0", 8080, &[]);
        let snap = host(
            &["192.0.2.10"],
            vec![l.clone()],
            &[(l.inode, reach(&["0.0.0.0/0"]))],
        );
        check(
            &snap,
            &CheckConfig::new(time::macros::date!(2026 - 11 - 25)),
            expect![[r#"
                no findings
            "#]],
        );
    }
}

#[cfg(test)]
mod verify_tests {
    use expect_test::{Expect, expect};
    use perimeter_model::{PortResult, PortState, Protocol};

    use super::*;
    use crate::environments::parse_environments;
    use crate::fixtures::render;

    fn open(address: &str, port: u16) -> PortResult {
        PortResult {
            address: address.parse().expect("ip"),
            port,
            protocol: Protocol::Tcp,
            state: PortState::Open,
            service: None,
            findings: vec![],
        }
    }

    /// `perimeter verify`'s findings for one scan seen from `vantage`, each
    /// after the port it is about.
    fn check(vantage: &[&str], expect: Expect) {
        let environments = parse_environments(
            r#"
[[environment]]
name = "prod"
kind = "prod"
ranges = ["198.18.10.0/24"]
public_ports = [443]
allow_from = ["198.18.99.0/24"]

[[environment]]
name = "dev"
kind = "dev"
ranges = ["198.18.20.0/24"]
allow_from = ["198.18.99.0/24"]

[[environment]]
name = "scratch"
kind = "experiment"
ranges = ["198.18.30.0/24"]
allow_from = ["198.18.99.0/24"]
expires = 2026-11-01
"#,
            std::path::Path::new("perimeter.toml"),
        )
        .expect("environments");
        let mut closed = open("198.18.20.5", 8081);
        closed.state = PortState::Closed;
        let results = vec![
            open("198.18.10.5", 443),
            open("198.18.10.5", 22),
            open("198.18.20.5", 8080),
            closed,
            open("198.18.30.5", 22),
            open("198.18.30.5", 80),
            open("198.18.40.5", 80),
            open("198.18.40.5", 81),
        ];
        let today = time::macros::date!(2026 - 11 - 25);
        let vantage: Vec<IpAddr> = vantage.iter().map(|v| v.parse().expect("ip")).collect();
        let findings = verify_findings(&results, &vantage, today, |a| {
            environments.environment_of(a)
        });
        let text: String = findings
            .iter()
            .map(|(idx, finding)| {
                let result = &results[*idx];
                format!(
                    "[{} tcp/{}] {}",
                    result.address,
                    result.port,
                    render(std::slice::from_ref(finding))
                )
            })
            .collect();
        expect.assert_eq(if text.is_empty() {
            "no findings\n"
        } else {
            &text
        });
    }

    #[test]
    fn policy_from_outside() {
        check(
            &["198.18.50.1"],
            expect![[r#"
            [198.18.10.5 tcp/22] high env.prod-unexpected-port 198.18.10.5:22
              prod environment `prod`: port 22 answered 198.18.50.1 but is not in public_ports [443]
            [198.18.20.5 tcp/8080] high env.dev-reachable 198.18.20.5:8080
              dev environment `dev`: 198.18.20.5:8080 answered 198.18.50.1, which is outside allow_from
              | allow_from: 198.18.99.0/24
            [198.18.30.5 tcp/22] high env.dev-reachable 198.18.30.5:22
              experiment environment `scratch`: 198.18.30.5:22 answered 198.18.50.1, which is outside allow_from
              | allow_from: 198.18.99.0/24
            [198.18.30.5 tcp/22] high env.expired 198.18.30.5:22
              experiment `scratch` expired 24 days ago and 198.18.30.5 still answers
              | expires: 2026-11-01
              | owner: (none)
            [198.18.30.5 tcp/80] high env.dev-reachable 198.18.30.5:80
              experiment environment `scratch`: 198.18.30.5:80 answered 198.18.50.1, which is outside allow_from
              | allow_from: 198.18.99.0/24
            [198.18.40.5 tcp/80] medium env.unknown-host 198.18.40.5:80
              198.18.40.5 answers but belongs to no environment of the inventory
              | tcp/80 open
        "#]],
        );
    }

    #[test]
    fn policy_from_inside() {
        // From the admin network, only what never depends on the vantage.
        check(
            &["198.18.99.7"],
            expect![[r#"
            [198.18.30.5 tcp/22] high env.expired 198.18.30.5:22
              experiment `scratch` expired 24 days ago and 198.18.30.5 still answers
              | expires: 2026-11-01
              | owner: (none)
            [198.18.40.5 tcp/80] medium env.unknown-host 198.18.40.5:80
              198.18.40.5 answers but belongs to no environment of the inventory
              | tcp/80 open
        "#]],
        );
    }

    #[test]
    fn a_scanner_without_a_known_address_is_outside() {
        check(
            &[],
            expect![[r#"
            [198.18.10.5 tcp/22] high env.prod-unexpected-port 198.18.10.5:22
              prod environment `prod`: port 22 answered this scanner but is not in public_ports [443]
            [198.18.20.5 tcp/8080] high env.dev-reachable 198.18.20.5:8080
              dev environment `dev`: 198.18.20.5:8080 answered this scanner, which is outside allow_from
              | allow_from: 198.18.99.0/24
            [198.18.30.5 tcp/22] high env.dev-reachable 198.18.30.5:22
              experiment environment `scratch`: 198.18.30.5:22 answered this scanner, which is outside allow_from
              | allow_from: 198.18.99.0/24
            [198.18.30.5 tcp/22] high env.expired 198.18.30.5:22
              experiment `scratch` expired 24 days ago and 198.18.30.5 still answers
              | expires: 2026-11-01
              | owner: (none)
            [198.18.30.5 tcp/80] high env.dev-reachable 198.18.30.5:80
              experiment environment `scratch`: 198.18.30.5:80 answered this scanner, which is outside allow_from
              | allow_from: 198.18.99.0/24
            [198.18.40.5 tcp/80] medium env.unknown-host 198.18.40.5:80
              198.18.40.5 answers but belongs to no environment of the inventory
              | tcp/80 open
        "#]],
        );
    }
}
