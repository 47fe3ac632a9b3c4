//! `perimeter inventory`'s collection against a fixture system (a dpkg
//! database with conffiles and md5sums, merged /usr, a changed conffile, a
//! modified binary, missing files, unowned executables and units), against
//! `dpkg --verify` on a copy of that fixture, and against `dpkg --verify` on
//! this machine's own packages.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

use perimeter_inventory::{Inventory, InventoryOptions, collect};
use perimeter_model::{Area, FileChange, UnitKind};

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/root")
}

fn fixture_options(root: &Path, verify: bool) -> InventoryOptions {
    let mut opts = InventoryOptions::for_root(root);
    opts.verify = verify;
    opts.workers = 2;
    opts
}

fn paths<'a>(items: impl Iterator<Item = &'a Path>) -> Vec<String> {
    items.map(|p| p.display().to_string()).collect()
}

/// (path, change) of every changed conffile and file, as `dpkg --verify`
/// would list them.
fn changes(inventory: &Inventory) -> BTreeSet<(String, &'static str, bool)> {
    let conffiles = inventory.conffiles.iter().map(|f| (f, true));
    let files = inventory
        .modified_files
        .iter()
        .flatten()
        .map(|f| (f, false));
    conffiles
        .chain(files)
        .map(|(f, conffile)| (f.path.display().to_string(), f.change.as_str(), conffile))
        .collect()
}

#[test]
fn fixture_inventory() {
    let root = fixture_root();
    let inventory = collect(&fixture_options(&root, true));
    assert!(inventory.problems.is_empty(), "{:?}", inventory.problems);
    assert_eq!(inventory.hostname, "fixture-host");
    assert!(
        inventory.processes.is_empty(),
        "no process walk for an image"
    );

    // config-files packages are not on the system; the origin is the
    // repository listing the installed version, and tool's 1.0-1 is listed
    // nowhere (the index has 1.1-1).
    let packages: Vec<(&str, &str, Option<&str>, Option<&str>)> = inventory
        .packages
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.version.as_str(),
                p.arch.as_deref(),
                p.origin.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        packages,
        vec![
            (
                "hello",
                "2.10-3",
                Some("amd64"),
                Some("Example fixture/main")
            ),
            ("tool", "1.0-1", Some("all"), None),
        ]
    );

    // Unowned executables: one in a system PATH directory, one in
    // /usr/local, two in /opt (one reached through a /usr/local/bin link, an
    // absolute symlink resolved inside the image). The link to the packaged
    // hello and the non-executable notes are not reported.
    let unowned: Vec<(String, Area, bool, Vec<String>)> = inventory
        .unowned_files
        .iter()
        .map(|f| {
            (
                f.path.display().to_string(),
                f.area,
                f.in_path,
                paths(f.links.iter().map(PathBuf::as_path)),
            )
        })
        .collect();
    assert_eq!(
        unowned,
        vec![
            ("/opt/app/bin/helper".to_owned(), Area::Opt, false, vec![]),
            (
                "/opt/app/bin/run".to_owned(),
                Area::Opt,
                false,
                vec!["/usr/local/bin/app".to_owned()]
            ),
            (
                "/usr/local/bin/custom".to_owned(),
                Area::UsrLocal,
                true,
                vec![]
            ),
            ("/usr/sbin/dropped".to_owned(), Area::System, true, vec![]),
        ]
    );
    assert!(
        inventory
            .unowned_files
            .iter()
            .all(|f| f.meta.mode & 0o111 != 0)
    );

    // Unit directories: the packaged hello.service is not listed; its
    // unpackaged drop-in is (under the merged /usr name), so are the
    // administrator's unit, its enablement link, the enablement of the
    // packaged unit, and the mask.
    let units: Vec<(String, &str, Vec<String>)> = inventory
        .units
        .iter()
        .map(|u| {
            (
                u.path.display().to_string(),
                u.kind.as_str(),
                u.enabled_by.clone(),
            )
        })
        .collect();
    assert_eq!(
        units,
        vec![
            (
                "/etc/systemd/system/masked.service".to_owned(),
                "masked",
                vec![]
            ),
            (
                "/etc/systemd/system/miner.service".to_owned(),
                "unit",
                vec!["multi-user.target.wants".to_owned()]
            ),
            (
                "/etc/systemd/system/multi-user.target.wants/hello.service".to_owned(),
                "enablement",
                vec![]
            ),
            (
                "/etc/systemd/system/multi-user.target.wants/miner.service".to_owned(),
                "enablement",
                vec![]
            ),
            (
                "/usr/lib/systemd/system/hello.service.d/override.conf".to_owned(),
                "drop-in",
                vec![]
            ),
        ]
    );
    let hello_link = inventory
        .units
        .iter()
        .find(|u| u.path.ends_with("multi-user.target.wants/hello.service"))
        .map(|u| u.kind.clone());
    assert_eq!(
        hello_link,
        Some(UnitKind::Enablement {
            target: Some(PathBuf::from("/usr/lib/systemd/system/hello.service"))
        })
    );
    let dropin = inventory.units.iter().find(|u| u.kind == UnitKind::DropIn);
    assert_eq!(dropin.map(|u| u.in_package_dir), Some(true));

    // The changed conffile (the obsolete one and the removed package's are
    // not checked); the modified binary and the missing file and directory.
    assert_eq!(
        changes(&inventory),
        BTreeSet::from([
            ("/etc/hello.conf".to_owned(), "modified", true),
            ("/usr/bin/tool".to_owned(), "modified", false),
            ("/usr/share/doc/tool/README".to_owned(), "missing", false),
            ("/usr/share/doc/tool/examples".to_owned(), "missing", false),
        ])
    );
    let tool = inventory
        .modified_files
        .iter()
        .flatten()
        .find(|f| f.path.ends_with("usr/bin/tool"));
    assert_eq!(
        tool.map(|f| f.executable),
        Some(true),
        "a script with an x bit is code"
    );
    assert_eq!(tool.map(|f| f.package.to_string()), Some("tool".to_owned()));
    assert_eq!(inventory.stats.n_conffiles_checked, 2);
    assert_eq!(inventory.stats.n_files_verified, 5);
    assert_eq!(
        inventory.user_names.get(&0).map(String::as_str),
        Some("root")
    );
}

#[test]
fn without_verify_only_conffiles_are_checked() {
    let inventory = collect(&fixture_options(&fixture_root(), false));
    assert_eq!(inventory.modified_files, None);
    assert_eq!(
        changes(&inventory),
        BTreeSet::from([("/etc/hello.conf".to_owned(), "modified", true)])
    );
    assert_eq!(inventory.stats.n_files_verified, 0);
}

#[test]
fn export_hashes_what_the_manifest_records() {
    let mut opts = fixture_options(&fixture_root(), false);
    opts.hash_files = true;
    let inventory = collect(&opts);
    let custom = inventory
        .unowned_files
        .iter()
        .find(|f| f.path.ends_with("usr/local/bin/custom"))
        .and_then(|f| f.sha256);
    // The file's own content through sha2 (and `sha256sum` agrees:
    // d3d32484...b5b8d).
    let content = std::fs::read(fixture_root().join("usr/local/bin/custom")).expect("read");
    let expected: [u8; 32] = sha2::Sha256::digest(&content).into();
    assert_eq!(custom, Some(expected));
    assert_eq!(
        custom.map(|d| d.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        Some("d3d3248485c1647c78364c46e2f5932e689e7d0e6e1d9159617f3df098db5b8d".to_owned())
    );
    let miner = inventory
        .units
        .iter()
        .find(|u| u.path.ends_with("miner.service") && u.kind == UnitKind::Unit);
    assert!(miner.is_some_and(|u| u.sha256.is_some()));
    let masked = inventory.units.iter().find(|u| u.kind == UnitKind::Masked);
    assert!(masked.is_some_and(|u| u.sha256.is_none()));
    let hello_conf = inventory.conffiles.first().and_then(|c| c.sha256);
    assert!(hello_conf.is_some());
}

fn dpkg_available() -> bool {
    Command::new("dpkg")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `dpkg --verify` output lines as (path, change, conffile).
fn parse_dpkg_verify(stdout: &str) -> BTreeSet<(String, &'static str, bool)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let flags = words.next()?;
            let rest: Vec<&str> = words.collect();
            let (conffile, path) = match rest.as_slice() {
                ["c", path] => (true, *path),
                [path] => (false, *path),
                _ => return None,
            };
            let change = if flags == "missing" {
                "missing"
            } else {
                "modified"
            };
            Some((path.to_owned(), change, conffile))
        })
        .collect()
}

/// On a copy of the fixture with one more file changed, perimeter and
/// `dpkg --root COPY --verify` agree exactly.
#[test]
fn fixture_agrees_with_dpkg_verify() {
    assert!(
        dpkg_available(),
        "dpkg is required (Debian test machines have it)"
    );
    let copy = tempfile::tempdir().expect("tempdir");
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", fixture_root().display()))
        .arg(copy.path())
        .status()
        .expect("cp runs");
    assert!(status.success());
    // One more change, made only in the copy.
    std::fs::write(copy.path().join("usr/share/doc/hello/README"), b"edited\n").expect("write");
    std::fs::remove_file(copy.path().join("etc/tool.conf")).expect("remove");

    let inventory = collect(&fixture_options(copy.path(), true));
    let ours = changes(&inventory);
    let output = Command::new("dpkg")
        .arg(format!("--root={}", copy.path().display()))
        .arg("--verify")
        .output()
        .expect("dpkg runs");
    let theirs = parse_dpkg_verify(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(
        ours,
        theirs,
        "dpkg stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(ours.contains(&("/usr/share/doc/hello/README".to_owned(), "modified", false)));
    assert!(ours.contains(&("/etc/tool.conf".to_owned(), "missing", true)));
    let readme = inventory
        .modified_files
        .iter()
        .flatten()
        .find(|f| f.path.ends_with("hello/README"));
    assert_eq!(
        readme.map(|f| (f.change, f.executable)),
        Some((FileChange::Modified, false))
    );
}

/// On this machine, for a few packages every Debian system has, perimeter's
/// verdicts equal `dpkg --verify`'s (nothing is modified here; both must
/// agree on whatever the machine's state is).
#[test]
fn live_verify_agrees_with_dpkg_for_a_few_packages() {
    assert!(
        dpkg_available(),
        "dpkg is required (Debian test machines have it)"
    );
    let wanted = [
        "bash",
        "coreutils",
        "dpkg",
        "libc6",
        "login",
        "passwd",
        "sed",
    ];
    let mut opts = InventoryOptions::for_root(Path::new("/"));
    opts.verify = true;
    opts.processes = false;
    opts.origins = false;
    opts.only_packages = Some(wanted.iter().map(|s| (*s).to_owned()).collect());
    let inventory = collect(&opts);
    assert!(
        inventory.stats.n_files_verified > 500,
        "{:?}",
        inventory.stats
    );
    let ours = changes(&inventory);
    let output = Command::new("dpkg")
        .arg("--verify")
        .args(wanted)
        .output()
        .expect("dpkg runs");
    let theirs = parse_dpkg_verify(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(ours, theirs);
}

mod no_panics {
    use std::collections::HashMap;
    use std::path::Path;

    use perimeter_host::packages::{parse_dpkg_status, parse_md5sums, parse_rpm_qa};
    use perimeter_inventory::origin::{parse_release, scan_packages_index};
    use perimeter_inventory::parse_id_names;
    use perimeter_inventory::sweep::parse_login_defs_path;
    use proptest::prelude::*;

    /// Lines built from dpkg's status vocabulary, continuation lines and
    /// garbage.
    const STATUS_LINE: &str = "(Package|Status|Version|Architecture|Conffiles|Multi-Arch|Origin|[A-Za-z-]{1,8})?(: ?)?(install ok installed|deinstall ok config-files|same|/etc/[a-z]{1,6} [0-9a-f]{0,33}( obsolete| remove-on-upgrade| x)?|newconffile|[ -~]{0,20})|[ \t][ -~]{0,30}|";

    proptest! {
        /// A status file is packages and errors, never a panic; every
        /// package it returns has the fields a package must have.
        #[test]
        fn status(lines in proptest::collection::vec(STATUS_LINE, 0..40)) {
            let text = lines.join("\n");
            let (packages, _errors) = parse_dpkg_status(&text, Path::new("/fuzz/status"));
            for package in packages {
                prop_assert!(!package.status.is_empty());
                for conffile in package.conffiles {
                    prop_assert!(conffile.path.is_absolute());
                }
            }
        }

        #[test]
        fn md5sums(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                   lines in proptest::collection::vec("[0-9a-f]{30,34}( {1,3}|\t)[ -~]{0,20}", 0..10)) {
            let _ = parse_md5sums(&bytes, Path::new("/fuzz.md5sums"));
            let text = lines.join("\n");
            let (sums, _) = parse_md5sums(text.as_bytes(), Path::new("/fuzz.md5sums"));
            for (path, _) in sums {
                prop_assert!(path.is_absolute());
            }
        }

        #[test]
        fn release_indexes_and_small_files(text in "[ -~\n\t]{0,300}") {
            let _ = parse_release(&text);
            let _ = parse_login_defs_path(&text);
            let _ = parse_id_names(&text);
            let _ = parse_rpm_qa(&text);
            let wanted: HashMap<(String, String, String), Vec<usize>> = HashMap::new();
            let scanned = scan_packages_index(text.as_bytes(), &wanted, |_| ());
            prop_assert!(scanned.is_ok());
        }
    }
}

#[test]
fn no_package_database_is_a_problem_not_a_flood() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("usr/bin")).expect("mkdir");
    let exe = dir.path().join("usr/bin/anything");
    std::fs::write(&exe, b"#!/bin/sh\n").expect("write");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let inventory = collect(&fixture_options(dir.path(), true));
    assert!(inventory.unowned_files.is_empty());
    assert!(inventory.packages.is_empty());
    let messages: Vec<&str> = inventory
        .problems
        .iter()
        .map(|p| p.message.as_str())
        .collect();
    assert_eq!(
        messages,
        vec!["no package database (neither dpkg's nor rpm's): nothing can be checked against one"]
    );
}
