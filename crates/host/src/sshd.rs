//! The running sshd's effective authentication settings, and the classes of
//! client source address for which they hold.
//!
//! Three layers:
//! - a parser for sshd_config(5) ([`parse_sshd_config`], [`load_sshd_config`])
//!   that follows OpenSSH's own tokenizer (`strdelim`, `argv_split`), resolves
//!   `Include` through the [`ConfigFiles`] trait, and keeps every directive;
//! - an evaluator ([`evaluate`]) that replays servconf.c's two passes: the
//!   start-up pass (global lines and `Match All`, first value wins), then the
//!   per-connection pass over `Match` blocks only, whose values (first matching
//!   block wins) override the start-up ones;
//! - [`inspect_sshd`], which asks the daemon itself (`sshd -T -C ...`) for each
//!   class of source address derived from the `Match Address` blocks, and falls
//!   back to the evaluator, saying why, when `sshd -T` cannot run.

use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use perimeter_model::{Problem, SshdEvaluation, SshdFacts};

use crate::command::{find_tool, run_bounded};

/// Where relative `Include` paths are resolved, as OpenSSH's `SSHDIR`.
const SSHDIR: &str = "/etc/ssh";

/// sshd's default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/ssh/sshd_config";

/// OpenSSH's `SERVCONF_MAX_DEPTH`: includes nested deeper are fatal.
const MAX_INCLUDE_DEPTH: usize = 16;

/// A config file larger than this is not read: real ones are a few KiB.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// How many evaluations one sshd may cost (`sshd -T` runs, each ~10 ms).
const MAX_EVALUATIONS: usize = 32;

/// The user name evaluated as "any non-root user". It exists nowhere, so only
/// patterns that match every user (`*`, negations) apply to it, and no `Match
/// Group` does.
pub const OTHER_USER: &str = "perimeter-any-user";

/// Source addresses picked for "any other address": documentation ranges
/// (RFC 5737, RFC 3849), which no real client uses. They are only evaluation
/// parameters; nothing is ever sent to them.
const OTHER_ADDRESSES: [&str; 8] = [
    "198.51.100.7",
    "203.0.113.7",
    "192.0.2.7",
    "2001:db8::7",
    "198.51.100.201",
    "203.0.113.201",
    "192.0.2.201",
    "2001:db8:ffff::7",
];

// ---------------------------------------------------------------------------
// The parsed configuration

/// One sshd_config file, parsed, with its includes resolved (by
/// [`load_sshd_config`]) or not (by [`parse_sshd_config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshdConfig {
    pub file: PathBuf,
    pub items: Vec<Item>,
}

/// A line that means something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Directive(Directive),
    Match(MatchLine),
    Include(Include),
}

/// `Keyword value...`. The keyword is lowercased (sshd compares keywords
/// without case); the arguments are as `argv_split` returns them, unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub line: usize,
    pub keyword: String,
    pub args: Vec<String>,
    /// The typed value, for the settings perimeter evaluates.
    pub setting: Option<Setting>,
}

/// A value of one of the authentication settings perimeter evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    PermitRootLogin(PermitRootLogin),
    PasswordAuthentication(bool),
    /// `KbdInteractiveAuthentication`, or its old name
    /// `ChallengeResponseAuthentication`, which sets the same option.
    KbdInteractiveAuthentication(bool),
    PermitEmptyPasswords(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitRootLogin {
    Yes,
    No,
    /// `prohibit-password`, also spelled `without-password` (which `sshd -T`
    /// prints for it).
    ProhibitPassword,
    ForcedCommandsOnly,
}

impl PermitRootLogin {
    pub fn as_str(self) -> &'static str {
        match self {
            PermitRootLogin::Yes => "yes",
            PermitRootLogin::No => "no",
            PermitRootLogin::ProhibitPassword => "prohibit-password",
            PermitRootLogin::ForcedCommandsOnly => "forced-commands-only",
        }
    }

    fn parse(text: &str) -> Option<PermitRootLogin> {
        match text.to_ascii_lowercase().as_str() {
            "yes" => Some(PermitRootLogin::Yes),
            "no" => Some(PermitRootLogin::No),
            "prohibit-password" | "without-password" => Some(PermitRootLogin::ProhibitPassword),
            "forced-commands-only" => Some(PermitRootLogin::ForcedCommandsOnly),
            _ => None,
        }
    }
}

/// `Match ...`: the lines after it, up to the next `Match` or the end of its
/// file, apply only to connections that meet every criterion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchLine {
    pub line: usize,
    /// Empty for `Match All`.
    pub criteria: Vec<Criterion>,
}

impl MatchLine {
    pub fn is_all(&self) -> bool {
        self.criteria.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criterion {
    pub kind: CriterionKind,
    /// The comma-separated pattern list, as written.
    pub patterns: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CriterionKind {
    User,
    Group,
    Host,
    Address,
    LocalAddress,
    LocalPort,
    RDomain,
}

impl CriterionKind {
    fn parse(text: &str) -> Option<CriterionKind> {
        match text.to_ascii_lowercase().as_str() {
            "user" => Some(CriterionKind::User),
            "group" => Some(CriterionKind::Group),
            "host" => Some(CriterionKind::Host),
            "address" => Some(CriterionKind::Address),
            "localaddress" => Some(CriterionKind::LocalAddress),
            "localport" => Some(CriterionKind::LocalPort),
            "rdomain" => Some(CriterionKind::RDomain),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CriterionKind::User => "User",
            CriterionKind::Group => "Group",
            CriterionKind::Host => "Host",
            CriterionKind::Address => "Address",
            CriterionKind::LocalAddress => "LocalAddress",
            CriterionKind::LocalPort => "LocalPort",
            CriterionKind::RDomain => "RDomain",
        }
    }
}

/// `Include pattern...`, and the files it found (sorted, as glob(3) returns
/// them), each parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub line: usize,
    /// The patterns as resolved: relative ones are under /etc/ssh.
    pub patterns: Vec<String>,
    pub files: Vec<SshdConfig>,
}

/// A configuration sshd would refuse, or perimeter could not read.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {kind}", file.display())]
pub struct SshdConfigError {
    pub file: PathBuf,
    /// 0 when the error is about the file as a whole.
    pub line: usize,
    pub kind: SshdConfigErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum SshdConfigErrorKind {
    #[error("no argument after keyword `{0}`")]
    MissingArgument(String),
    #[error("unterminated quote")]
    UnterminatedQuote,
    #[error("unknown Match criterion `{0}`")]
    UnknownCriterion(String),
    #[error("Match criterion `{0}` needs a value")]
    MissingCriterionValue(String),
    #[error("`Match All` cannot be combined with other criteria")]
    AllCombined,
    #[error("invalid address list `{0}`")]
    BadAddressList(String),
    #[error("invalid port `{0}` for Match LocalPort")]
    BadPort(String),
    #[error("unsupported value `{value}` for {keyword}")]
    BadValue { keyword: String, value: String },
    #[error("{0} takes one argument")]
    ExtraArguments(String),
    #[error("{0} is not allowed on the command line")]
    NotOnCommandLine(String),
    #[error("include loop: {} includes itself", .0.display())]
    IncludeLoop(PathBuf),
    #[error("includes nested deeper than {MAX_INCLUDE_DEPTH}")]
    IncludeTooDeep,
    #[error("could not read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
}

// ---------------------------------------------------------------------------
// OpenSSH's tokenizers

const WHITESPACE: &[char] = &[' ', '\t', '\r', '\n'];

/// OpenSSH's `strdelim`: the next word of `s`, split at whitespace or at most
/// one `=`, with a "double-quoted" word taken whole. Returns the word and the
/// rest (`None` at the end of the line); `Err` for an unterminated quote.
fn strdelim(s: &str) -> Result<(String, Option<&str>), SshdConfigErrorKind> {
    let Some(pos) = s.find(|c: char| WHITESPACE.contains(&c) || c == '"' || c == '=') else {
        return Ok((s.to_owned(), None));
    };
    let (head, tail) = s.split_at(pos);
    if let Some(after_quote) = tail.strip_prefix('"') {
        let close = after_quote
            .find('"')
            .ok_or(SshdConfigErrorKind::UnterminatedQuote)?;
        let (quoted, rest) = after_quote.split_at(close);
        let rest = rest.get(1..).unwrap_or("").trim_start_matches(WHITESPACE);
        return Ok((format!("{head}{quoted}"), Some(rest)));
    }
    let was_equals = tail.starts_with('=');
    let mut rest = tail.get(1..).unwrap_or("").trim_start_matches(WHITESPACE);
    if !was_equals && let Some(after) = rest.strip_prefix('=') {
        rest = after.trim_start_matches(WHITESPACE);
    }
    Ok((head.to_owned(), Some(rest)))
}

/// OpenSSH's `argv_split` with `terminate_on_comment`: words split at spaces
/// and tabs, 'single' or "double" quotes, backslash escapes of quotes,
/// backslashes and (outside quotes) spaces, and a `#` starting a word ends the
/// line.
fn argv_split(s: &str) -> Result<Vec<String>, SshdConfigErrorKind> {
    let chars: Vec<char> = s.chars().collect();
    let mut args = Vec::new();
    let mut idx = 0;
    while idx < chars.len() {
        let c = chars[idx];
        if c == ' ' || c == '\t' {
            idx += 1;
            continue;
        }
        if c == '#' {
            break;
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.get(idx) {
            match c {
                '\\' => {
                    let next = chars.get(idx + 1).copied();
                    match next {
                        Some(n)
                            if n == '\''
                                || n == '"'
                                || n == '\\'
                                || (quote.is_none() && n == ' ') =>
                        {
                            arg.push(n);
                            idx += 1;
                        }
                        _ => arg.push('\\'),
                    }
                }
                ' ' | '\t' if quote.is_none() => break,
                '"' | '\'' if quote.is_none() => quote = Some(c),
                c if Some(c) == quote => quote = None,
                c => arg.push(c),
            }
            idx += 1;
        }
        if quote.is_some() {
            return Err(SshdConfigErrorKind::UnterminatedQuote);
        }
        args.push(arg);
    }
    Ok(args)
}

// ---------------------------------------------------------------------------
// Parsing

/// One file of sshd_config(5), without following its `Include`s (their
/// `files` are empty). `file` names the file in errors and in the result.
pub fn parse_sshd_config(text: &str, file: &Path) -> Result<SshdConfig, SshdConfigError> {
    let mut items = Vec::new();
    for (line_idx, raw) in text.split('\n').enumerate() {
        let line = line_idx + 1;
        let error = |kind| SshdConfigError {
            file: file.to_owned(),
            line,
            kind,
        };
        if let Some(item) = parse_line(raw, line).map_err(error)? {
            items.push(item);
        }
    }
    Ok(SshdConfig {
        file: file.to_owned(),
        items,
    })
}

/// One line, as servconf.c's `process_server_config_line_depth` reads it.
fn parse_line(raw: &str, line: usize) -> Result<Option<Item>, SshdConfigErrorKind> {
    // load_server_config strips leading blanks; the line parser strips
    // trailing whitespace and form feeds.
    let text = raw
        .trim_start_matches([' ', '\t', '\r'])
        .trim_end_matches([' ', '\t', '\r', '\n', '\u{c}']);
    if text.is_empty() {
        return Ok(None);
    }
    let (mut keyword, mut rest) = strdelim(text)?;
    if keyword.is_empty()
        && let Some(after) = rest
    {
        (keyword, rest) = strdelim(after)?;
    }
    if keyword.is_empty() || keyword.starts_with('#') {
        return Ok(None);
    }
    let rest = match rest {
        Some(rest) if !rest.is_empty() => rest,
        _ => return Err(SshdConfigErrorKind::MissingArgument(keyword)),
    };
    let args = argv_split(rest)?;
    let lower = keyword.to_ascii_lowercase();
    match lower.as_str() {
        "match" => Ok(Some(Item::Match(MatchLine {
            line,
            criteria: parse_match(rest)?,
        }))),
        "include" => {
            let patterns: Vec<String> = args
                .iter()
                .filter(|a| !a.is_empty())
                .map(|a| {
                    if a.starts_with('/') || a.starts_with('~') {
                        a.clone()
                    } else {
                        format!("{SSHDIR}/{a}")
                    }
                })
                .collect();
            if patterns.is_empty() {
                return Err(SshdConfigErrorKind::MissingArgument(keyword));
            }
            Ok(Some(Item::Include(Include {
                line,
                patterns,
                files: Vec::new(),
            })))
        }
        _ => {
            let setting = parse_setting(&lower, &keyword, &args)?;
            Ok(Some(Item::Directive(Directive {
                line,
                keyword: lower,
                args,
                setting,
            })))
        }
    }
}

/// The typed value of one of the evaluated settings; `None` for any other
/// keyword. Values are checked as sshd checks them (case-insensitive, one
/// argument), since a bad one stops sshd from starting.
fn parse_setting(
    lower: &str,
    keyword: &str,
    args: &[String],
) -> Result<Option<Setting>, SshdConfigErrorKind> {
    let is_evaluated = matches!(
        lower,
        "permitrootlogin"
            | "passwordauthentication"
            | "kbdinteractiveauthentication"
            | "challengeresponseauthentication"
            | "permitemptypasswords"
    );
    if !is_evaluated {
        return Ok(None);
    }
    let [value] = args else {
        return match args {
            [] => Err(SshdConfigErrorKind::MissingArgument(keyword.to_owned())),
            _ => Err(SshdConfigErrorKind::ExtraArguments(keyword.to_owned())),
        };
    };
    let bad = || SshdConfigErrorKind::BadValue {
        keyword: keyword.to_owned(),
        value: value.clone(),
    };
    let flag = || match value.to_ascii_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(bad()),
    };
    let setting = match lower {
        "permitrootlogin" => {
            Setting::PermitRootLogin(PermitRootLogin::parse(value).ok_or_else(bad)?)
        }
        "passwordauthentication" => Setting::PasswordAuthentication(flag()?),
        "permitemptypasswords" => Setting::PermitEmptyPasswords(flag()?),
        _ => Setting::KbdInteractiveAuthentication(flag()?),
    };
    Ok(Some(setting))
}

/// The criteria after `Match`, as servconf.c's `match_cfg_line` reads them
/// (with `strdelim`, so `User=root` and quoted lists work).
fn parse_match(text: &str) -> Result<Vec<Criterion>, SshdConfigErrorKind> {
    let mut criteria = Vec::new();
    let mut rest = Some(text);
    let mut n_attributes = 0;
    while let Some(current) = rest {
        let (attribute, after) = strdelim(current)?;
        rest = after;
        if attribute.is_empty() {
            if rest.is_none_or(str::is_empty) {
                break;
            }
            continue;
        }
        if attribute.starts_with('#') {
            break;
        }
        n_attributes += 1;
        if attribute.eq_ignore_ascii_case("all") {
            let trailing = match rest {
                Some(after) if !after.is_empty() => Some(strdelim(after)?.0),
                _ => None,
            };
            let trailing_words = trailing.is_some_and(|w| !w.is_empty() && !w.starts_with('#'));
            if n_attributes > 1 || trailing_words {
                return Err(SshdConfigErrorKind::AllCombined);
            }
            return Ok(Vec::new());
        }
        let value = match rest {
            Some(after) if !after.is_empty() => {
                let (value, after) = strdelim(after)?;
                rest = after;
                value
            }
            _ => String::new(),
        };
        if value.is_empty() || value.starts_with('#') {
            return Err(SshdConfigErrorKind::MissingCriterionValue(attribute));
        }
        let kind = CriterionKind::parse(&attribute)
            .ok_or(SshdConfigErrorKind::UnknownCriterion(attribute))?;
        match kind {
            CriterionKind::Address | CriterionKind::LocalAddress
                if addr_match_list(None, &value) == -2 =>
            {
                return Err(SshdConfigErrorKind::BadAddressList(value));
            }
            CriterionKind::LocalPort => {
                value
                    .parse::<u16>()
                    .map_err(|_| SshdConfigErrorKind::BadPort(value.clone()))?;
            }
            _ => {}
        }
        criteria.push(Criterion {
            kind,
            patterns: value,
        });
    }
    if n_attributes == 0 {
        return Err(SshdConfigErrorKind::MissingArgument("Match".to_owned()));
    }
    Ok(criteria)
}

/// A `-o Keyword=value` option from sshd's command line, which sets a value
/// before the file is read (so it wins over the file's global lines, but not
/// over a matching `Match` block).
pub fn parse_command_line_option(text: &str) -> Result<Directive, SshdConfigError> {
    let error = |kind| SshdConfigError {
        file: PathBuf::from("command-line"),
        line: 0,
        kind,
    };
    match parse_line(text, 0).map_err(error)? {
        Some(Item::Directive(directive)) => Ok(directive),
        Some(Item::Match(_)) => Err(error(SshdConfigErrorKind::NotOnCommandLine(
            "Match".to_owned(),
        ))),
        Some(Item::Include(_)) => Err(error(SshdConfigErrorKind::NotOnCommandLine(
            "Include".to_owned(),
        ))),
        None => Err(error(SshdConfigErrorKind::MissingArgument(text.to_owned()))),
    }
}

/// How the parser reaches files, so tests can feed literals.
pub trait ConfigFiles {
    fn read(&self, path: &Path) -> io::Result<String>;
    /// The files matching a glob pattern, in the order glob(3) returns them
    /// (sorted). No match is an empty list, not an error.
    fn glob(&self, pattern: &str) -> Vec<PathBuf>;
}

/// The real file system, optionally seen through a process's root
/// (`/proc/PID/root`) so a containerised sshd's files are the ones read.
#[derive(Debug, Clone, Default)]
pub struct RealFiles {
    pub root: Option<PathBuf>,
}

impl RealFiles {
    fn on_disk(&self, path: &Path) -> PathBuf {
        match &self.root {
            Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_owned(),
        }
    }
}

impl ConfigFiles for RealFiles {
    fn read(&self, path: &Path) -> io::Result<String> {
        let file = fs::File::open(self.on_disk(path))?;
        let mut text = String::new();
        // Bounded: a config file is small; a huge one is not read whole.
        io::Read::read_to_string(&mut io::Read::take(file, MAX_CONFIG_BYTES), &mut text)?;
        Ok(text)
    }

    fn glob(&self, pattern: &str) -> Vec<PathBuf> {
        let (full, prefix) = match &self.root {
            Some(root) => {
                let escaped = glob::Pattern::escape(&root.to_string_lossy());
                (format!("{escaped}{pattern}"), Some(root.as_path()))
            }
            None => (pattern.to_owned(), None),
        };
        let Ok(paths) = glob::glob(&full) else {
            return Vec::new();
        };
        let mut found: Vec<PathBuf> = paths
            .filter_map(Result::ok)
            .map(|path| match prefix {
                Some(root) => path
                    .strip_prefix(root)
                    .map(|inside| Path::new("/").join(inside))
                    .unwrap_or(path),
                None => path,
            })
            .collect();
        found.sort();
        found
    }
}

/// A config file and every file it includes, parsed. Include loops and
/// nesting deeper than sshd allows are errors naming the `Include` line.
pub fn load_sshd_config(
    file: &Path,
    files: &dyn ConfigFiles,
) -> Result<SshdConfig, SshdConfigError> {
    let mut chain = Vec::new();
    load_depth(file, files, &mut chain)
}

fn load_depth(
    file: &Path,
    files: &dyn ConfigFiles,
    chain: &mut Vec<PathBuf>,
) -> Result<SshdConfig, SshdConfigError> {
    let text = files.read(file).map_err(|source| SshdConfigError {
        file: file.to_owned(),
        line: 0,
        kind: SshdConfigErrorKind::Read {
            path: file.to_owned(),
            source,
        },
    })?;
    let mut config = parse_sshd_config(&text, file)?;
    chain.push(file.to_owned());
    for item in &mut config.items {
        let Item::Include(include) = item else {
            continue;
        };
        let error = |kind| SshdConfigError {
            file: file.to_owned(),
            line: include.line,
            kind,
        };
        for pattern in &include.patterns {
            for path in files.glob(pattern) {
                if chain.contains(&path) {
                    return Err(error(SshdConfigErrorKind::IncludeLoop(path)));
                }
                if chain.len() > MAX_INCLUDE_DEPTH {
                    return Err(error(SshdConfigErrorKind::IncludeTooDeep));
                }
                match load_depth(&path, files, chain) {
                    Ok(included) => include.files.push(included),
                    Err(SshdConfigError {
                        line: 0,
                        kind: SshdConfigErrorKind::Read { path, source },
                        ..
                    }) => return Err(error(SshdConfigErrorKind::Read { path, source })),
                    Err(other) => return Err(other),
                }
            }
        }
    }
    chain.pop();
    Ok(config)
}

impl SshdConfig {
    /// Every `Match` line, in evaluation order (includes expanded), with the
    /// file it is in.
    pub fn match_lines(&self) -> Vec<(&Path, &MatchLine)> {
        let mut lines = Vec::new();
        self.collect_matches(&mut lines);
        lines
    }

    fn collect_matches<'a>(&'a self, lines: &mut Vec<(&'a Path, &'a MatchLine)>) {
        for item in &self.items {
            match item {
                Item::Match(m) => lines.push((self.file.as_path(), m)),
                Item::Include(include) => {
                    include.files.iter().for_each(|f| f.collect_matches(lines))
                }
                Item::Directive(_) => {}
            }
        }
    }

    /// Every file read, the main one first.
    pub fn files(&self) -> Vec<&Path> {
        let mut files = vec![self.file.as_path()];
        for item in &self.items {
            if let Item::Include(include) = item {
                for file in &include.files {
                    files.extend(file.files());
                }
            }
        }
        files
    }
}

// ---------------------------------------------------------------------------
// OpenSSH's pattern matching (match.c, addrmatch.c)

/// `match_pattern`: `*` and `?` wildcards, case-sensitive. Iterative, with the
/// usual single backtrack point, so no pattern can make it recurse or take
/// exponential time.
pub fn match_pattern(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == '?' || c == s[si] => {
                si += 1;
                pi += 1;
            }
            _ => match star {
                Some((star_pi, star_si)) => {
                    pi = star_pi + 1;
                    si = star_si + 1;
                    star = Some((star_pi, star_si + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// `match_pattern_list`: 1 when some pattern of the comma list matches and no
/// negated (`!`) one does, -1 when a negated one matches, 0 otherwise. With
/// `lower`, the patterns are lowercased first (host names).
pub fn match_pattern_list(s: &str, list: &str, lower: bool) -> i32 {
    let mut got_positive = false;
    for sub in list.split(',') {
        let (negated, sub) = match sub.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, sub),
        };
        let sub = if lower {
            sub.to_ascii_lowercase()
        } else {
            sub.to_owned()
        };
        if match_pattern(s, &sub) {
            if negated {
                return -1;
            }
            got_positive = true;
        }
    }
    i32::from(got_positive)
}

/// `addr_pton_cidr`: `Ok(Some((network, len)))` for an address or CIDR block,
/// `Ok(None)` for something that is not one (so a wildcard pattern), `Err` for
/// a CIDR block sshd rejects (prefix too long for the family, host bits set).
///
/// sshd parses addresses with getaddrinfo, which also takes inet_aton's short
/// forms (`10.1`); those are wildcard patterns here, as in every real config.
fn addr_pton_cidr(text: &str) -> Result<Option<(IpAddr, u8)>, ()> {
    let (addr_text, len) = match text.split_once('/') {
        Some((addr, len)) => {
            if !len.starts_with(|c: char| c.is_ascii_digit())
                || !len.bytes().all(|b| b.is_ascii_digit())
            {
                return Ok(None);
            }
            match len.parse::<u32>() {
                Ok(len) if len <= 128 => (addr, Some(len)),
                _ => return Ok(None),
            }
        }
        None => (text, None),
    };
    let Ok(addr) = addr_text.parse::<IpAddr>() else {
        return Ok(None);
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    if len > max {
        return Err(());
    }
    let len = u8::try_from(len).map_err(|_| ())?;
    if network_of(addr, len) != addr {
        return Err(());
    }
    Ok(Some((addr, len)))
}

fn network_of(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

fn in_network(addr: IpAddr, network: IpAddr, len: u8) -> bool {
    addr.is_ipv4() == network.is_ipv4() && network_of(addr, len) == network
}

/// `addr_match_list`: 1 when the address matches an entry (CIDR or wildcard
/// pattern on its text) and no negated entry, -1 when a negated entry matches,
/// 0 when none does, -2 when the list is malformed. With no address, only
/// checks the list (0 or -2).
pub fn addr_match_list(addr: Option<IpAddr>, list: &str) -> i32 {
    let text = addr.map(|a| a.to_string());
    let mut result = 0;
    for entry in list.split(',') {
        let (negated, entry) = match entry.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        if entry.is_empty() {
            return -2;
        }
        let found = match addr_pton_cidr(entry) {
            Err(()) => return -2,
            Ok(Some((network, len))) => addr.is_some_and(|a| in_network(a, network, len)),
            Ok(None) => text.as_deref().is_some_and(|t| match_pattern(t, entry)),
        };
        if found {
            if negated {
                return -1;
            }
            result = 1;
        }
    }
    result
}

// ---------------------------------------------------------------------------
// Evaluation

/// The connection a configuration is evaluated for, as `sshd -T -C` takes it.
/// A field left `None` makes every criterion on it fail, as in `sshd -T`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    pub user: Option<String>,
    /// The user's groups, for `Match Group`; `None` when unknown.
    pub groups: Option<Vec<String>>,
    /// The client's host name; with `UseDNS no` (the default), its address.
    pub host: Option<String>,
    pub addr: Option<IpAddr>,
    pub laddr: Option<IpAddr>,
    pub lport: Option<u16>,
    pub rdomain: Option<String>,
}

impl Connection {
    /// `user=root,host=...,addr=...`, the `-C` argument of `sshd -T`.
    pub fn criteria(&self) -> String {
        let mut parts = Vec::new();
        if let Some(user) = &self.user {
            parts.push(format!("user={user}"));
        }
        if let Some(host) = &self.host {
            parts.push(format!("host={host}"));
        }
        if let Some(addr) = self.addr {
            parts.push(format!("addr={addr}"));
        }
        if let Some(laddr) = self.laddr {
            parts.push(format!("laddr={laddr}"));
        }
        if let Some(lport) = self.lport {
            parts.push(format!("lport={lport}"));
        }
        if let Some(rdomain) = &self.rdomain {
            parts.push(format!("rdomain={rdomain}"));
        }
        parts.join(",")
    }
}

impl MatchLine {
    /// Whether the block applies. With no connection (sshd's start-up pass),
    /// only `Match All` does.
    pub fn matches(&self, conn: Option<&Connection>) -> bool {
        let Some(conn) = conn else {
            return self.is_all();
        };
        self.criteria
            .iter()
            .all(|criterion| criterion.matches(conn))
    }
}

impl Criterion {
    pub fn matches(&self, conn: &Connection) -> bool {
        let list = self.patterns.as_str();
        match self.kind {
            CriterionKind::User => conn
                .user
                .as_deref()
                .is_some_and(|u| match_pattern_list(u, list, false) == 1),
            CriterionKind::Group => conn.groups.as_ref().is_some_and(|groups| {
                // ga_match_pattern_list: a negated match on any group wins.
                let results: Vec<i32> = groups
                    .iter()
                    .map(|g| match_pattern_list(g, list, false))
                    .collect();
                !results.contains(&-1) && results.contains(&1)
            }),
            CriterionKind::Host => conn
                .host
                .as_deref()
                .is_some_and(|h| match_pattern_list(&h.to_ascii_lowercase(), list, true) == 1),
            CriterionKind::Address => conn
                .addr
                .is_some_and(|a| addr_match_list(Some(a), list) == 1),
            CriterionKind::LocalAddress => conn
                .laddr
                .is_some_and(|a| addr_match_list(Some(a), list) == 1),
            CriterionKind::LocalPort => conn.lport.is_some_and(|p| list.parse::<u16>() == Ok(p)),
            CriterionKind::RDomain => conn
                .rdomain
                .as_deref()
                .is_some_and(|r| match_pattern_list(r, list, false) == 1),
        }
    }
}

/// The authentication settings perimeter reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthSettings {
    pub permit_root_login: PermitRootLogin,
    pub password_authentication: bool,
    pub kbd_interactive_authentication: bool,
    pub permit_empty_passwords: bool,
}

impl AuthSettings {
    /// OpenSSH's compiled-in defaults (Debian does not change them; its
    /// shipped file sets `KbdInteractiveAuthentication no`).
    pub const DEFAULTS: AuthSettings = AuthSettings {
        permit_root_login: PermitRootLogin::ProhibitPassword,
        password_authentication: true,
        kbd_interactive_authentication: true,
        permit_empty_passwords: false,
    };
}

impl fmt::Display for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "permitrootlogin {}, passwordauthentication {}, kbdinteractiveauthentication {}, permitemptypasswords {}",
            self.permit_root_login.as_str(),
            yes_no(self.password_authentication),
            yes_no(self.kbd_interactive_authentication),
            yes_no(self.permit_empty_passwords)
        )
    }
}

/// Values set so far in one pass; the first value of each wins.
#[derive(Debug, Clone, Copy, Default)]
struct PassValues {
    permit_root_login: Option<PermitRootLogin>,
    password_authentication: Option<bool>,
    kbd_interactive_authentication: Option<bool>,
    permit_empty_passwords: Option<bool>,
}

impl PassValues {
    fn take(&mut self, directive: &Directive) {
        if let Some(setting) = directive.setting {
            self.take_setting(setting);
        }
    }

    fn take_setting(&mut self, setting: Setting) {
        match setting {
            Setting::PermitRootLogin(v) => {
                self.permit_root_login.get_or_insert(v);
            }
            Setting::PasswordAuthentication(v) => {
                self.password_authentication.get_or_insert(v);
            }
            Setting::KbdInteractiveAuthentication(v) => {
                self.kbd_interactive_authentication.get_or_insert(v);
            }
            Setting::PermitEmptyPasswords(v) => {
                self.permit_empty_passwords.get_or_insert(v);
            }
        }
    }

    /// servconf.c's `copy_set_server_options`: what the connection pass set
    /// overrides what start-up set.
    fn over(self, base: PassValues) -> PassValues {
        PassValues {
            permit_root_login: self.permit_root_login.or(base.permit_root_login),
            password_authentication: self
                .password_authentication
                .or(base.password_authentication),
            kbd_interactive_authentication: self
                .kbd_interactive_authentication
                .or(base.kbd_interactive_authentication),
            permit_empty_passwords: self.permit_empty_passwords.or(base.permit_empty_passwords),
        }
    }

    fn or_defaults(self) -> AuthSettings {
        let d = AuthSettings::DEFAULTS;
        AuthSettings {
            permit_root_login: self.permit_root_login.unwrap_or(d.permit_root_login),
            password_authentication: self
                .password_authentication
                .unwrap_or(d.password_authentication),
            kbd_interactive_authentication: self
                .kbd_interactive_authentication
                .unwrap_or(d.kbd_interactive_authentication),
            permit_empty_passwords: self
                .permit_empty_passwords
                .unwrap_or(d.permit_empty_passwords),
        }
    }
}

/// servconf.c's include flags: how `Match` lines in an included file behave.
#[derive(Debug, Clone, Copy, Default)]
struct IncludeFlags {
    /// The connection pass, before the includer's first `Match`: lines are
    /// inactive only because this pass skips global lines, so `Match` blocks
    /// inside are evaluated.
    match_only: bool,
    /// Included from inside a `Match` block that did not match: nothing in the
    /// file can apply.
    never_match: bool,
}

fn walk(
    config: &SshdConfig,
    conn: Option<&Connection>,
    mut flags: IncludeFlags,
    active: &mut bool,
    out: &mut PassValues,
) {
    for item in &config.items {
        match item {
            Item::Directive(directive) => {
                if *active {
                    out.take(directive);
                }
            }
            Item::Match(m) => {
                *active = !flags.never_match && m.matches(conn);
                flags.match_only = false;
            }
            Item::Include(include) => {
                // Each included file starts, and the includer resumes, with the
                // includer's state: a Match block ends with its file.
                let outer_active = *active;
                for file in &include.files {
                    let child = if flags.match_only {
                        IncludeFlags {
                            match_only: true,
                            never_match: false,
                        }
                    } else {
                        IncludeFlags {
                            match_only: false,
                            never_match: !outer_active,
                        }
                    };
                    walk(file, conn, child, active, out);
                    *active = outer_active;
                }
            }
        }
    }
}

/// The effective settings for one connection, as sshd computes them: the
/// start-up pass (command-line `-o` options first, then global lines and
/// `Match All` blocks; first value wins), overridden by the connection pass
/// (only `Match` blocks that match; first value wins), over the defaults.
pub fn evaluate(
    config: &SshdConfig,
    command_line: &[Directive],
    conn: &Connection,
) -> AuthSettings {
    let mut startup = PassValues::default();
    for directive in command_line {
        startup.take(directive);
    }
    let mut active = true;
    walk(
        config,
        None,
        IncludeFlags::default(),
        &mut active,
        &mut startup,
    );

    let mut connection = PassValues::default();
    let mut active = false;
    let flags = IncludeFlags {
        match_only: true,
        never_match: false,
    };
    walk(config, Some(conn), flags, &mut active, &mut connection);
    connection.over(startup).or_defaults()
}

/// The value a global keyword has after the start-up pass, for keywords
/// perimeter does not type (`usedns`, `port`). First value wins.
pub fn global_value<'a>(
    config: &'a SshdConfig,
    command_line: &'a [Directive],
    keyword: &str,
) -> Option<&'a [String]> {
    fn find<'a>(config: &'a SshdConfig, keyword: &str, active: &mut bool) -> Option<&'a [String]> {
        for item in &config.items {
            match item {
                Item::Directive(d) if *active && d.keyword == keyword => return Some(&d.args),
                Item::Match(m) => *active = m.matches(None),
                Item::Include(include) => {
                    let outer = *active;
                    for file in &include.files {
                        if outer && let Some(found) = find(file, keyword, active) {
                            return Some(found);
                        }
                        *active = outer;
                    }
                }
                Item::Directive(_) => {}
            }
        }
        None
    }
    command_line
        .iter()
        .find(|d| d.keyword == keyword)
        .map(|d| d.args.as_slice())
        .or_else(|| find(config, keyword, &mut true))
}

// ---------------------------------------------------------------------------
// Source classes

/// A class of client source addresses that the configuration treats alike,
/// with one address inside it to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceClass {
    /// In words: `Address 10.0.0.0/8 (/etc/ssh/sshd_config:12)`, or `any other
    /// address`.
    pub description: String,
    pub addr: IpAddr,
}

/// The classes of source address that behave differently under the `Match`
/// blocks' `Address` (and, with `UseDNS no`, `Host`) criteria: one per
/// distinct set of blocks an address can satisfy, including "none of them".
///
/// Candidate addresses are drawn from inside every positive CIDR entry (its
/// first, middle and last hosts, and the addresses around every block nested
/// in it) and from wildcard patterns; each candidate's signature is the set
/// of blocks whose address criteria it satisfies. "Any other address" (first
/// in the result) comes from documentation ranges that match no pattern.
pub fn source_classes(config: &SshdConfig) -> Vec<SourceClass> {
    let blocks: Vec<(&Path, &MatchLine, Vec<&Criterion>)> = config
        .match_lines()
        .into_iter()
        .map(|(file, m)| {
            let address_criteria = m
                .criteria
                .iter()
                .filter(|c| matches!(c.kind, CriterionKind::Address | CriterionKind::Host))
                .collect::<Vec<_>>();
            (file, m, address_criteria)
        })
        .filter(|(_, _, criteria)| !criteria.is_empty())
        .collect();

    let other_candidates = || {
        OTHER_ADDRESSES
            .iter()
            .filter_map(|a| a.parse::<IpAddr>().ok())
    };
    if blocks.is_empty() {
        return vec![SourceClass {
            description: "any address".to_owned(),
            addr: other_candidates()
                .next()
                .unwrap_or(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7))),
        }];
    }

    let networks: Vec<(IpAddr, u8)> = blocks
        .iter()
        .flat_map(|(_, _, criteria)| criteria.iter())
        .flat_map(|c| c.patterns.split(','))
        .filter(|entry| !entry.starts_with('!'))
        .filter_map(|entry| addr_pton_cidr(entry).ok().flatten())
        .collect();
    let mut candidates: Vec<IpAddr> = Vec::new();
    for &(network, len) in &networks {
        candidates.extend(hosts_in(network, len));
        for &(inner, inner_len) in &networks {
            if inner_len > len && in_network(inner, network, len) {
                candidates.extend(
                    around(inner, inner_len)
                        .into_iter()
                        .filter(|a| in_network(*a, network, len)),
                );
            }
        }
    }
    for (_, _, criteria) in &blocks {
        for entry in criteria.iter().flat_map(|c| c.patterns.split(',')) {
            if !entry.starts_with('!') && addr_pton_cidr(entry).ok().flatten().is_none() {
                candidates.extend(wildcard_candidates(entry));
            }
        }
    }
    candidates.extend(other_candidates());

    let signature = |addr: IpAddr| -> Vec<bool> {
        let conn = Connection {
            addr: Some(addr),
            host: Some(addr.to_string()),
            ..Connection::default()
        };
        blocks
            .iter()
            .map(|(_, _, criteria)| criteria.iter().all(|c| c.matches(&conn)))
            .collect()
    };
    let mut seen: Vec<Vec<bool>> = Vec::new();
    let mut classes: Vec<(Vec<bool>, IpAddr)> = Vec::new();
    for addr in candidates {
        let sig = signature(addr);
        if !seen.contains(&sig) {
            seen.push(sig.clone());
            classes.push((sig, addr));
        }
    }
    // "Any other address" (the Internet, usually the class that matters
    // most) first, so a capped evaluation never loses it; then the classes by
    // the file order of the first block that applies to them.
    classes.sort_by_key(|(sig, _)| sig.iter().position(|&m| m).map_or(0, |pos| pos + 1));
    classes
        .into_iter()
        .map(|(sig, addr)| {
            let matched: Vec<String> = sig
                .iter()
                .zip(&blocks)
                .filter(|(m, _)| **m)
                .map(|(_, (file, m, criteria))| {
                    let words: Vec<String> = criteria
                        .iter()
                        .map(|c| format!("{} {}", c.kind.as_str(), c.patterns))
                        .collect();
                    format!("{} ({}:{})", words.join(" "), file.display(), m.line)
                })
                .collect();
            let description = if matched.is_empty() {
                "any other address".to_owned()
            } else {
                matched.join("; ")
            };
            SourceClass { description, addr }
        })
        .collect()
}

/// A few hosts inside a network: first, middle, last (or the address itself).
fn hosts_in(network: IpAddr, len: u8) -> Vec<IpAddr> {
    match network {
        IpAddr::V4(v4) => {
            let base = u32::from(v4);
            let size = 1u64 << (32 - u32::from(len));
            let offsets: Vec<u64> = if size <= 2 {
                vec![0]
            } else {
                vec![1, size / 2 + 1, size - 2]
            };
            offsets
                .into_iter()
                .filter_map(|o| u32::try_from(o).ok())
                .map(|o| IpAddr::V4(Ipv4Addr::from(base.wrapping_add(o))))
                .collect()
        }
        IpAddr::V6(v6) => {
            let base = u128::from(v6);
            let bits = 128 - u32::from(len);
            if bits == 0 {
                return vec![network];
            }
            let size_minus_one = u128::MAX >> (128 - bits);
            let offsets = if bits == 1 {
                vec![0]
            } else {
                vec![1, size_minus_one / 2 + 2, size_minus_one - 1]
            };
            offsets
                .into_iter()
                .map(|o| IpAddr::V6(Ipv6Addr::from(base.wrapping_add(o))))
                .collect()
        }
    }
}

/// The addresses just outside a network, on both sides.
fn around(network: IpAddr, len: u8) -> Vec<IpAddr> {
    match network {
        IpAddr::V4(v4) => {
            let base = u32::from(v4);
            let last = base | u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            [base.checked_sub(1), last.checked_add(1)]
                .into_iter()
                .flatten()
                .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .collect()
        }
        IpAddr::V6(v6) => {
            let base = u128::from(v6);
            let last = base | u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            [base.checked_sub(1), last.checked_add(1)]
                .into_iter()
                .flatten()
                .map(|a| IpAddr::V6(Ipv6Addr::from(a)))
                .collect()
        }
    }
}

/// Addresses that a wildcard pattern (`192.168.*`, `10.?.1.1`, `fe80::*`)
/// matches, found by filling the wildcards with a few likely pieces.
fn wildcard_candidates(pattern: &str) -> Vec<IpAddr> {
    const FILLS: [&str; 6] = ["1", "10", "1.1", "1.1.1", "0.1", "1:1"];
    let mut found = Vec::new();
    for fill in FILLS {
        let text = pattern.replace('*', fill).replace('?', "1");
        if let Ok(addr) = text.parse::<IpAddr>()
            && match_pattern(&addr.to_string(), pattern)
            && !found.contains(&addr)
        {
            found.push(addr);
        }
    }
    found
}

// ---------------------------------------------------------------------------
// sshd -T

/// `sshd -T` output: `keyword value` lines. Returns the evaluated settings;
/// `without-password` is read as `prohibit-password` (the same value).
pub fn parse_sshd_t(text: &str) -> Result<AuthSettings, String> {
    let mut values = PassValues::default();
    for line in text.lines() {
        let Some((keyword, value)) = line.split_once(' ') else {
            continue;
        };
        if let Ok(Some(setting)) = parse_setting(keyword, keyword, &[value.trim().to_owned()]) {
            values.take_setting(setting);
        }
    }
    let missing: Vec<&str> = [
        ("permitrootlogin", values.permit_root_login.is_none()),
        (
            "passwordauthentication",
            values.password_authentication.is_none(),
        ),
        (
            "kbdinteractiveauthentication",
            values.kbd_interactive_authentication.is_none(),
        ),
        (
            "permitemptypasswords",
            values.permit_empty_passwords.is_none(),
        ),
    ]
    .into_iter()
    .filter(|(_, missing)| *missing)
    .map(|(name, _)| name)
    .collect();
    if !missing.is_empty() {
        return Err(format!("sshd -T output lacks {}", missing.join(", ")));
    }
    Ok(values.or_defaults())
}

/// Runs `SSHD -T -f CONFIG [-o ...] -C CRITERIA`, the daemon's own evaluation.
pub fn run_sshd_t(
    sshd: &Path,
    config: &Path,
    options: &[String],
    conn: &Connection,
) -> Result<AuthSettings, String> {
    let mut command = Command::new(sshd);
    command.arg("-T").arg("-f").arg(config);
    for option in options {
        command.arg("-o").arg(option);
    }
    command.arg("-C").arg(conn.criteria());
    let out =
        run_bounded(command, Duration::from_secs(10), 1024 * 1024).map_err(|e| e.to_string())?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message");
        return Err(format!("sshd -T failed: {first}"));
    }
    parse_sshd_t(&String::from_utf8_lossy(&out.stdout))
}

// ---------------------------------------------------------------------------
// The running daemon

/// What sshd's command line says about its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshdArgs {
    /// `-f FILE`.
    pub config_file: Option<PathBuf>,
    /// `-o Keyword=value` options, in order.
    pub options: Vec<String>,
}

/// sshd's options that take an argument (from its getopt string
/// `C:E:b:c:f:g:h:k:o:p:u:46DGQRTdeiqrtV`).
const OPTIONS_WITH_ARGUMENT: &str = "CEbcfghkopu";

/// Reads `-f` and `-o` from an sshd command line, as argv or as the single
/// rewritten process title OpenSSH sets (`sshd: /usr/sbin/sshd -D -f /etc/x
/// [listener] 0 of 10-100 startups`). A title cannot show where a path with
/// spaces ends; such paths are read up to the first space.
pub fn parse_sshd_cmdline(cmdline: &[String]) -> SshdArgs {
    // A rewritten title may be followed by empty strings (the NUL padding of
    // the old argv area).
    let non_empty: Vec<&String> = cmdline.iter().filter(|w| !w.is_empty()).collect();
    let words: Vec<String> = match non_empty.as_slice() {
        [title] if title.contains(char::is_whitespace) => {
            let title = title.strip_prefix("sshd: ").unwrap_or(title);
            title
                .split_whitespace()
                .take_while(|w| !w.starts_with('['))
                .map(str::to_owned)
                .collect()
        }
        _ => non_empty.into_iter().cloned().collect(),
    };
    let mut args = SshdArgs::default();
    let mut idx = 1;
    while let Some(word) = words.get(idx) {
        idx += 1;
        if word == "--" {
            break;
        }
        let Some(flags) = word.strip_prefix('-') else {
            continue;
        };
        for (pos, flag) in flags.char_indices() {
            if !OPTIONS_WITH_ARGUMENT.contains(flag) {
                continue;
            }
            let attached = &flags[pos + flag.len_utf8()..];
            let value = if attached.is_empty() {
                let value = words.get(idx).cloned();
                idx += 1;
                value
            } else {
                Some(attached.to_owned())
            };
            match (flag, value) {
                ('f', Some(file)) => args.config_file = Some(PathBuf::from(file)),
                ('o', Some(option)) => args.options.push(option),
                _ => {}
            }
            break;
        }
    }
    args
}

/// The effective authentication settings of the sshd with `pid`, per class of
/// source address. See [`inspect_sshd_listening`].
pub fn inspect_sshd(
    pid: u32,
    exe: Option<&Path>,
    cmdline: &[String],
) -> (Option<SshdFacts>, Vec<Problem>) {
    inspect_sshd_listening(pid, exe, cmdline, &[])
}

/// Like [`inspect_sshd`], also evaluating `Match LocalAddress` / `LocalPort`
/// blocks for each address the daemon listens on (`listeners`).
///
/// `sshd -T` is the authority when it can run: as root (it loads the host
/// keys), with an executable owned by root and writable by nobody else, and in
/// the same mount namespace (else the files it would read are not the
/// daemon's). Otherwise, and when it fails, perimeter's own evaluation is used
/// and a problem says why. When both ran and disagree, a problem says so.
pub fn inspect_sshd_listening(
    pid: u32,
    exe: Option<&Path>,
    cmdline: &[String],
    listeners: &[SocketAddr],
) -> (Option<SshdFacts>, Vec<Problem>) {
    let mut problems = Vec::new();
    let subject = format!("sshd (pid {pid})");
    let args = parse_sshd_cmdline(cmdline);
    let config_file = args
        .config_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    if config_file.is_relative() {
        problems.push(Problem::new(
            &subject,
            format!(
                "sshd was started with a relative config path {}; read relative to /",
                config_file.display()
            ),
        ));
    }
    let config_file = Path::new("/").join(&config_file);

    let same_mount_ns = same_mount_namespace(pid);
    let files = RealFiles {
        root: (!same_mount_ns).then(|| PathBuf::from(format!("/proc/{pid}/root"))),
    };

    let mut command_line = Vec::new();
    for option in &args.options {
        match parse_command_line_option(option) {
            Ok(directive) => command_line.push(directive),
            Err(err) => problems.push(Problem::new(
                &subject,
                format!("sshd option -o {option:?}: {err}"),
            )),
        }
    }

    let config = match load_sshd_config(&config_file, &files) {
        Ok(config) => Some(config),
        Err(err) => {
            problems.push(Problem::new(
                &subject,
                format!("could not evaluate the sshd configuration: {err}"),
            ));
            None
        }
    };

    let classes = match &config {
        Some(config) => source_classes(config),
        None => vec![SourceClass {
            description: "any address".to_owned(),
            addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        }],
    };
    let users = match &config {
        Some(config) => users_to_evaluate(config),
        None => vec!["root".to_owned(), OTHER_USER.to_owned()],
    };
    let locals = local_endpoints(
        config.as_ref(),
        &command_line,
        listeners,
        &subject,
        &mut problems,
    );
    if let Some(config) = &config
        && global_value(config, &command_line, "usedns")
            .is_some_and(|v| v.first().is_some_and(|v| v.eq_ignore_ascii_case("yes")))
    {
        problems.push(Problem::new(
            &subject,
            "UseDNS yes: Match Host blocks depend on reverse DNS; they were evaluated with the address as the host name",
        ));
    }

    let mut planned: Vec<(&SourceClass, Connection)> = Vec::new();
    for class in &classes {
        for user in &users {
            for local in &locals {
                planned.push((
                    class,
                    Connection {
                        user: Some(user.clone()),
                        groups: groups_of(user),
                        host: Some(class.addr.to_string()),
                        addr: Some(class.addr),
                        laddr: local.0,
                        lport: local.1,
                        rdomain: None,
                    },
                ));
            }
        }
    }
    if planned.len() > MAX_EVALUATIONS {
        problems.push(Problem::new(
            &subject,
            format!(
                "{} combinations of source class, user and listener; only the first {MAX_EVALUATIONS} were evaluated",
                planned.len()
            ),
        ));
        planned.truncate(MAX_EVALUATIONS);
    }

    let authoritative =
        sshd_for_t(pid, exe, same_mount_ns, &subject, &mut problems).and_then(|sshd| {
            let connections: Vec<&Connection> = planned.iter().map(|(_, conn)| conn).collect();
            ask_sshd_t(
                &sshd,
                &config_file,
                &args.options,
                &connections,
                &subject,
                &mut problems,
            )
        });

    let ours: Option<Vec<AuthSettings>> = config.as_ref().map(|config| {
        planned
            .iter()
            .map(|(_, conn)| evaluate(config, &command_line, conn))
            .collect()
    });

    let (method, settings) = match (&authoritative, &ours) {
        (Some(theirs), Some(ours)) => {
            for ((_, conn), (theirs, ours)) in planned.iter().zip(theirs.iter().zip(ours)) {
                if theirs != ours {
                    problems.push(Problem::new(
                        &subject,
                        format!(
                            "perimeter's reading of {} differs from sshd -T for {}: sshd says {theirs}, perimeter read {ours}; using sshd's",
                            config_file.display(),
                            conn.criteria()
                        ),
                    ));
                }
            }
            ("sshd -T", theirs.clone())
        }
        (Some(theirs), None) => ("sshd -T", theirs.clone()),
        (None, Some(ours)) => ("parsed", ours.clone()),
        (None, None) => return (None, problems),
    };

    let evaluations = planned
        .iter()
        .zip(settings)
        .map(|((class, conn), settings)| SshdEvaluation {
            sources: class.description.clone(),
            criteria: conn.criteria(),
            permit_root_login: settings.permit_root_login.as_str().to_owned(),
            password_authentication: settings.password_authentication,
            kbd_interactive_authentication: settings.kbd_interactive_authentication,
            permit_empty_passwords: settings.permit_empty_passwords,
        })
        .collect();
    let facts = SshdFacts {
        pid,
        exe: exe.map(Path::to_owned),
        config_file,
        method: method.to_owned(),
        evaluations,
    };
    (Some(facts), problems)
}

/// The (local address, local port) pairs to evaluate: one per listener when
/// the configuration has `Match LocalAddress` or `LocalPort` blocks, else a
/// single "not given".
fn local_endpoints(
    config: Option<&SshdConfig>,
    command_line: &[Directive],
    listeners: &[SocketAddr],
    subject: &str,
    problems: &mut Vec<Problem>,
) -> Vec<(Option<IpAddr>, Option<u16>)> {
    let uses = |kinds: &[CriterionKind]| {
        config.is_some_and(|c| {
            c.match_lines()
                .iter()
                .any(|(_, m)| m.criteria.iter().any(|k| kinds.contains(&k.kind)))
        })
    };
    let uses_local = uses(&[CriterionKind::LocalAddress, CriterionKind::LocalPort]);
    let uses_local_port = uses(&[CriterionKind::LocalPort]);
    let mut locals: Vec<(Option<IpAddr>, Option<u16>)> = Vec::new();
    if uses_local {
        for listener in listeners {
            let local = (Some(listener.ip()), Some(listener.port()));
            if !locals.contains(&local) {
                locals.push(local);
            }
        }
    }
    if locals.is_empty() {
        // sshd -T refuses to evaluate `Match LocalPort` without a port, so
        // the configured one stands in.
        let port = uses_local_port.then(|| configured_port(config, command_line));
        if uses_local {
            let mut message =
                "no listening address was given, so Match LocalAddress blocks were not evaluated"
                    .to_owned();
            if let Some(port) = port {
                message.push_str(&format!(
                    " and Match LocalPort was evaluated for port {port} only"
                ));
            }
            problems.push(
                Problem::new(subject, message)
                    .with_hint("pass the daemon's listeners to inspect_sshd_listening"),
            );
        }
        locals.push((None, port));
    }
    locals
}

/// `sshd -T` for every connection; `None` (with a problem saying why) as soon
/// as one run fails, since then the daemon's answer is not to be had.
fn ask_sshd_t(
    sshd: &Path,
    config_file: &Path,
    options: &[String],
    connections: &[&Connection],
    subject: &str,
    problems: &mut Vec<Problem>,
) -> Option<Vec<AuthSettings>> {
    let mut results = Vec::new();
    for conn in connections {
        match run_sshd_t(sshd, config_file, options, conn) {
            Ok(settings) => results.push(settings),
            Err(err) => {
                let mut problem = Problem::new(
                    subject,
                    format!("{err}; using perimeter's own reading of the configuration"),
                );
                if err.contains("hostkeys") || err.contains("host key") || err.contains("ermission")
                {
                    problem = problem.with_hint("sshd -T loads the host keys, which needs root");
                }
                problems.push(problem);
                return None;
            }
        }
    }
    (!results.is_empty()).then_some(results)
}

/// The groups of a local user, as sshd's `Match Group` sees them (getpwnam,
/// then getgrouplist); `None` when the user does not exist, in which case no
/// `Match Group` applies, as in sshd.
pub fn groups_of(user: &str) -> Option<Vec<String>> {
    let account = nix::unistd::User::from_name(user).ok()??;
    let name = std::ffi::CString::new(user).ok()?;
    let gids = nix::unistd::getgrouplist(&name, account.gid).ok()?;
    Some(
        gids.into_iter()
            .filter_map(|gid| nix::unistd::Group::from_gid(gid).ok().flatten())
            .map(|group| group.name)
            .collect(),
    )
}

/// The first `Port` sshd would listen on (22 when none is set).
fn configured_port(config: Option<&SshdConfig>, command_line: &[Directive]) -> u16 {
    config
        .and_then(|c| global_value(c, command_line, "port"))
        .and_then(|args| args.first())
        .and_then(|port| port.parse().ok())
        .unwrap_or(22)
}

/// The users worth evaluating: root (PermitRootLogin applies only to it),
/// users named literally in `Match User` lines, and one user no pattern names.
pub fn users_to_evaluate(config: &SshdConfig) -> Vec<String> {
    let mut users = vec!["root".to_owned()];
    for (_, m) in config.match_lines() {
        for criterion in m.criteria.iter().filter(|c| c.kind == CriterionKind::User) {
            for name in criterion.patterns.split(',') {
                let literal =
                    !name.is_empty() && !name.starts_with('!') && !name.contains(['*', '?']);
                if literal && !users.iter().any(|u| u == name) && users.len() < 6 {
                    users.push(name.to_owned());
                }
            }
        }
    }
    users.push(OTHER_USER.to_owned());
    users
}

/// The sshd binary to ask, when asking it is safe and meaningful.
fn sshd_for_t(
    pid: u32,
    exe: Option<&Path>,
    same_mount_ns: bool,
    subject: &str,
    problems: &mut Vec<Problem>,
) -> Option<PathBuf> {
    if !same_mount_ns {
        problems.push(Problem::new(
            subject,
            format!("sshd runs in another mount namespace; its files were read through /proc/{pid}/root and evaluated by perimeter, not sshd -T"),
        ));
        return None;
    }
    let sshd = match exe {
        Some(exe) => exe.to_owned(),
        None => find_tool("sshd")?,
    };
    // The binary is run as root: only one that root owns and nobody else can
    // change, as the running daemon's own is.
    match fs::metadata(&sshd) {
        Ok(meta) if meta.uid() == 0 && meta.mode() & 0o022 == 0 => Some(sshd),
        Ok(_) => {
            problems.push(Problem::new(
                subject,
                format!(
                    "{} is not owned by root or is writable by others; not running it for sshd -T",
                    sshd.display()
                ),
            ));
            None
        }
        Err(err) => {
            problems.push(Problem::new(
                subject,
                format!("{}: {err}; cannot run sshd -T", sshd.display()),
            ));
            None
        }
    }
}

fn same_mount_namespace(pid: u32) -> bool {
    match (
        fs::read_link(format!("/proc/{pid}/ns/mnt")),
        fs::read_link("/proc/self/ns/mnt"),
    ) {
        (Ok(theirs), Ok(ours)) => theirs == ours,
        // Not readable (not root, process gone): assume the host's.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strdelim_like_openssh() {
        assert_eq!(
            strdelim("PermitRootLogin no").ok(),
            Some(("PermitRootLogin".into(), Some("no")))
        );
        assert_eq!(
            strdelim("PermitRootLogin=no").ok(),
            Some(("PermitRootLogin".into(), Some("no")))
        );
        assert_eq!(
            strdelim("PermitRootLogin = no").ok(),
            Some(("PermitRootLogin".into(), Some("no")))
        );
        assert_eq!(strdelim("Keyword").ok(), Some(("Keyword".into(), None)));
        assert_eq!(strdelim("\"a b\" c").ok(), Some(("a b".into(), Some("c"))));
        assert!(strdelim("\"a b").is_err());
    }

    #[test]
    fn argv_split_like_openssh() {
        assert_eq!(argv_split("no # comment").ok(), Some(vec!["no".to_owned()]));
        assert_eq!(
            argv_split("\"a b\" 'c d' e\\ f").ok(),
            Some(vec!["a b".to_owned(), "c d".to_owned(), "e f".to_owned()])
        );
        assert_eq!(argv_split("a#b").ok(), Some(vec!["a#b".to_owned()]));
        assert!(matches!(
            argv_split("\"yes"),
            Err(SshdConfigErrorKind::UnterminatedQuote)
        ));
    }

    #[test]
    fn wildcards() {
        assert!(match_pattern("10.1.2.3", "10.*"));
        assert!(match_pattern("abc", "a?c"));
        assert!(!match_pattern("abc", "a?"));
        assert!(match_pattern("", "*"));
        assert!(match_pattern("a.example.com", "*.example.com"));
        assert!(!match_pattern("example.com", "*.example.com"));
        // A pathological pattern stays linear-ish.
        let long = "a".repeat(2000);
        assert!(!match_pattern(&long, &format!("{}b", "*a".repeat(50))));
        assert_eq!(match_pattern_list("root", "alice,!root,*", false), -1);
        assert_eq!(match_pattern_list("bob", "alice,!root,*", false), 1);
        assert_eq!(match_pattern_list("bob", "alice", false), 0);
        assert_eq!(match_pattern_list("web1", "WEB*", true), 1);
    }

    #[test]
    fn address_lists() {
        let a = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(addr_match_list(a("10.1.2.3"), "10.0.0.0/8"), 1);
        assert_eq!(
            addr_match_list(a("10.1.2.3"), "10.0.0.0/8,!10.1.0.0/16"),
            -1
        );
        assert_eq!(addr_match_list(a("10.2.2.3"), "10.0.0.0/8,!10.1.0.0/16"), 1);
        assert_eq!(addr_match_list(a("192.168.7.1"), "192.168.*"), 1);
        assert_eq!(addr_match_list(a("2001:db8::5"), "2001:db8::/32"), 1);
        assert_eq!(addr_match_list(a("10.0.0.1"), "2001:db8::/32"), 0);
        assert_eq!(addr_match_list(None, "10.0.0.1/8"), -2);
        assert_eq!(addr_match_list(None, "10.0.0.0/33"), -2);
        assert_eq!(addr_match_list(None, "10.0.0.0/8,"), -2);
        assert_eq!(addr_match_list(None, "10.0.0.0/8"), 0);
    }

    #[test]
    fn command_lines() {
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_sshd_cmdline(&argv(&[
                "/usr/sbin/sshd",
                "-D",
                "-f",
                "/etc/x",
                "-oPasswordAuthentication=no"
            ])),
            SshdArgs {
                config_file: Some("/etc/x".into()),
                options: vec!["PasswordAuthentication=no".into()],
            }
        );
        assert_eq!(
            parse_sshd_cmdline(&argv(&[
                "sshd: /usr/sbin/sshd -D -f /etc/x [listener] 0 of 10-100 startups"
            ])),
            SshdArgs {
                config_file: Some("/etc/x".into()),
                options: vec![],
            }
        );
        // Flags bundled before -f, and the argument attached.
        assert_eq!(
            parse_sshd_cmdline(&argv(&["/usr/sbin/sshd", "-Df/etc/y"])).config_file,
            Some(PathBuf::from("/etc/y"))
        );
        // -p takes an argument, so `-f` after it is its value, not an option.
        assert_eq!(
            parse_sshd_cmdline(&argv(&["/usr/sbin/sshd", "-p", "-f"])).config_file,
            None
        );
        assert_eq!(
            parse_sshd_cmdline(&argv(&[
                "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"
            ])),
            SshdArgs::default()
        );
        assert_eq!(
            parse_sshd_cmdline(&argv(&["/usr/sbin/sshd"])),
            SshdArgs::default()
        );
    }

    #[test]
    fn sshd_t_output() {
        let text = "port 22\npermitrootlogin without-password\npasswordauthentication no\nkbdinteractiveauthentication no\npermitemptypasswords no\n";
        assert_eq!(
            parse_sshd_t(text),
            Ok(AuthSettings {
                permit_root_login: PermitRootLogin::ProhibitPassword,
                password_authentication: false,
                kbd_interactive_authentication: false,
                permit_empty_passwords: false,
            })
        );
        assert_eq!(
            parse_sshd_t("port 22\n"),
            Err("sshd -T output lacks permitrootlogin, passwordauthentication, kbdinteractiveauthentication, permitemptypasswords".to_owned())
        );
    }
}
