#![no_main]
//! The package databases the audit and the inventory read from an image, and
//! the /etc files read beside them, all on the same bytes: dpkg's `.list`
//! files and list file names, `diversions`, `status` (with `Conffiles`) and
//! `.md5sums`; `rpm -qa` and `rpm -qf` output; apt's `Release` files and
//! `Packages` indexes (and the repository labels named after them);
//! /etc/passwd and /etc/group names; the PATH of /etc/login.defs. What each
//! parser returns re-parses, rendered back, to the same answer.
//!
//! Lines are rendered with CRLF where the parser strips one CR, and
//! single-record texts without a final newline where it reads lines with
//! `str::lines` (which drops a CR before a newline), so a value that itself
//! ends in CR survives the rendering.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use perimeter_inventory::{origin, parse_id_names, sweep};
use perimeter_host::packages::{self, Diversion, InstalledPackage, RpmPackage};
use perimeter_model::PackageRef;

/// Linux caps paths at 4096 bytes; dpkg's parsers refuse longer lines.
const MAX_PATH_LINE: usize = 4096;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let file = Path::new("/var/lib/dpkg/fuzz");
    dpkg_list(bytes, file);
    diversions(bytes, file);
    let installed = dpkg_status(&text, file);
    md5sums(bytes, file);
    md5_hex(bytes);
    list_name(&text);
    rpm(&text);
    apt(bytes, &text, &installed);
    etc(&text);
});

fn dpkg_list(bytes: &[u8], file: &Path) {
    let Ok(paths) = packages::parse_dpkg_list(bytes, file) else {
        return;
    };
    for path in &paths {
        assert!(path.first() == Some(&b'/') && !path.contains(&0));
        assert!(path.len() <= MAX_PATH_LINE);
    }
    let rendered: Vec<u8> = paths
        .iter()
        .flat_map(|p| [*p, &b"\r\n"[..]])
        .flatten()
        .copied()
        .collect();
    assert_eq!(packages::parse_dpkg_list(&rendered, file).ok(), Some(paths));
}

fn diversions(bytes: &[u8], file: &Path) {
    let (diversions, _errors) = packages::parse_diversions(bytes, file);
    let n_lines = bytes.split(|&b| b == b'\n').count();
    assert!(diversions.len() * 3 <= n_lines);
    let mut rendered = Vec::new();
    for Diversion { from, to, by } in &diversions {
        for line in [
            from.as_os_str().as_bytes(),
            to.as_os_str().as_bytes(),
            by.as_deref().unwrap_or(":").as_bytes(),
        ] {
            rendered.extend_from_slice(line);
            rendered.extend_from_slice(b"\r\n");
        }
    }
    let (again, errors) = packages::parse_diversions(&rendered, file);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(again, diversions);
}

fn dpkg_status(text: &str, file: &Path) -> Vec<InstalledPackage> {
    let (installed, _errors) = packages::parse_dpkg_status(text, file);
    for package in &installed {
        assert!(package.conffiles.iter().all(|c| c.path.starts_with("/")));
        let rendered = status_paragraph(package);
        let (again, errors) = packages::parse_dpkg_status(&rendered, file);
        assert!(errors.is_empty(), "{rendered:?}: {errors:?}");
        assert_eq!(
            again.as_slice(),
            std::slice::from_ref(package),
            "{rendered:?}"
        );
    }
    installed
}

fn status_paragraph(package: &InstalledPackage) -> String {
    let mut paragraph = format!(
        "Package: {}\nStatus: install ok {}\nVersion: {}\nArchitecture: {}\n",
        package.name, package.status, package.version, package.arch
    );
    if package.multi_arch_same {
        paragraph.push_str("Multi-Arch: same\n");
    }
    if let Some(origin) = &package.origin_field {
        paragraph.push_str(&format!("Origin: {origin}\n"));
    }
    if !package.conffiles.is_empty() {
        paragraph.push_str("Conffiles:\n");
        for conffile in &package.conffiles {
            let md5 = conffile.md5.as_ref().map_or("newconffile".to_owned(), hex);
            paragraph.push_str(&format!(" {} {md5}", conffile.path.display()));
            if conffile.obsolete {
                paragraph.push_str(" obsolete");
            }
            if conffile.remove_on_upgrade {
                paragraph.push_str(" remove-on-upgrade");
            }
            paragraph.push('\n');
        }
    }
    paragraph
}

fn hex(md5: &[u8; 16]) -> String {
    md5.iter().map(|b| format!("{b:02x}")).collect()
}

fn md5sums(bytes: &[u8], file: &Path) {
    let (sums, _errors) = packages::parse_md5sums(bytes, file);
    let mut rendered = Vec::new();
    for (path, md5) in &sums {
        let path = path.as_os_str().as_bytes();
        assert!(path.first() == Some(&b'/'));
        // The parser roots a relative path; a path that was written rooted
        // (`//x` once its own `/` is added), or is the root itself, is written
        // rooted again.
        let relative = &path[1..];
        let written = if relative.is_empty() || relative.starts_with(b"/") {
            path
        } else {
            relative
        };
        rendered.extend_from_slice(hex(md5).as_bytes());
        rendered.extend_from_slice(b"  ");
        rendered.extend_from_slice(written);
        rendered.extend_from_slice(b"\r\n");
    }
    let (again, errors) = packages::parse_md5sums(&rendered, file);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(again, sums);
}

fn md5_hex(bytes: &[u8]) {
    if let Some(md5) = packages::parse_md5_hex(bytes) {
        assert_eq!(bytes.len(), 32);
        assert_eq!(packages::parse_md5_hex(hex(&md5).as_bytes()), Some(md5));
    }
}

fn list_name(text: &str) {
    for name in text.lines().chain([text]) {
        if let Some(PackageRef {
            manager,
            name: package,
            arch,
        }) = packages::package_of_list_name(name)
        {
            assert_eq!(manager, "dpkg");
            let rendered = match &arch {
                Some(arch) => format!("{package}:{arch}.list"),
                None => format!("{package}.list"),
            };
            assert_eq!(rendered, name);
        }
    }
}

fn rpm(text: &str) {
    for package in packages::parse_rpm_qa(text) {
        assert!(!package.name.is_empty());
        let RpmPackage {
            name,
            version,
            arch,
            vendor,
        } = &package;
        let none = |value: &Option<String>| value.clone().unwrap_or_else(|| "(none)".to_owned());
        let rendered = format!(
            "{name}\t(none)\t{version}\t{}\t{}",
            none(arch),
            none(vendor)
        );
        assert_eq!(
            packages::parse_rpm_qa(&rendered),
            vec![package.clone()],
            "{rendered:?}"
        );
    }

    let wanted: BTreeSet<PathBuf> = text
        .lines()
        .filter_map(|line| line.split('\t').next())
        .map(PathBuf::from)
        .collect();
    for (path, owner) in packages::parse_rpm_qf(text, &wanted) {
        assert!(wanted.contains(&path));
        assert!(owner.manager == "rpm" && !owner.name.is_empty());
        let arch = owner.arch.clone().unwrap_or_else(|| "(none)".to_owned());
        let rendered = format!("{}\t{}\t{arch}", path.display(), owner.name);
        let again = packages::parse_rpm_qf(&rendered, &wanted);
        assert_eq!(again, HashMap::from([(path, owner)]), "{rendered:?}");
    }
}

fn apt(bytes: &[u8], text: &str, installed: &[InstalledPackage]) {
    let release = origin::parse_release(text);
    let mut rendered = String::new();
    for (field, value) in [
        ("Origin", &release.origin),
        ("Label", &release.label),
        ("Suite", &release.suite),
        ("Codename", &release.codename),
    ] {
        if let Some(value) = value {
            assert!(!value.is_empty() && value.trim() == value);
            rendered.push_str(&format!("{field}: {value}\n"));
        }
    }
    assert_eq!(origin::parse_release(&rendered), release, "{rendered:?}");

    // The index names a repository from its file name and the release files
    // named after its prefixes.
    if let Some(index_name) = text.lines().next() {
        let release_files: BTreeMap<String, origin::ReleaseInfo> = index_name
            .match_indices('_')
            .map(|(at, _)| (index_name[..at].to_owned(), release.clone()))
            .collect();
        let _ = origin::repository_label(index_name, &release_files);
        let _ = origin::repository_label(index_name, &BTreeMap::new());
    }

    // Every installed package is found in an index that lists it.
    let mut wanted: HashMap<(String, String, String), Vec<usize>> = HashMap::new();
    let mut index = String::new();
    for (idx, package) in installed.iter().enumerate() {
        let key = (
            package.name.clone(),
            package.arch.clone(),
            package.version.clone(),
        );
        wanted.entry(key).or_default().push(idx);
        index.push_str(&format!(
            "Package: {}\nArchitecture: {}\nVersion: {}\nDescription: x\n\n",
            package.name, package.arch, package.version
        ));
    }
    let mut seen = BTreeSet::new();
    let scanned = origin::scan_packages_index(Cursor::new(index.as_bytes()), &wanted, |idx| {
        seen.insert(idx);
    });
    assert!(scanned.is_ok());
    let listed: BTreeSet<usize> = installed
        .iter()
        .enumerate()
        .filter(|(_, package)| !package.name.is_empty())
        .map(|(idx, _)| idx)
        .collect();
    assert_eq!(seen, listed);

    // The same bytes as an index.
    let scanned = origin::scan_packages_index(Cursor::new(bytes), &wanted, |idx| {
        assert!(idx < installed.len());
    });
    assert!(scanned.is_ok());
}

fn etc(text: &str) {
    let names = parse_id_names(text);
    let rendered: String = names
        .iter()
        .map(|(id, name)| format!("{name}:x:{id}:0::/:/bin/sh\n"))
        .collect();
    assert!(
        names
            .values()
            .all(|name| !name.is_empty() && !name.contains(':'))
    );
    assert_eq!(parse_id_names(&rendered), names);

    let dirs = sweep::parse_login_defs_path(text);
    assert!(dirs.iter().all(|dir| dir.starts_with("/")));
    let joined: Vec<String> = dirs.iter().map(|dir| dir.display().to_string()).collect();
    let rendered = format!("ENV_PATH PATH={}\n", joined.join(":"));
    if !dirs.is_empty() {
        assert_eq!(sweep::parse_login_defs_path(&rendered), dirs);
    }
}
