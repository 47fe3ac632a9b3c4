//! The sweep for executables no package installed: the PATH directories (one
//! level, as a shell looks), and /usr/local, /opt and /srv (whole trees).
//!
//! Only regular files with an execute bit count; a symlink counts as the file
//! it leads to, so `/usr/local/bin/tool -> /home/build/tool` reports the
//! unpackaged `/home/build/tool` with the link beside it, and a link to a
//! packaged file reports nothing. Symlinked directories are not followed (the
//! directory they lead to is swept only if it is one of the swept places), and
//! a bad directory is a problem, never the end of the sweep.
//!
//! Written over `std::fs::read_dir` rather than a walking crate: the sweep
//! needs `d_type` to skip `lstat` for non-files, a problem per unreadable
//! directory, merged-/usr de-duplication and a hard cap on entries, which is
//! a screenful either way.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use perimeter_model::{Area, Ownership, Problem};

use super::{FileMeta, Image};
use perimeter_host::packages::PackageIndex;

/// Deeper than this is not a software tree but a loop or an attack on the
/// sweep; it is reported and cut.
const MAX_DEPTH: usize = 48;
/// More entries than this in the swept trees is reported and cut, so a
/// runaway /srv cannot make the sweep unbounded.
const MAX_ENTRIES: usize = 2_000_000;

/// The trees swept whole.
pub const TREES: [&str; 3] = ["/usr/local", "/opt", "/srv"];

/// The PATH a login gets on Debian when `/etc/login.defs` says nothing:
/// root's `ENV_SUPATH` and users' `ENV_PATH` together.
pub const DEFAULT_PATH: [&str; 8] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
    "/usr/local/games",
    "/usr/games",
];

/// The directories of `ENV_SUPATH` and `ENV_PATH` in `/etc/login.defs`
/// (`ENV_PATH PATH=/usr/local/bin:/usr/bin:/bin`), in order, without repeats.
/// The PATH of the shell perimeter happens to run in says nothing about the
/// host, so the system's configured one is used.
pub fn parse_login_defs_path(text: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        if key != "ENV_SUPATH" && key != "ENV_PATH" {
            continue;
        }
        let value = value.strip_prefix("PATH=").unwrap_or(value);
        for dir in value.split(':').filter(|d| d.starts_with('/')) {
            let dir = PathBuf::from(dir);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs
}

/// An executable no package owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweptFile {
    /// The file's own path inside the root (symlinks resolved).
    pub path: PathBuf,
    pub area: Area,
    /// Its directory is on the PATH.
    pub in_path: bool,
    /// Symlinks in the swept places that lead to it.
    pub links: Vec<PathBuf>,
    pub meta: FileMeta,
}

/// Counts for the record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub n_entries: usize,
    pub n_executables: usize,
}

/// Sweeps `path_dirs` (one level) and `trees` (recursively) under the image,
/// returning every unpackaged executable by path.
pub fn sweep(
    image: &Image,
    index: &PackageIndex,
    path_dirs: &[PathBuf],
    trees: &[PathBuf],
) -> (BTreeMap<PathBuf, SweptFile>, SweepStats, Vec<Problem>) {
    let mut sweeper = Sweeper {
        image,
        index,
        path_dirs: canonical_dirs(image, path_dirs),
        found: BTreeMap::new(),
        stats: SweepStats::default(),
        problems: Vec::new(),
        capped: false,
    };
    for dir in sweeper.path_dirs.clone() {
        sweeper.visit(&dir, None);
    }
    for tree in canonical_dirs(image, trees) {
        let mut stack = vec![(tree, 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            sweeper.visit(&dir, Some((depth, &mut stack)));
        }
    }
    (sweeper.found, sweeper.stats, sweeper.problems)
}

/// The directories as they are inside the image, symlinks resolved (so /bin
/// and /usr/bin on a merged-/usr host are swept once), missing ones dropped.
fn canonical_dirs(image: &Image, dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        if let Ok(real) = image.canonical(dir)
            && image.on_disk(&real).is_dir()
            && !out.contains(&real)
        {
            out.push(real);
        }
    }
    out
}

struct Sweeper<'a> {
    image: &'a Image,
    index: &'a PackageIndex,
    path_dirs: Vec<PathBuf>,
    found: BTreeMap<PathBuf, SweptFile>,
    stats: SweepStats,
    problems: Vec<Problem>,
    capped: bool,
}

impl Sweeper<'_> {
    /// Reads one directory; with `recurse`, pushes its subdirectories.
    fn visit(&mut self, dir: &Path, recurse: Option<(usize, &mut Vec<(PathBuf, usize)>)>) {
        if self.capped {
            return;
        }
        let entries = match fs::read_dir(self.image.on_disk(dir)) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return,
            Err(err) => {
                self.problems.push(problem(dir, &err));
                return;
            }
        };
        let mut recurse = recurse;
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    self.problems.push(problem(dir, &err));
                    break;
                }
            };
            self.stats.n_entries += 1;
            if self.stats.n_entries > MAX_ENTRIES {
                self.capped = true;
                self.problems.push(Problem::new(
                    dir.display().to_string(),
                    format!("sweep stopped after {MAX_ENTRIES} entries; the rest is not checked"),
                ));
                return;
            }
            let path = dir.join(entry.file_name());
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                if let Some((depth, stack)) = recurse.as_mut() {
                    if *depth + 1 < MAX_DEPTH {
                        stack.push((path, *depth + 1));
                    } else {
                        self.problems.push(Problem::new(
                            path.display().to_string(),
                            format!("deeper than {MAX_DEPTH} directories; not swept"),
                        ));
                    }
                }
            } else if file_type.is_file() {
                if let Ok(meta) = entry.metadata() {
                    self.consider(path, None, &meta);
                }
            } else if file_type.is_symlink() {
                // The file the link leads to, inside the image; a dangling
                // link or one leaving the image leads nowhere to report.
                if let Ok(target) = self.image.canonical(&path)
                    && let Ok(meta) = fs::metadata(self.image.on_disk(&target))
                    && meta.is_file()
                {
                    self.consider(target, Some(path), &meta);
                }
            }
        }
    }

    fn consider(&mut self, path: PathBuf, link: Option<PathBuf>, meta: &fs::Metadata) {
        if meta.mode() & 0o111 == 0 {
            return;
        }
        self.stats.n_executables += 1;
        if let Some(known) = self.found.get_mut(&path) {
            if let Some(link) = link
                && !known.links.contains(&link)
            {
                known.links.push(link);
            }
            return;
        }
        if matches!(self.index.owner_of(&path), Ownership::Package(_)) {
            return;
        }
        let in_path = path
            .parent()
            .is_some_and(|dir| self.path_dirs.iter().any(|d| d == dir));
        let area = Area::of(&path, &self.path_dirs);
        self.found.insert(
            path.clone(),
            SweptFile {
                path,
                area,
                in_path,
                links: link.into_iter().collect(),
                meta: FileMeta::from_metadata(meta),
            },
        );
    }
}

fn problem(dir: &Path, err: &io::Error) -> Problem {
    let problem = Problem::new(
        dir.display().to_string(),
        format!("cannot list directory: {err}"),
    );
    if err.kind() == io::ErrorKind::PermissionDenied {
        problem.with_hint("run as root to sweep every directory")
    } else {
        problem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_defs_paths_in_order_without_repeats() {
        let text = "# comment\nENV_SUPATH\tPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
                    ENV_PATH\tPATH=/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games\nUMASK 022\n";
        let dirs: Vec<String> = parse_login_defs_path(text)
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        assert_eq!(
            dirs,
            vec![
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
                "/usr/local/games",
                "/usr/games"
            ]
        );
        assert!(parse_login_defs_path("ENV_PATH\n").is_empty());
    }

    #[test]
    fn areas() {
        let path_dirs = vec![PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")];
        assert_eq!(Area::of(Path::new("/usr/bin/x"), &path_dirs), Area::System);
        assert_eq!(
            Area::of(Path::new("/usr/local/bin/x"), &path_dirs),
            Area::UsrLocal
        );
        assert_eq!(Area::of(Path::new("/opt/app/bin/x"), &path_dirs), Area::Opt);
        assert_eq!(Area::of(Path::new("/srv/x"), &path_dirs), Area::Srv);
        assert_eq!(
            Area::of(Path::new("/usr/lib/x"), &path_dirs),
            Area::Elsewhere
        );
        assert_eq!(
            Area::of(Path::new("/optional/x"), &path_dirs),
            Area::Elsewhere
        );
    }
}
