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
    /// Who the namespace's firewall lets through to it, as the agent's audit
    /// walked the ruleset; absent for a loopback listener, when the ruleset
    /// could not be read, and from agents that predate it. An agent sends it
    /// only to a server that accepts it ([`ACCEPTS_LISTENER_REACH`] in its
    /// `ReportAck`): older servers refuse a listener with fields they do not
    /// know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<ReachDoc>,
}

/// What a server names in `ReportAck.accepts` when it takes
/// [`ListenerDoc::reach`].
pub const ACCEPTS_LISTENER_REACH: &str = "listener.reach";

/// Whom a listener's firewall lets through (the audit's reachability walk).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReachDoc {
    /// Source prefixes let through (`0.0.0.0/0` and `::/0`: anywhere);
    /// empty when the firewall lets nobody through.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
    /// Source prefixes whose fate depends on a rule perimeter cannot
    /// evaluate, each with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undecided: Vec<UndecidedDoc>,
}

/// Sources the reachability walk could not decide.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UndecidedDoc {
    pub sources: String,
    pub reason: String,
}

impl ReachDoc {
    /// From the audit's reachability of one listener.
    pub fn from_reach(reach: &perimeter_model::Reach) -> ReachDoc {
        ReachDoc {
            allowed: reach.allowed.iter().map(ToString::to_string).collect(),
            undecided: reach
                .unknown
                .iter()
                .map(|(sources, reason)| UndecidedDoc {
                    sources: sources.to_string(),
                    reason: reason.clone(),
                })
                .collect(),
        }
    }

    /// Whether every source is let through (`0.0.0.0/0` or `::/0`).
    pub fn from_anywhere(&self) -> bool {
        self.allowed
            .iter()
            .any(|prefix| prefix == "0.0.0.0/0" || prefix == "::/0")
    }
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

    /// The key, borrowed: what [`ListenerDoc::key`] gives without a copy,
    /// and ordered the same way.
    pub fn key_ref(&self) -> (&str, &str, &str, u16) {
        (&self.netns, &self.protocol, &self.address, self.port)
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
                reach: snapshot.reach_of(listener).map(ReachDoc::from_reach),
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
            // A parsed list of one owner has room for four (serde grows it
            // so): on a host of thousands of listeners that is megabytes
            // held by a state kept for long (the agent's acknowledged one).
            listener.owners.shrink_to_fit();
        }
        self.listeners.sort();
        // The key is the first four fields of the order: listeners of one
        // key are next to each other, the first the least.
        self.listeners
            .dedup_by(|later, first| later.key_ref() == first.key_ref());
        self.findings.sort();
        self.findings.dedup();
    }

    /// Drops every listener's reach: what an agent sends a server that does
    /// not accept it.
    pub fn without_reach(mut self) -> HostState {
        for listener in &mut self.listeners {
            listener.reach = None;
        }
        self
    }

    /// Whether any listener carries its reach.
    pub fn has_reach(&self) -> bool {
        self.listeners
            .iter()
            .any(|listener| listener.reach.is_some())
    }

    /// Whether [`HostState::canonicalise`] would leave it as it is.
    pub fn is_canonical(&self) -> bool {
        // Sorted and without repeats: each strictly after the one before (a
        // key strictly after the previous key is a listener after it too).
        self.listeners
            .iter()
            .all(|listener| listener.owners.is_sorted_by(|a, b| a < b))
            && self
                .listeners
                .is_sorted_by(|a, b| a.key_ref() < b.key_ref())
            && self.findings.is_sorted_by(|a, b| a < b)
    }

    /// SHA-256 of the canonical JSON, hex.
    pub fn digest(&self) -> String {
        let mut hasher = HashWriter(Sha256::new());
        // The JSON goes straight into the hash; a state that is canonical
        // already (every stored one) is not copied first.
        let written = if self.is_canonical() {
            serde_json::to_writer(&mut hasher, self)
        } else {
            let mut canonical = self.clone();
            canonical.canonicalise();
            serde_json::to_writer(&mut hasher, &canonical)
        };
        if written.is_err() {
            // As `to_vec(..).unwrap_or_default()` did: the digest of nothing.
            // Serialising these types cannot fail (string keys, no maps).
            hasher = HashWriter(Sha256::new());
        }
        hex::encode(hasher.0.finalize())
    }

    /// What turns `self` into `next` (hostname changes travel with the report).
    pub fn delta_to(&self, next: &HostState) -> StateDelta {
        let before = self.listeners_by_key();
        let after = next.listeners_by_key();
        let mut upsert = Vec::new();
        let mut remove = Vec::new();
        // Both lists are sorted by key with one listener per key: walk them
        // side by side.
        let (mut before_iter, mut after_iter) =
            (before.into_iter().peekable(), after.into_iter().peekable());
        loop {
            match (before_iter.peek(), after_iter.peek()) {
                (None, None) => break,
                (Some(gone), None) => {
                    remove.push(removal(gone));
                    before_iter.next();
                }
                (None, Some(new)) => {
                    upsert.push(ListenerDoc::clone(new));
                    after_iter.next();
                }
                (Some(old), Some(new)) => match old.key_ref().cmp(&new.key_ref()) {
                    std::cmp::Ordering::Less => {
                        remove.push(removal(old));
                        before_iter.next();
                    }
                    std::cmp::Ordering::Greater => {
                        upsert.push(ListenerDoc::clone(new));
                        after_iter.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if old != new {
                            upsert.push(ListenerDoc::clone(new));
                        }
                        before_iter.next();
                        after_iter.next();
                    }
                },
            }
        }
        let findings = (self.findings != next.findings).then(|| next.findings.clone());
        StateDelta {
            upsert,
            remove,
            findings,
        }
    }

    /// The listeners sorted by key, one per key (the last of a key, as a map
    /// keyed by it would keep).
    fn listeners_by_key(&self) -> Vec<&ListenerDoc> {
        if self
            .listeners
            .is_sorted_by(|a, b| a.key_ref() < b.key_ref())
        {
            return self.listeners.iter().collect();
        }
        let by_key: BTreeMap<(&str, &str, &str, u16), &ListenerDoc> =
            self.listeners.iter().map(|l| (l.key_ref(), l)).collect();
        by_key.into_values().collect()
    }

    /// The state after `delta`, under `hostname`.
    pub fn apply(&self, delta: &StateDelta, hostname: &str) -> HostState {
        let mut state = self.clone();
        state.apply_in_place(delta, hostname);
        state
    }

    /// [`HostState::apply`] without a copy: `self` becomes the state after
    /// `delta`, under `hostname`.
    pub fn apply_in_place(&mut self, delta: &StateDelta, hostname: &str) {
        // The upserts by key, the last of a key winning, as a map would.
        let upserts: BTreeMap<(&str, &str, &str, u16), &ListenerDoc> = delta
            .upsert
            .iter()
            .map(|listener| (listener.key_ref(), listener))
            .collect();
        let removed: BTreeSet<(&str, &str, &str, u16)> =
            delta.remove.iter().map(ListenerDoc::key_ref).collect();
        if self.is_canonical() {
            self.listeners.retain(|listener| {
                let key = listener.key_ref();
                !removed.contains(&key) && !upserts.contains_key(&key)
            });
        } else {
            // A map keyed by the listener's key keeps the last of a key.
            let mut by_key: BTreeMap<ListenerKey, ListenerDoc> =
                std::mem::take(&mut self.listeners)
                    .into_iter()
                    .map(|l| (l.key(), l))
                    .collect();
            by_key.retain(|key, _| {
                let key = (key.0.as_str(), key.1.as_str(), key.2.as_str(), key.3);
                !removed.contains(&key) && !upserts.contains_key(&key)
            });
            self.listeners = by_key.into_values().collect();
        }
        self.listeners.extend(upserts.into_values().cloned());
        hostname.clone_into(&mut self.hostname);
        if let Some(findings) = &delta.findings {
            self.findings.clone_from(findings);
        }
        self.canonicalise();
    }
}

/// A listener gone, as a delta names it: by key, without owners.
fn removal(listener: &ListenerDoc) -> ListenerDoc {
    ListenerDoc {
        netns: listener.netns.clone(),
        protocol: listener.protocol.clone(),
        address: listener.address.clone(),
        port: listener.port,
        scope: listener.scope.clone(),
        owners: Vec::new(),
        reach: None,
    }
}

/// Hashes what is written to it.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
            reach: None,
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

    /// `delta_to` and `apply` as they were first written, over maps keyed by
    /// the listener's key: the oracle of the side-by-side walk and the
    /// in-place apply, which must agree with them on any state, canonical or
    /// not.
    fn reference_delta_to(before: &HostState, next: &HostState) -> StateDelta {
        let old: BTreeMap<ListenerKey, &ListenerDoc> =
            before.listeners.iter().map(|l| (l.key(), l)).collect();
        let new: BTreeMap<ListenerKey, &ListenerDoc> =
            next.listeners.iter().map(|l| (l.key(), l)).collect();
        StateDelta {
            upsert: new
                .iter()
                .filter(|(key, listener)| old.get(*key) != Some(*listener))
                .map(|(_, listener)| (*listener).clone())
                .collect(),
            remove: old
                .iter()
                .filter(|(key, _)| !new.contains_key(*key))
                .map(|(_, listener)| ListenerDoc {
                    owners: Vec::new(),
                    reach: None,
                    ..(*listener).clone()
                })
                .collect(),
            findings: (before.findings != next.findings).then(|| next.findings.clone()),
        }
    }

    fn reference_apply(before: &HostState, delta: &StateDelta, hostname: &str) -> HostState {
        let mut listeners: BTreeMap<ListenerKey, ListenerDoc> = before
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
                .unwrap_or_else(|| before.findings.clone()),
        };
        state.canonicalise();
        state
    }

    fn finding(n: u8) -> FindingDoc {
        FindingDoc {
            rule: format!("rule.{n}"),
            severity: "high".into(),
            subject: String::new(),
            message: String::new(),
            evidence: Vec::new(),
            remedy: String::new(),
        }
    }

    /// A state as it may arrive: listeners in any order, repeated keys,
    /// several owners, findings unsorted.
    fn raw_state(listeners: Vec<(u16, u32, bool)>, findings: Vec<u8>) -> HostState {
        HostState {
            hostname: "h".into(),
            listeners: listeners
                .into_iter()
                .map(|(port, pid, two_owners)| {
                    let mut doc = listener(port, pid);
                    if two_owners {
                        let mut other = doc.owners[0].clone();
                        other.pid = pid + 100;
                        doc.owners.insert(0, other);
                    }
                    doc
                })
                .collect(),
            findings: findings.into_iter().map(finding).collect(),
        }
    }

    proptest! {
        #[test]
        fn delta_and_apply_agree_with_the_map_based_oracle(
            a in proptest::collection::vec((1u16..30, 1u32..4, any::<bool>()), 0..25),
            b in proptest::collection::vec((1u16..30, 1u32..4, any::<bool>()), 0..25),
            fa in proptest::collection::vec(0u8..4, 0..4),
            fb in proptest::collection::vec(0u8..4, 0..4),
            canonical in any::<bool>(),
        ) {
            let mut before = raw_state(a, fa);
            let mut after = raw_state(b, fb);
            if canonical {
                before.canonicalise();
                after.canonicalise();
            }
            let delta = before.delta_to(&after);
            prop_assert_eq!(&delta, &reference_delta_to(&before, &after));
            let applied = before.apply(&delta, "g");
            prop_assert_eq!(&applied, &reference_apply(&before, &delta, "g"));
            prop_assert!(applied.is_canonical());
            // The same delta twice, and a hostile one with repeated keys.
            let mut twice = delta.clone();
            twice.upsert.extend(delta.upsert.iter().cloned());
            twice.remove.extend(after.listeners.iter().take(2).cloned());
            prop_assert_eq!(before.apply(&twice, "g"), reference_apply(&before, &twice, "g"));
            let mut copy = after.clone();
            copy.canonicalise();
            prop_assert_eq!(after.digest(), copy.digest());
        }
    }

    #[test]
    fn the_digest_is_of_the_canonical_json() {
        let state = state(vec![listener(6379, 10), listener(22, 5)]);
        let bytes = serde_json::to_vec(&state).expect("json");
        assert_eq!(state.digest(), hex::encode(Sha256::digest(&bytes)));
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
