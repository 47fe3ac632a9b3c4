//! Pure parsers of one process's /proc files and links: `status` (name,
//! parent, effective uid, effective capabilities), `cmdline`, and the
//! targets of its descriptor and `exe` links.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The effective capability set from a status file's `CapEff:` line (hex).
pub fn parse_effective_capabilities(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// `socket:[26452]` → 26452; any other descriptor target → `None`.
pub fn parse_socket_link(link: &[u8]) -> Option<u64> {
    let inode = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    if inode.is_empty() || !inode.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(inode).ok()?.parse().ok()
}

/// The `exe` link target, without the ` (deleted)` the kernel appends when the
/// file was removed or replaced after the process started.
pub fn parse_exe_link(link: &[u8]) -> (PathBuf, bool) {
    match link.strip_suffix(b" (deleted)") {
        Some(path) => (PathBuf::from(OsStr::from_bytes(path)), true),
        None => (PathBuf::from(OsStr::from_bytes(link)), false),
    }
}

/// The fields of /proc/PID/status the audit uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFacts {
    /// `Name:`, the kernel's `comm`, unescaped.
    pub name: String,
    pub ppid: u32,
    /// The effective uid: the second field of `Uid:`.
    pub euid: u32,
}

/// /proc/PID/status lacked a field or held one that is not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("missing `{0}:` line")]
    Missing(&'static str),
    #[error("bad `{field}:` value `{value}`")]
    Bad { field: &'static str, value: String },
}

/// Parses /proc/PID/status for the name, parent pid and effective uid.
pub fn parse_status(text: &str) -> Result<StatusFacts, StatusError> {
    let mut name = None;
    let mut ppid = None;
    let mut euid = None;
    // Lines end in `\n` alone: `Name:` may end in a carriage return the
    // kernel does not escape, which `str::lines` would drop with the newline.
    for line in text.split('\n') {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        // The value is tab-separated from the key; Name keeps inner spaces.
        let value = value.strip_prefix('\t').unwrap_or(value);
        match key {
            "Name" => name = Some(unescape_status_name(value)),
            "PPid" => {
                let bad = || StatusError::Bad {
                    field: "PPid",
                    value: value.to_owned(),
                };
                ppid = Some(value.trim().parse().map_err(|_| bad())?);
            }
            "Uid" => {
                let bad = || StatusError::Bad {
                    field: "Uid",
                    value: value.to_owned(),
                };
                let effective = value.split_ascii_whitespace().nth(1).ok_or_else(bad)?;
                euid = Some(effective.parse().map_err(|_| bad())?);
            }
            _ => {}
        }
        if name.is_some() && ppid.is_some() && euid.is_some() {
            break;
        }
    }
    Ok(StatusFacts {
        name: name.ok_or(StatusError::Missing("Name"))?,
        ppid: ppid.ok_or(StatusError::Missing("PPid"))?,
        euid: euid.ok_or(StatusError::Missing("Uid"))?,
    })
}

/// The kernel escapes only newline and backslash in `Name:` (`seq_escape_str`
/// with the set "\n\\"), as `\n` and `\\`.
fn unescape_status_name(value: &str) -> String {
    if !value.contains('\\') {
        return value.to_owned();
    }
    let mut name = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            name.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => name.push('\n'),
            Some('\\') => name.push('\\'),
            Some(other) => {
                name.push('\\');
                name.push(other);
            }
            None => name.push('\\'),
        }
    }
    name
}

/// /proc/PID/cmdline: arguments separated by NUL. A process that rewrote its
/// title (nginx, postgres, sshd, redis) may leave one argument holding spaces,
/// padded with NULs to the length of the original arguments; trailing NULs are
/// dropped so the padding does not become empty arguments, and an argument
/// with spaces is kept whole since argv[0] may legitimately contain them.
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |idx| idx + 1);
    let Some(bytes) = bytes.get(..end) else {
        return Vec::new();
    };
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS_PID1: &str = include_str!("../../tests/fixtures/procs/status-pid1");
    const STATUS_CP: &str = include_str!("../../tests/fixtures/procs/status-cp");

    #[test]
    fn status_of_real_processes() {
        let status = parse_status(STATUS_PID1).expect("pid 1 status parses");
        assert_eq!(
            status,
            StatusFacts {
                name: "process_api".to_owned(),
                ppid: 0,
                euid: 0,
            }
        );
        let status = parse_status(STATUS_CP).expect("cp status parses");
        assert_eq!(status.name, "cp");
        assert_eq!(status.euid, 0);
        assert!(status.ppid > 1);
    }

    #[test]
    fn status_takes_the_effective_uid_and_unescapes_the_name() {
        let text = "Name:\tmy\\\\tool\\nx y\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t812\nPid:\t812\nPPid:\t1\nUid:\t1000\t113\t113\t113\nGid:\t1000\t1000\t1000\t1000\n";
        let status = parse_status(text).expect("parses");
        assert_eq!(status.name, "my\\tool\nx y");
        assert_eq!(status.ppid, 1);
        assert_eq!(status.euid, 113);
    }

    #[test]
    fn status_keeps_a_carriage_return_ending_the_name() {
        // Caught by the host_proc fuzz target's round trip: the kernel escapes
        // only newline and backslash, so a comm of `foo\r` is printed as
        // `Name:\tfoo\r\n`.
        let status = parse_status("Name:\tfoo\r\nPPid:\t1\nUid:\t0\t7\t0\t0\n").expect("parses");
        assert_eq!(status.name, "foo\r");
        assert_eq!(status.euid, 7);
    }

    #[test]
    fn status_errors_name_the_field() {
        assert_eq!(
            parse_status("Name:\tx\nPPid:\t1\n"),
            Err(StatusError::Missing("Uid"))
        );
        assert_eq!(
            parse_status("Name:\tx\nPPid:\tone\nUid:\t0\t0\t0\t0\n").map_err(|e| e.to_string()),
            Err("bad `PPid:` value `one`".to_owned())
        );
        assert!(matches!(
            parse_status("Name:\tx\nPPid:\t1\nUid:\t0\n"),
            Err(StatusError::Bad { field: "Uid", .. })
        ));
    }

    #[test]
    fn cmdline_splits_on_nul_and_keeps_rewritten_titles() {
        assert_eq!(
            parse_cmdline(b"/usr/bin/redis-server\x00127.0.0.1:6379\0"),
            vec!["/usr/bin/redis-server", "127.0.0.1:6379"]
        );
        // nginx rewrites argv into one title padded with NULs.
        assert_eq!(
            parse_cmdline(b"nginx: master process /usr/sbin/nginx -g daemon off;\0\0\0\0\0\0"),
            vec!["nginx: master process /usr/sbin/nginx -g daemon off;"]
        );
        // A title without a terminating NUL.
        assert_eq!(
            parse_cmdline(b"postgres: checkpointer "),
            vec!["postgres: checkpointer "]
        );
        // An empty argument in the middle is a real argument.
        assert_eq!(parse_cmdline(b"sh\0-c\0\0x\0"), vec!["sh", "-c", "", "x"]);
        // Kernel threads have an empty cmdline.
        assert_eq!(parse_cmdline(b""), Vec::<String>::new());
        assert_eq!(parse_cmdline(b"\0\0"), Vec::<String>::new());
        assert_eq!(parse_cmdline(b"a\xffb\0"), vec!["a\u{fffd}b"]);
    }

    #[test]
    fn descriptor_and_exe_links() {
        assert_eq!(parse_socket_link(b"socket:[26452]"), Some(26452));
        assert_eq!(parse_socket_link(b"socket:[]"), None);
        assert_eq!(parse_socket_link(b"socket:[12"), None);
        assert_eq!(parse_socket_link(b"pipe:[26452]"), None);
        assert_eq!(parse_socket_link(b"/dev/null"), None);
        assert_eq!(parse_socket_link(b"socket:[99999999999999999999999]"), None);
        assert_eq!(
            parse_exe_link(b"/usr/bin/redis-server (deleted)"),
            (PathBuf::from("/usr/bin/redis-server"), true)
        );
        assert_eq!(
            parse_exe_link(b"/usr/bin/python3.11"),
            (PathBuf::from("/usr/bin/python3.11"), false)
        );
    }
}
