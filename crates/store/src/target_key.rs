//! The canonical target key: which scans covered "the same target set" and so
//! are the ones to diff against each other.

use std::fmt;

use perimeter_model::ScanInfo;

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

    pub fn of(info: &ScanInfo) -> TargetKey {
        TargetKey::new(&info.targets, &info.excluded, &info.ports)
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
