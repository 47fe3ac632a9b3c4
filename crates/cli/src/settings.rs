//! Settings that the raw flags leave to the world outside the process, each
//! decided in one place: where the approvals file, the inventory of
//! environments and the history database are when no flag names them;
//! today's date; a duration flag's value; and how an approval verdict reads.
//!
//! Commands call these instead of repeating them: before, the default paths
//! were worked out three times, durations were parsed twice with different
//! rules about zero, and the verdict text was written twice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use perimeter_checks::approvals::Verdict;
use perimeter_report::audit::ApprovalStatus;
use perimeter_store::default_db_path;
use time::OffsetDateTime;

/// The approvals file in the working directory, checked first.
pub(crate) const LOCAL_APPROVALS: &str = "perimeter-approvals.toml";
/// The system-wide approvals file.
pub(crate) const SYSTEM_APPROVALS: &str = "/etc/perimeter/approvals.toml";
/// The inventory of environments in the working directory, checked first.
pub(crate) const LOCAL_INVENTORY: &str = "perimeter.toml";
/// The system-wide inventory of environments.
pub(crate) const SYSTEM_INVENTORY: &str = "/etc/perimeter/perimeter.toml";

/// A configuration file: the one the user named, or the default found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigFile {
    pub(crate) path: PathBuf,
    /// The user named it (`--approvals`, `--inventory` or their environment
    /// variables): then it must exist, where a missing default is no file.
    pub(crate) named: bool,
}

/// The named file, else the local default if it exists, else the
/// system-wide one.
fn config_file(named: Option<&Path>, local: &str, system: &str) -> ConfigFile {
    match named {
        Some(path) => ConfigFile {
            path: path.to_path_buf(),
            named: true,
        },
        None => {
            let local = Path::new(local);
            ConfigFile {
                path: if local.exists() {
                    local.to_path_buf()
                } else {
                    PathBuf::from(system)
                },
                named: false,
            }
        }
    }
}

/// The approvals file: `--approvals` (or `PERIMETER_APPROVALS`), else
/// ./perimeter-approvals.toml if it exists, else
/// /etc/perimeter/approvals.toml.
pub(crate) fn approvals_file(named: Option<&Path>) -> ConfigFile {
    config_file(named, LOCAL_APPROVALS, SYSTEM_APPROVALS)
}

/// The inventory of environments: `--inventory` (or `PERIMETER_INVENTORY`),
/// else ./perimeter.toml if it exists, else /etc/perimeter/perimeter.toml.
pub(crate) fn inventory_file(named: Option<&Path>) -> ConfigFile {
    config_file(named, LOCAL_INVENTORY, SYSTEM_INVENTORY)
}

/// The history database: `--db` (or `PERIMETER_DB`), else
/// $XDG_DATA_HOME/perimeter/perimeter.db, else
/// ~/.local/share/perimeter/perimeter.db.
pub(crate) fn db_path(named: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = named {
        return Ok(path.to_path_buf());
    }
    let xdg = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    default_db_path(xdg.as_deref(), home.as_deref())
        .context("no place for the history database: set --db, PERIMETER_DB, XDG_DATA_HOME or HOME")
}

/// Where a service keeps its data when no flag says: `as_root` for root (the
/// state directory its systemd unit names), else `relative` under
/// $XDG_DATA_HOME, else under ~/.local/share (a relative or empty variable
/// counts as unset, as for the history database).
pub(crate) fn data_path(as_root: &str, relative: &str, what: &str, flag: &str) -> Result<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from(as_root));
    }
    let usable = |dir: &PathBuf| dir.is_absolute();
    let xdg = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    xdg.filter(usable)
        .map(|dir| dir.join(relative))
        .or_else(|| {
            home.filter(usable)
                .map(|dir| dir.join(".local/share").join(relative))
        })
        .with_context(|| format!("no place for {what}: set {flag}, XDG_DATA_HOME or HOME"))
}

/// This machine's name, for alerts and reports (a label, never an identity).
pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Who is acting: the name given, else $SUDO_USER, $USER or $LOGNAME (for
/// the trails of approvals and decisions).
pub(crate) fn acting_user(named: Option<String>) -> Result<String> {
    if let Some(name) = named.filter(|name| !name.trim().is_empty()) {
        return Ok(name);
    }
    for var in ["SUDO_USER", "USER", "LOGNAME"] {
        if let Ok(value) = std::env::var(var)
            && !value.trim().is_empty()
        {
            return Ok(value);
        }
    }
    // A service manager's environment may have none of them: the account
    // of the effective uid.
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::geteuid()) {
        return Ok(user.name);
    }
    anyhow::bail!("cannot tell who is acting: pass --by NAME")
}

/// A time as RFC 3339, for listings.
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// Today, for approval and environment expiry.
pub(crate) fn today() -> time::Date {
    // Approval dates are calendar dates in UTC: the same file means the same
    // thing on every host, whatever its time zone.
    OffsetDateTime::now_utc().date()
}

/// Whether a duration flag takes zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zero {
    /// The scan's `--timeout` and `--spread`: zero is passed to the engine
    /// as given, as it always was.
    Allowed,
    /// The watch's `--interval` and `--duration`: a zero interval would spin
    /// and a zero duration would watch nothing.
    Refused,
}

/// A duration flag's value (`800ms`, `30s`, `6h`).
pub(crate) fn parse_duration(flag: &str, text: &str, zero: Zero) -> Result<Duration> {
    let duration = humantime::parse_duration(text)
        .with_context(|| format!("{flag} `{text}` is not a duration like 800ms, 30s, 6h"))?;
    if zero == Zero::Refused && duration.is_zero() {
        bail!("{flag} must be longer than zero");
    }
    Ok(duration)
}

/// An approval verdict as the audit, the gate and the watch show it: the
/// approving entry's line, reason and approver, or the expired entry's line
/// and date.
pub(crate) fn approval_status(verdict: Verdict<'_>) -> ApprovalStatus {
    match verdict {
        Verdict::Approved(entry) => ApprovalStatus::Approved(format!(
            "line {}: {} ({})",
            entry.line, entry.reason, entry.approved_by
        )),
        Verdict::Expired(entry) => ApprovalStatus::Expired(format!(
            "line {}: expired {}",
            entry.line,
            entry.expires.map(|d| d.to_string()).unwrap_or_default()
        )),
        Verdict::Unapproved => ApprovalStatus::Unapproved,
    }
}

#[cfg(test)]
mod tests {
    use perimeter_checks::approvals::{Approval, Bind, OwnerKey};

    use super::*;

    #[test]
    fn durations_with_and_without_zero() {
        assert_eq!(
            parse_duration("--interval", "250ms", Zero::Refused).expect("parses"),
            Duration::from_millis(250)
        );
        let err = parse_duration("--interval", "0s", Zero::Refused).expect_err("refused");
        assert_eq!(err.to_string(), "--interval must be longer than zero");
        assert_eq!(
            parse_duration("--timeout", "0s", Zero::Allowed).expect("taken"),
            Duration::ZERO
        );
        assert_eq!(
            parse_duration("--spread", "6h", Zero::Allowed).expect("parses"),
            Duration::from_secs(6 * 3600)
        );
        for zero in [Zero::Allowed, Zero::Refused] {
            let err = parse_duration("--duration", "soon", zero).expect_err("refused");
            assert!(err.to_string().contains("--duration `soon`"), "{err}");
        }
    }

    #[test]
    fn a_named_file_is_taken_as_named() {
        let named = Path::new("/nonexistent/approvals.toml");
        assert_eq!(
            approvals_file(Some(named)),
            ConfigFile {
                path: named.to_path_buf(),
                named: true
            }
        );
        assert_eq!(
            db_path(Some(Path::new("/tmp/x.db"))).expect("named"),
            PathBuf::from("/tmp/x.db")
        );
    }

    #[test]
    fn defaults_fall_back_to_the_system_file() {
        // The local file is looked for in the working directory; the tests
        // run in the crate's directory, which has neither.
        assert!(!Path::new(LOCAL_APPROVALS).exists());
        assert!(!Path::new(LOCAL_INVENTORY).exists());
        assert_eq!(
            approvals_file(None),
            ConfigFile {
                path: PathBuf::from(SYSTEM_APPROVALS),
                named: false
            }
        );
        assert_eq!(
            inventory_file(None),
            ConfigFile {
                path: PathBuf::from(SYSTEM_INVENTORY),
                named: false
            }
        );
    }

    #[test]
    fn verdict_text() {
        let entry = |line, reason: &str, expires| Approval {
            netns: "host".to_owned(),
            protocol: perimeter_model::Protocol::Tcp,
            bind: Bind::Address("0.0.0.0".parse().expect("address")),
            port: 6379,
            owner: OwnerKey::Unowned,
            approved_by: "ops".to_owned(),
            approved_at: time::macros::date!(2026 - 01 - 02),
            reason: reason.to_owned(),
            expires,
            line,
        };
        let cache = entry(2, "the cache", None);
        let migration = entry(12, "a migration", Some(time::macros::date!(2026 - 01 - 31)));
        assert_eq!(
            approval_status(Verdict::Approved(&cache)),
            ApprovalStatus::Approved("line 2: the cache (ops)".to_owned())
        );
        assert_eq!(
            approval_status(Verdict::Expired(&migration)),
            ApprovalStatus::Expired("line 12: expired 2026-01-31".to_owned())
        );
        assert_eq!(
            approval_status(Verdict::Unapproved),
            ApprovalStatus::Unapproved
        );
    }
}
