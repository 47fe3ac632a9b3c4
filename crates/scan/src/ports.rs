//! Which TCP ports a scan probes: a list like `22,80,1000-2000`, all of them
//! (`-` or `all`), or the top N of perimeter's own ranking (see `top_ports`).

use std::fmt;

use crate::top_ports::RANKED;

/// A port list that could not be used; names the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("no ports given")]
    Empty,
    #[error("invalid port `{item}` in `{text}`: not a number")]
    NotANumber { item: String, text: String },
    #[error("invalid port `{item}` in `{text}`: port 0 cannot be scanned")]
    Zero { item: String, text: String },
    #[error("invalid port `{item}` in `{text}`: ports go up to 65535")]
    TooLarge { item: String, text: String },
    #[error("invalid port range `{item}` in `{text}`: the first port comes after the last")]
    Reversed { item: String, text: String },
    #[error("invalid top-ports count {0}: ask for at least one port")]
    TopZero(usize),
}

/// The port text as shown in an error: long lists are cut, so a mistake in a
/// generated list of thousands of items is not echoed back in full.
fn shown_spec(text: &str) -> String {
    const SHOWN: usize = 80;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", text.get(..cut).unwrap_or(text)),
        None => text.to_owned(),
    }
}

/// A set of ports, sorted and without duplicates, with the text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSet {
    ports: Vec<u16>,
    spec: String,
}

impl PortSet {
    /// Parses `22,80,1000-2000`, `-1024` (1-1024), `60000-` (60000-65535), and
    /// `-` or `all` for every port. Whitespace around items is ignored.
    pub fn parse(text: &str) -> Result<PortSet, PortError> {
        let trimmed = text.trim();
        if trimmed == "-" || trimmed.eq_ignore_ascii_case("all") {
            return Ok(PortSet::all());
        }
        // Ranges, not ports, until the end: a list of any length costs a sort
        // of its items, and the set never holds more than 65535 ports (15,000
        // copies of `1-65535` once meant a billion-entry vector and 12 s).
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        let shown = shown_spec(trimmed);
        for item in trimmed
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let number = |part: &str, default: u16| -> Result<u16, PortError> {
                if part.is_empty() {
                    return Ok(default);
                }
                let err_item = shown_spec(item);
                let value: u64 = part.parse().map_err(|_| PortError::NotANumber {
                    item: err_item.clone(),
                    text: shown.clone(),
                })?;
                match u16::try_from(value) {
                    Ok(0) => Err(PortError::Zero {
                        item: err_item,
                        text: shown.clone(),
                    }),
                    Ok(port) => Ok(port),
                    Err(_) => Err(PortError::TooLarge {
                        item: err_item,
                        text: shown.clone(),
                    }),
                }
            };
            let (first, last) = match item.split_once('-') {
                Some((first, last)) => {
                    let first = number(first.trim(), 1)?;
                    let last = number(last.trim(), u16::MAX)?;
                    if first > last {
                        return Err(PortError::Reversed {
                            item: shown_spec(item),
                            text: shown.clone(),
                        });
                    }
                    (first, last)
                }
                // Items are never empty (filtered above), so the default is unused.
                None => {
                    let port = number(item, 0)?;
                    (port, port)
                }
            };
            ranges.push((first, last));
        }
        ranges.sort_unstable();
        let mut ports: Vec<u16> = Vec::new();
        for (first, last) in ranges {
            // Ranges are sorted by their first port, so anything already
            // listed is a prefix of this one.
            let start = match ports.last() {
                Some(&high) if high >= last => continue,
                Some(&high) if high >= first => high + 1,
                _ => first,
            };
            ports.extend(start..=last);
        }
        if ports.is_empty() {
            return Err(PortError::Empty);
        }
        Ok(PortSet {
            ports,
            spec: trimmed.to_owned(),
        })
    }

    /// Every port, 1 to 65535.
    pub fn all() -> PortSet {
        PortSet {
            ports: (1..=u16::MAX).collect(),
            spec: "all".into(),
        }
    }

    /// The `n` most important ports of perimeter's ranking. Past the end of the
    /// ranking the remaining ports follow in numeric order, so `top(65535)` is
    /// every port.
    pub fn top(n: usize) -> Result<PortSet, PortError> {
        if n == 0 {
            return Err(PortError::TopZero(n));
        }
        if n >= usize::from(u16::MAX) {
            // More than there are ports is every port; the caller says so.
            return Ok(PortSet::all());
        }
        let mut ports: Vec<u16> = RANKED.iter().copied().take(n).collect();
        if n > RANKED.len() {
            let ranked: std::collections::HashSet<u16> = RANKED.iter().copied().collect();
            ports.extend(
                (1..=u16::MAX)
                    .filter(|p| !ranked.contains(p))
                    .take(n - RANKED.len()),
            );
        }
        ports.sort_unstable();
        Ok(PortSet {
            ports,
            spec: format!("top:{n}"),
        })
    }

    /// The `n` most exposure-relevant UDP ports (`perimeter_probe`'s curated
    /// [`UDP_TOP_PORTS`](perimeter_probe::udp::UDP_TOP_PORTS)), all of them
    /// when `n` is `None` or past its end.
    pub fn udp_top(n: Option<usize>) -> Result<PortSet, PortError> {
        let list = perimeter_probe::udp::UDP_TOP_PORTS;
        let n = n.unwrap_or(list.len());
        if n == 0 {
            return Err(PortError::TopZero(n));
        }
        let mut ports: Vec<u16> = list.iter().copied().take(n).collect();
        ports.sort_unstable();
        ports.dedup();
        Ok(PortSet {
            ports,
            spec: format!("udp-top:{}", n.min(list.len())),
        })
    }

    /// The ports, ascending.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The ports as given (`22,80`, `all`, `top:100`), for `ScanInfo.ports`.
    pub fn spec(&self) -> &str {
        &self.spec
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

/// How many ports the ranking holds before `top` pads with numeric order.
pub fn n_ranked_ports() -> usize {
    RANKED.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<Vec<u16>, String> {
        PortSet::parse(text)
            .map(|set| set.ports)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_lists_and_ranges() {
        assert_eq!(parsed("22,80,443"), Ok(vec![22, 80, 443]));
        assert_eq!(
            parsed(" 443 , 22,22, 80-82 "),
            Ok(vec![22, 80, 81, 82, 443])
        );
        assert_eq!(parsed("-3"), Ok(vec![1, 2, 3]));
        assert_eq!(parsed("65534-"), Ok(vec![65534, 65535]));
        assert_eq!(parsed("1000-2000").map(|p| p.len()), Ok(1001));
        assert_eq!(PortSet::parse("-").map(|s| s.len()), Ok(65535));
        assert_eq!(
            PortSet::parse("all").map(|s| s.spec().to_owned()),
            Ok("all".into())
        );
        assert_eq!(
            PortSet::parse("22,80").map(|s| s.to_string()),
            Ok("22,80".into())
        );
    }

    #[test]
    fn errors_name_the_offending_text() {
        assert_eq!(
            parsed("22,0"),
            Err("invalid port `0` in `22,0`: port 0 cannot be scanned".into())
        );
        assert_eq!(
            parsed("65536"),
            Err("invalid port `65536` in `65536`: ports go up to 65535".into())
        );
        assert_eq!(
            parsed("80,100-70000"),
            Err("invalid port `100-70000` in `80,100-70000`: ports go up to 65535".into())
        );
        assert_eq!(
            parsed("22,2000-1000"),
            Err("invalid port range `2000-1000` in `22,2000-1000`: the first port comes after the last".into())
        );
        assert_eq!(
            parsed("ssh"),
            Err("invalid port `ssh` in `ssh`: not a number".into())
        );
        assert_eq!(
            parsed("0-10"),
            Err("invalid port `0-10` in `0-10`: port 0 cannot be scanned".into())
        );
        assert_eq!(parsed(" , "), Err("no ports given".into()));
        assert_eq!(
            PortSet::top(0).map_err(|e| e.to_string()),
            Err("invalid top-ports count 0: ask for at least one port".into())
        );
    }

    #[test]
    fn ranking_is_long_unique_and_starts_with_what_matters() {
        assert!(RANKED.len() >= 1000, "only {} ranked ports", RANKED.len());
        let mut seen = std::collections::HashSet::new();
        for &port in RANKED {
            assert_ne!(port, 0);
            assert!(seen.insert(port), "port {port} ranked twice");
        }
        let top10 = PortSet::top(10).expect("top 10");
        assert_eq!(
            top10.ports(),
            [22, 80, 443, 3306, 3389, 5432, 6379, 9200, 11211, 27017]
        );
        assert_eq!(top10.spec(), "top:10");
        // The exposure-critical services are all in the first hundred.
        let top100 = PortSet::top(100).expect("top 100");
        for port in [
            6379, 11211, 2375, 6443, 10250, 2379, 27017, 9200, 5900, 23, 445,
        ] {
            assert!(top100.ports().contains(&port), "{port} not in the top 100");
        }
    }

    #[test]
    fn top_pads_past_the_ranking() {
        let n = RANKED.len() + 5;
        let set = PortSet::top(n).expect("padded");
        assert_eq!(set.len(), n);
        assert_eq!(
            PortSet::top(65535).map(|s| s.ports),
            Ok(PortSet::all().ports)
        );
        assert_eq!(PortSet::top(70000).map(|s| s.len()), Ok(65535));
    }

    #[test]
    fn a_huge_list_is_one_set_and_errors_are_cut_short() {
        let spec = vec!["1-65535"; 15_000].join(",");
        let set = PortSet::parse(&spec).expect("parses");
        assert_eq!(set.len(), 65535);
        let bad = format!("{spec},x");
        let err = PortSet::parse(&bad).expect_err("bad item").to_string();
        assert!(
            err.starts_with("invalid port `x` in `1-65535,1-65535,"),
            "{err}"
        );
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn top_beyond_every_port_is_every_port() {
        assert_eq!(PortSet::top(99_999_999).expect("top").len(), 65535);
        assert_eq!(PortSet::top(65535).expect("top").len(), 65535);
        assert_eq!(PortSet::top(65534).expect("top").len(), 65534);
    }

    proptest::proptest! {
        #[test]
        fn parsing_matches_a_naive_set(items in proptest::collection::vec((1u16..300, 0u16..40, proptest::bool::ANY), 1..20)) {
            let mut naive = std::collections::BTreeSet::new();
            let mut words = Vec::new();
            for (first, width, is_range) in items {
                if is_range {
                    let last = first.saturating_add(width);
                    naive.extend(first..=last);
                    words.push(format!("{first}-{last}"));
                } else {
                    naive.insert(first);
                    words.push(first.to_string());
                }
            }
            let set = PortSet::parse(&words.join(",")).expect("parses");
            proptest::prop_assert_eq!(set.ports().to_vec(), naive.into_iter().collect::<Vec<_>>());
        }
    }
}
