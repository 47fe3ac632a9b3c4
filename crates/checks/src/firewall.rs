//! Firewall rule: `firewall.none`, per audited network namespace.

use perimeter_model::{Finding, FirewallVerdict, HostSnapshot, Severity};

use crate::rules::FIREWALL_NONE;

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

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use perimeter_model::{Netns, NetnsFacts};

    use super::*;
    use crate::fixtures::{listener, render, snapshot};

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
}
