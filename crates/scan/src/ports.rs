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
        let mut ports = Vec::new();
        for item in trimmed
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let number = |part: &str, default: u16| -> Result<u16, PortError> {
                if part.is_empty() {
                    return Ok(default);
                }
                let err_item = item.to_owned();
                let value: u64 = part.parse().map_err(|_| PortError::NotANumber {
                    item: err_item.clone(),
                    text: trimmed.to_owned(),
                })?;
                match u16::try_from(value) {
                    Ok(0) => Err(PortError::Zero {
                        item: err_item,
                        text: trimmed.to_owned(),
                    }),
                    Ok(port) => Ok(port),
                    Err(_) => Err(PortError::TooLarge {
                        item: err_item,
                        text: trimmed.to_owned(),
                    }),
                }
            };
            match item.split_once('-') {
                Some((first, last)) => {
                    let first = number(first.trim(), 1)?;
                    let last = number(last.trim(), u16::MAX)?;
                    if first > last {
                        return Err(PortError::Reversed {
                            item: item.to_owned(),
                            text: trimmed.to_owned(),
                        });
                    }
                    ports.extend(first..=last);
                }
                // Items are never empty (filtered above), so the default is unused.
                None => ports.push(number(item, 0)?),
            }
        }
        if ports.is_empty() {
            return Err(PortError::Empty);
        }
        ports.sort_unstable();
        ports.dedup();
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
}
