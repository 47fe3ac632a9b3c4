//! The Debian package and what goes into it, checked with the tools that
//! will read it: the systemd units with `systemd-analyze verify` and
//! `security`, the manual pages with groff and man, the bash completions with
//! bash, and the package `scripts/package` builds with `dpkg-deb`, lintian
//! and, in a private mount namespace, its own postinst running the real
//! adduser.
//!
//! The package test builds the package from the debug binary this test run
//! already built (`scripts/package --profile dev --no-build`), not from a
//! release build: a release build of the workspace took twelve and a half
//! minutes on the two cores CI has (where the whole test takes seconds), and
//! what the test checks (the files, the control fields, the conffile, the
//! maintainer scripts, lintian's verdict) is the same for both profiles:
//! `scripts/package` without options makes the release package from the same
//! metadata and the same steps, and strips the binary whatever the profile.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use perimeter_testlab::{Requirement, require, require_that};
use tempfile::TempDir;

/// The Debian package's name ([package.metadata.deb] in crates/cli/Cargo.toml).
const PACKAGE: &str = "perimeter";
/// Where the package installs the binary, as the units name it.
const BINARY: &str = "/usr/bin/perimeter";
/// Where the package installs the units.
const UNIT_DIR: &str = "usr/lib/systemd/system";
/// The unit files, in crates/cli/debian/ and in the package.
const UNITS: [&str; 5] = [
    "perimeter-monitor.service",
    "perimeter-audit.service",
    "perimeter-audit.timer",
    "perimeter-server.service",
    "perimeter-agent.service",
];
/// The conffile: `perimeter init`'s example.
const CONFFILE: &str = "/etc/perimeter/perimeter.toml";
/// The monitor's command line: the contract between the unit and `perimeter
/// monitor`.
const MONITOR_COMMAND: &str = "/usr/bin/perimeter monitor --inventory /etc/perimeter/perimeter.toml --db /var/lib/perimeter/perimeter.db";
/// The daily audit's command line.
const AUDIT_COMMAND: &str = "/usr/bin/perimeter audit --inventory /etc/perimeter/perimeter.toml --db /var/lib/perimeter-audit/perimeter.db";
/// The server's command line: its database in its state directory, its
/// certificate, key and enrolment secret as credentials.
const SERVER_COMMAND: &str = "/usr/bin/perimeter server --database /var/lib/perimeter-server/server.db --listen 0.0.0.0:8443 --tls-cert %d/tls-cert --tls-key %d/tls-key --enrol-secret-file %d/enrol-secret";
/// The agent's command line (the server and its trust come from agent.env).
const AGENT_COMMAND: &str = "/usr/bin/perimeter agent --state-dir /var/lib/perimeter-agent --inventory /etc/perimeter/perimeter.toml";
/// What the lintian of Debian 12 may say about this package at warning
/// level, each with why it is not fixed. Errors are never accepted.
const ACCEPTED_LINTIAN_WARNINGS: [(&str, &str); 1] = [(
    "initial-upload-closes-no-bugs",
    "a first upload to the Debian archive closes its ITP bug; this package is not uploaded there",
)];

/// crates/cli/debian: the units, maintainer scripts and README.Debian.
fn debian_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("debian")
}

/// `systemd-analyze verify` finds nothing to say about any unit: unknown
/// keys, bad values, a timer without its service. It needs no systemd as
/// PID 1, but it does need ExecStart's binary, which only the package
/// installs: the units are checked as copies that start this build's binary
/// instead, every other line as shipped.
#[test]
fn units_pass_systemd_analyze_verify() {
    if !require(Requirement::Tool("systemd-analyze")) {
        return;
    }
    verify_units(&debian_dir(), Path::new(common::perimeter()));
}

/// The settings each unit promises, read from the shipped files, so that an
/// edit cannot quietly drop one: the monitor's command line (its contract
/// with `perimeter monitor`), its account and its one capability; the
/// audit's hardening as root; the timer's schedule.
#[test]
fn units_hold_their_hardening() {
    check_unit_settings(&debian_dir());
}

/// `systemd-analyze security --offline`: each service's exposure score,
/// held under a ceiling, so that a setting dropped later shows.
#[test]
fn units_exposure_stays_low() {
    if !require(Requirement::Tool("systemd-analyze")) {
        return;
    }
    // A little above today's scores (1.9 and 2.9 with systemd 252).
    for (unit, ceiling) in [
        // CAP_NET_RAW, network access and AF_PACKET are what a scanner is.
        ("perimeter-monitor.service", 2.0),
        // Root, with the capabilities that read other processes' sockets.
        ("perimeter-audit.service", 3.0),
        // A dynamic user with no capability (1.1 with systemd 252).
        ("perimeter-server.service", 1.3),
        // The audit's privileges, and the watch's connector (2.9).
        ("perimeter-agent.service", 3.0),
    ] {
        let report = security(&debian_dir().join(unit));
        let score = exposure(&report, unit);
        eprintln!("systemd-analyze security: {unit} exposure {score}");
        assert!(
            score <= ceiling,
            "{unit}: exposure {score} above {ceiling}:\n{report}"
        );
    }
}

/// Every page `perimeter man --dir` writes renders with groff, every
/// warning on, without a word on stderr, and man reads the main page as
/// `perimeter man` prints it.
#[test]
fn manual_pages_render_without_warnings() {
    if !require(Requirement::Tool("groff")) || !require(Requirement::Tool("man")) {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let pages = man_pages(dir.path());
    for page in &pages {
        let output = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(page)
            .stdin(Stdio::null())
            .output()
            .expect("groff runs");
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "groff on {}: {}\n{}",
            page.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let printed = common::run(None, &["man"]);
    assert_success("perimeter man", &printed);
    let main = dir.path().join("perimeter.1");
    assert_eq!(
        printed.stdout,
        fs::read(&main).expect("perimeter.1"),
        "`perimeter man` prints another page than perimeter.1"
    );
    let output = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&main)
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .env_remove("MANOPT")
        .stdin(Stdio::null())
        .output()
        .expect("man runs");
    assert_success("man -l perimeter.1", &output);
    assert!(
        output.stderr.is_empty(),
        "man -l perimeter.1: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    for needle in ["NAME", "SYNOPSIS", "perimeter-audit(1)", "Exit codes"] {
        assert!(text.contains(needle), "no {needle} in the page:\n{text}");
    }
}

/// bash sources `perimeter completions bash`, registers a completion for
/// perimeter, and that completion completes a command and a nested
/// command's flag.
#[test]
fn bash_loads_the_completions() {
    if !require(Requirement::Tool("bash")) {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let script = dir.path().join("perimeter.bash");
    let output = common::run(None, &["completions", "bash"]);
    assert_success("perimeter completions bash", &output);
    fs::write(&script, &output.stdout).expect("write the script");

    // `complete -p perimeter` says the function; the words are then
    // completed as bash's readline would: COMP_WORDS, COMP_CWORD, COMP_LINE
    // and COMP_POINT set, the function called with the command, the word and
    // the word before it.
    let complete = r#"
        set -eu
        source "$1"
        complete -p perimeter
        function=$(complete -p perimeter | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
        ask() {
            COMP_WORDS=("$@")
            COMP_CWORD=$(( $# - 1 ))
            COMP_LINE="$*"
            COMP_POINT=${#COMP_LINE}
            COMPREPLY=()
            "$function" perimeter "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            printf 'reply %s\n' "${COMPREPLY[@]}"
        }
        ask perimeter inv
        ask perimeter inventory export --ou
    "#;
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", complete, "bash"])
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    assert_success("bash: source; complete -p perimeter", &output);
    let said = String::from_utf8_lossy(&output.stdout);
    let first = said.lines().next().unwrap_or("");
    assert!(
        first.starts_with("complete ") && first.ends_with(" perimeter") && first.contains(" -F "),
        "complete -p perimeter: {said}"
    );
    let replies: Vec<&str> = said
        .lines()
        .filter_map(|line| line.strip_prefix("reply "))
        .collect();
    assert!(replies.contains(&"inventory"), "{said}");
    assert!(replies.contains(&"--output"), "{said}");
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `scripts/package` builds the package once; then what it holds
/// (`dpkg-deb -c`), its control fields, conffiles and maintainer scripts
/// (`dpkg-deb -I`), its units as installed, lintian's verdict, and its
/// postinst run for real in a private mount namespace.
#[test]
fn the_debian_package_holds_what_it_promises() {
    let tools = [
        "cargo-deb",
        "dpkg",
        "dpkg-deb",
        "dpkg-shlibdeps",
        "lintian",
        "systemd-analyze",
        "gzip",
    ];
    if !tools.iter().all(|tool| require(Requirement::Tool(tool))) {
        return;
    }

    let package = Package::build();
    check_contents(&package);
    check_control(&package);
    check_unit_settings(&package.root.join(UNIT_DIR));
    verify_units(
        &package.root.join(UNIT_DIR),
        &package.root.join("usr/bin/perimeter"),
    );
    check_lintian(&package);
    check_unpack(&package);
    // The postinst changes /etc/passwd: it runs where that is a copy, in a
    // mount namespace of its own, which takes root. Without root, the rest
    // of the test has run, and the SKIPPED line says which step did not.
    let euid = nix::unistd::geteuid();
    let root = if euid.is_root() {
        Ok(())
    } else {
        Err(format!("running as uid {euid}"))
    };
    if require_that(
        "root, for its last step: the maintainer scripts in a private mount namespace",
        root,
    ) && require(Requirement::Tool("adduser"))
        && require(Requirement::Tool("unshare"))
    {
        check_maintainer_scripts(&package);
    }
}

/// The built package and its files, unpacked.
struct Package {
    /// Holds the .deb and the unpacked tree; removed on drop.
    dir: TempDir,
    deb: PathBuf,
    /// `dpkg-deb -x` of the package.
    root: PathBuf,
    /// `dpkg-deb -e` of the package: control, conffiles, md5sums, scripts.
    control: PathBuf,
    /// `dpkg-deb -c`'s lines: paths without the leading `./`, with their
    /// mode and owner columns.
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    path: String,
    mode: String,
    owner: String,
}

impl Package {
    /// `scripts/package --profile dev --no-build` into a temporary
    /// directory, then its listing, its files and its control part
    /// unpacked.
    fn build() -> Package {
        let dir = tempfile::tempdir().expect("temporary directory");
        let output_dir = dir.path().join("deb");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        // The script packages TARGET/debug/perimeter: point it at the target
        // directory this test's binary was built in, whatever chose it.
        let target_dir = Path::new(common::perimeter())
            .parent()
            .and_then(Path::parent)
            .expect("the test's binary lives in TARGET/debug/");
        let started = Instant::now();
        let output = Command::new(workspace.join("scripts/package"))
            .args(["--profile", "dev", "--no-build", "--output"])
            .arg(&output_dir)
            // Quicker compression: the package is thrown away.
            .args(["--", "--fast"])
            .env("CARGO_TARGET_DIR", target_dir)
            .env("PATH", path_with_cargo())
            .stdin(Stdio::null())
            .output()
            .expect("scripts/package runs");
        assert_success("scripts/package", &output);
        eprintln!(
            "scripts/package built the package in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        let printed = String::from_utf8_lossy(&output.stdout);
        let deb = PathBuf::from(printed.lines().last().unwrap_or("").trim());
        let expected_name = format!(
            "{PACKAGE}_{}-1_{}.deb",
            env!("CARGO_PKG_VERSION"),
            architecture()
        );
        assert_eq!(
            deb.file_name().and_then(|name| name.to_str()),
            Some(expected_name.as_str()),
            "scripts/package's last line is the package: {printed}"
        );
        assert!(deb.starts_with(&output_dir), "{}", deb.display());

        let root = dir.path().join("root");
        run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
        let control = dir.path().join("control");
        run_ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
        let listing = run_ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
        let entries = listing
            .lines()
            .filter_map(|line| {
                // -rw-r--r-- 0/0   170 2026-12-02 00:00 ./usr/share/doc/...
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (mode, owner, path) = (fields.first()?, fields.get(1)?, fields.get(5)?);
                Some(Entry {
                    path: path
                        .trim_start_matches("./")
                        .trim_end_matches('/')
                        .to_owned(),
                    mode: (*mode).to_owned(),
                    owner: (*owner).to_owned(),
                })
            })
            .filter(|entry| !entry.path.is_empty())
            .collect();
        Package {
            dir,
            deb,
            root,
            control,
            entries,
        }
    }

    fn files(&self) -> BTreeSet<&str> {
        self.entries
            .iter()
            .filter(|entry| !entry.mode.starts_with('d'))
            .map(|entry| entry.path.as_str())
            .collect()
    }
}

/// `dpkg --print-architecture`: the package is built for this machine.
fn architecture() -> String {
    run_ok(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_owned()
}

/// `dpkg-deb -c`: the binary, one manual page per command (as `perimeter
/// man --dir` writes them, compressed), the completions, the units, the
/// documentation, the example and the conffile; nothing else, everything
/// root's. The completions are what `perimeter completions` prints, the
/// conffile and the example what `perimeter init` writes.
fn check_contents(package: &Package) {
    let pages_dir = tempfile::tempdir().expect("temporary directory");
    let mut expected: BTreeSet<String> = man_pages(pages_dir.path())
        .iter()
        .map(|page| {
            let name = page.file_name().expect("a page's name").to_string_lossy();
            format!("usr/share/man/man1/{name}.gz")
        })
        .collect();
    assert!(expected.len() > 10, "{expected:?}");
    for path in [
        "usr/bin/perimeter",
        "usr/share/bash-completion/completions/perimeter",
        "usr/share/zsh/vendor-completions/_perimeter",
        "usr/share/fish/vendor_completions.d/perimeter.fish",
        "usr/share/doc/perimeter/README.md",
        "usr/share/doc/perimeter/README.Debian",
        "usr/share/doc/perimeter/copyright",
        "usr/share/doc/perimeter/changelog.Debian.gz",
        "usr/share/doc/perimeter/examples/perimeter.toml",
        "etc/perimeter/perimeter.toml",
    ] {
        expected.insert(path.to_owned());
    }
    for unit in UNITS {
        expected.insert(format!("{UNIT_DIR}/{unit}"));
    }
    let files: BTreeSet<String> = package.files().into_iter().map(str::to_owned).collect();
    assert_eq!(files, expected, "the package's files");

    for entry in &package.entries {
        assert_eq!(entry.owner, "0/0", "{} is not root's", entry.path);
        let expected_mode = if entry.mode.starts_with('d') || entry.path == "usr/bin/perimeter" {
            "rwxr-xr-x"
        } else {
            "rw-r--r--"
        };
        assert_eq!(&entry.mode[1..], expected_mode, "mode of {}", entry.path);
    }

    // The binary is this run's, and runs; the pages are gzip.
    let shipped = package.root.join("usr/bin/perimeter");
    let version = run_ok(Command::new(&shipped).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("perimeter {}", env!("CARGO_PKG_VERSION"))
    );
    let page = fs::read(package.root.join("usr/share/man/man1/perimeter-audit.1.gz"))
        .expect("the audit's page");
    assert_eq!(page.get(..2), Some(&[0x1f, 0x8b][..]), "pages are gzip");

    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/perimeter"),
        ("zsh", "usr/share/zsh/vendor-completions/_perimeter"),
        ("fish", "usr/share/fish/vendor_completions.d/perimeter.fish"),
    ] {
        let output = common::run(None, &["completions", shell]);
        assert_success("perimeter completions", &output);
        let shipped = fs::read(package.root.join(path)).expect("a completion script");
        assert!(
            shipped == output.stdout,
            "{path} is not `perimeter completions {shell}`"
        );
    }

    let init_dir = tempfile::tempdir().expect("temporary directory");
    let init_path = init_dir.path().join("perimeter.toml");
    assert_success(
        "perimeter init",
        &common::run(None, &["init", &init_path.to_string_lossy()]),
    );
    let init = fs::read_to_string(&init_path).expect("init's example");
    for path in [
        "etc/perimeter/perimeter.toml",
        "usr/share/doc/perimeter/examples/perimeter.toml",
    ] {
        let shipped = fs::read_to_string(package.root.join(path)).expect("the example");
        assert_eq!(shipped, init, "{path} is not `perimeter init`'s example");
    }
    // Inert until edited: verify and the monitor refuse to scan its ranges.
    assert!(init.lines().any(|line| line.trim() == "example = true"));
}

/// `dpkg-deb -I` and the control part: the fields, the conffile, the
/// maintainer scripts; the changelog names the package's version.
fn check_control(package: &Package) {
    let field = |name: &str| {
        run_ok(
            Command::new("dpkg-deb")
                .arg("-f")
                .arg(&package.deb)
                .arg(name),
        )
        .trim()
        .to_owned()
    };
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    assert_eq!(field("Package"), PACKAGE);
    assert_eq!(field("Version"), version);
    assert_eq!(field("Architecture"), architecture());
    assert_eq!(field("Section"), "admin");
    assert_eq!(field("Priority"), "optional");
    assert!(field("Maintainer").contains('@'), "{}", field("Maintainer"));
    let depends = field("Depends");
    assert!(
        depends.contains("adduser"),
        "the postinst runs adduser: {depends}"
    );
    assert!(
        depends.contains("libc6"),
        "dpkg-shlibdeps found libc: {depends}"
    );
    let description = field("Description");
    let synopsis = description.lines().next().unwrap_or("");
    assert!(!synopsis.is_empty() && synopsis.len() < 80, "{synopsis}");

    let info = run_ok(Command::new("dpkg-deb").arg("-I").arg(&package.deb));
    // No md5sums: cargo-deb leaves them to dpkg, which records them as it
    // unpacks (see `check_unpack`).
    for member in ["control", "conffiles", "postinst", "prerm", "postrm"] {
        assert!(
            info.lines()
                .any(|line| line.split_whitespace().any(|word| word == member)),
            "no {member} in\n{info}"
        );
    }
    // An upgrade never replaces the admin's perimeter.toml.
    let conffiles = run_ok(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&package.deb)
            .arg("conffiles"),
    );
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), [CONFFILE]);
    for script in ["postinst", "prerm", "postrm"] {
        let shipped = fs::read(package.control.join(script)).expect("a maintainer script");
        let source = fs::read(debian_dir().join(script)).expect("its source");
        assert!(shipped == source, "{script} is not debian/{script}");
    }

    let changelog = run_ok(
        Command::new("gzip").arg("-dc").arg(
            package
                .root
                .join("usr/share/doc/perimeter/changelog.Debian.gz"),
        ),
    );
    let first = changelog.lines().next().unwrap_or("");
    assert!(
        first.starts_with(&format!("{PACKAGE} ({version}) ")),
        "crates/cli/debian/changelog names another version than the package's ({version}): {first}"
    );
}

/// Lintian finds no error, and warns only about what
/// [`ACCEPTED_LINTIAN_WARNINGS`] explains.
fn check_lintian(package: &Package) {
    let started = Instant::now();
    let output = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(&package.deb)
        .stdin(Stdio::null())
        .output()
        .expect("lintian runs");
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!(
        "lintian ({:.1}s):\n{report}",
        started.elapsed().as_secs_f64()
    );
    // Exit 1 is "tags were emitted", which the lines below judge; more is
    // lintian failing.
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "lintian failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let errors: Vec<&str> = report
        .lines()
        .filter(|line| line.starts_with("E:"))
        .collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    let unexplained: Vec<&str> = report
        .lines()
        .filter(|line| line.starts_with("W:"))
        .filter(|line| {
            !ACCEPTED_LINTIAN_WARNINGS
                .iter()
                .any(|(tag, _)| line.contains(&format!(" {tag}")))
        })
        .collect();
    assert!(
        unexplained.is_empty(),
        "lintian warnings ACCEPTED_LINTIAN_WARNINGS does not explain:\n{}",
        unexplained.join("\n")
    );
}

/// dpkg unpacks the package into an empty root of its own (`--root`, with
/// its own database: this machine's is not touched, and no maintainer script
/// runs at unpack), records every file's md5sum as it does (the package
/// ships none: `dpkg --verify` and `perimeter inventory --verify` check
/// against these), and the unpacked files verify against them.
fn check_unpack(package: &Package) {
    let root = package.dir.path().join("dpkg-root");
    let admin = root.join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers"] {
        fs::create_dir_all(admin.join(dir)).expect("dpkg's database directories");
    }
    fs::write(admin.join("status"), "").expect("an empty status file");
    let dpkg = |args: &[&str]| {
        let mut command = Command::new("dpkg");
        command
            .arg(format!("--root={}", root.display()))
            .arg(format!("--admindir={}", admin.display()))
            .args(["--force-not-root", "--log=/dev/null"])
            .args(args);
        command
    };
    run_ok(dpkg(&["--unpack"]).arg(&package.deb));
    let md5sums =
        fs::read_to_string(admin.join("info/perimeter.md5sums")).expect("dpkg recorded md5sums");
    let summed: BTreeSet<&str> = md5sums
        .lines()
        .filter_map(|line| line.split_once("  ").map(|(_, path)| path))
        .collect();
    assert_eq!(summed, package.files(), "the md5sums dpkg recorded");
    // Unpacked, not configured: the conffile waits as .dpkg-new (dpkg moves
    // it into place, or keeps the admin's, when it configures), so it is the
    // one file missing; every other file is as shipped.
    assert!(root.join("etc/perimeter/perimeter.toml.dpkg-new").is_file());
    let verify = run_ok(&mut dpkg(&["--verify", PACKAGE]));
    assert_eq!(
        verify.lines().collect::<Vec<_>>(),
        [format!("missing   c {CONFFILE}")],
        "dpkg --verify"
    );
}

/// The package's postinst, prerm and postrm as dpkg would run them (install,
/// upgrade, remove, purge), with the real adduser, in a mount namespace
/// where /etc and /var/lib are copies, /run is empty and the unit directory
/// holds the package's units: the account, its home and the units' state
/// are made there, this machine's own are never touched, and no systemd of
/// the machine is asked anything.
fn check_maintainer_scripts(package: &Package) {
    let sandbox = package.dir.path().join("sandbox");
    let etc = sandbox.join("etc");
    let var_lib = sandbox.join("var-lib");
    fs::create_dir_all(&var_lib).expect("the sandbox's /var/lib");
    run_ok(Command::new("cp").arg("-a").arg("/etc").arg(&etc));

    // Each step prints `step NAME` and what it saw, for the asserts below.
    let steps = r#"
        set -eu
        control=$1
        mount --make-rprivate /
        mount --bind "$2" /etc
        mount --bind "$3" /var/lib
        # No systemd (its /run/systemd/system) and no nscd to ask about
        # accounts: the scripts see the copies alone.
        mount -t tmpfs tmpfs /run
        # The units where dpkg puts them (deb-systemd-helper reads them),
        # until the remove takes them away.
        mount --bind "$4" /usr/lib/systemd/system
        # As dpkg runs them: deb-systemd-helper refuses to run otherwise.
        export DPKG_MAINTSCRIPT_PACKAGE=perimeter DPKG_ROOT=
        run() {
            DPKG_MAINTSCRIPT_NAME=$1 "$control/$@"
        }
        state() {
            echo "step $1"
            getent passwd perimeter || echo "no account"
            id -gn perimeter 2>/dev/null || true
            stat -c 'home %U %G %a' /var/lib/perimeter 2>/dev/null || echo "no home"
            for unit in perimeter-monitor.service perimeter-audit.timer perimeter-server.service perimeter-agent.service; do
                if [ -L "/etc/systemd/system/$unit" ]; then echo "$unit masked"; fi
            done
        }
        run postinst configure
        state install
        run postinst configure 0.1.0-1
        state upgrade
        run prerm remove
        umount /usr/lib/systemd/system
        run postrm remove
        state remove
        run postrm purge
        state purge
    "#;
    let output = Command::new("unshare")
        .args(["--mount", "--", "sh", "-c", steps, "sh"])
        .arg(&package.control)
        .arg(&etc)
        .arg(&var_lib)
        .arg(package.root.join(UNIT_DIR))
        .stdin(Stdio::null())
        .output()
        .expect("unshare runs");
    assert_success("the maintainer scripts in a mount namespace", &output);
    let said = String::from_utf8_lossy(&output.stdout);
    let step = |name: &str| -> Vec<&str> {
        said.split(&format!("step {name}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no step {name} in\n{said}"))
            .lines()
            .take_while(|line| !line.starts_with("step "))
            .collect()
    };

    let install = step("install");
    let passwd: Vec<&str> = install.first().copied().unwrap_or("").split(':').collect();
    let [name, _, uid, _, _, home, shell] = passwd.as_slice() else {
        panic!("not a passwd line: {install:?}\n{said}");
    };
    assert_eq!(*name, "perimeter");
    assert_eq!(*home, "/var/lib/perimeter");
    assert_eq!(*shell, "/usr/sbin/nologin");
    let uid: u32 = uid.parse().expect("a uid");
    assert!(uid < 1000, "not a system account: uid {uid}");
    assert_eq!(install.get(1), Some(&"perimeter"), "its own group: {said}");
    assert_eq!(
        install.get(2),
        Some(&"home perimeter perimeter 700"),
        "{said}"
    );
    assert_eq!(install.len(), 3, "nothing masked: {said}");
    // An upgrade keeps the account as it was. A remove keeps account and
    // history, and masks the units (so that an admin's enabling survives a
    // reinstall, as debhelper does it); a purge deletes the history, unmasks
    // the units and keeps the account.
    assert_eq!(step("upgrade"), install, "{said}");
    let mut removed = install.clone();
    removed.extend([
        "perimeter-monitor.service masked",
        "perimeter-audit.timer masked",
        "perimeter-server.service masked",
        "perimeter-agent.service masked",
    ]);
    assert_eq!(step("remove"), removed, "{said}");
    assert_eq!(step("purge"), [install[0], install[1], "no home"], "{said}");
    assert!(
        output.stderr.is_empty(),
        "the maintainer scripts said: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `perimeter man --dir DIR`, and the pages it wrote.
fn man_pages(dir: &Path) -> Vec<PathBuf> {
    let output = common::run(None, &["man", "--dir", &dir.to_string_lossy()]);
    assert_success("perimeter man --dir", &output);
    let mut pages: Vec<PathBuf> = fs::read_dir(dir)
        .expect("the pages")
        .map(|entry| entry.expect("a page").path())
        .collect();
    pages.sort();
    assert!(
        pages.iter().any(|page| page.ends_with("perimeter.1")),
        "{pages:?}"
    );
    pages
}

/// A unit file's settings, in order: (section, key, value). Enough of
/// systemd's syntax for the package's own files: comments, sections,
/// `Key=Value` (no line continuations).
struct UnitFile {
    settings: Vec<(String, String, String)>,
}

impl UnitFile {
    fn read(path: &Path) -> UnitFile {
        let text = fs::read_to_string(path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
        let mut section = String::new();
        let mut settings = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            assert!(
                !line.ends_with('\\'),
                "{}: a continued line",
                path.display()
            );
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: not Key=Value: {line}", path.display()));
            settings.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
        UnitFile { settings }
    }

    /// Every value given to `key` in `section`.
    fn values(&self, section: &str, key: &str) -> Vec<&str> {
        self.settings
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The one value of `key` in `section`.
    fn value(&self, section: &str, key: &str) -> &str {
        match self.values(section, key).as_slice() {
            [value] => value,
            values => panic!("[{section}] {key}: expected one value, found {values:?}"),
        }
    }

    fn has(&self, section: &str, key: &str) -> bool {
        !self.values(section, key).is_empty()
    }
}

/// The settings of the units in `dir` (crates/cli/debian, or the package's
/// unit directory): see [`units_hold_their_hardening`].
fn check_unit_settings(dir: &Path) {
    // Both services.
    let hardening = [
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("ConfigurationDirectory", "perimeter"),
        ("UMask", "0077"),
    ];

    let monitor = UnitFile::read(&dir.join("perimeter-monitor.service"));
    for (key, value) in hardening {
        assert_eq!(monitor.value("Service", key), value, "monitor: {key}");
    }
    for (key, value) in [
        ("ExecStart", MONITOR_COMMAND),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("User", "perimeter"),
        ("Group", "perimeter"),
        ("StateDirectory", "perimeter"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        // SYN scans; without it the monitor makes connect scans.
        ("CapabilityBoundingSet", "CAP_NET_RAW"),
        ("AmbientCapabilities", "CAP_NET_RAW"),
        (
            "RestrictAddressFamilies",
            "AF_INET AF_INET6 AF_UNIX AF_NETLINK AF_PACKET",
        ),
    ] {
        assert_eq!(monitor.value("Service", key), value, "monitor: {key}");
    }
    // StateDirectory makes /var/lib/perimeter writable under
    // ProtectSystem=strict; nothing else needs to be.
    assert!(!monitor.has("Service", "ReadWritePaths"));
    assert_eq!(monitor.value("Install", "WantedBy"), "multi-user.target");

    let audit = UnitFile::read(&dir.join("perimeter-audit.service"));
    for (key, value) in hardening {
        assert_eq!(audit.value("Service", key), value, "audit: {key}");
    }
    for (key, value) in [
        ("Type", "oneshot"),
        ("ExecStart", AUDIT_COMMAND),
        ("StateDirectory", "perimeter-audit"),
        ("ProtectSystem", "full"),
        // An executable under /home is what the audit must look at.
        ("ProtectHome", "read-only"),
    ] {
        assert_eq!(audit.value("Service", key), value, "audit: {key}");
    }
    // Root: reading every process's sockets needs it.
    assert!(!audit.has("Service", "User"), "the audit runs as root");
    assert!(!audit.has("Service", "AmbientCapabilities"));
    let capabilities: BTreeSet<&str> = audit
        .value("Service", "CapabilityBoundingSet")
        .split_whitespace()
        .collect();
    assert!(
        capabilities.contains("CAP_SYS_PTRACE") && !capabilities.contains("CAP_SYS_ADMIN"),
        "{capabilities:?}"
    );
    // It must see the host: its sockets, processes and /proc/net.
    for blinding in [
        "PrivateNetwork",
        "PrivatePIDs",
        "ProtectProc",
        "ProcSubset",
        "PrivateUsers",
    ] {
        assert!(!audit.has("Service", blinding), "the audit sets {blinding}");
    }
    assert!(
        !audit.has("Install", "WantedBy"),
        "the timer starts the audit"
    );

    let server = UnitFile::read(&dir.join("perimeter-server.service"));
    for (key, value) in hardening {
        assert_eq!(server.value("Service", key), value, "server: {key}");
    }
    for (key, value) in [
        ("ExecStart", SERVER_COMMAND),
        ("DynamicUser", "yes"),
        ("StateDirectory", "perimeter-server"),
        ("ProtectSystem", "strict"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("PrivateUsers", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ] {
        assert_eq!(server.value("Service", key), value, "server: {key}");
    }
    // The key and the secret reach the service as credentials, never through
    // a file its user could read otherwise.
    let credentials = server.values("Service", "LoadCredential");
    assert_eq!(
        credentials,
        [
            "tls-cert:/etc/perimeter/server.crt",
            "tls-key:/etc/perimeter/server.key",
            "enrol-secret:/etc/perimeter/enrol-secret",
        ]
    );
    assert!(
        !server.has("Service", "User"),
        "the server's user is dynamic"
    );

    let agent = UnitFile::read(&dir.join("perimeter-agent.service"));
    for (key, value) in hardening {
        assert_eq!(agent.value("Service", key), value, "agent: {key}");
    }
    for (key, value) in [
        ("ExecStart", AGENT_COMMAND),
        ("EnvironmentFile", "/etc/perimeter/agent.env"),
        ("StateDirectory", "perimeter-agent"),
        ("RestartPreventExitStatus", "2"),
        ("ProtectSystem", "full"),
    ] {
        assert_eq!(agent.value("Service", key), value, "agent: {key}");
    }
    assert!(!agent.has("Service", "User"), "the agent audits as root");
    let capabilities: BTreeSet<&str> = agent
        .value("Service", "CapabilityBoundingSet")
        .split_whitespace()
        .collect();
    assert!(
        capabilities.contains("CAP_SYS_PTRACE")
            && capabilities.contains("CAP_NET_ADMIN")
            && !capabilities.contains("CAP_SYS_ADMIN"),
        "{capabilities:?}"
    );

    let timer = UnitFile::read(&dir.join("perimeter-audit.timer"));
    assert_eq!(timer.value("Timer", "OnCalendar"), "daily");
    assert_eq!(timer.value("Timer", "Persistent"), "true");
    assert_eq!(timer.value("Install", "WantedBy"), "timers.target");

    // Every manual page a unit names exists.
    let pages_dir = tempfile::tempdir().expect("temporary directory");
    let pages: BTreeSet<String> = man_pages(pages_dir.path())
        .iter()
        .map(|page| {
            page.file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for unit in UNITS {
        for documentation in UnitFile::read(&dir.join(unit)).values("Unit", "Documentation") {
            for reference in documentation.split_whitespace() {
                let page = reference
                    .strip_prefix("man:")
                    .and_then(|page| page.strip_suffix("(1)"))
                    .unwrap_or_else(|| panic!("{unit}: {reference} is not a man:PAGE(1)"));
                assert!(
                    pages.contains(&format!("{page}.1")),
                    "{unit} names {reference}, which perimeter man does not write"
                );
            }
        }
    }
}

/// `systemd-analyze verify` on copies of the units in `dir` whose
/// /usr/bin/perimeter is `binary`; any line about them fails. An unknown key
/// is only a warning to it (exit 0), which is why the lines count; a unit
/// with one proves that they are seen.
fn verify_units(dir: &Path, binary: &Path) {
    let copies = tempfile::tempdir().expect("temporary directory");
    let binary = binary.to_str().expect("a UTF-8 path");
    let mut units = Vec::new();
    for unit in UNITS {
        let text = fs::read_to_string(dir.join(unit)).expect("a unit");
        let path = copies.path().join(unit);
        fs::write(&path, text.replace(BINARY, binary)).expect("a copy");
        units.push(path);
    }
    let said = systemd_verify(&units);
    let about_ours: Vec<&str> = said
        .lines()
        .filter(|line| line.contains("perimeter"))
        .collect();
    assert!(
        about_ours.is_empty(),
        "systemd-analyze verify {units:?}:\n{said}"
    );

    let broken = copies.path().join("perimeter-broken.service");
    let monitor = fs::read_to_string(&units[0]).expect("the monitor's copy");
    fs::write(
        &broken,
        monitor.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"),
    )
    .expect("a broken copy");
    let said = systemd_verify(&[broken]);
    assert!(
        said.lines()
            .any(|line| line.contains("perimeter-broken") && line.contains("NoNewPrivilege")),
        "systemd-analyze verify says nothing of an unknown key:\n{said}"
    );
}

/// What `systemd-analyze verify` says about `units`, stdout and stderr.
fn systemd_verify(units: &[PathBuf]) -> String {
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(units)
        .stdin(Stdio::null())
        .output()
        .expect("systemd-analyze runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `systemd-analyze security --offline` of a unit file.
fn security(unit: &Path) -> String {
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--man=no", "--no-pager"])
        .arg(unit)
        .stdin(Stdio::null())
        .output()
        .expect("systemd-analyze runs");
    assert_success("systemd-analyze security", &output);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The number in `→ Overall exposure level for UNIT: 1.6 OK`.
fn exposure(report: &str, unit: &str) -> f64 {
    let needle = format!("Overall exposure level for {unit}: ");
    report
        .lines()
        .find_map(|line| line.split_once(&needle))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in\n{report}"))
}

/// PATH with the directory of the cargo running this test first, so the
/// script's `cargo` and `cargo deb` are this toolchain's.
fn path_with_cargo() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .and_then(|cargo| cargo.parent().map(Path::to_owned))
    {
        dirs.push(dir);
    }
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("PATH entries without colons")
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `command`, which must succeed, and returns its stdout.
fn run_ok(command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .expect("the command runs");
    assert_success(&format!("{command:?}"), &output);
    String::from_utf8_lossy(&output.stdout).into_owned()
}
