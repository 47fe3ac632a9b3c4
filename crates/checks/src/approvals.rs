//! The approvals file: the deploy checklist of listeners beyond loopback that a
//! person confirmed, kept in version control.
//!
//! Entries are keyed on what survives a restart (namespace, protocol, bind
//! address or scope, port, executable and/or package, user), never on a pid.
//! Parsing is strict (`deny_unknown_fields`, so a typo never widens what is
//! approved) and errors carry file, line and column. Writes go through
//! [`append_entry`] (a `toml_edit` edit that keeps the operator's comments and
//! layout) and [`save_atomic`] (temp file, fsync, rename); a file that does not
//! parse is never rewritten.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use perimeter_files::{FileError, LineIndex, MAX_CONFIG_BYTES};
use perimeter_model::{Listener, Process, Protocol, Scope};
use serde::Deserialize;
use time::Date;
use toml::Spanned;
use toml::value::Datetime;

/// The approvals file format version this perimeter reads and writes.
pub const FORMAT_VERSION: i64 = 1;

/// The header written into a new approvals file.
pub const NEW_FILE_HEADER: &str = "\
# perimeter approvals: every listener beyond loopback that a person confirmed.
# Keep this file in version control; `perimeter check` fails the deploy on any
# exposed listener not listed here. Add entries with `perimeter approve`.
#
# Each [[listener]] matches on all the keys it gives:
#   netns      \"host\", a name from /run/netns, or \"*\" (default \"host\")
#   protocol   \"tcp\" or \"udp\"
#   address    the bind address (\"0.0.0.0\", \"::\", \"198.51.100.7\"), or instead
#   scope      \"wildcard\", \"public\", \"private\", \"link-local\"
#   port       1-65535
#   exe        the listening executable's path, and/or
#   package    the package that installed it
#   user       the account it runs as
#   unowned    true for sockets no process holds (kernel sockets); then no
#              exe, package or user
# and records approved_by, approved_at (a TOML date), reason, and optionally
# expires (a TOML date after which the entry no longer approves anything).
version = 1
";

/// A malformed approvals file: where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalsError {
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// One approved listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub netns: String,
    pub protocol: Protocol,
    pub bind: Bind,
    pub port: u16,
    pub owner: OwnerKey,
    pub approved_by: String,
    pub approved_at: Date,
    pub reason: String,
    pub expires: Option<Date>,
    /// Line of the entry's `[[listener]]` header, for messages.
    pub line: usize,
}

/// What the entry says about the bind address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bind {
    Address(IpAddr),
    Scope(Scope),
}

/// What the entry says about who holds the socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OwnerKey {
    Process {
        exe: Option<String>,
        package: Option<String>,
        user: Option<String>,
    },
    /// A socket no process holds (a kernel socket such as WireGuard's).
    Unowned,
}

impl fmt::Display for Approval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bind = match self.bind {
            Bind::Address(IpAddr::V6(v6)) => format!("[{v6}]"),
            Bind::Address(address) => address.to_string(),
            Bind::Scope(scope) => format!("<{scope}>"),
        };
        write!(f, "{} {}:{}", self.protocol, bind, self.port)?;
        match &self.owner {
            OwnerKey::Unowned => write!(f, " unowned")?,
            OwnerKey::Process { exe, package, user } => {
                for value in [exe, package, user].into_iter().flatten() {
                    write!(f, " {value}")?;
                }
            }
        }
        if self.netns != "host" {
            write!(f, " in netns {}", self.netns)?;
        }
        Ok(())
    }
}

/// A parsed approvals file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approvals {
    /// Where it was read from; `None` when there is no file (nothing approved).
    pub path: Option<PathBuf>,
    pub entries: Vec<Approval>,
    /// Lines of entries that approve exactly what an earlier entry does, as
    /// (earlier line, later line): a warning for the person who keeps the file.
    pub duplicates: Vec<(usize, usize)>,
}

/// What the approvals say about one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    Approved(&'a Approval),
    /// Only expired entries match.
    Expired(&'a Approval),
    Unapproved,
}

impl Approvals {
    /// One warning per duplicated entry, naming both lines.
    pub fn duplicate_warnings(&self) -> Vec<String> {
        let path = self
            .path
            .as_deref()
            .map_or_else(String::new, |p| p.display().to_string());
        self.duplicates
            .iter()
            .map(|(first, again)| {
                format!(
                    "{path}:{again}: this entry approves exactly what the entry at line {first} does; one of the two is redundant or meant to say something else"
                )
            })
            .collect()
    }

    /// The verdict for a listener held by `owners` (empty for an unowned socket).
    pub fn verdict<'a>(
        &'a self,
        listener: &Listener,
        owners: &[&Process],
        today: Date,
    ) -> Verdict<'a> {
        let mut expired = None;
        for entry in &self.entries {
            if !entry.matches(listener, owners) {
                continue;
            }
            match entry.expires {
                Some(expires) if expires < today => {
                    expired.get_or_insert(entry);
                }
                _ => return Verdict::Approved(entry),
            }
        }
        match expired {
            Some(entry) => Verdict::Expired(entry),
            None => Verdict::Unapproved,
        }
    }
}

/// A listener as facts without the host's model: what a report to the server
/// says (`perimeter server` judges reported listeners with the same rule the
/// local audit uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerFacts<'a> {
    pub netns: &'a str,
    pub protocol: Protocol,
    pub address: IpAddr,
    pub scope: Scope,
    pub port: u16,
    /// The processes holding it; empty for a socket no process holds.
    pub owners: Vec<OwnerFacts<'a>>,
}

/// A process holding a listener, as facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerFacts<'a> {
    pub exe: Option<&'a Path>,
    /// The package as shown: `name` or `name:arch`.
    pub package: Option<&'a str>,
    pub user: &'a str,
}

impl Approvals {
    /// [`Approvals::verdict`] over facts; the index is the entry's position.
    pub fn verdict_facts(
        &self,
        listener: &ListenerFacts<'_>,
        today: Date,
    ) -> (Verdict<'_>, Option<usize>) {
        let mut expired = None;
        for (index, entry) in self.entries.iter().enumerate() {
            if !entry.matches_facts(listener) {
                continue;
            }
            match entry.expires {
                Some(expires) if expires < today => {
                    expired.get_or_insert((entry, index));
                }
                _ => return (Verdict::Approved(entry), Some(index)),
            }
        }
        match expired {
            Some((entry, index)) => (Verdict::Expired(entry), Some(index)),
            None => (Verdict::Unapproved, None),
        }
    }
}

impl Approval {
    /// Whether this entry covers the listener. Expiry is not considered here.
    pub fn matches(&self, listener: &Listener, owners: &[&Process]) -> bool {
        let packages: Vec<Option<String>> = owners
            .iter()
            .map(|process| process.ownership.package().map(ToString::to_string))
            .collect();
        let users: Vec<String> = owners.iter().map(|process| process.user_name()).collect();
        let facts = ListenerFacts {
            netns: &listener.netns.name,
            protocol: listener.protocol,
            address: listener.address,
            scope: listener.scope,
            port: listener.port,
            owners: owners
                .iter()
                .zip(&packages)
                .zip(&users)
                .map(|((process, package), user)| OwnerFacts {
                    exe: process.exe.as_deref(),
                    package: package.as_deref(),
                    user,
                })
                .collect(),
        };
        // A socket the kernel says some process holds, though none could be
        // read, is not "unowned".
        if matches!(self.owner, OwnerKey::Unowned) && !listener.owners.is_empty() {
            return false;
        }
        self.matches_facts(&facts)
    }

    /// Whether this entry covers the listener described by `facts`.
    pub fn matches_facts(&self, listener: &ListenerFacts<'_>) -> bool {
        if self.netns != "*" && self.netns != listener.netns {
            return false;
        }
        if self.protocol != listener.protocol || self.port != listener.port {
            return false;
        }
        let bind_ok = match self.bind {
            Bind::Address(address) => same_address(address, listener.address),
            Bind::Scope(scope) => scope == listener.scope,
        };
        if !bind_ok {
            return false;
        }
        match &self.owner {
            OwnerKey::Unowned => listener.owners.is_empty(),
            OwnerKey::Process { exe, package, user } => listener.owners.iter().any(|owner| {
                let exe_ok = exe
                    .as_deref()
                    .is_none_or(|exe| owner.exe.is_some_and(|actual| actual == Path::new(exe)));
                let package_ok = package.as_deref().is_none_or(|wanted| {
                    owner.package.is_some_and(|shown| {
                        shown == wanted || shown.split(':').next() == Some(wanted)
                    })
                });
                let user_ok = user.as_deref().is_none_or(|wanted| owner.user == wanted);
                exe_ok && package_ok && user_ok
            }),
        }
    }
}

/// IPv4-mapped IPv6 and IPv4 name the same bind.
fn same_address(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: Spanned<i64>,
    #[serde(default)]
    listener: Vec<Spanned<RawApproval>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    netns: Option<Spanned<String>>,
    protocol: Spanned<String>,
    address: Option<Spanned<String>>,
    scope: Option<Spanned<String>>,
    port: Spanned<i64>,
    exe: Option<Spanned<String>>,
    package: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    unowned: Option<Spanned<bool>>,
    approved_by: Spanned<String>,
    approved_at: Spanned<Datetime>,
    reason: Spanned<String>,
    expires: Option<Spanned<Datetime>>,
}

/// Parse the text of an approvals file. `path` is only used in messages.
pub fn parse_approvals(text: &str, path: &Path) -> Result<Approvals, ApprovalsError> {
    // A byte-order mark is not TOML; editors on some systems add one. Lines
    // and columns are those of what follows it, which is what a person sees.
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
    if *raw.version.get_ref() != FORMAT_VERSION {
        return Err(invalid(
            raw.version.span(),
            format!(
                "approvals format version {} is not supported (this perimeter reads version {FORMAT_VERSION})",
                raw.version.get_ref()
            ),
        ));
    }
    let mut entries = Vec::with_capacity(raw.listener.len());
    for spanned in raw.listener {
        let entry_span = spanned.span();
        let raw = spanned.into_inner();
        let netns = match raw.netns {
            Some(netns) if netns.get_ref().trim().is_empty() => {
                return Err(invalid(netns.span(), "netns must not be empty".into()));
            }
            Some(netns) => netns.into_inner(),
            None => "host".to_owned(),
        };
        let protocol = Protocol::parse(raw.protocol.get_ref()).ok_or_else(|| {
            invalid(
                raw.protocol.span(),
                format!(
                    "protocol `{}` is not `tcp` or `udp`",
                    raw.protocol.get_ref()
                ),
            )
        })?;
        let bind = match (raw.address, raw.scope) {
            (Some(address), None) => {
                let parsed = address.get_ref().parse::<IpAddr>().map_err(|_| {
                    invalid(
                        address.span(),
                        format!("`{}` is not an IP address", address.get_ref()),
                    )
                })?;
                Bind::Address(parsed)
            }
            (None, Some(scope)) => {
                let parsed = Scope::parse(scope.get_ref()).ok_or_else(|| {
                    invalid(
                        scope.span(),
                        format!(
                            "scope `{}` is not one of wildcard, public, private, link-local, loopback",
                            scope.get_ref()
                        ),
                    )
                })?;
                Bind::Scope(parsed)
            }
            (Some(_), Some(scope)) => {
                return Err(invalid(
                    scope.span(),
                    "give either `address` or `scope`, not both".into(),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    entry_span,
                    "entry needs `address` or `scope`".into(),
                ));
            }
        };
        let port = match u16::try_from(*raw.port.get_ref()) {
            Ok(port) if port != 0 => port,
            _ => {
                return Err(invalid(
                    raw.port.span(),
                    format!("port {} is not in 1-65535", raw.port.get_ref()),
                ));
            }
        };
        let unowned = raw.unowned.as_ref().is_some_and(|u| *u.get_ref());
        let owner = if unowned {
            if let Some(key) = [&raw.exe, &raw.package, &raw.user]
                .into_iter()
                .flatten()
                .next()
            {
                return Err(invalid(
                    key.span(),
                    "an `unowned = true` entry cannot also name an exe, package or user".into(),
                ));
            }
            OwnerKey::Unowned
        } else {
            if raw.exe.is_none() && raw.package.is_none() {
                return Err(invalid(
                    entry_span,
                    "entry needs `exe` or `package` (or `unowned = true` for a socket no process holds)".into(),
                ));
            }
            if let Some(exe) = &raw.exe
                && !exe.get_ref().starts_with('/')
            {
                return Err(invalid(
                    exe.span(),
                    format!("exe `{}` is not an absolute path", exe.get_ref()),
                ));
            }
            for key in [&raw.package, &raw.user].into_iter().flatten() {
                if key.get_ref().trim().is_empty() {
                    return Err(invalid(key.span(), "value must not be empty".into()));
                }
            }
            OwnerKey::Process {
                exe: raw.exe.map(Spanned::into_inner),
                package: raw.package.map(Spanned::into_inner),
                user: raw.user.map(Spanned::into_inner),
            }
        };
        for key in [&raw.approved_by, &raw.reason] {
            if key.get_ref().trim().is_empty() {
                return Err(invalid(key.span(), "value must not be empty".into()));
            }
        }
        let approved_at =
            toml_date(&raw.approved_at).map_err(|m| invalid(raw.approved_at.span(), m))?;
        let expires = match &raw.expires {
            Some(expires) => Some(toml_date(expires).map_err(|m| invalid(expires.span(), m))?),
            None => None,
        };
        entries.push(Approval {
            netns,
            protocol,
            bind,
            port,
            owner,
            approved_by: raw.approved_by.into_inner(),
            approved_at,
            reason: raw.reason.into_inner(),
            expires,
            line: lines.line_column(text, entry_span.start).0,
        });
    }
    let duplicates = find_duplicates(&entries);
    Ok(Approvals {
        path: Some(path.to_owned()),
        entries,
        duplicates,
    })
}

/// A TOML local date (`2026-11-25`, unquoted) as a `time::Date`.
fn toml_date(value: &Spanned<Datetime>) -> Result<Date, String> {
    let datetime = value.get_ref();
    match (datetime.date, datetime.time, datetime.offset) {
        (Some(date), None, None) => {
            let month = time::Month::try_from(date.month)
                .map_err(|_| format!("`{datetime}` is not a valid date"))?;
            Date::from_calendar_date(i32::from(date.year), month, date.day)
                .map_err(|_| format!("`{datetime}` is not a valid date"))
        }
        _ => Err(format!(
            "`{datetime}` must be a plain date like 2026-11-25, without a time"
        )),
    }
}

/// Pairs of lines whose entries approve exactly the same listeners (same
/// netns, protocol, bind, port and owner keys): the later one can never add
/// anything, and usually one of the two was meant to say something else.
fn find_duplicates(entries: &[Approval]) -> Vec<(usize, usize)> {
    let mut first_by_key: std::collections::HashMap<_, usize> =
        std::collections::HashMap::with_capacity(entries.len());
    let mut duplicates = Vec::new();
    for entry in entries {
        let key = (
            entry.netns.as_str(),
            entry.protocol,
            // IPv4-mapped IPv6 and IPv4 name the same bind (as in `matches`).
            match entry.bind {
                Bind::Address(address) => Bind::Address(address.to_canonical()),
                scope => scope,
            },
            entry.port,
            &entry.owner,
        );
        match first_by_key.get(&key) {
            Some(&first) => duplicates.push((first, entry.line)),
            None => {
                first_by_key.insert(key, entry.line);
            }
        }
    }
    duplicates
}

/// Read and parse an approvals file. A missing file is "nothing approved" only
/// when `missing_ok` (the default location); a path the user named must exist.
pub fn load(path: &Path, missing_ok: bool) -> Result<Approvals, ApprovalsError> {
    match read_file(path, "an approvals file")? {
        Some(text) => parse_approvals(&text, path),
        None if missing_ok => Ok(Approvals::default()),
        None => Err(ApprovalsError::Read {
            path: path.to_owned(),
            message: "no such file".to_owned(),
        }),
    }
}

/// The text of a configuration file, or `None` when there is none; a FIFO, a
/// device, a file over the configuration cap or one that is not UTF-8 is an
/// error that says so (with line and column for bad bytes).
pub(crate) fn read_file(path: &Path, what: &'static str) -> Result<Option<String>, ApprovalsError> {
    match perimeter_files::read_text(path, what, MAX_CONFIG_BYTES) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.is_not_found() => Ok(None),
        Err(FileError::NotUtf8 {
            path,
            line,
            column,
            byte,
        }) => Err(ApprovalsError::Invalid {
            path,
            line,
            column,
            message: format!("not UTF-8 text (byte 0x{byte:02x})"),
        }),
        Err(err) => Err(ApprovalsError::Read {
            path: path.to_owned(),
            message: without_path(&err, path),
        }),
    }
}

/// A file error's message without the path in front, for errors that put the
/// path in themselves.
fn without_path(err: &FileError, path: &Path) -> String {
    let message = err.to_string();
    let prefix = format!("{}: ", path.display());
    message
        .strip_prefix(&prefix)
        .map_or_else(|| message.clone(), str::to_owned)
}

/// Append an entry to the approvals file at `path` (through a symlink, to its
/// target), creating the file with its header when there is none: under an
/// exclusive lock, so that two `perimeter approve` at once both land; re-read
/// under the lock (someone may have edited it meanwhile); written atomically,
/// keeping the file's owner, group and mode, its byte-order mark and its line
/// endings. Returns the file that was written (the symlink's target).
pub fn append_to_file(path: &Path, entry: &NewApproval) -> Result<PathBuf, ApprovalsError> {
    let write_err = |err: FileError| ApprovalsError::Write {
        path: path.to_owned(),
        message: without_path(&err, path),
    };
    let lock = perimeter_files::lock_for_update(path).map_err(write_err)?;
    let original = read_file(&lock.target, "an approvals file")?.unwrap_or_default();
    let bom = original.starts_with('\u{feff}');
    let crlf = original.contains("\r\n");
    let body = original.strip_prefix('\u{feff}').unwrap_or(&original);
    let mut updated = append_entry(body, entry, path)?;
    if crlf {
        updated = with_crlf(&updated);
    }
    if bom {
        updated.insert(0, '\u{feff}');
    }
    perimeter_files::write_atomic(&lock.target, updated.as_bytes(), 0o644).map_err(write_err)?;
    Ok(lock.target.clone())
}

/// Every line ending as CRLF, for a file that was written with them (what
/// toml_edit adds uses LF).
fn with_crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    let mut previous = '\0';
    for ch in text.chars() {
        if ch == '\n' && previous != '\r' {
            out.push('\r');
        }
        out.push(ch);
        previous = ch;
    }
    out
}

/// A new entry, as `perimeter approve` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApproval {
    pub netns: String,
    pub protocol: Protocol,
    pub bind: Bind,
    pub port: u16,
    pub owner: OwnerKey,
    pub approved_by: String,
    pub approved_at: Date,
    pub reason: String,
    pub expires: Option<Date>,
}

/// Append an entry to the text of an approvals file (empty text starts a new
/// file), keeping every comment and the layout of what is there. The result is
/// re-parsed before it is returned, so a bug here cannot write a file that
/// perimeter would then refuse.
pub fn append_entry(
    text: &str,
    entry: &NewApproval,
    path: &Path,
) -> Result<String, ApprovalsError> {
    let base = if text.trim().is_empty() {
        NEW_FILE_HEADER.to_owned()
    } else {
        // Never edit a file that does not parse: the caller would lose the
        // operator's intent along with our change.
        parse_approvals(text, path)?;
        text.to_owned()
    };
    let mut doc: toml_edit::DocumentMut = base.parse().map_err(|err: toml_edit::TomlError| {
        let (line, column) =
            LineIndex::new(&base).line_column(&base, err.span().map_or(0, |s| s.start));
        ApprovalsError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message: err.message().to_owned(),
        }
    })?;
    let mut table = key_table(entry);
    table.insert("approved_by", toml_edit::value(entry.approved_by.as_str()));
    table.insert(
        "approved_at",
        toml_edit::value(toml_datetime(entry.approved_at)),
    );
    table.insert("reason", toml_edit::value(entry.reason.as_str()));
    if let Some(expires) = entry.expires {
        table.insert("expires", toml_edit::value(toml_datetime(expires)));
    }
    let listeners = doc
        .entry("listener")
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()));
    match listeners.as_array_of_tables_mut() {
        Some(array) => array.push(table),
        None => {
            return Err(ApprovalsError::Invalid {
                path: path.to_owned(),
                line: 1,
                column: 1,
                message: "`listener` must be an array of tables ([[listener]])".into(),
            });
        }
    }
    let new_text = doc.to_string();
    parse_approvals(&new_text, path)?;
    Ok(new_text)
}

/// The entry's keys (what it matches on), as a TOML table.
fn key_table(entry: &NewApproval) -> toml_edit::Table {
    let mut table = toml_edit::Table::new();
    if entry.netns != "host" {
        table.insert("netns", toml_edit::value(entry.netns.as_str()));
    }
    table.insert("protocol", toml_edit::value(entry.protocol.as_str()));
    match entry.bind {
        Bind::Address(address) => table.insert("address", toml_edit::value(address.to_string())),
        Bind::Scope(scope) => table.insert("scope", toml_edit::value(scope.as_str())),
    };
    table.insert("port", toml_edit::value(i64::from(entry.port)));
    match &entry.owner {
        OwnerKey::Unowned => {
            table.insert("unowned", toml_edit::value(true));
        }
        OwnerKey::Process { exe, package, user } => {
            if let Some(exe) = exe {
                table.insert("exe", toml_edit::value(exe.as_str()));
            }
            if let Some(package) = package {
                table.insert("package", toml_edit::value(package.as_str()));
            }
            if let Some(user) = user {
                table.insert("user", toml_edit::value(user.as_str()));
            }
        }
    }
    table
}

/// The keys of an entry as the approvals file writes them, one `key = value`
/// per line: what `perimeter server` stores as an approval's selector.
pub fn selector_toml(entry: &NewApproval) -> String {
    let mut doc = toml_edit::DocumentMut::new();
    for (key, item) in key_table(entry) {
        doc.insert(&key, item);
    }
    doc.to_string()
}

impl Approval {
    /// The entry as a new one (for moving entries between a file and the
    /// server).
    pub fn to_new(&self) -> NewApproval {
        NewApproval {
            netns: self.netns.clone(),
            protocol: self.protocol,
            bind: self.bind,
            port: self.port,
            owner: self.owner.clone(),
            approved_by: self.approved_by.clone(),
            approved_at: self.approved_at,
            reason: self.reason.clone(),
            expires: self.expires,
        }
    }
}

/// One entry of an approvals file rendered from stored approvals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry<'a> {
    /// As [`selector_toml`] wrote it.
    pub selector: &'a str,
    pub approved_by: &'a str,
    pub approved_at: Date,
    pub reason: &'a str,
    pub expires: Option<Date>,
}

/// An approvals file holding `entries` in order, checked to parse (so its
/// entries are the stored ones, index for index). A selector that is not a
/// table of keys is an error naming its position.
pub fn render_file(header: &str, entries: &[StoredEntry<'_>]) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut =
        format!("{header}version = {FORMAT_VERSION}\n")
            .parse()
            .map_err(|err: toml_edit::TomlError| format!("the header does not parse: {err}"))?;
    let mut array = toml_edit::ArrayOfTables::new();
    for (index, entry) in entries.iter().enumerate() {
        let selector: toml_edit::DocumentMut = entry
            .selector
            .parse()
            .map_err(|err: toml_edit::TomlError| format!("entry {index}: {err}"))?;
        let mut table = toml_edit::Table::new();
        for (key, item) in selector.as_table().iter() {
            match key {
                "approved_by" | "approved_at" | "reason" | "expires" => {
                    return Err(format!("entry {index}: `{key}` is not a selector key"));
                }
                _ => {
                    table.insert(key, item.clone());
                }
            }
        }
        table.insert("approved_by", toml_edit::value(entry.approved_by));
        table.insert(
            "approved_at",
            toml_edit::value(toml_datetime(entry.approved_at)),
        );
        table.insert("reason", toml_edit::value(entry.reason));
        if let Some(expires) = entry.expires {
            table.insert("expires", toml_edit::value(toml_datetime(expires)));
        }
        array.push(table);
    }
    if !array.is_empty() {
        doc.insert("listener", toml_edit::Item::ArrayOfTables(array));
    }
    let text = doc.to_string();
    let parsed = parse_approvals(&text, Path::new("<server>")).map_err(|err| err.to_string())?;
    if parsed.entries.len() != entries.len() {
        return Err("the rendered file does not hold every entry".into());
    }
    Ok(text)
}

fn toml_datetime(date: Date) -> toml_edit::Datetime {
    toml_edit::Datetime {
        date: Some(toml_edit::Date {
            year: u16::try_from(date.year()).unwrap_or(0),
            month: u8::from(date.month()),
            day: date.day(),
        }),
        time: None,
        offset: None,
    }
}

/// Write a file atomically through `perimeter_files::write_atomic`: readers
/// see the old file or the new one, never half of either; a symlink is written
/// through to its target; anything but a regular file is refused; the old
/// file's owner, group and mode are kept.
pub fn save_atomic(path: &Path, contents: &str) -> Result<(), ApprovalsError> {
    perimeter_files::write_atomic(path, contents.as_bytes(), 0o644).map_err(|err| {
        ApprovalsError::Write {
            path: path.to_owned(),
            message: without_path(&err, path),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn parse(text: &str) -> Result<Approvals, String> {
        parse_approvals(text, Path::new("approvals.toml")).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"version = 1

# The bastion's SSH.
[[listener]]
protocol = "tcp"
address = "0.0.0.0"
port = 22
exe = "/usr/sbin/sshd"
user = "root"
approved_by = "alice"
approved_at = 2026-11-01
reason = "bastion ssh"

[[listener]]
netns = "*"
protocol = "udp"
scope = "wildcard"
port = 51820
unowned = true
approved_by = "bob"
approved_at = 2026-11-02
reason = "wireguard"
expires = 2026-11-20
"#;

    #[test]
    fn parses_entries() {
        let approvals = parse(GOOD).expect("parses");
        assert_eq!(approvals.entries.len(), 2);
        let ssh = &approvals.entries[0];
        assert_eq!(ssh.to_string(), "tcp 0.0.0.0:22 /usr/sbin/sshd root");
        assert_eq!(ssh.line, 4);
        let wg = &approvals.entries[1];
        assert_eq!(wg.owner, OwnerKey::Unowned);
        assert_eq!(wg.bind, Bind::Scope(Scope::Wildcard));
        assert_eq!(wg.to_string(), "udp <wildcard>:51820 unowned in netns *");
    }

    #[test]
    fn errors_carry_line_and_column() {
        let cases = [
            (
                "version = 1\n[[listener]]\nprotocol = \"tcp\"\naddress = \"0.0.0.0\"\nport = 22\nexe = \"/usr/sbin/sshd\"\napproved_by = \"a\"\napproved_at = 2026-11-01\nreason = \"r\"\nuser = \"root\"\nports = 23\n",
                "approvals.toml:11:1: unknown field `ports`, expected one of",
            ),
            (
                "version = 1\n[[listener]]\nprotocol = \"sctp\"\naddress = \"0.0.0.0\"\nport = 22\nexe = \"/usr/sbin/sshd\"\napproved_by = \"a\"\napproved_at = 2026-11-01\nreason = \"r\"\n",
                "approvals.toml:3:12: protocol `sctp` is not `tcp` or `udp`",
            ),
            (
                "version = 1\n[[listener]]\nprotocol = \"tcp\"\naddress = \"0.0.0.300\"\nport = 22\nexe = \"/usr/sbin/sshd\"\napproved_by = \"a\"\napproved_at = 2026-11-01\nreason = \"r\"\n",
                "approvals.toml:4:11: `0.0.0.300` is not an IP address",
            ),
            (
                "version = 1\n[[listener]]\nprotocol = \"tcp\"\naddress = \"0.0.0.0\"\nport = 70000\nexe = \"/usr/sbin/sshd\"\napproved_by = \"a\"\napproved_at = 2026-11-01\nreason = \"r\"\n",
                "approvals.toml:5:8: port 70000 is not in 1-65535",
            ),
            (
                "version = 1\n[[listener]]\nprotocol = \"tcp\"\naddress = \"0.0.0.0\"\nport = 22\napproved_by = \"a\"\napproved_at = 2026-11-01\nreason = \"r\"\n",
                "approvals.toml:2:1: entry needs `exe` or `package`",
            ),
            (
                "version = 1\n[[listener]]\nprotocol = \"tcp\"\naddress = \"0.0.0.0\"\nport = 22\nexe = \"/usr/sbin/sshd\"\napproved_by = \"a\"\napproved_at = \"yesterday\"\nreason = \"r\"\n",
                "approvals.toml:8:15:",
            ),
            (
                "version = 2\n",
                "approvals.toml:1:11: approvals format version 2 is not supported",
            ),
            ("version = 1\n[[listener]\n", "approvals.toml:2:"),
        ];
        for (text, want) in cases {
            let got = parse(text).expect_err("must fail");
            assert!(
                got.starts_with(want),
                "for\n{text}\ngot: {got}\nwant prefix: {want}"
            );
        }
    }

    #[test]
    fn verdicts_match_on_every_key_and_honour_expiry() {
        let approvals = parse(GOOD).expect("parses");
        let today = time::macros::date!(2026 - 11 - 25);
        let sshd = fixtures::process(10, 1, "/usr/sbin/sshd", 0, "root");
        let listener = fixtures::listener("tcp", "0.0.0.0", 22, &[10]);
        assert!(matches!(
            approvals.verdict(&listener, &[&sshd], today),
            Verdict::Approved(_)
        ));
        // Same port, different executable: not approved.
        let other = fixtures::process(11, 1, "/usr/local/bin/sshd", 0, "root");
        assert_eq!(
            approvals.verdict(&listener, &[&other], today),
            Verdict::Unapproved
        );
        // Same executable as another user.
        let other_user = fixtures::process(12, 1, "/usr/sbin/sshd", 1000, "dev");
        assert_eq!(
            approvals.verdict(&listener, &[&other_user], today),
            Verdict::Unapproved
        );
        // Different address.
        let v6 = fixtures::listener("tcp", "::", 22, &[10]);
        assert_eq!(approvals.verdict(&v6, &[&sshd], today), Verdict::Unapproved);
        // The wireguard entry expired on the 20th.
        let wg = fixtures::listener("udp", "0.0.0.0", 51820, &[]);
        assert!(matches!(
            approvals.verdict(&wg, &[], today),
            Verdict::Expired(_)
        ));
        let before = time::macros::date!(2026 - 11 - 19);
        assert!(matches!(
            approvals.verdict(&wg, &[], before),
            Verdict::Approved(_)
        ));
    }

    #[test]
    fn append_keeps_comments_and_round_trips() {
        let entry = NewApproval {
            netns: "host".into(),
            protocol: Protocol::Tcp,
            bind: Bind::Address("::".parse().expect("addr")),
            port: 6379,
            owner: OwnerKey::Process {
                exe: Some("/usr/bin/redis-check-rdb".into()),
                package: Some("redis-tools".into()),
                user: Some("redis".into()),
            },
            approved_by: "carol".into(),
            approved_at: time::macros::date!(2026 - 11 - 25),
            reason: "cache for app \"x\"".into(),
            expires: Some(time::macros::date!(2027 - 01 - 01)),
        };
        let text = append_entry(GOOD, &entry, Path::new("approvals.toml")).expect("appends");
        assert!(text.starts_with(GOOD), "existing text kept verbatim");
        assert!(text.contains("# The bastion's SSH."));
        let approvals = parse(&text).expect("re-parses");
        assert_eq!(approvals.entries.len(), 3);
        assert_eq!(approvals.entries[2].reason, "cache for app \"x\"");

        let fresh = append_entry("", &entry, Path::new("new.toml")).expect("new file");
        assert!(fresh.starts_with("# perimeter approvals"));
        assert_eq!(parse(&fresh).expect("parses").entries.len(), 1);
    }

    #[test]
    fn append_refuses_a_malformed_file() {
        let entry = NewApproval {
            netns: "host".into(),
            protocol: Protocol::Tcp,
            bind: Bind::Scope(Scope::Wildcard),
            port: 80,
            owner: OwnerKey::Unowned,
            approved_by: "a".into(),
            approved_at: time::macros::date!(2026 - 11 - 25),
            reason: "r".into(),
            expires: None,
        };
        let err = append_entry("version = 1\nbogus = 3\n", &entry, Path::new("a.toml"))
            .expect_err("refuses");
        assert!(
            err.to_string()
                .starts_with("a.toml:2:1: unknown field `bogus`"),
            "{err}"
        );
    }

    #[test]
    fn save_atomic_replaces_and_keeps_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("approvals.toml");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        save_atomic(&path, "new").expect("save");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("readdir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".perimeter"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left behind");
    }

    fn wildcard_entry(port: u16) -> NewApproval {
        NewApproval {
            netns: "host".into(),
            protocol: Protocol::Tcp,
            bind: Bind::Scope(Scope::Wildcard),
            port,
            owner: OwnerKey::Process {
                exe: Some("/usr/sbin/nginx".into()),
                package: None,
                user: None,
            },
            approved_by: "dave".into(),
            approved_at: time::macros::date!(2026 - 12 - 01),
            reason: "web".into(),
            expires: None,
        }
    }

    #[test]
    fn append_to_file_keeps_the_byte_order_mark_and_crlf_endings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("approvals.toml");
        let original = format!("\u{feff}{}", GOOD.replace('\n', "\r\n"));
        std::fs::write(&path, &original).expect("write");

        append_to_file(&path, &wildcard_entry(443)).expect("appends");

        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with(&original), "existing bytes kept verbatim");
        assert!(
            !text.replace("\r\n", "").contains('\n'),
            "a bare LF crept in: {text:?}"
        );
        assert_eq!(text.matches('\u{feff}').count(), 1);
        let approvals = load(&path, false).expect("re-reads");
        assert_eq!(approvals.entries.len(), 3);
        assert_eq!(approvals.entries[2].port, 443);
    }

    #[test]
    fn append_to_file_writes_through_a_symlink_into_a_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).expect("mkdir");
        std::fs::write(repo.join("approvals.toml"), GOOD).expect("write");
        let link = dir.path().join("perimeter-approvals.toml");
        std::os::unix::fs::symlink("repo/approvals.toml", &link).expect("symlink");

        let written = append_to_file(&link, &wildcard_entry(8443)).expect("appends");

        assert_eq!(written, repo.join("approvals.toml"));
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("lstat")
                .file_type()
                .is_symlink()
        );
        let in_repo = parse(&std::fs::read_to_string(repo.join("approvals.toml")).expect("read"))
            .expect("parses");
        assert_eq!(in_repo.entries.len(), 3);
    }

    #[test]
    fn append_to_file_creates_a_new_file_with_its_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("approvals.toml");
        append_to_file(&path, &wildcard_entry(80)).expect("creates");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# perimeter approvals"), "{text}");
        assert_eq!(parse(&text).expect("parses").entries.len(), 1);
    }

    #[test]
    fn duplicate_entries_are_warned_about_with_both_lines() {
        let entry = "[[listener]]\nprotocol = \"tcp\"\naddress = \"0.0.0.0\"\nport = 22\nexe = \"/usr/sbin/sshd\"\napproved_by = \"a\"\napproved_at = 2026-11-01\nreason = \"r\"\n";
        // The second names the same bind as IPv4-mapped IPv6: the same listener.
        let mapped = entry.replace("0.0.0.0", "::ffff:0.0.0.0");
        let other_port = entry.replace("port = 22", "port = 2222");
        let text = format!("version = 1\n{entry}{other_port}{mapped}");
        let approvals = parse(&text).expect("parses");
        assert_eq!(approvals.duplicates, vec![(2, 18)]);
        assert_eq!(
            approvals.duplicate_warnings(),
            vec![
                "approvals.toml:18: this entry approves exactly what the entry at line 2 does; one of the two is redundant or meant to say something else"
            ]
        );
        assert!(parse(GOOD).expect("parses").duplicates.is_empty());
    }

    #[test]
    fn a_file_that_is_not_utf8_is_refused_with_line_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("approvals.toml");
        std::fs::write(&path, b"version = 1\n# caf\xe9\n").expect("write");
        let err = load(&path, false).expect_err("refused");
        assert_eq!(
            err.to_string(),
            format!("{}:2:6: not UTF-8 text (byte 0xe9)", path.display())
        );
    }

    #[test]
    fn a_byte_order_mark_alone_does_not_move_positions() {
        let text = "\u{feff}version = 1\nbogus = 1\n";
        let err = parse(text).expect_err("unknown key");
        assert!(
            err.starts_with("approvals.toml:2:1: unknown field `bogus`"),
            "{err}"
        );
    }
}
