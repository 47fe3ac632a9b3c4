//! sshd_config(5) as parsed: the lines that mean something ([`Item`]:
//! directives, `Match` lines, `Include`s with the files they found), the
//! typed values of the settings perimeter evaluates, and the errors sshd
//! would refuse to start with.

use std::io;
use std::path::{Path, PathBuf};

use super::parse::MAX_INCLUDE_DEPTH;

/// One sshd_config file, parsed, with its includes resolved (by
/// [`load_sshd_config`](crate::sshd::load_sshd_config)) or not (by
/// [`parse_sshd_config`](crate::sshd::parse_sshd_config)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshdConfig {
    pub file: PathBuf,
    pub items: Vec<Item>,
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

    pub(super) fn parse(text: &str) -> Option<PermitRootLogin> {
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
    pub(super) fn parse(text: &str) -> Option<CriterionKind> {
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
