//! What a test needs from the machine it runs on, checked in one place.
//!
//! Many tests need root, network namespaces or a real program (nft, nmap,
//! redis-server, sshd...). A test asks [`require`] for each [`Requirement`]
//! before it starts and returns early when it gets `false`. Outside strict mode
//! an unmet requirement prints one `SKIPPED` line on stderr, so a developer
//! without root still runs the rest of the suite. With
//! `PERIMETER_TEST_STRICT=1`, which `scripts/test` (and so CI) sets, it panics
//! instead, naming the test and what is missing: a run that reports a test as
//! passed has really run it.
//!
//! The test is named after its thread, which the test harness names after the
//! test; a requirement is therefore asked on the test's own thread, not inside
//! a thread the test starts.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The environment variable that turns an unmet requirement into a failure
/// when it is `1`.
pub const STRICT_VAR: &str = "PERIMETER_TEST_STRICT";

/// Where a program is looked for besides PATH: the directories the code under
/// test searches too (`perimeter_host::command::find_tool`), so that a test
/// run by a user whose PATH lacks the sbin directories still finds nft.
const TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// One thing a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement<'a> {
    /// An effective uid of 0: daemons started as root, raw sockets, setpriv
    /// to other users, rpm installs.
    Root,
    /// Network namespaces can be made: root, `ip`, and a kernel and
    /// container that allow `ip netns add` (tried once per test process).
    Netns,
    /// A program. A path (anything with a `/`) must be an executable file
    /// there, for tests that start that exact file; a bare name is looked up
    /// on PATH and in /usr/sbin, /sbin, /usr/bin and /bin.
    Tool(&'a str),
    /// A file or directory that must exist, such as dpkg's database
    /// (`/var/lib/dpkg/info`).
    Path(&'a str),
    /// A local account, such as `postgres` (PostgreSQL refuses to run as
    /// root).
    Account(&'a str),
    /// An IPv6 loopback address to listen on (`[::1]`).
    Ipv6Loopback,
}

impl fmt::Display for Requirement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Root => f.write_str("root"),
            Requirement::Netns => f.write_str("network namespaces"),
            Requirement::Tool(tool) | Requirement::Path(tool) => f.write_str(tool),
            Requirement::Account(name) => write!(f, "the account {name}"),
            Requirement::Ipv6Loopback => f.write_str("IPv6 loopback ([::1])"),
        }
    }
}

/// Whether unmet requirements fail the test (strict) or skip it (lenient).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Strict,
    Lenient,
}

impl Mode {
    /// The mode [`STRICT_VAR`] asks for.
    fn from_env() -> Mode {
        Mode::from_value(std::env::var_os(STRICT_VAR).as_deref())
    }

    /// Unset, empty or `0` is lenient, `1` strict. Any other value panics, so
    /// that a typo such as `true` never quietly turns strict mode off.
    fn from_value(value: Option<&std::ffi::OsStr>) -> Mode {
        let Some(value) = value else {
            return Mode::Lenient;
        };
        match value.to_str() {
            Some("" | "0") => Mode::Lenient,
            Some("1") => Mode::Strict,
            _ => panic!("{STRICT_VAR} must be 0 or 1, not {value:?}"),
        }
    }
}

/// Whether `what` is met. When it is not: in strict mode (see [`STRICT_VAR`])
/// a panic naming the test, what it needs and why that is missing; otherwise a
/// `SKIPPED` line on stderr and `false`, on which the test returns early.
pub fn require(what: Requirement<'_>) -> bool {
    require_in(Mode::from_env(), what)
}

/// [`require`] in a given mode rather than the environment's.
fn require_in(mode: Mode, what: Requirement<'_>) -> bool {
    match check(what) {
        Ok(()) => true,
        Err(why) => unmet(mode, what, &why),
    }
}

/// [`require`] for a program, giving back where it was found.
pub fn require_tool(tool: &str) -> Option<PathBuf> {
    match locate_tool(tool) {
        Ok(path) => Some(path),
        Err(why) => {
            unmet(Mode::from_env(), Requirement::Tool(tool), &why);
            None
        }
    }
}

/// [`require`] for a condition no [`Requirement`] names (a port that must be
/// free, a daemon that must be startable): `what` is what the test needs,
/// `met` whether it is there or why not.
pub fn require_that(what: &str, met: Result<(), String>) -> bool {
    match met {
        Ok(()) => true,
        Err(why) => {
            let test = test_name();
            match Mode::from_env() {
                Mode::Strict => panic!("strict mode: {test} needs {what}: {why}"),
                Mode::Lenient => {
                    eprintln!(
                        "SKIPPED {test}: needs {what}: {why} ({STRICT_VAR}=1 makes this a failure)"
                    );
                    false
                }
            }
        }
    }
}

/// What the tests that build an rpm package need: root (rpm installs its
/// files as root:root), `rpm` and `rpmbuild`.
pub fn require_rpm() -> bool {
    require(Requirement::Root)
        && require(Requirement::Tool("rpm"))
        && require(Requirement::Tool("rpmbuild"))
}

/// The panic or the `SKIPPED` line for an unmet requirement; always `false`.
fn unmet(mode: Mode, what: Requirement<'_>, why: &str) -> bool {
    let test = test_name();
    match mode {
        Mode::Strict => panic!("strict mode: {test} needs {what}: {why}"),
        Mode::Lenient => {
            eprintln!("SKIPPED {test}: needs {what}: {why} ({STRICT_VAR}=1 makes this a failure)");
            false
        }
    }
}

/// The running test's name: the test harness runs each test on a thread
/// named after it.
fn test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => "a test on an unnamed thread".to_owned(),
    }
}

/// `Ok` when `what` is met, else why not.
fn check(what: Requirement<'_>) -> Result<(), String> {
    match what {
        Requirement::Root => check_root(),
        Requirement::Netns => {
            // Made once per process: every namespace test in a binary would
            // otherwise make and remove one more.
            static NETNS: OnceLock<Result<(), String>> = OnceLock::new();
            NETNS.get_or_init(check_netns).clone()
        }
        Requirement::Tool(tool) => locate_tool(tool).map(drop),
        Requirement::Path(path) => match Path::new(path).try_exists() {
            Ok(true) => Ok(()),
            Ok(false) => Err("no such file or directory".to_owned()),
            Err(err) => Err(format!("cannot tell whether it exists: {err}")),
        },
        Requirement::Account(name) => match nix::unistd::User::from_name(name) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("no such account".to_owned()),
            Err(err) => Err(format!("cannot look it up: {err}")),
        },
        Requirement::Ipv6Loopback => std::net::TcpListener::bind("[::1]:0")
            .map(drop)
            .map_err(|err| format!("cannot listen on [::1]: {err}")),
    }
}

fn check_root() -> Result<(), String> {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        Ok(())
    } else {
        Err(format!("running as uid {euid}"))
    }
}

/// Root, `ip`, and a namespace really made and removed.
fn check_netns() -> Result<(), String> {
    check_root().map_err(|why| format!("only root may make them ({why})"))?;
    let ip = locate_tool("ip").map_err(|why| format!("ip: {why}"))?;
    let name = format!("perimeter-req-{}", crate::unique_suffix());
    let output = Command::new(&ip)
        .args(["netns", "add", &name])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {}: {err}", ip.display()))?;
    if !output.status.success() {
        return Err(format!(
            "ip netns add failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let _ = Command::new(&ip)
        .args(["netns", "del", &name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status();
    Ok(())
}

/// Where `tool` is (see [`Requirement::Tool`]), else why it is not found.
fn locate_tool(tool: &str) -> Result<PathBuf, String> {
    let is_executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if tool.contains('/') {
        let path = Path::new(tool);
        return if is_executable(path) {
            Ok(path.to_owned())
        } else if path.exists() {
            Err("not an executable file".to_owned())
        } else {
            Err("no such file (scripts/test installs what the tests use)".to_owned())
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(TOOL_DIRS.map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            format!(
                "not found on PATH nor in {} (scripts/test installs what the tests use)",
                TOOL_DIRS.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_SUCH_TOOL: &str = "perimeter-no-such-tool";

    /// The message a panic carried, whether it was formatted or a literal.
    fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    }

    #[test]
    fn strict_mode_fails_naming_the_test_and_the_missing_tool() {
        let result =
            std::panic::catch_unwind(|| require_in(Mode::Strict, Requirement::Tool(NO_SUCH_TOOL)));
        let Err(payload) = result else {
            panic!("strict mode returned instead of failing");
        };
        let message = panic_message(payload.as_ref());
        assert!(
            message.starts_with(
                "strict mode: require::tests::strict_mode_fails_naming_the_test_and_the_missing_tool \
                 needs perimeter-no-such-tool: not found on PATH"
            ),
            "{message}"
        );
    }

    #[test]
    fn lenient_mode_returns_false() {
        assert!(!require_in(Mode::Lenient, Requirement::Tool(NO_SUCH_TOOL)));
        assert!(!require_in(
            Mode::Lenient,
            Requirement::Path("/nonexistent/perimeter-no-such-file")
        ));
        assert!(!require_in(
            Mode::Lenient,
            Requirement::Account("perimeter-no-such-account")
        ));
    }

    #[test]
    fn met_requirements_pass_in_strict_mode() {
        // sh is on every machine that runs these tests; `/` always exists.
        assert!(require_in(Mode::Strict, Requirement::Tool("sh")));
        assert!(require_in(Mode::Strict, Requirement::Tool("/bin/sh")));
        assert!(require_in(Mode::Strict, Requirement::Path("/")));
        assert!(require_in(Mode::Strict, Requirement::Account("root")));
        assert!(require_tool("sh").is_some_and(|path| path.ends_with("sh")));
    }

    #[test]
    fn a_path_that_is_not_executable_is_not_a_tool() {
        assert_eq!(
            locate_tool("/etc/passwd"),
            Err("not an executable file".to_owned())
        );
    }

    /// The environment variable end to end: this test binary run again, with
    /// only [`strict_child`] selected, fails with `PERIMETER_TEST_STRICT=1`
    /// and passes, saying it skipped, without it.
    #[test]
    fn the_environment_variable_turns_strict_mode_on() {
        let exe = std::env::current_exe().expect("test binary path");
        let run = |strict: &str| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "require::tests::strict_child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(STRICT_VAR, strict)
                .stdin(Stdio::null())
                .output()
                .expect("run the test binary again")
        };
        let strict = run("1");
        let stderr = String::from_utf8_lossy(&strict.stderr);
        assert!(!strict.status.success(), "strict mode passed:\n{stderr}");
        assert!(
            stderr.contains(
                "strict mode: require::tests::strict_child needs perimeter-no-such-tool: "
            ),
            "{stderr}"
        );
        let lenient = run("0");
        let stderr = String::from_utf8_lossy(&lenient.stderr);
        let stdout = String::from_utf8_lossy(&lenient.stdout);
        assert!(lenient.status.success(), "lenient mode failed:\n{stderr}");
        assert!(
            stdout.contains("1 passed"),
            "the child did not run:\n{stdout}"
        );
        assert!(
            stderr.contains("SKIPPED require::tests::strict_child: needs perimeter-no-such-tool: "),
            "{stderr}"
        );
    }

    /// Run only as a child of the test above, which sets the mode.
    #[test]
    #[ignore = "run as a child by the_environment_variable_turns_strict_mode_on"]
    fn strict_child() {
        if !require(Requirement::Tool(NO_SUCH_TOOL)) {
            return;
        }
        panic!("{NO_SUCH_TOOL} was found");
    }

    #[test]
    fn only_0_and_1_are_modes() {
        let mode = |value: Option<&str>| Mode::from_value(value.map(std::ffi::OsStr::new));
        assert_eq!(mode(None), Mode::Lenient);
        assert_eq!(mode(Some("")), Mode::Lenient);
        assert_eq!(mode(Some("0")), Mode::Lenient);
        assert_eq!(mode(Some("1")), Mode::Strict);
        let misspelt = std::panic::catch_unwind(|| mode(Some("true")));
        let Err(payload) = misspelt else {
            panic!("`true` was taken for a mode");
        };
        assert_eq!(
            panic_message(payload.as_ref()),
            "PERIMETER_TEST_STRICT must be 0 or 1, not \"true\""
        );
    }
}
