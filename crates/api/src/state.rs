//! A host's state as agents report it and the server stores it: every listener
//! with who holds it, and the audit's findings. Listeners are kept sorted by
//! their key (namespace, protocol, address, port), so two states of the same
//! host compare, diff and hash the same way on both ends.

use std::collections::{BTreeMap, BTreeSet};

use perimeter_model::{Finding, HostSnapshot};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A host's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostState {
    pub hostname: String,
    pub listeners: Vec<ListenerDoc>,
    pub findings: Vec<FindingDoc>,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerDoc {
    /// `host`, or the name of the network namespace.
    pub netns: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub address: String,
    pub port: u16,
    /// `loopback`, `link-local`, `private`, `public`, `wildcard`.
    pub scope: String,
    /// The processes holding it, in pid order; empty for a socket no process
    /// holds (or none could be seen).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<OwnerDoc>,
}

/// A process holding a listener.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerDoc {
    pub pid: u32,
    /// The process's name (its executable's file name, or comm).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// The package that installed the executable (`name` or `name:arch`);
    /// `None` when no package owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    pub user: String,
}

/// A finding of the host's audit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingDoc {
    pub rule: String,
    pub severity: String,
    pub subject: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remedy: String,
}

/// What changed between two states.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDelta {
    /// Listeners that are new or whose owners changed, in full.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upsert: Vec<ListenerDoc>,
    /// Listeners gone, by key (their owners are left empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<ListenerDoc>,
    /// The whole list of findings, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<Vec<FindingDoc>>,
}

impl StateDelta {
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty() && self.findings.is_none()
    }
}

/// A listener's identity within a host: what survives a restart of its
/// process.
pub type ListenerKey = (String, String, String, u16);

impl ListenerDoc {
    pub fn key(&self) -> ListenerKey {
        (
            self.netns.clone(),
            self.protocol.clone(),
            self.address.clone(),
            self.port,
        )
    }

    /// Whether it listens beyond loopback.
    pub fn is_exposed(&self) -> bool {
        self.scope != "loopback"
    }

    /// `tcp 0.0.0.0:6379`, `udp [::]:53`.
    pub fn endpoint(&self) -> String {
        if self.address.contains(':') {
            format!("{} [{}]:{}", self.protocol, self.address, self.port)
        } else {
            format!("{} {}:{}", self.protocol, self.address, self.port)
        }
    }
}

impl HostState {
    /// The state of an audit: every listener (loopback included) and every
    /// finding, in a canonical order.
    pub fn from_audit(snapshot: &HostSnapshot, findings: &[Finding]) -> HostState {
        let listeners = snapshot
            .listeners
            .iter()
            .map(|listener| ListenerDoc {
                netns: listener.netns.name.clone(),
                protocol: listener.protocol.as_str().to_owned(),
                address: listener.address.to_string(),
                port: listener.port,
                scope: listener.scope.as_str().to_owned(),
                owners: snapshot
                    .owners_of(listener)
                    .map(|process| OwnerDoc {
                        pid: process.pid,
                        name: process.name(),
                        exe: process.exe.as_ref().map(|exe| exe.display().to_string()),
                        package: process.ownership.package().map(ToString::to_string),
                        user: process.user_name(),
                    })
                    .collect(),
            })
            .collect();
        let findings = findings
            .iter()
            .map(|finding| FindingDoc {
                rule: finding.rule.clone(),
                severity: finding.severity.as_str().to_owned(),
                subject: finding.subject.clone(),
                message: finding.message.clone(),
                evidence: finding.evidence.clone(),
                remedy: finding.remedy.clone(),
            })
            .collect();
        let mut state = HostState {
            hostname: snapshot.hostname.clone(),
            listeners,
            findings,
        };
        state.canonicalise();
        state
    }

    /// Sorts listeners and findings and drops listeners repeated under one key
    /// (keeping the first), so equal states are equal values.
    pub fn canonicalise(&mut self) {
        for listener in &mut self.listeners {
            listener.owners.sort();
            listener.owners.dedup();
        }
        self.listeners.sort();
        let mut seen = BTreeSet::new();
        self.listeners
            .retain(|listener| seen.insert(listener.key()));
        self.findings.sort();
        self.findings.dedup();
    }

    /// SHA-256 of the canonical JSON, hex.
    pub fn digest(&self) -> String {
        let mut canonical = self.clone();
        canonical.canonicalise();
        let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    /// What turns `self` into `next` (hostname changes travel with the report).
    pub fn delta_to(&self, next: &HostState) -> StateDelta {
        let before: BTreeMap<ListenerKey, &ListenerDoc> =
            self.listeners.iter().map(|l| (l.key(), l)).collect();
        let after: BTreeMap<ListenerKey, &ListenerDoc> =
            next.listeners.iter().map(|l| (l.key(), l)).collect();
        let upsert = after
            .iter()
            .filter(|(key, listener)| before.get(*key) != Some(*listener))
            .map(|(_, listener)| (*listener).clone())
            .collect();
        let remove = before
            .iter()
            .filter(|(key, _)| !after.contains_key(*key))
            .map(|(_, listener)| ListenerDoc {
                owners: Vec::new(),
                ..(*listener).clone()
            })
            .collect();
        let findings = (self.findings != next.findings).then(|| next.findings.clone());
        StateDelta {
            upsert,
            remove,
            findings,
        }
    }

    /// The state after `delta`, under `hostname`.
    pub fn apply(&self, delta: &StateDelta, hostname: &str) -> HostState {
        let mut listeners: BTreeMap<ListenerKey, ListenerDoc> = self
            .listeners
            .iter()
            .map(|l| (l.key(), l.clone()))
            .collect();
        for gone in &delta.remove {
            listeners.remove(&gone.key());
        }
        for listener in &delta.upsert {
            listeners.insert(listener.key(), listener.clone());
        }
        let mut state = HostState {
            hostname: hostname.to_owned(),
            listeners: listeners.into_values().collect(),
            findings: delta
                .findings
                .clone()
                .unwrap_or_else(|| self.findings.clone()),
        };
        state.canonicalise();
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn listener(port: u16, pid: u32) -> ListenerDoc {
        ListenerDoc {
            netns: "host".into(),
            protocol: "tcp".into(),
            address: "0.0.0.0".into(),
            port,
            scope: "wildcard".into(),
            owners: vec![OwnerDoc {
                pid,
                name: "redis-server".into(),
                exe: Some("/usr/bin/redis-server".into()),
                package: Some("redis-server".into()),
                user: "redis".into(),
            }],
        }
    }

    fn state(listeners: Vec<ListenerDoc>) -> HostState {
        let mut state = HostState {
            hostname: "h".into(),
            listeners,
            findings: Vec::new(),
        };
        state.canonicalise();
        state
    }

    #[test]
    fn a_restarted_process_is_an_upsert_and_a_gone_port_a_removal() {
        let before = state(vec![listener(6379, 10), listener(22, 5)]);
        let after = state(vec![listener(6379, 11), listener(8080, 12)]);
        let delta = before.delta_to(&after);
        assert_eq!(
            delta.upsert.iter().map(|l| l.port).collect::<Vec<_>>(),
            [6379, 8080]
        );
        assert_eq!(
            delta.remove.iter().map(|l| l.port).collect::<Vec<_>>(),
            [22]
        );
        assert!(delta.findings.is_none());
        assert_eq!(before.apply(&delta, "h"), after);
        assert!(after.delta_to(&after).is_empty());
    }

    proptest! {
        #[test]
        fn applying_the_delta_gives_the_next_state(
            a in proptest::collection::vec((1u16..40, 1u32..4), 0..20),
            b in proptest::collection::vec((1u16..40, 1u32..4), 0..20),
        ) {
            let before = state(a.into_iter().map(|(p, pid)| listener(p, pid)).collect());
            let after = state(b.into_iter().map(|(p, pid)| listener(p, pid)).collect());
            let delta = before.delta_to(&after);
            prop_assert_eq!(before.apply(&delta, "h").digest(), after.digest());
            prop_assert_eq!(before.apply(&delta, "h"), after);
        }
    }
}
