//! Package ownership against a fixture dpkg database (with diversions, merged
//! /usr and symlinks laid out on disk), and against `dpkg -S` on this host's real
//! executables.

use std::path::{Path, PathBuf};
use std::process::Command;

use perimeter_host::packages::{ExeOwnership, PackageDb};
use perimeter_model::{Ownership, PackageRef};
use perimeter_testlab::{Requirement, require};

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dpkg/root")
}

fn dpkg(name: &str) -> Ownership {
    let (name, arch) = match name.split_once(':') {
        Some((name, arch)) => (name, Some(arch.to_owned())),
        None => (name, None),
    };
    Ownership::Package(PackageRef {
        manager: "dpkg".into(),
        name: name.into(),
        arch,
    })
}

fn fixture_lookup(exes: &[&str]) -> (Vec<ExeOwnership>, Vec<String>) {
    let (db, problems) = PackageDb::open(&fixture_root());
    assert!(problems.is_empty(), "{problems:?}");
    let exes: Vec<PathBuf> = exes.iter().map(PathBuf::from).collect();
    let (answers, problems) = db.lookup(&exes);
    let answers = exes
        .iter()
        .map(|exe| {
            answers
                .get(exe)
                .cloned()
                .expect("one answer per executable")
        })
        .collect();
    let mut problems: Vec<String> = problems.iter().map(|p| p.message.clone()).collect();
    problems.sort();
    (answers, problems)
}

#[test]
fn fixture_ownership_follows_dpkg_rules() {
    let (answers, problems) = fixture_lookup(&[
        "/usr/sbin/sshd",
        "/sbin/sshd",
        "/usr/bin/redis-check-rdb",
        "/usr/bin/dash",
        "/usr/bin/pg_config",
        "/usr/bin/pg_config.libpq-dev",
        "/usr/bin/vendor-tool",
        "/usr/bin/vendor-tool.real",
        "/usr/local/bin/custom",
        "/usr/bin/orphan-target",
        "/usr/bin/no-such-file",
    ]);
    let owners: Vec<&Ownership> = answers.iter().map(|a| &a.ownership).collect();
    assert_eq!(
        owners,
        vec![
            &dpkg("openssh-server"),
            // The path as given is an alias: the file is the same.
            &dpkg("openssh-server"),
            &dpkg("redis-tools"),
            // Listed as /bin/dash; /bin is a symlink to usr/bin in the fixture.
            &dpkg("dash"),
            // Diverted by postgresql-common, which ships its own file at the
            // original name.
            &dpkg("postgresql-common"),
            // libpq-dev's pg_config, moved aside by the diversion.
            &dpkg("libpq-dev:amd64"),
            // A local diversion: the administrator's file, nobody's package.
            &Ownership::Unpackaged,
            &dpkg("vendor-tool"),
            &Ownership::Unpackaged,
            // A packaged symlink leads here, but the file itself is nobody's.
            &Ownership::Unpackaged,
            &Ownership::Unknown(
                "could not resolve /usr/bin/no-such-file: No such file or directory (os error 2)"
                    .to_owned()
            ),
        ]
    );
    assert_eq!(answers[3].matched.as_deref(), Some(Path::new("/bin/dash")));
    assert_eq!(
        answers[9].symlinks,
        vec![(
            PathBuf::from("/usr/bin/packaged-link"),
            PackageRef {
                manager: "dpkg".into(),
                name: "linker".into(),
                arch: None
            }
        )]
    );
    let info = fixture_root().join("var/lib/dpkg/info");
    assert_eq!(
        problems,
        vec![
            format!(
                "{}: the file name is not `PACKAGE.list` or `PACKAGE:ARCH.list`",
                info.join("Bad Name.list").display()
            ),
            format!(
                "{}: line 3: not an absolute path",
                info.join("broken.list").display()
            ),
        ]
    );
}

#[test]
fn symlinks_to_an_executable_are_reported_beside_its_owner() {
    // redis-server's package ships only a symlink to redis-tools' binary, which
    // is what a running redis-server's /proc/PID/exe shows.
    let (answers, _) = fixture_lookup(&[
        "/usr/bin/redis-check-rdb",
        "/usr/bin/redis-server",
        "/usr/bin/dash",
    ]);
    let redis_server = PackageRef {
        manager: "dpkg".into(),
        name: "redis-server".into(),
        arch: None,
    };
    assert_eq!(answers[0].ownership, dpkg("redis-tools"));
    assert_eq!(
        answers[0].symlinks,
        vec![(PathBuf::from("/usr/bin/redis-server"), redis_server.clone())]
    );
    // Asked by the symlink's name, the answer is still the file's owner.
    assert_eq!(answers[1].ownership, dpkg("redis-tools"));
    assert_eq!(
        answers[1].symlinks,
        vec![(PathBuf::from("/usr/bin/redis-server"), redis_server)]
    );
    // /usr/bin/sh -> dash is listed (as /bin/sh) by dash, the diverter of /bin/sh.
    let sh: Vec<(String, String)> = answers[2]
        .symlinks
        .iter()
        .map(|(path, pkg)| (path.display().to_string(), pkg.name.clone()))
        .collect();
    assert_eq!(sh, vec![("/usr/bin/sh".to_owned(), "dash".to_owned())]);
}

#[test]
fn without_merged_usr_the_aliases_are_different_files() {
    let (db, _) = PackageDb::open(&fixture_root());
    let db = db.with_merged_usr(false);
    let (owners, _) = db.owners(&[PathBuf::from("/usr/bin/dash")]);
    assert_eq!(
        owners.get(Path::new("/usr/bin/dash")),
        Some(&Ownership::Unpackaged)
    );
}

#[test]
fn no_database_at_all_is_unknown() {
    let empty = tempfile::tempdir().expect("tempdir");
    let (db, problems) = PackageDb::open(empty.path());
    assert!(problems.is_empty());
    // Not even with rpm installed: its database is looked for under the
    // root too, and an empty root has none.
    assert!(!db.has_database());
    let (owners, _) = db.owners(&[PathBuf::from("/usr/sbin/sshd")]);
    let Some(Ownership::Unknown(reason)) = owners.get(Path::new("/usr/sbin/sshd")) else {
        panic!("expected unknown ownership, got {owners:?}");
    };
    assert!(reason.starts_with("no package database:"), "{reason}");
}

#[test]
fn full_index_agrees_with_the_query() {
    let (db, _) = PackageDb::open(&fixture_root());
    let (index, problems) = db.index();
    assert_eq!(problems.len(), 2);
    assert_eq!(
        index.owner_of(Path::new("/usr/bin/pg_config.libpq-dev")),
        dpkg("libpq-dev:amd64")
    );
    assert_eq!(
        index.owner_of(Path::new("/usr/bin/pg_config")),
        dpkg("postgresql-common")
    );
    assert_eq!(index.owner_of(Path::new("/usr/bin/dash")), dpkg("dash"));
    assert_eq!(
        index.owner_of(Path::new("/usr/bin/vendor-tool")),
        Ownership::Unpackaged
    );
    // The line before broken.list's bad line was kept.
    assert_eq!(
        index
            .owner_of(Path::new("/usr/bin"))
            .package()
            .map(|p| p.name.as_str()),
        Some("broken")
    );
    assert_eq!(index.n_packages(), 9);
}

/// What `dpkg -S PATH` says owns the file at PATH, following the same
/// diversion rules the lookup implements: dpkg prints the diversion lines and
/// then every package listing the name, including the diverter.
fn dpkg_s(path: &str) -> Option<String> {
    let output = Command::new("dpkg").arg("-S").arg(path).output().ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut diverted_by = None;
    let mut diverted_from = None;
    let mut owners = Vec::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("diversion by ") {
            let (by, rest) = rest.split_once(' ')?;
            diverted_by = Some(by.to_owned());
            if let Some(from) = rest.strip_prefix("from: ") {
                diverted_from = Some(from.to_owned());
            }
        } else if let Some((pkgs, listed)) = line.rsplit_once(": ")
            && listed == path
        {
            owners.extend(pkgs.split(", ").map(str::to_owned));
        }
    }
    match (diverted_by, diverted_from) {
        // The original name: the diverter's own file is there.
        (Some(by), Some(from)) if from == path => owners.into_iter().find(|o| *o == by),
        // The diverted-to name: whoever lists the original name, not the diverter.
        (Some(by), Some(from)) => dpkg_s_listing(&from).into_iter().find(|o| *o != by),
        _ => {
            owners.sort();
            owners.into_iter().next()
        }
    }
}

fn dpkg_s_listing(path: &str) -> Vec<String> {
    let Ok(output) = Command::new("dpkg").arg("-S").arg(path).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.starts_with("diversion by "))
        .filter_map(|line| line.rsplit_once(": "))
        .filter(|(_, listed)| *listed == path)
        .flat_map(|(pkgs, _)| pkgs.split(", ").map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

#[test]
fn agrees_with_dpkg_s_on_this_hosts_executables() {
    if !require(Requirement::Path("/var/lib/dpkg/info")) || !require(Requirement::Tool("dpkg")) {
        return;
    }
    // (path as a process would report it, the name dpkg knows the file by)
    let cases = [
        ("/usr/sbin/sshd", "/usr/sbin/sshd"),
        ("/usr/bin/redis-check-rdb", "/usr/bin/redis-check-rdb"),
        ("/usr/bin/memcached", "/usr/bin/memcached"),
        ("/usr/sbin/nft", "/usr/sbin/nft"),
        ("/usr/bin/bash", "/bin/bash"),
        ("/bin/bash", "/bin/bash"),
        ("/usr/bin/dash", "/bin/dash"),
        ("/usr/bin/ip", "/bin/ip"),
        ("/usr/bin/python3.11", "/usr/bin/python3.11"),
        ("/usr/bin/perl", "/usr/bin/perl"),
        ("/usr/bin/ssh", "/usr/bin/ssh"),
        (
            "/usr/sbin/xtables-legacy-multi",
            "/usr/sbin/xtables-legacy-multi",
        ),
        ("/usr/bin/gawk", "/usr/bin/gawk"),
        ("/usr/bin/perf", "/usr/bin/perf"),
        ("/usr/bin/pg_config", "/usr/bin/pg_config"),
        (
            "/usr/bin/pg_config.libpq-dev",
            "/usr/bin/pg_config.libpq-dev",
        ),
        ("/usr/bin/ls", "/bin/ls"),
    ];
    let present: Vec<(&str, &str)> = cases
        .into_iter()
        .filter(|(exe, _)| Path::new(exe).exists())
        .collect();
    assert!(
        present.len() >= 12,
        "expected the brief's executables to be installed, found {present:?}"
    );

    let (db, problems) = PackageDb::open(Path::new("/"));
    assert!(problems.is_empty(), "{problems:?}");
    let exes: Vec<PathBuf> = present.iter().map(|(exe, _)| PathBuf::from(exe)).collect();
    let (owners, problems) = db.owners(&exes);
    assert!(problems.is_empty(), "{problems:?}");
    for (exe, dpkg_name) in &present {
        let expected = dpkg_s(dpkg_name);
        let ours = owners
            .get(Path::new(exe))
            .and_then(|o| o.package())
            .map(|p| p.name.clone());
        assert_eq!(ours, expected, "{exe} (dpkg knows it as {dpkg_name})");
        assert!(expected.is_some(), "dpkg -S {dpkg_name} found no owner");
    }

    // redis-server's symlink, the real case from Debian 12.
    let (details, _) = db.lookup(&[PathBuf::from("/usr/bin/redis-check-rdb")]);
    let symlinks = details
        .get(Path::new("/usr/bin/redis-check-rdb"))
        .map(|d| d.symlinks.clone())
        .unwrap_or_default();
    let expected = dpkg_s("/usr/bin/redis-server");
    assert!(
        symlinks
            .iter()
            .any(|(path, pkg)| path == Path::new("/usr/bin/redis-server")
                && Some(&pkg.name) == expected.as_ref()),
        "{symlinks:?}"
    );

    // Something no package installed: this test's own executable, which
    // every machine that runs the test has (rustup's, asked before, is not on
    // every such machine).
    let unpackaged = std::env::current_exe().expect("test binary path");
    let (owners, _) = db.owners(std::slice::from_ref(&unpackaged));
    assert_eq!(owners.get(&unpackaged), Some(&Ownership::Unpackaged));
    assert_eq!(dpkg_s(&unpackaged.to_string_lossy()), None);
}

mod no_panics {
    use std::path::Path;

    use perimeter_host::packages::{parse_diversions, parse_dpkg_list, parse_rpm_qf};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn dpkg_lists_and_diversions(text in proptest::collection::vec(any::<u8>(), 0..600)) {
            let file = Path::new("fuzz.list");
            if let Ok(paths) = parse_dpkg_list(&text, file) {
                prop_assert!(paths.iter().all(|p| p.first() == Some(&b'/')));
            }
            let (diversions, _) = parse_diversions(&text, file);
            prop_assert!(diversions.len() * 3 <= text.split(|&b| b == b'\n').count());
        }

        #[test]
        fn path_like_lines(lines in proptest::collection::vec("(/[a-z.:]{0,6}){0,4}|[ -~]{0,8}", 0..12)) {
            let text = lines.join("\n");
            let _ = parse_dpkg_list(text.as_bytes(), Path::new("x.list"));
            let _ = parse_diversions(text.as_bytes(), Path::new("diversions"));
            let _ = parse_rpm_qf(&text.replace(':', "\t"), &Default::default());
        }
    }
}
