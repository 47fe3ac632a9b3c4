//! systemd units no package ships, in the system unit directories
//! (/etc/systemd/system, /usr/local/lib/systemd/system, /lib/systemd/system,
//! /usr/lib/systemd/system).
//!
//! What is a unit and what is not, the way systemd reads the directories:
//! - a regular file named `NAME.service` (or any unit suffix) is a unit file;
//! - a regular `*.conf` file in a `NAME.d/` directory is a drop-in, which
//!   changes the unit it belongs to (an `ExecStart=` override is as much a new
//!   program as a new unit), so an unpackaged drop-in is reported like a unit;
//! - a symlink in `*.wants/`, `*.requires/` or `*.upholds/`, or a top-level
//!   symlink to a unit in these directories (an `Alias=`), is enablement made
//!   by `systemctl enable`: kept as data for the rebuild manifest, not a unit;
//! - a top-level symlink to `/dev/null` is a mask (`systemctl mask`): data too;
//! - a top-level symlink to a file outside these directories is a linked unit
//!   (`systemctl link`): the file it leads to is the unit, packaged or not.
//!
//! Packages ship their own enablement symlinks and masks in /lib; only the
//! ones no package lists are returned.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use perimeter_model::{Ownership, Problem, UnitKind};

use super::{FileMeta, Image};
use perimeter_host::packages::PackageIndex;

/// The system unit directories, local administrator's first.
pub const UNIT_DIRS: [&str; 4] = [
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// Unit file suffixes systemd knows (systemd.unit(5)).
const UNIT_SUFFIXES: [&str; 11] = [
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
];

/// Directories whose symlinks are dependencies (enablement), not units.
const ENABLEMENT_DIR_SUFFIXES: [&str; 3] = [".wants", ".requires", ".upholds"];

/// An entry in a unit directory that no package ships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitEntry {
    /// The entry's path inside the root (for a linked unit, the link).
    pub path: PathBuf,
    pub kind: UnitKind,
    /// Metadata of the file (the link's target for a linked unit); `None`
    /// for enablement links and masks.
    pub meta: Option<FileMeta>,
    /// In a directory the package manager owns (/lib/systemd/system,
    /// /usr/lib/systemd/system) rather than the administrator's.
    pub in_package_dir: bool,
    /// `*.wants`/`*.requires`/`*.upholds` directories holding a link to this
    /// unit (by unit name), for units.
    pub enabled_by: Vec<String>,
    /// sha256 of the unit file (the target of a linked unit), when asked for.
    pub sha256: Option<[u8; 32]>,
}

/// Every unpackaged entry of the unit directories under the image.
pub fn sweep_units(image: &Image, index: &PackageIndex) -> (Vec<UnitEntry>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for dir in UNIT_DIRS {
        if let Ok(real) = image.canonical(Path::new(dir))
            && image.on_disk(&real).is_dir()
            && !dirs.contains(&real)
        {
            dirs.push(real);
        }
    }
    let unit_dirs = dirs.clone();
    let mut entries: Vec<UnitEntry> = Vec::new();
    // Unit name → enablement directories linking to it, owned or not.
    let mut enabled_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let owned = |path: &Path| matches!(index.owner_of(path), Ownership::Package(_));

    for dir in &dirs {
        let in_package_dir = !(dir.starts_with("/etc") || dir.starts_with("/usr/local"));
        let Some(top) = list(image, dir, &mut problems) else {
            continue;
        };
        for (name, file_type) in top {
            let path = dir.join(&name);
            if file_type.is_dir() {
                let is_enablement = ENABLEMENT_DIR_SUFFIXES.iter().any(|s| name.ends_with(s));
                let is_dropin_dir = name.ends_with(".d");
                if !is_enablement && !is_dropin_dir {
                    continue;
                }
                let Some(children) = list(image, &path, &mut problems) else {
                    continue;
                };
                for (child, child_type) in children {
                    let child_path = path.join(&child);
                    if is_enablement && child_type.is_symlink() {
                        enabled_by
                            .entry(child.clone())
                            .or_default()
                            .push(name.clone());
                        if !owned(&child_path) {
                            entries.push(UnitEntry {
                                path: child_path.clone(),
                                kind: UnitKind::Enablement {
                                    target: link_target(image, &child_path),
                                },
                                meta: None,
                                in_package_dir,
                                enabled_by: Vec::new(),
                                sha256: None,
                            });
                        }
                    } else if is_dropin_dir
                        && child.ends_with(".conf")
                        && (child_type.is_file() || child_type.is_symlink())
                        && !owned(&child_path)
                    {
                        entries.push(UnitEntry {
                            meta: meta_of(image, &child_path),
                            path: child_path,
                            kind: UnitKind::DropIn,
                            in_package_dir,
                            enabled_by: Vec::new(),
                            sha256: None,
                        });
                    }
                }
            } else if !is_unit_name(&name) {
                continue;
            } else if file_type.is_file() {
                if !owned(&path) {
                    entries.push(UnitEntry {
                        meta: meta_of(image, &path),
                        path,
                        kind: UnitKind::Unit,
                        in_package_dir,
                        enabled_by: Vec::new(),
                        sha256: None,
                    });
                }
            } else if file_type.is_symlink() && !owned(&path) {
                let kind = match fs::read_link(image.on_disk(&path)) {
                    Ok(raw) if raw == Path::new("/dev/null") => UnitKind::Masked,
                    _ => match image.canonical(&path) {
                        Ok(target) if unit_dirs.iter().any(|d| target.starts_with(d)) => {
                            UnitKind::Enablement {
                                target: Some(target),
                            }
                        }
                        Ok(target) if owned(&target) => continue,
                        Ok(target) => UnitKind::Linked { target },
                        // Dangling: enablement state pointing nowhere.
                        Err(_) => UnitKind::Enablement { target: None },
                    },
                };
                let meta = match &kind {
                    UnitKind::Linked { target } => meta_of(image, target),
                    _ => None,
                };
                entries.push(UnitEntry {
                    path,
                    kind,
                    meta,
                    in_package_dir,
                    enabled_by: Vec::new(),
                    sha256: None,
                });
            }
        }
    }
    for entry in &mut entries {
        if entry.kind.is_unit()
            && let Some(name) = entry.path.file_name().and_then(|n| n.to_str())
            && let Some(dirs) = enabled_by.get(name)
        {
            entry.enabled_by = dirs.clone();
            entry.enabled_by.sort();
            entry.enabled_by.dedup();
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    (entries, problems)
}

/// Whether a file name is `NAME.SUFFIX` with a unit suffix.
pub fn is_unit_name(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(stem, suffix)| !stem.is_empty() && UNIT_SUFFIXES.contains(&suffix))
}

/// The entries of a directory with their types, sorted by name; `None` (and
/// a problem, unless it is simply absent) when it cannot be listed.
fn list(
    image: &Image,
    dir: &Path,
    problems: &mut Vec<Problem>,
) -> Option<Vec<(String, fs::FileType)>> {
    let entries = match fs::read_dir(image.on_disk(dir)) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
        Err(err) => {
            problems.push(Problem::new(
                dir.display().to_string(),
                format!("cannot list unit directory: {err}"),
            ));
            return None;
        }
    };
    let mut out: Vec<(String, fs::FileType)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            Some((name, entry.file_type().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}

fn link_target(image: &Image, link: &Path) -> Option<PathBuf> {
    image.canonical(link).ok()
}

fn meta_of(image: &Image, path: &Path) -> Option<FileMeta> {
    fs::metadata(image.on_disk(path))
        .ok()
        .map(|meta| FileMeta::from_metadata(&meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names() {
        assert!(is_unit_name("redis-tarball.service"));
        assert!(is_unit_name("getty@.service"));
        assert!(is_unit_name("backup.timer"));
        assert!(!is_unit_name(".service"));
        assert!(!is_unit_name("README"));
        assert!(!is_unit_name("system.conf"));
        assert!(!is_unit_name("multi-user.target.wants"));
    }
}
