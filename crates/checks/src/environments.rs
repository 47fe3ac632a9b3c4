//! The environments file (`perimeter.toml`): named address ranges, who may
//! reach them, which ports are public, and when experiments end. (Not to be
//! confused with the package inventory of `perimeter inventory`, which is
//! `perimeter_inventory::Inventory`: the user-facing messages still call this
//! file "the inventory", as the documentation does.)
//!
//! Parsing is strict, like the approvals file: unknown keys, bad CIDRs, two
//! environments claiming the same addresses (a prod address that is also dev),
//! duplicate names and experiments without an end date are errors with file,
//! line and column. The commented example (`EXAMPLE`) is embedded in the
//! binary, written by `perimeter init`, and parsed by a test, so the
//! documentation cannot drift from the parser.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use perimeter_files::LineIndex;
use perimeter_model::{EnvKind, Environment};
use serde::Deserialize;
use time::Date;
use toml::Spanned;

use crate::approvals::ApprovalsError;

/// The commented example environments file.
pub const EXAMPLE: &str = include_str!("environments.example.toml");

/// The environments file format version this perimeter reads.
pub const FORMAT_VERSION: i64 = 1;

/// A parsed environments file; empty (no path, no environments) when there is
/// none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environments {
    pub path: Option<PathBuf>,
    pub environments: Vec<Environment>,
    /// The line of `example = true`: the file is `perimeter init`'s example,
    /// whose documentation ranges nothing may scan until a person replaced
    /// them and deleted that line.
    pub example_line: Option<usize>,
}

impl Environments {
    /// No environment is defined (no file, or a file without any).
    pub fn is_empty(&self) -> bool {
        self.environments.is_empty()
    }

    /// The environment whose ranges contain `address`. Ranges never overlap
    /// (the parser refuses it), so there is at most one.
    pub fn environment_of(&self, address: IpAddr) -> Option<&Environment> {
        self.environments.iter().find(|env| env.contains(address))
    }

    /// Refuses to let the environments be scanned when the file is
    /// `perimeter init`'s unedited example: its ranges are documentation
    /// addresses that some networks really use, and a scan of them is a scan
    /// of someone else's hosts.
    pub fn check_scannable(&self) -> Result<(), String> {
        match (self.example_line, &self.path) {
            (Some(line), Some(path)) => Err(format!(
                "{}:{line}: this is perimeter init's example (`example = true`): its ranges are documentation addresses, not yours; put your own ranges in and delete that line before scanning them",
                path.display()
            )),
            (Some(line), None) => Err(format!(
                "line {line}: this is perimeter init's example (`example = true`): put your own ranges in and delete that line before scanning them"
            )),
            (None, _) => Ok(()),
        }
    }

    pub fn by_name(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|env| env.name == name)
    }
}

/// A malformed environments file: where and what. Shares the approvals file's error
/// type, since both are `path:line:column: message` for the user.
pub type EnvironmentsError = ApprovalsError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: Option<Spanned<i64>>,
    example: Option<Spanned<bool>>,
    #[serde(default)]
    environment: Vec<Spanned<RawEnvironment>>,
    /// The monitor's part of the file, parsed by `perimeter-monitor` from the
    /// same text (so its errors carry the same lines); the environments
    /// parser only lets it through.
    #[serde(rename = "monitor")]
    _monitor: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    name: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    ranges: Vec<Spanned<String>>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
    #[serde(default)]
    public_ports: Vec<Spanned<i64>>,
    #[serde(default)]
    allow_from: Vec<Spanned<String>>,
    owner: Option<Spanned<String>>,
    expires: Option<Spanned<toml::Value>>,
}

/// Parse the text of an environments file. `path` is only used in messages.
pub fn parse_environments(text: &str, path: &Path) -> Result<Environments, EnvironmentsError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = LineIndex::new(text);
    let invalid = |span: std::ops::Range<usize>, message: String| {
        let (line, column) = lines.line_column(text, span.start);
        ApprovalsError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    };
    let raw: RawFile = toml::from_str(text).map_err(|err| {
        let span = err.span().unwrap_or(0..0);
        invalid(span, err.message().trim().to_owned())
    })?;
    if let Some(version) = &raw.version
        && *version.get_ref() != FORMAT_VERSION
    {
        return Err(invalid(
            version.span(),
            format!(
                "inventory format version {} is not supported (this perimeter reads version {FORMAT_VERSION})",
                version.get_ref()
            ),
        ));
    }

    // Every range with where it was written, to report overlaps at the
    // second claim with a pointer to the first.
    let mut claimed = Claims::default();
    let mut names = std::collections::HashSet::with_capacity(raw.environment.len());
    let mut environments = Vec::with_capacity(raw.environment.len());
    for spanned in raw.environment {
        let entry_span = spanned.span();
        let raw = spanned.into_inner();
        let name = raw.name.get_ref().trim().to_owned();
        if name.is_empty() {
            return Err(invalid(raw.name.span(), "name must not be empty".into()));
        }
        if !names.insert(name.clone()) {
            return Err(invalid(
                raw.name.span(),
                format!("environment `{name}` is defined twice"),
            ));
        }
        let kind = EnvKind::parse(raw.kind.get_ref()).ok_or_else(|| {
            invalid(
                raw.kind.span(),
                format!(
                    "kind `{}` is not one of prod, staging, dev, experiment",
                    raw.kind.get_ref()
                ),
            )
        })?;
        if raw.ranges.is_empty() && raw.hosts.is_empty() {
            return Err(invalid(
                entry_span,
                format!("environment `{name}` needs `ranges` or `hosts`"),
            ));
        }
        let mut ranges = Vec::with_capacity(raw.ranges.len());
        for range in &raw.ranges {
            let net = parse_net(range.get_ref()).map_err(|m| invalid(range.span(), m))?;
            let line = lines.line_column(text, range.span().start).0;
            if let Some(Claim {
                net: other,
                line: other_line,
                name: other_name,
                kind: other_kind,
            }) = claimed.overlapping(&net)
            {
                let what = if kind != *other_kind
                    && (kind == EnvKind::Prod || *other_kind == EnvKind::Prod)
                {
                    format!(
                        "{net} puts addresses of {kind} environment `{name}` inside {other_kind} environment `{other_name}` ({other}, line {other_line}): prod and non-prod must not share addresses"
                    )
                } else {
                    format!(
                        "{net} overlaps {other} of environment `{other_name}` (line {other_line}): an address belongs to one environment"
                    )
                };
                return Err(invalid(range.span(), what));
            }
            claimed.insert(Claim {
                net,
                line,
                name: name.clone(),
                kind,
            });
            ranges.push(net);
        }
        let mut hosts = Vec::with_capacity(raw.hosts.len());
        for host in &raw.hosts {
            let text = host.get_ref().trim();
            if text.is_empty() || text.contains(char::is_whitespace) {
                return Err(invalid(host.span(), format!("`{text}` is not a host name")));
            }
            hosts.push(text.to_owned());
        }
        let mut public_ports = Vec::with_capacity(raw.public_ports.len());
        for port in &raw.public_ports {
            match u16::try_from(*port.get_ref()) {
                Ok(p) if p != 0 => public_ports.push(p),
                _ => {
                    return Err(invalid(
                        port.span(),
                        format!("port {} is not in 1-65535", port.get_ref()),
                    ));
                }
            }
        }
        public_ports.sort_unstable();
        public_ports.dedup();
        let mut allow_from = Vec::with_capacity(raw.allow_from.len());
        for source in &raw.allow_from {
            allow_from.push(parse_net(source.get_ref()).map_err(|m| invalid(source.span(), m))?);
        }
        let expires = match &raw.expires {
            Some(value) => Some(date_value(value.get_ref()).map_err(|m| invalid(value.span(), m))?),
            None => None,
        };
        if kind == EnvKind::Experiment && expires.is_none() {
            return Err(invalid(
                entry_span,
                format!("experiment `{name}` needs `expires` (a date): experiments must end"),
            ));
        }
        let owner = match raw.owner {
            Some(owner) if owner.get_ref().trim().is_empty() => {
                return Err(invalid(owner.span(), "owner must not be empty".into()));
            }
            Some(owner) => Some(owner.into_inner()),
            None => None,
        };
        environments.push(Environment {
            name,
            kind,
            ranges,
            hosts,
            public_ports,
            allow_from,
            owner,
            expires,
        });
    }
    let example_line = raw
        .example
        .as_ref()
        .filter(|example| *example.get_ref())
        .map(|example| lines.line_column(text, example.span().start).0);
    Ok(Environments {
        path: Some(path.to_owned()),
        environments,
        example_line,
    })
}

/// A CIDR or a single address; host bits set is an error (it usually means a
/// typo in the prefix length).
fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(address));
    }
    let net: IpNet = text
        .parse()
        .map_err(|_| format!("`{text}` is not a CIDR (like 198.51.100.0/24) or an address"))?;
    if net.trunc() != net {
        return Err(format!(
            "`{text}` has host bits set: did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// A range an environment claimed, and where.
#[derive(Debug)]
struct Claim {
    net: IpNet,
    line: usize,
    name: String,
    kind: EnvKind,
}

/// The ranges claimed so far, disjoint (an overlap is refused before it is
/// inserted), keyed by their first address in one space where an IPv4 address
/// is its IPv4-mapped IPv6 form (`198.18.0.1` is `::ffff:198.18.0.1`): the same
/// address written either way is one address, so `::ffff:198.18.0.0/120` in
/// dev overlaps `198.18.0.0/24` in prod. Finding an overlap is a logarithm, so
/// a file with ten thousand environments costs no more than reading it.
#[derive(Debug, Default)]
struct Claims {
    by_start: std::collections::BTreeMap<u128, (u128, Claim)>,
}

impl Claims {
    fn bounds(net: &IpNet) -> (u128, u128) {
        let mapped = |v4: std::net::Ipv4Addr| u128::from(v4.to_ipv6_mapped());
        match net {
            IpNet::V4(v4) => (mapped(v4.network()), mapped(v4.broadcast())),
            IpNet::V6(v6) => (u128::from(v6.network()), u128::from(v6.broadcast())),
        }
    }

    fn overlapping(&self, net: &IpNet) -> Option<&Claim> {
        let (low, high) = Claims::bounds(net);
        // The claims are disjoint, so only the last one starting at or before
        // `high` can reach into [low, high].
        self.by_start
            .range(..=high)
            .next_back()
            .filter(|(_, (end, _))| *end >= low)
            .map(|(_, (_, claim))| claim)
    }

    fn insert(&mut self, claim: Claim) {
        let (low, high) = Claims::bounds(&claim.net);
        self.by_start.insert(low, (high, claim));
    }
}

/// A date given as a TOML date (`2026-12-01`) or a string (`"2026-12-01"`).
fn date_value(value: &toml::Value) -> Result<Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    match value {
        toml::Value::String(text) => Date::parse(text, &format)
            .map_err(|_| format!("`{text}` is not a date like 2026-12-01")),
        toml::Value::Datetime(datetime) => match (datetime.date, datetime.time) {
            (Some(date), None) => time::Month::try_from(date.month)
                .ok()
                .and_then(|month| {
                    Date::from_calendar_date(i32::from(date.year), month, date.day).ok()
                })
                .ok_or_else(|| format!("`{datetime}` is not a valid date")),
            _ => Err(format!("`{datetime}` must be a plain date like 2026-12-01")),
        },
        other => Err(format!("`{other}` is not a date like 2026-12-01")),
    }
}

/// Read and parse an environments file; a missing file at a default location
/// is no environments, a missing file the user named is an error.
pub fn load(path: &Path, missing_ok: bool) -> Result<Environments, EnvironmentsError> {
    match crate::approvals::read_file(path, "an environments file")? {
        Some(text) => parse_environments(&text, path),
        None if missing_ok => Ok(Environments::default()),
        None => Err(ApprovalsError::Read {
            path: path.to_owned(),
            message: "no such file".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Environments, String> {
        parse_environments(text, Path::new("perimeter.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_embedded_example_parses() {
        let environments = parse(EXAMPLE).expect("example parses");
        let names: Vec<&str> = environments
            .environments
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["prod", "dev", "scratch"]);
        // It says it is the example, and nothing may scan it as it is.
        assert!(environments.example_line.is_some());
        assert!(environments.check_scannable().is_err());
        let edited = EXAMPLE.replace("example = true\n", "");
        let edited = parse(&edited).expect("edited parses");
        assert_eq!(edited.example_line, None);
        assert!(edited.check_scannable().is_ok());
        let scratch = environments.by_name("scratch").expect("scratch");
        assert_eq!(scratch.kind, EnvKind::Experiment);
        assert_eq!(scratch.expires, Some(time::macros::date!(2026 - 12 - 01)));
        assert_eq!(
            environments
                .environment_of("192.0.2.70".parse().expect("ip"))
                .map(|e| e.name.as_str()),
            Some("scratch")
        );
        assert_eq!(
            environments.by_name("prod").map(|e| e.public_ports.clone()),
            Some(vec![443])
        );
    }

    #[test]
    fn the_issue_shape_with_a_quoted_date_parses() {
        let text = r#"
[[environment]]
name = "prod"
kind = "prod"                 # prod | staging | dev | experiment
ranges = ["203.0.113.0/24"]
public_ports = [443]          # reachable from anywhere
allow_from = ["198.51.100.0/24"]  # may reach every other port
owner = "ops@example.org"

[[environment]]
name = "scratch"
kind = "experiment"
ranges = ["192.0.2.64/26"]
allow_from = ["198.51.100.0/24"]
expires = "2026-12-01"
"#;
        let environments = parse(text).expect("parses");
        assert_eq!(environments.environments.len(), 2);
        assert_eq!(
            environments.environments[1].expires,
            Some(time::macros::date!(2026 - 12 - 01))
        );
    }

    #[test]
    fn bad_environments_files_say_where() {
        let base =
            "[[environment]]\nname = \"prod\"\nkind = \"prod\"\nranges = [\"203.0.113.0/24\"]\n";
        let cases: Vec<(String, &str)> = vec![
            (format!("{base}rangez = []\n"), "perimeter.toml:5:1: unknown field `rangez`"),
            (
                "[[environment]]\nname = \"prod\"\nkind = \"production\"\nranges = [\"203.0.113.0/24\"]\n".into(),
                "perimeter.toml:3:8: kind `production` is not one of prod, staging, dev, experiment",
            ),
            (
                "[[environment]]\nname = \"prod\"\nkind = \"prod\"\nranges = [\"203.0.113.0/33\"]\n".into(),
                "perimeter.toml:4:11: `203.0.113.0/33` is not a CIDR",
            ),
            (
                "[[environment]]\nname = \"prod\"\nkind = \"prod\"\nranges = [\"203.0.113.7/24\"]\n".into(),
                "perimeter.toml:4:11: `203.0.113.7/24` has host bits set: did you mean 203.0.113.0/24?",
            ),
            (
                format!("{base}\n[[environment]]\nname = \"dev\"\nkind = \"dev\"\nranges = [\"198.18.0.0/15\", \"203.0.113.128/25\"]\n"),
                "perimeter.toml:9:28: 203.0.113.128/25 puts addresses of dev environment `dev` inside prod environment `prod` (203.0.113.0/24, line 4)",
            ),
            (
                format!("{base}\n[[environment]]\nname = \"stage\"\nkind = \"staging\"\nranges = [\"203.0.0.0/16\"]\n"),
                "perimeter.toml:9:11: 203.0.0.0/16 puts addresses of staging environment `stage` inside prod",
            ),
            (
                "[[environment]]\nname = \"a\"\nkind = \"dev\"\nranges = [\"192.0.2.0/25\"]\n\n[[environment]]\nname = \"b\"\nkind = \"dev\"\nranges = [\"192.0.2.64/26\"]\n".into(),
                "perimeter.toml:9:11: 192.0.2.64/26 overlaps 192.0.2.0/25 of environment `a` (line 4)",
            ),
            (
                format!("{base}\n[[environment]]\nname = \"prod\"\nkind = \"dev\"\nranges = [\"192.0.2.0/24\"]\n"),
                "perimeter.toml:7:8: environment `prod` is defined twice",
            ),
            (
                // The same addresses written as IPv4-mapped IPv6 are the same
                // addresses.
                format!("{base}\n[[environment]]\nname = \"dev\"\nkind = \"dev\"\nranges = [\"::ffff:203.0.113.0/120\"]\n"),
                "perimeter.toml:9:11: ::ffff:203.0.113.0/120 puts addresses of dev environment `dev` inside prod environment `prod` (203.0.113.0/24, line 4)",
            ),
            (
                "[[environment]]\nname = \"dev\"\nkind = \"dev\"\nranges = [\"::ffff:198.18.0.0/120\"]\n\n[[environment]]\nname = \"prod\"\nkind = \"prod\"\nranges = [\"198.18.0.0/24\"]\n".into(),
                "perimeter.toml:9:11: 198.18.0.0/24 puts addresses of prod environment `prod` inside dev environment `dev` (::ffff:198.18.0.0/120, line 4)",
            ),
            (
                "[[environment]]\nname = \"all6\"\nkind = \"dev\"\nranges = [\"::/0\"]\n\n[[environment]]\nname = \"v4\"\nkind = \"dev\"\nranges = [\"192.0.2.0/24\"]\n".into(),
                "perimeter.toml:9:11: 192.0.2.0/24 overlaps ::/0 of environment `all6` (line 4)",
            ),
            (
                "[[environment]]\nname = \"x\"\nkind = \"experiment\"\nranges = [\"192.0.2.0/24\"]\n".into(),
                "perimeter.toml:1:1: experiment `x` needs `expires`",
            ),
            (
                format!("{base}public_ports = [0]\n"),
                "perimeter.toml:5:17: port 0 is not in 1-65535",
            ),
            (
                format!("{base}allow_from = [\"office\"]\n"),
                "perimeter.toml:5:15: `office` is not a CIDR",
            ),
            (
                format!("{base}expires = \"soon\"\n"),
                "perimeter.toml:5:11: `soon` is not a date",
            ),
            (
                "[[environment]]\nname = \"x\"\nkind = \"dev\"\n".into(),
                "perimeter.toml:1:1: environment `x` needs `ranges` or `hosts`",
            ),
            ("version = 9\n".into(), "perimeter.toml:1:11: inventory format version 9"),
        ];
        for (text, want) in cases {
            let got = parse(&text).expect_err("must fail");
            assert!(
                got.starts_with(want),
                "for\n{text}\ngot:  {got}\nwant: {want}"
            );
        }
    }

    #[test]
    fn single_addresses_are_host_routes() {
        let environments = parse(
            "[[environment]]\nname = \"bastion\"\nkind = \"prod\"\nranges = [\"198.51.100.7\", \"2001:db8::7\"]\n",
        )
        .expect("parses");
        assert_eq!(
            environments.environments[0].ranges,
            vec![
                "198.51.100.7/32".parse::<IpNet>().expect("net"),
                "2001:db8::7/128".parse::<IpNet>().expect("net")
            ]
        );
    }
}
