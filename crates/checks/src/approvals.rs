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
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    Address(IpAddr),
    Scope(Scope),
}

/// What the entry says about who holds the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl Approval {
    /// Whether this entry covers the listener. Expiry is not considered here.
    pub fn matches(&self, listener: &Listener, owners: &[&Process]) -> bool {
        if self.netns != "*" && self.netns != listener.netns.name {
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
            OwnerKey::Unowned => owners.is_empty() && listener.owners.is_empty(),
            OwnerKey::Process { exe, package, user } => owners.iter().any(|process| {
                let exe_ok = exe.as_deref().is_none_or(|exe| {
                    process
                        .exe
                        .as_deref()
                        .is_some_and(|actual| actual == Path::new(exe))
                });
                let package_ok = package.as_deref().is_none_or(|wanted| {
                    process
                        .ownership
                        .package()
                        .is_some_and(|pkg| pkg.name == wanted || pkg.to_string() == wanted)
                });
                let user_ok = user
                    .as_deref()
                    .is_none_or(|wanted| process.user_name() == wanted);
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
    let invalid = |span: std::ops::Range<usize>, message: String| {
        let (line, column) = line_column(text, span.start);
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
            line: line_column(text, entry_span.start).0,
        });
    }
    Ok(Approvals {
        path: Some(path.to_owned()),
        entries,
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

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// Read and parse an approvals file. A missing file is "nothing approved" only
/// when `missing_ok` (the default location); a path the user named must exist.
pub fn load(path: &Path, missing_ok: bool) -> Result<Approvals, ApprovalsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_approvals(&text, path),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && missing_ok => Ok(Approvals {
            path: None,
            entries: Vec::new(),
        }),
        Err(err) => Err(ApprovalsError::Read {
            path: path.to_owned(),
            message: err.to_string(),
        }),
    }
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
        let (line, column) = line_column(&base, err.span().map_or(0, |s| s.start));
        ApprovalsError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message: err.message().to_owned(),
        }
    })?;
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

/// Write a file atomically: a temp file in the same directory, fsync, rename
/// over the target, fsync the directory. Readers see the old file or the new
/// one, never half of either; the old file's permissions are kept.
pub fn save_atomic(path: &Path, contents: &str) -> Result<(), ApprovalsError> {
    let write_err = |err: std::io::Error| ApprovalsError::Write {
        path: path.to_owned(),
        message: err.to_string(),
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(write_err)?;
    let mut temp = tempfile::Builder::new()
        .prefix(".perimeter-approvals-")
        .tempfile_in(&dir)
        .map_err(write_err)?;
    if let Ok(meta) = std::fs::metadata(path) {
        temp.as_file()
            .set_permissions(meta.permissions())
            .map_err(write_err)?;
    }
    temp.write_all(contents.as_bytes()).map_err(write_err)?;
    temp.as_file().sync_all().map_err(write_err)?;
    temp.persist(path).map_err(|err| write_err(err.error))?;
    if let Ok(dir) = std::fs::File::open(&dir) {
        // Make the rename itself durable.
        dir.sync_all().map_err(write_err)?;
    }
    Ok(())
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

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncdé\nx", 0), (1, 1));
        assert_eq!(line_column("ab\ncdé\nx", 3), (2, 1));
        assert_eq!(line_column("ab\ncdé\nx", 7), (2, 4));
        assert_eq!(line_column("ab\ncdé\nx", 8), (3, 1));
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
