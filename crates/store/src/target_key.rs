//! The canonical target key: which scans covered "the same target set" and so
//! are the ones to diff against each other.

use std::fmt;

use perimeter_model::ScanInfo;

/// The `ScanInfo.options` key a shard of a scan is recorded under, as `K/N`
/// (0-based K).
pub const SHARD_OPTION: &str = "shard";

/// A canonical, readable key for what a scan covered: its targets, its excludes
/// and its ports, each normalised so that spelling differences that do not change
/// the scan do not change the key.
///
/// Normalisation, per part:
/// - targets and excludes: each item trimmed and lowercased (host names and IPv6
///   hex digits are case-insensitive), empty items dropped, then sorted and
///   deduplicated, so `10.0.0.0/24 example.org` and `Example.ORG 10.0.0.0/24`
///   give the same key;
/// - ports: the spec is split on commas, each item trimmed and lowercased,
///   sorted and deduplicated, so `80,22` and `22, 80` give the same key.
///
/// What it does not do, by design: expand CIDRs, ranges or port sets (that is
/// the scan crate's grammar), so `1-100` and `1-50,51-100` are different keys,
/// as are `10.0.0.1/24` and `10.0.0.0/24`. A false "different" only means a diff
/// is not offered automatically; a false "same" would diff unrelated scans.
///
/// The key is a JSON object (`{"targets":[..],"excluded":[..],"ports":[..]}`):
/// unambiguous whatever characters the items hold, and readable in sqlite3.
/// The scan profile is not part of it: a quick and a full scan of the same
/// targets are the same target set.
///
/// A shard of a scan (`perimeter scan --shard K/N`, recorded as the
/// [`SHARD_OPTION`] option) covers a part of the target set by design, so it
/// has a key of its own, with the shard and the seed added
/// (`{..,"ports":[..],"shard":"1/3","seed":"42"}`): it is never compared
/// with an unsharded scan, with another shard, or with the same shard of
/// another seed (which is another part), only with earlier runs of the very
/// same part. `perimeter scans merge` stores the shards' union under the
/// plain key, where `diff` and the monitor find it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetKey(String);

impl TargetKey {
    pub fn new<T: AsRef<str>, E: AsRef<str>>(
        targets: &[T],
        excluded: &[E],
        ports: &str,
    ) -> TargetKey {
        // Written field by field rather than through a JSON map, whose key order
        // depends on serde_json's `preserve_order` feature (which any crate in
        // the build may switch on); stored keys must never change spelling.
        TargetKey(format!(
            r#"{{"targets":{},"excluded":{},"ports":{}}}"#,
            json_strings(canonical_items(targets.iter().map(AsRef::as_ref))),
            json_strings(canonical_items(excluded.iter().map(AsRef::as_ref))),
            json_strings(canonical_items(ports.split(','))),
        ))
    }

    /// The key of a stored or running scan: its shard's own key for a shard.
    pub fn of(info: &ScanInfo) -> TargetKey {
        let key = TargetKey::of_whole(info);
        match info.options.get(SHARD_OPTION) {
            Some(shard) => key.with_shard(shard, info.seed),
            None => key,
        }
    }

    /// The key of the whole scan a scan or shard is part of: what the shards
    /// of one scan share, and what their merge is stored under.
    pub fn of_whole(info: &ScanInfo) -> TargetKey {
        TargetKey::new(&info.targets, &info.excluded, &info.ports)
    }

    fn with_shard(&self, shard: &str, seed: u64) -> TargetKey {
        // The plain key is a JSON object written above, so it ends in `}`;
        // the shard's fields go before it.
        let open = self.0.strip_suffix('}').unwrap_or(&self.0);
        TargetKey(format!(
            r#"{open},"shard":{},"seed":{}}}"#,
            serde_json::Value::from(shard),
            serde_json::Value::from(seed.to_string()),
        ))
    }

    /// Wraps a key read back from storage, as it was written.
    pub(crate) fn from_stored(text: String) -> TargetKey {
        TargetKey(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn json_strings(items: Vec<String>) -> String {
    serde_json::Value::from(items).to_string()
}

fn canonical_items<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut items: Vec<String> = items
        .map(|item| item.trim().to_lowercase())
        .filter(|item| !item.is_empty())
        .collect();
    items.sort();
    items.dedup();
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_and_order_do_not_change_the_key() {
        let a = TargetKey::new(&["10.0.0.0/24", "Example.ORG"], &["10.0.0.5"], "80,22");
        let b = TargetKey::new(
            &[" example.org", "10.0.0.0/24", "10.0.0.0/24"],
            &["10.0.0.5 "],
            "22, 80,",
        );
        assert_eq!(a, b);
        assert_eq!(
            a.as_str(),
            r#"{"targets":["10.0.0.0/24","example.org"],"excluded":["10.0.0.5"],"ports":["22","80"]}"#
        );
    }

    #[test]
    fn a_shard_has_a_key_of_its_own_per_part_and_seed() {
        let info = |shard: Option<&str>, seed: u64| ScanInfo {
            id: 0,
            targets: vec!["198.18.0.0/24".into()],
            resolved: Vec::new(),
            excluded: Vec::new(),
            ports: "22,80".into(),
            profile: "normal".into(),
            seed,
            options: shard
                .map(|shard| (SHARD_OPTION.to_owned(), shard.to_owned()))
                .into_iter()
                .collect(),
            started: time::OffsetDateTime::UNIX_EPOCH,
            finished: None,
            complete: true,
            n_probes: 0,
        };
        let whole = TargetKey::of(&info(None, 7));
        // The seed of an unsharded scan does not matter: it covers everything.
        assert_eq!(whole, TargetKey::of(&info(None, 8)));
        let shard = TargetKey::of(&info(Some("1/3"), 7));
        assert_eq!(
            shard.as_str(),
            r#"{"targets":["198.18.0.0/24"],"excluded":[],"ports":["22","80"],"shard":"1/3","seed":"7"}"#
        );
        assert_ne!(shard, whole);
        assert_ne!(shard, TargetKey::of(&info(Some("0/3"), 7)));
        assert_ne!(shard, TargetKey::of(&info(Some("1/4"), 7)));
        assert_ne!(shard, TargetKey::of(&info(Some("1/3"), 8)));
        assert_eq!(shard, TargetKey::of(&info(Some("1/3"), 7)));
        assert_eq!(TargetKey::of_whole(&info(Some("1/3"), 7)), whole);
    }

    #[test]
    fn targets_excludes_and_ports_each_matter() {
        let base = TargetKey::new(&["198.18.0.0/24"], &["198.18.0.9"], "top:100");
        assert_ne!(
            base,
            TargetKey::new(&["198.18.0.0/25"], &["198.18.0.9"], "top:100")
        );
        assert_ne!(
            base,
            TargetKey::new(&["198.18.0.0/24"], &[] as &[&str], "top:100")
        );
        assert_ne!(
            base,
            TargetKey::new(&["198.18.0.0/24"], &["198.18.0.9"], "all")
        );
        // An item moved from targets to excludes is a different key, not the same
        // set of strings in another place.
        assert_ne!(
            TargetKey::new(&["a", "b"], &[] as &[&str], "22"),
            TargetKey::new(&["a"], &["b"], "22")
        );
    }
}
