//! Firewall rules: `firewall.none`, per audited network namespace, and
//! `firewall.bypassed`, per listener whose port a DNAT publishes past the
//! input chain (Docker's `-p`).

use perimeter_model::addrset::{AddrFamily, AddrRanges};
use perimeter_model::{Finding, FirewallVerdict, HostSnapshot, Severity};

use crate::rules::{FIREWALL_BYPASSED, FIREWALL_NONE};

pub(crate) fn check(snapshot: &HostSnapshot) -> Vec<Finding> {
    let mut findings = Vec::new();
    for ns in &snapshot.namespaces {
        let FirewallVerdict::Open { evidence } = &ns.firewall else {
            continue;
        };
        let exposed: Vec<String> = snapshot
            .listeners
            .iter()
            .filter(|l| l.netns == ns.netns && l.scope.is_exposed())
            .map(|l| l.endpoint())
            .collect();
        // A namespace with nothing listening beyond loopback has nothing to
        // expose yet; the missing policy still matters for the next deploy.
        let severity = if exposed.is_empty() {
            Severity::Medium
        } else {
            Severity::High
        };
        let mut finding = Finding::new(
            FIREWALL_NONE,
            severity,
            format!("netns {}", ns.netns.name),
            format!(
                "netns {} has no default-deny inbound firewall policy{}",
                ns.netns.name,
                if exposed.is_empty() {
                    String::new()
                } else {
                    format!(" ({} listeners beyond loopback)", exposed.len())
                }
            ),
        );
        for line in evidence {
            finding = finding.with_evidence(line.clone());
        }
        findings.push(finding.with_remedy(
            "load a ruleset whose input chain has `policy drop` and accepts only approved ports (nftables: `type filter hook input priority 0; policy drop;`)",
        ));
    }
    findings
}

/// `firewall.bypassed`: a listener's port that the input path denies to some
/// sources, while a DNAT in nat prerouting sends their connections to
/// another address (a container) and the forward path lets them through.
/// `ufw status` says "deny", the port answers: the input chain is never
/// crossed.
pub(crate) fn bypassed(snapshot: &HostSnapshot) -> Vec<Finding> {
    let mut findings = Vec::new();
    // Listeners (a userland proxy holding the port, or any socket a DNAT
    // shadows), among them the ports a DNAT forwards that nothing on the host
    // listens on: only the kernel's DNAT answers them, and `ss` shows
    // nothing.
    for listener in snapshot.listeners.iter().filter(|l| l.scope.is_exposed()) {
        let Some(reach) = snapshot.reach_of(listener) else {
            continue;
        };
        let endpoint = listener.endpoint();
        let address = listener.address;
        let (protocol, port) = (listener.protocol, listener.port);
        let netns = Some(listener.netns.inode);
        let forwarded = snapshot.published_port(listener);
        let publisher = forwarded
            .and_then(|p| p.container)
            .and_then(|idx| snapshot.containers.get(idx));
        for path in reach
            .published
            .iter()
            .filter(|p| !p.input_denies.is_empty())
        {
            let family = AddrFamily::of(address);
            let via = path
                .oif
                .as_deref()
                .map_or_else(String::new, |oif| format!(" via {oif}"));
            let finding = Finding::new(
                FIREWALL_BYPASSED,
                Severity::High,
                &endpoint,
                format!(
                    "{endpoint} is published to {}{via} by a DNAT in nat prerouting and reachable from {} through the forward chains, though the input firewall denies it",
                    path.to,
                    sources(&path.input_denies, family),
                ),
            )
            .with_evidence(format!("{}: `{}`", path.chain, path.rule))
            .with_evidence(format!(
                "the forward path accepts {}; the input path alone denies {}",
                sources(&path.allowed, family),
                sources(&path.input_denies, family),
            ));
            // The container the DNAT sends to, when the runtime's state
            // names one with that address. Two daemons in two namespaces may
            // give their containers the same addresses: the DNAT read from
            // this namespace's ruleset sends to a container of the daemon
            // of this namespace (as `HostSnapshot::container_of` judges a
            // proxy), never to one of another daemon.
            let target: Option<std::net::IpAddr> = path
                .to
                .parse::<std::net::SocketAddr>()
                .map(|to| to.ip())
                .or_else(|_| path.to.parse())
                .ok();
            let behind = publisher.or_else(|| {
                target.and_then(|ip| {
                    snapshot.containers.iter().find(|c| {
                        c.running
                            && c.daemon_netns.is_none_or(|daemon| Some(daemon) == netns)
                            && c.addresses.contains(&ip)
                    })
                })
            });
            let finding = match behind {
                Some(container) => finding.with_evidence(format!(
                    "it reaches {}",
                    crate::container::container_subject(container)
                )),
                None => finding,
            };
            // Docker's chain, or a container of Docker's, whatever the
            // runtime's state says.
            let docker =
                behind.is_some_and(|c| c.runtime == "docker") || path.chain.ends_with(" DOCKER");
            let finding = match forwarded {
                Some(_) => finding.with_evidence(format!(
                    "no process on the host listens on it{}: only the kernel's DNAT answers, so `ss` lists nothing",
                    if docker { " (no userland proxy)" } else { "" }
                )),
                None => finding,
            };
            findings.push(finding.with_remedy(bypass_remedy(
                behind,
                docker,
                path.chain.starts_with("nftables:"),
                protocol,
                port,
                &path.rule,
            )));
        }
    }
    findings
}

/// How to close a published port to all but the sources meant to reach it,
/// in the words of whatever publishes it. The restriction names the client by
/// conntrack's original source: `! -s ALLOWED` in a forward chain would match
/// the replies too (their source is the address behind the host), and drop
/// every connection, the allowed ones included.
fn bypass_remedy(
    behind: Option<&perimeter_model::Container>,
    docker: bool,
    nft: bool,
    protocol: perimeter_model::Protocol,
    port: u16,
    rule: &str,
) -> String {
    let protocol = protocol.as_str();
    let forward_drop =
        format!("-p {protocol} -m conntrack --ctorigdstport {port} ! --ctorigsrc ALLOWED -j DROP");
    // A native nftables ruleset is fixed in its own words.
    let forward_rule = if nft {
        format!(
            "`nft insert rule inet filter forward meta l4proto {protocol} ct original proto-dst {port} ct original ip saddr != @allowed drop`"
        )
    } else {
        format!("`iptables -I FORWARD {forward_drop}`")
    };
    let input = "rules in INPUT (ufw, firewalld zones) never see these connections";
    match behind {
        _ if docker => format!(
            "publish the port on loopback only (`docker run -p 127.0.0.1:{port}:...`), or restrict its sources in the DOCKER-USER chain by the connection's original tuple (`iptables -I DOCKER-USER {forward_drop}`; `! -s ALLOWED` there would also drop the container's replies); {input}"
        ),
        Some(c) if c.pod.is_some() => format!(
            "remove the pod's hostPort and expose it through a Service, or restrict its sources in the forward chain by the connection's original tuple ({forward_rule}); {input}"
        ),
        Some(c) => format!(
            "publish the port on loopback only (`{} run -p 127.0.0.1:{port}:...`), or restrict its sources in the forward chain by the connection's original tuple ({forward_rule}); {input}",
            c.runtime
        ),
        None => format!(
            "give the DNAT rule a source match (`-s ALLOWED`, nft `ip saddr @allowed`) so it forwards only the sources meant to reach it (`{rule}`), or restrict them in the forward chain by the connection's original tuple ({forward_rule}); {input}"
        ),
    }
}

/// `every source`, or the prefixes.
fn sources(nets: &[ipnet::IpNet], family: AddrFamily) -> String {
    AddrRanges::from_nets(nets, family).describe(&AddrRanges::universe(family), family, 4)
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use perimeter_model::{Netns, NetnsFacts, PublishedPath, Reach};

    use super::*;
    use crate::fixtures::{container, listener, render, snapshot};

    /// The firewall family's findings about `snapshot`, worst first.
    fn check(snapshot: &HostSnapshot, expect: Expect) {
        let mut findings = super::check(snapshot);
        crate::sort_findings(&mut findings);
        expect.assert_eq(&render(&findings));
    }

    fn ns(name: &str, inode: u64, firewall: FirewallVerdict) -> NetnsFacts {
        NetnsFacts {
            netns: Netns {
                inode,
                name: name.into(),
            },
            interfaces: vec![],
            firewall,
        }
    }

    #[test]
    fn fires_on_open_only() {
        let mut snap = snapshot(
            vec![
                listener("tcp", "0.0.0.0", 80, &[]),
                listener("tcp", "127.0.0.1", 8080, &[]),
            ],
            vec![],
        );
        snap.namespaces = vec![
            ns(
                "host",
                1,
                FirewallVerdict::Open {
                    evidence: vec!["no input base chain".into()],
                },
            ),
            ns("lab", 2, FirewallVerdict::DefaultDeny { evidence: vec![] }),
            ns(
                "other",
                3,
                FirewallVerdict::Unknown("nft: permission denied".into()),
            ),
            ns("empty", 4, FirewallVerdict::Open { evidence: vec![] }),
        ];
        check(
            &snap,
            expect![[r#"
            high firewall.none netns host
              netns host has no default-deny inbound firewall policy (1 listeners beyond loopback)
              | no input base chain
            medium firewall.none netns empty
              netns empty has no default-deny inbound firewall policy
        "#]],
        );
    }

    fn bypass_check(snapshot: &HostSnapshot, expect: Expect) {
        let mut findings = super::bypassed(snapshot);
        crate::sort_findings(&mut findings);
        expect.assert_eq(&render(&findings));
    }

    fn path(to: &str, rule: &str, allowed: &[&str], input_denies: &[&str]) -> PublishedPath {
        let nets = |list: &[&str]| list.iter().map(|n| n.parse().expect("net")).collect();
        PublishedPath {
            chain: "iptables-nft: ip nat DOCKER".into(),
            rule: rule.into(),
            to: to.into(),
            oif: Some("docker0".into()),
            allowed: nets(allowed),
            input_denies: nets(input_denies),
        }
    }

    /// What `host::audit` makes of tests/fixtures/docker in the firewall
    /// crate (Docker's DNATs behind ufw's `default deny incoming`): the
    /// public port, the port DOCKER-USER restricts, and one published where
    /// the input path allows it too (nothing hidden: quiet).
    #[test]
    fn bypassed_fires_where_input_denies_what_forward_accepts() {
        let public = listener("tcp", "198.18.91.1", 6379, &[]);
        let restricted = listener("tcp", "0.0.0.0", 8080, &[]);
        let open_anyway = listener("tcp", "0.0.0.0", 8443, &[]);
        let loopback = listener("tcp", "127.0.0.1", 6380, &[]);
        let mut snap = snapshot(
            vec![
                public.clone(),
                restricted.clone(),
                open_anyway.clone(),
                loopback.clone(),
            ],
            vec![],
        );
        let reach = |path: PublishedPath| Reach {
            allowed: path.allowed.clone(),
            published: vec![path],
            ..Reach::default()
        };
        snap.reach.insert(
            (1, public.inode),
            reach(path(
                "198.18.90.2:6379",
                "-A DOCKER -d 198.18.91.1/32 ! -i docker0 -p tcp -m tcp --dport 6379 -j DNAT --to-destination 198.18.90.2:6379",
                &["0.0.0.0/0"],
                &["0.0.0.0/0"],
            )),
        );
        snap.reach.insert(
            (1, restricted.inode),
            reach(path(
                "198.18.90.4:80",
                "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.18.90.4:80",
                &["198.18.91.0/24"],
                &["198.18.91.0/24"],
            )),
        );
        snap.reach.insert(
            (1, open_anyway.inode),
            reach(path(
                "198.18.90.5:443",
                "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 198.18.90.5:443",
                &["0.0.0.0/0"],
                &[],
            )),
        );
        bypass_check(
            &snap,
            expect![[r#"
            high firewall.bypassed tcp 0.0.0.0:8080
              tcp 0.0.0.0:8080 is published to 198.18.90.4:80 via docker0 by a DNAT in nat prerouting and reachable from 198.18.91.0/24 through the forward chains, though the input firewall denies it
              | iptables-nft: ip nat DOCKER: `-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.18.90.4:80`
              | the forward path accepts 198.18.91.0/24; the input path alone denies 198.18.91.0/24
            high firewall.bypassed tcp 198.18.91.1:6379
              tcp 198.18.91.1:6379 is published to 198.18.90.2:6379 via docker0 by a DNAT in nat prerouting and reachable from every source through the forward chains, though the input firewall denies it
              | iptables-nft: ip nat DOCKER: `-A DOCKER -d 198.18.91.1/32 ! -i docker0 -p tcp -m tcp --dport 6379 -j DNAT --to-destination 198.18.90.2:6379`
              | the forward path accepts every source; the input path alone denies every source
        "#]],
        );
    }

    /// The remedy's DOCKER-USER rule names the finding's own port and the
    /// client by conntrack's original source: `! -s ALLOWED` would match the
    /// container's replies too and drop the allowed clients' connections
    /// with the rest (tests/docker.rs in the CLI runs this rule against
    /// real connections).
    #[test]
    fn bypassed_remedy_restricts_by_the_original_source() {
        let public = listener("tcp", "198.18.91.1", 6379, &[]);
        let mut snap = snapshot(vec![public.clone()], vec![]);
        let path = path(
            "198.18.90.2:6379",
            "-A DOCKER -d 198.18.91.1/32 ! -i docker0 -p tcp -m tcp --dport 6379 -j DNAT --to-destination 198.18.90.2:6379",
            &["0.0.0.0/0"],
            &["0.0.0.0/0"],
        );
        snap.reach.insert(
            (1, public.inode),
            Reach {
                allowed: path.allowed.clone(),
                published: vec![path],
                ..Reach::default()
            },
        );
        let remedies: Vec<String> = super::bypassed(&snap)
            .into_iter()
            .map(|finding| finding.remedy)
            .collect();
        assert_eq!(remedies.len(), 1, "{remedies:?}");
        assert!(
            remedies[0].contains(
                "`iptables -I DOCKER-USER -p tcp -m conntrack --ctorigdstport 6379 ! --ctorigsrc ALLOWED -j DROP`"
            ),
            "{remedies:?}"
        );
    }

    #[test]
    fn a_port_published_with_nothing_listening_on_the_host_is_judged_too() {
        let mut snap = snapshot(vec![], vec![]);
        snap.containers = vec![container("ab12", "cache", "198.18.90.2", 1)];
        let binding = perimeter_model::Binding {
            protocol: perimeter_model::Protocol::Tcp,
            host_ip: "0.0.0.0".parse().expect("address"),
            host_port: 6379,
            container_port: 6379,
        };
        let published = path(
            "198.18.90.2:6379",
            "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 6379 -j DNAT --to-destination 198.18.90.2:6379",
            &["0.0.0.0/0"],
            &["0.0.0.0/0"],
        );
        crate::fixtures::publish(
            &mut snap,
            binding,
            "198.18.90.2:6379",
            Some(0),
            Reach {
                allowed: published.allowed.clone(),
                published: vec![published],
                ..Reach::default()
            },
        );
        bypass_check(
            &snap,
            expect![[r#"
                high firewall.bypassed tcp 0.0.0.0:6379
                  tcp 0.0.0.0:6379 is published to 198.18.90.2:6379 via docker0 by a DNAT in nat prerouting and reachable from every source through the forward chains, though the input firewall denies it
                  | iptables-nft: ip nat DOCKER: `-A DOCKER ! -i docker0 -p tcp -m tcp --dport 6379 -j DNAT --to-destination 198.18.90.2:6379`
                  | the forward path accepts every source; the input path alone denies every source
                  | it reaches container cache (redis:7, ab1200000000)
                  | no process on the host listens on it (no userland proxy): only the kernel's DNAT answers, so `ss` lists nothing
            "#]],
        );
    }

    /// Two dockerds in two namespaces give their containers the same bridge
    /// address: the proxy of the second daemon's namespace is published to
    /// the second daemon's container, whichever comes first in the list.
    #[test]
    fn bypassed_names_the_container_of_the_listeners_own_daemon() {
        let mut proxy = listener("tcp", "0.0.0.0", 6379, &[]);
        proxy.netns = Netns {
            inode: 2,
            name: "lab-b".into(),
        };
        let mut snap = snapshot(vec![proxy.clone()], vec![]);
        snap.containers = vec![
            container("aa11", "cache-a", "198.18.90.2", 1),
            container("bb22", "cache-b", "198.18.90.2", 2),
        ];
        let published = path(
            "198.18.90.2:6379",
            "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 6379 -j DNAT --to-destination 198.18.90.2:6379",
            &["0.0.0.0/0"],
            &["0.0.0.0/0"],
        );
        snap.reach.insert(
            (2, proxy.inode),
            Reach {
                allowed: published.allowed.clone(),
                published: vec![published],
                ..Reach::default()
            },
        );
        bypass_check(
            &snap,
            expect![[r#"
                high firewall.bypassed tcp 0.0.0.0:6379
                  tcp 0.0.0.0:6379 is published to 198.18.90.2:6379 via docker0 by a DNAT in nat prerouting and reachable from every source through the forward chains, though the input firewall denies it
                  | iptables-nft: ip nat DOCKER: `-A DOCKER ! -i docker0 -p tcp -m tcp --dport 6379 -j DNAT --to-destination 198.18.90.2:6379`
                  | the forward path accepts every source; the input path alone denies every source
                  | it reaches container cache-b (redis:7, bb2200000000)
            "#]],
        );
        // The same listener in the first daemon's namespace reaches the
        // first daemon's container.
        let mut first = snap.clone();
        first.listeners[0].netns = Netns {
            inode: 1,
            name: "lab-a".into(),
        };
        let reach = first.reach.remove(&(2, proxy.inode)).expect("reach");
        first.reach.insert((1, proxy.inode), reach);
        bypass_check(
            &first,
            expect![[r#"
                high firewall.bypassed tcp 0.0.0.0:6379
                  tcp 0.0.0.0:6379 is published to 198.18.90.2:6379 via docker0 by a DNAT in nat prerouting and reachable from every source through the forward chains, though the input firewall denies it
                  | iptables-nft: ip nat DOCKER: `-A DOCKER ! -i docker0 -p tcp -m tcp --dport 6379 -j DNAT --to-destination 198.18.90.2:6379`
                  | the forward path accepts every source; the input path alone denies every source
                  | it reaches container cache-a (redis:7, aa1100000000)
            "#]],
        );
    }

    /// A port forwarded to a VM: no container has the address, nothing on
    /// the host listens. The finding says where it goes, and the remedy
    /// speaks of the DNAT rule, not of Docker.
    #[test]
    fn a_port_forwarded_to_a_vm_is_judged_with_the_rules_own_remedy() {
        let mut snap = snapshot(vec![], vec![]);
        let rule =
            "-A PREROUTING -p tcp -m tcp --dport 2222 -j DNAT --to-destination 198.18.5.2:22";
        let mut published = path("198.18.5.2:22", rule, &["0.0.0.0/0"], &["0.0.0.0/0"]);
        published.oif = Some("vmbr0".into());
        published.chain = "iptables-nft: ip nat PREROUTING".into();
        crate::fixtures::publish(
            &mut snap,
            perimeter_model::Binding {
                protocol: perimeter_model::Protocol::Tcp,
                host_ip: "0.0.0.0".parse().expect("address"),
                host_port: 2222,
                container_port: 22,
            },
            "198.18.5.2:22",
            None,
            Reach {
                allowed: published.allowed.clone(),
                published: vec![published],
                ..Reach::default()
            },
        );
        bypass_check(
            &snap,
            expect![[r#"
                high firewall.bypassed tcp 0.0.0.0:2222
                  tcp 0.0.0.0:2222 is published to 198.18.5.2:22 via vmbr0 by a DNAT in nat prerouting and reachable from every source through the forward chains, though the input firewall denies it
                  | iptables-nft: ip nat PREROUTING: `-A PREROUTING -p tcp -m tcp --dport 2222 -j DNAT --to-destination 198.18.5.2:22`
                  | the forward path accepts every source; the input path alone denies every source
                  | no process on the host listens on it: only the kernel's DNAT answers, so `ss` lists nothing
            "#]],
        );
        let findings = bypassed(&snap);
        let remedy = &findings[0].remedy;
        assert!(
            remedy.starts_with("give the DNAT rule a source match"),
            "{remedy}"
        );
        assert!(remedy.contains(rule), "{remedy}");
        assert_eq!(
            crate::listener_subject(&snap, &snap.listeners[0]),
            "tcp 0.0.0.0:2222 forwarded to 198.18.5.2:22"
        );
    }
}
