//! rpm under a root, against a real rpm: a package built with `rpmbuild` and
//! installed with `rpm --root` into a fresh root, then looked at through the
//! entry points the audit (`PackageDb::open` + `lookup`) and `perimeter
//! inventory --root` (`inventory::collect`) use.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use perimeter_host::packages::PackageDb;
use perimeter_inventory::{InventoryOptions, collect};
use perimeter_model::{Ownership, PackageRef};
use perimeter_testlab::{RPM_FIXTURE_EXE, RPM_FIXTURE_PACKAGE, install_rpm_fixture, require_rpm};

/// An executable under the root's /usr/local/bin that no package owns. Its
/// name is unusual so that the live host has no such file: rpm looks for an
/// unowned path on the live host even under `--root`, and says "No such file
/// or directory" when it is not there, which must not read as a failure.
const UNOWNED_EXE: &str = "/usr/local/bin/perimeter-rpm-unowned";

/// A root with the fixture package installed in an rpm database at `dbpath`,
/// and [`UNOWNED_EXE`] beside it.
fn rpm_root(work: &Path, dbpath: &str) -> PathBuf {
    let root = work.join("root");
    install_rpm_fixture(work, &root, dbpath).expect("build and install the rpm fixture");
    let unowned = root.join(UNOWNED_EXE.trim_start_matches('/'));
    fs::create_dir_all(unowned.parent().expect("a parent directory")).expect("mkdir");
    fs::write(&unowned, "#!/bin/sh\necho unowned\n").expect("write the unowned executable");
    fs::set_permissions(&unowned, fs::Permissions::from_mode(0o755)).expect("chmod");
    root
}

fn fixture_package() -> Ownership {
    Ownership::Package(PackageRef {
        manager: "rpm".into(),
        name: RPM_FIXTURE_PACKAGE.into(),
        arch: Some("noarch".into()),
    })
}

#[test]
fn audit_lookup_asks_rpm_under_the_root() {
    if !require_rpm() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let root = rpm_root(work.path(), "/var/lib/rpm");

    let (db, problems) = PackageDb::open(&root);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(db.has_rpm(), "rpm's database under {}", root.display());
    assert!(db.has_database());

    let exes = [PathBuf::from(RPM_FIXTURE_EXE), PathBuf::from(UNOWNED_EXE)];
    let (answers, problems) = db.lookup(&exes);
    assert!(problems.is_empty(), "{problems:?}");
    let fixture = &answers[Path::new(RPM_FIXTURE_EXE)];
    assert_eq!(fixture.ownership, fixture_package());
    assert_eq!(fixture.matched.as_deref(), Some(Path::new(RPM_FIXTURE_EXE)));
    assert_eq!(
        answers[Path::new(UNOWNED_EXE)].ownership,
        Ownership::Unpackaged
    );

    // Asked alone, the unowned file makes rpm exit non-zero with nothing on
    // standard output: still an answer, not a problem.
    let (owners, problems) = db.owners(&[PathBuf::from(UNOWNED_EXE)]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(owners[Path::new(UNOWNED_EXE)], Ownership::Unpackaged);

    let (packages, problems) = db.rpm_installed();
    assert!(problems.is_empty(), "{problems:?}");
    let versions: Vec<(&str, &str, Option<&str>)> = packages
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str(), p.arch.as_deref()))
        .collect();
    assert_eq!(
        versions,
        vec![(RPM_FIXTURE_PACKAGE, "1.0-1", Some("noarch"))]
    );
}

#[test]
fn inventory_of_an_rpm_root() {
    if !require_rpm() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let root = rpm_root(work.path(), "/var/lib/rpm");

    let inventory = collect(&InventoryOptions::for_root(&root));
    assert!(inventory.problems.is_empty(), "{:?}", inventory.problems);
    let packages: Vec<(&str, &str, &str, Option<&str>, &str)> = inventory
        .packages
        .iter()
        .map(|p| {
            (
                p.manager,
                p.name.as_str(),
                p.version.as_str(),
                p.arch.as_deref(),
                p.status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        packages,
        vec![(
            "rpm",
            RPM_FIXTURE_PACKAGE,
            "1.0-1",
            Some("noarch"),
            "installed"
        )]
    );
    // The packaged executable in /usr/bin is rpm's; the one in /usr/local/bin
    // is nobody's.
    let unowned: Vec<&Path> = inventory
        .unowned_files
        .iter()
        .map(|f| f.path.as_path())
        .collect();
    assert_eq!(unowned, vec![Path::new(UNOWNED_EXE)]);
}

#[test]
fn rpm_database_in_usr_lib_sysimage() {
    if !require_rpm() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let root = rpm_root(work.path(), "/usr/lib/sysimage/rpm");

    let (db, problems) = PackageDb::open(&root);
    assert!(problems.is_empty(), "{problems:?}");
    let (owners, problems) = db.owners(&[PathBuf::from(RPM_FIXTURE_EXE)]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(owners[Path::new(RPM_FIXTURE_EXE)], fixture_package());
    let (packages, problems) = db.rpm_installed();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        packages.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        vec![RPM_FIXTURE_PACKAGE]
    );
}

#[test]
fn rpm_database_reached_through_a_symlink_out_of_the_root_is_not_used() {
    if !require_rpm() {
        return;
    }
    // The real database lives in one root; another root's /var/lib/rpm is an
    // absolute symlink to it, which inside an image would name the image's own
    // directory but on the live host leads elsewhere.
    let work = tempfile::tempdir().expect("tempdir");
    let real = rpm_root(work.path(), "/var/lib/rpm");
    let image = work.path().join("image");
    fs::create_dir_all(image.join("var/lib")).expect("mkdir");
    std::os::unix::fs::symlink(real.join("var/lib/rpm"), image.join("var/lib/rpm"))
        .expect("symlink");

    let (db, problems) = PackageDb::open(&image);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(!db.has_rpm());
    assert!(!db.has_database());
}
