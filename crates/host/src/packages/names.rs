//! Every name under which a package database may list an executable's file:
//! its real path, that path's merged-/usr twins, and the symlinks beside it
//! that resolve to it, all as paths inside the root. The databases are then
//! asked about these names only.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::PackageDb;

/// The directory pairs merged-/usr joins: on a merged system each top-level
/// directory is a symlink to its `/usr` twin, so both names reach the same files
/// while dpkg still lists whichever name the package shipped.
pub(super) const USR_MERGE_PAIRS: [(&str, &str); 6] = [
    ("/bin", "/usr/bin"),
    ("/sbin", "/usr/sbin"),
    ("/lib", "/usr/lib"),
    ("/lib64", "/usr/lib64"),
    ("/lib32", "/usr/lib32"),
    ("/libx32", "/usr/libx32"),
];

/// Directories whose symlinks are examined for packaged names of an executable,
/// besides the executable's own directory: a binary in /usr/bin is often started
/// through a link in /usr/sbin and the other way round.
const BIN_DIRS: [&str; 2] = ["/usr/bin", "/usr/sbin"];

/// What one executable is looked up under.
#[derive(Debug)]
pub(super) struct ExeQuery {
    pub(super) exe: PathBuf,
    /// Names of the file itself: its real path, then its merged-/usr aliases.
    pub(super) file_names: Vec<PathBuf>,
    /// Symlinks that resolve to the file, each with its own aliases (first is
    /// the name found on disk).
    pub(super) symlinks: Vec<Vec<PathBuf>>,
    /// Why the path could not be resolved, if it could not.
    pub(super) unresolved: Option<String>,
}

impl PackageDb {
    /// Every path under which `exe`'s file could be listed, and the symlinks
    /// that lead to it.
    pub(super) fn query_for(&self, exe: &Path, symlink_dirs: &mut SymlinkDirs) -> ExeQuery {
        let resolved = self.canonical(exe);
        let (real, unresolved) = match resolved {
            Ok(real) => (real, None),
            Err(err) => (
                exe.to_owned(),
                Some(format!("could not resolve {}: {err}", exe.display())),
            ),
        };
        let mut file_names = vec![real.clone()];
        file_names.extend(usr_merge_aliases(&real, &self.merged));

        let mut symlinks = Vec::new();
        if unresolved.is_none() {
            let mut dirs: BTreeSet<PathBuf> = BIN_DIRS.iter().map(PathBuf::from).collect();
            if let Some(parent) = real.parent() {
                dirs.insert(parent.to_owned());
            }
            for dir in dirs {
                for (link, target) in symlink_dirs.links_in(self, &dir) {
                    if *target == real {
                        let mut names = vec![link.clone()];
                        names.extend(usr_merge_aliases(link, &self.merged));
                        symlinks.push(names);
                    }
                }
            }
            // The path as given, when it is itself a symlink (a caller passing
            // argv[0] rather than /proc/PID/exe), leads to the file too.
            if exe != real && !symlinks.iter().any(|names| names.iter().any(|n| n == exe)) {
                let mut names = vec![exe.to_owned()];
                names.extend(usr_merge_aliases(exe, &self.merged));
                symlinks.push(names);
            }
        }
        ExeQuery {
            exe: exe.to_owned(),
            file_names,
            symlinks,
            unresolved,
        }
    }

    /// The symlink-free path of `path` on the system under `root`, as a path
    /// inside that system.
    fn canonical(&self, path: &Path) -> io::Result<PathBuf> {
        let on_disk = self.on_disk(path);
        let real = fs::canonicalize(&on_disk)?;
        if self.root == Path::new("/") {
            return Ok(real);
        }
        let root = fs::canonicalize(&self.root)?;
        match real.strip_prefix(&root) {
            Ok(inside) => Ok(Path::new("/").join(inside)),
            // A symlink that leaves the image resolves on the live host, which
            // says nothing about the image.
            Err(_) => Err(io::Error::other("symlink leads outside the root")),
        }
    }

    fn on_disk(&self, path: &Path) -> PathBuf {
        let relative: PathBuf = path
            .components()
            .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
            .collect();
        self.root.join(relative)
    }
}

/// The merged-/usr twins of `path` that are the same file on this host: for
/// `/usr/bin/bash`, `/bin/bash` when `/bin` is a symlink to `usr/bin`.
pub(super) fn usr_merge_aliases(
    path: &Path,
    merged: &[(&'static str, &'static str)],
) -> Vec<PathBuf> {
    let mut aliases = Vec::new();
    for &(top, usr) in merged {
        if let Ok(rest) = path.strip_prefix(usr) {
            aliases.push(Path::new(top).join(rest));
        } else if let Ok(rest) = path.strip_prefix(top) {
            aliases.push(Path::new(usr).join(rest));
        }
    }
    aliases
}

pub(super) fn is_merged(root: &Path, top: &str, usr: &str) -> bool {
    let top_dir = root.join(top.trim_start_matches('/'));
    let usr_dir = root.join(usr.trim_start_matches('/'));
    let is_link = fs::symlink_metadata(&top_dir).is_ok_and(|m| m.file_type().is_symlink());
    is_link
        && match (fs::canonicalize(&top_dir), fs::canonicalize(&usr_dir)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}

/// Symlinks per directory and the files they resolve to, read once per
/// directory per query batch.
#[derive(Debug, Default)]
pub(super) struct SymlinkDirs {
    dirs: HashMap<PathBuf, Vec<(PathBuf, PathBuf)>>,
}

impl SymlinkDirs {
    fn links_in(&mut self, db: &PackageDb, dir: &Path) -> &[(PathBuf, PathBuf)] {
        self.dirs
            .entry(dir.to_owned())
            .or_insert_with(|| read_symlinks(db, dir))
    }
}

fn read_symlinks(db: &PackageDb, dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let Ok(entries) = fs::read_dir(db.on_disk(dir)) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_symlink()))
        .filter_map(|entry| {
            let link = dir.join(entry.file_name());
            let target = db.canonical(&link).ok()?;
            Some((link, target))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> PathBuf {
        PathBuf::from(text)
    }

    #[test]
    fn usr_merge_aliases_go_both_ways_only_for_merged_pairs() {
        let merged = USR_MERGE_PAIRS.to_vec();
        assert_eq!(
            usr_merge_aliases(Path::new("/usr/bin/bash"), &merged),
            vec![p("/bin/bash")]
        );
        assert_eq!(
            usr_merge_aliases(Path::new("/sbin/ip"), &merged),
            vec![p("/usr/sbin/ip")]
        );
        assert_eq!(
            usr_merge_aliases(Path::new("/lib64/ld-linux-x86-64.so.2"), &merged),
            vec![p("/usr/lib64/ld-linux-x86-64.so.2")]
        );
        // `/libexec` is not `/lib` followed by something.
        assert!(usr_merge_aliases(Path::new("/libexec/x"), &merged).is_empty());
        assert!(usr_merge_aliases(Path::new("/usr/local/bin/x"), &merged).is_empty());
        assert!(usr_merge_aliases(Path::new("/usr/bin/bash"), &[]).is_empty());
    }
}
