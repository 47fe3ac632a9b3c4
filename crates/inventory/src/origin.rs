//! Where each installed package version can be fetched again: apt's package
//! indexes under `<root>/var/lib/apt/lists`. A package whose exact (name,
//! architecture, version) appears in an index came from, or can be reinstalled
//! from, that repository; one that appears in none was installed from a file
//! or from a repository no longer configured, and a rebuild cannot fetch it.
//!
//! The indexes are large (Debian's main `Packages` is about 50 MB), so they are
//! streamed paragraph by paragraph, keeping three fields, and compressed ones
//! (apt stores them lz4, gz, xz or zst as configured) are decompressed by
//! apt's own `apt-helper cat-file`, which reads every format apt writes. It
//! runs through `perimeter_host::command::run_streaming`, which hands its
//! output over as it comes, with a timeout and a cap.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use perimeter_model::Problem;

use perimeter_host::command::{CommandError, run_streaming};
use perimeter_host::packages::InstalledPackage;

/// The command that prints a compressed index decompressed, given the file
/// after `args`, and the bounds it runs within.
#[derive(Debug)]
struct Decompressor {
    program: &'static str,
    args: &'static [&'static str],
    timeout: Duration,
    max_output: usize,
}

/// apt's helper, which decompresses any index format apt itself writes.
const APT_HELPER: Decompressor = Decompressor {
    program: "/usr/lib/apt/apt-helper",
    args: &["cat-file"],
    // The largest index (Debian's main, about 50 MB unpacked) decompresses
    // in a second or two; two minutes leaves room for a slow disk and still
    // ends a helper that hangs.
    timeout: Duration::from_secs(120),
    // The output is streamed, never held, so the cap only has to end a file
    // that decompresses without end: 1 GiB is twenty times the largest real
    // index.
    max_output: 1024 * 1024 * 1024,
};
/// An index line longer than this is cut: the fields read here are short,
/// and only `Description`/`Depends` lines ever grow past a few KiB.
const MAX_INDEX_LINE: u64 = 256 * 1024;
/// Compressed index suffixes apt uses.
const COMPRESSED: [&str; 6] = ["lz4", "gz", "xz", "zst", "bz2", "lzma"];

/// The header of a `Release` / `InRelease` file: who publishes the repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseInfo {
    pub origin: Option<String>,
    pub label: Option<String>,
    pub suite: Option<String>,
    pub codename: Option<String>,
}

/// Reads the first paragraph of a `Release` or clearsigned `InRelease` file.
pub fn parse_release(text: &str) -> ReleaseInfo {
    let mut info = ReleaseInfo::default();
    let mut lines = text.lines().peekable();
    // A clearsigned file starts with the armour header and its hash lines.
    if lines
        .peek()
        .is_some_and(|l| l.starts_with("-----BEGIN PGP SIGNED MESSAGE"))
    {
        for line in lines.by_ref() {
            if line.trim().is_empty() {
                break;
            }
        }
    }
    for line in lines {
        if line.trim().is_empty() || line.starts_with("-----BEGIN PGP SIGNATURE") {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        match name {
            "Origin" => info.origin = value,
            "Label" => info.label = value,
            "Suite" => info.suite = value,
            "Codename" => info.codename = value,
            _ => {}
        }
    }
    info
}

/// The repository a `*_Packages` index belongs to, from its file name and the
/// release files beside it: `Debian bookworm-security/main`.
pub fn repository_label(index_name: &str, release_files: &BTreeMap<String, ReleaseInfo>) -> String {
    let stem = strip_index_suffix(index_name).unwrap_or(index_name);
    // `SITE_PATH_dists_SUITE_COMPONENT_binary-ARCH`, or a flat repository's
    // `SITE_PATH`: the release file is named after the longest prefix that
    // has one, and what lies between is the component.
    let before_arch = stem.rfind("_binary-").map_or(stem, |at| &stem[..at]);
    let mut cut = Some(before_arch.len());
    while let Some(at) = cut {
        let prefix = &before_arch[..at];
        if let Some(info) = release_files.get(prefix) {
            let component = before_arch.get(at + 1..).unwrap_or("").replace('_', "/");
            let origin = info
                .origin
                .as_deref()
                .or(info.label.as_deref())
                .unwrap_or("unknown");
            let suite = info
                .codename
                .as_deref()
                .or(info.suite.as_deref())
                .unwrap_or("");
            return match (suite.is_empty(), component.is_empty()) {
                (true, true) => origin.to_owned(),
                (false, true) => format!("{origin} {suite}"),
                (true, false) => format!("{origin} {component}"),
                (false, false) => format!("{origin} {suite}/{component}"),
            };
        }
        cut = prefix.rfind('_');
    }
    // No release file: the site and path are all there is.
    before_arch
        .split("_dists_")
        .next()
        .unwrap_or(before_arch)
        .to_owned()
}

/// `X_Packages` or `X_Packages.lz4` → `X`.
fn strip_index_suffix(name: &str) -> Option<&str> {
    let without_ext = match name.rsplit_once('.') {
        Some((stem, ext)) if COMPRESSED.contains(&ext) => stem,
        _ => name,
    };
    without_ext.strip_suffix("_Packages")
}

/// (name, architecture, version) of an installed package, the key an index
/// entry must match exactly.
type PackageKey = (String, String, String);

/// Streams one `Packages` index, calling `found` for each paragraph whose
/// (Package, Architecture, Version) is in `wanted`.
pub fn scan_packages_index(
    mut reader: impl BufRead,
    wanted: &HashMap<PackageKey, Vec<usize>>,
    mut found: impl FnMut(usize),
) -> io::Result<()> {
    let mut line = Vec::new();
    let (mut name, mut arch, mut version) = (String::new(), String::new(), String::new());
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_INDEX_LINE)
            .read_until(b'\n', &mut line)?;
        if n > 0 && line.last() != Some(&b'\n') && n as u64 == MAX_INDEX_LINE {
            // An overlong line: drop its rest, it is never one we read.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let m = (&mut reader)
                    .take(MAX_INDEX_LINE)
                    .read_until(b'\n', &mut rest)?;
                if m == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
            continue;
        }
        let mut bytes = line.as_slice();
        while let Some(rest) = bytes
            .strip_suffix(b"\n")
            .or_else(|| bytes.strip_suffix(b"\r"))
        {
            bytes = rest;
        }
        if n == 0 || bytes.is_empty() {
            if !name.is_empty() {
                let key = (
                    std::mem::take(&mut name),
                    std::mem::take(&mut arch),
                    std::mem::take(&mut version),
                );
                if let Some(idxs) = wanted.get(&key) {
                    idxs.iter().copied().for_each(&mut found);
                }
            }
            name.clear();
            arch.clear();
            version.clear();
            if n == 0 {
                return Ok(());
            }
            continue;
        }
        // Only three fields matter; every other line is skipped on its
        // first bytes, without decoding it.
        let field = [
            (&b"Package:"[..], &mut name),
            (&b"Architecture:"[..], &mut arch),
            (&b"Version:"[..], &mut version),
        ]
        .into_iter()
        .find_map(|(prefix, slot)| Some((slot, bytes.strip_prefix(prefix)?)));
        if let Some((slot, value)) = field {
            String::from_utf8_lossy(value).trim().clone_into(slot);
        }
    }
}

/// The repository label of each installed package (by index into
/// `installed`), for those an index under `<root>/var/lib/apt/lists` lists at
/// the installed version. Indexes are read in name order and the first match
/// wins, so the answer is stable.
pub fn read_origins(
    root: &Path,
    installed: &[InstalledPackage],
) -> (HashMap<usize, String>, Vec<Problem>) {
    read_origins_with(root, installed, &APT_HELPER)
}

/// [`read_origins`], decompressing with `decompressor`.
fn read_origins_with(
    root: &Path,
    installed: &[InstalledPackage],
    decompressor: &Decompressor,
) -> (HashMap<usize, String>, Vec<Problem>) {
    let mut origins = HashMap::new();
    let mut problems = Vec::new();
    let lists = root.join("var/lib/apt/lists");
    let mut names: Vec<String> = match fs::read_dir(&lists) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        // No apt lists (an image without them, an rpm host): no origins.
        Err(err) if err.kind() == io::ErrorKind::NotFound => return (origins, problems),
        Err(err) => {
            problems.push(Problem::new(
                lists.display().to_string(),
                format!("cannot list apt's package indexes: {err}"),
            ));
            return (origins, problems);
        }
    };
    names.sort();

    let mut release_files = BTreeMap::new();
    for name in &names {
        let prefix = name
            .strip_suffix("_InRelease")
            .or_else(|| name.strip_suffix("_Release"));
        if let Some(prefix) = prefix
            && !release_files.contains_key(prefix)
            && let Ok(text) = read_capped(&lists.join(name), 16 * 1024 * 1024)
        {
            release_files.insert(prefix.to_owned(), parse_release(&text));
        }
    }

    let mut wanted: HashMap<PackageKey, Vec<usize>> = HashMap::new();
    for (idx, package) in installed.iter().enumerate() {
        wanted
            .entry((
                package.name.clone(),
                package.arch.clone(),
                package.version.clone(),
            ))
            .or_default()
            .push(idx);
    }

    for name in names.iter().filter(|n| strip_index_suffix(n).is_some()) {
        let label = repository_label(name, &release_files);
        let file = lists.join(name);
        let mut record = |idx: usize| {
            origins.entry(idx).or_insert_with(|| label.clone());
        };
        let result = match name.rsplit_once('.') {
            Some((_, ext)) if COMPRESSED.contains(&ext) => {
                scan_compressed(&file, &wanted, &mut record, decompressor)
            }
            _ => File::open(&file).and_then(|f| {
                scan_packages_index(
                    BufReader::with_capacity(256 * 1024, f),
                    &wanted,
                    &mut record,
                )
            }),
        };
        if let Err(err) = result {
            problems.push(
                Problem::new(
                    file.display().to_string(),
                    format!("cannot read package index: {err}"),
                )
                .with_hint("package origins from this repository are missing"),
            );
        }
    }
    (origins, problems)
}

/// Streams a compressed index through `apt-helper cat-file`. Matches found
/// before a failure, a timeout or the cap are kept; the error says the rest
/// of the index was not read.
fn scan_compressed(
    file: &Path,
    wanted: &HashMap<PackageKey, Vec<usize>>,
    found: &mut impl FnMut(usize),
    decompressor: &Decompressor,
) -> io::Result<()> {
    let mut command = Command::new(decompressor.program);
    command.args(decompressor.args).arg(file);
    let output = run_streaming(
        command,
        decompressor.timeout,
        decompressor.max_output,
        |stdout| scan_packages_index(BufReader::with_capacity(256 * 1024, stdout), wanted, found),
    )
    .map_err(|err| match err {
        CommandError::Spawn { program, source } => {
            io::Error::new(source.kind(), format!("cannot run {program}: {source}"))
        }
        timeout => io::Error::other(timeout.to_string()),
    })?;
    output.value?;
    if output.truncated {
        return Err(io::Error::other(format!(
            "apt-helper cat-file printed more than {} MiB; the index was read only that far",
            decompressor.max_output / (1024 * 1024)
        )));
    }
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "apt-helper cat-file exited with {}",
            output.status
        )))
    }
}

fn read_capped(path: &PathBuf, cap: u64) -> io::Result<String> {
    let mut text = String::new();
    File::open(path)?.take(cap).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearsigned_release_header() {
        let text = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: Debian\nLabel: Debian-Security\nSuite: oldstable-security\nCodename: bookworm-security\nMD5Sum:\n 0ed6  1484 main/Contents-all\n-----BEGIN PGP SIGNATURE-----\n";
        assert_eq!(
            parse_release(text),
            ReleaseInfo {
                origin: Some("Debian".into()),
                label: Some("Debian-Security".into()),
                suite: Some("oldstable-security".into()),
                codename: Some("bookworm-security".into()),
            }
        );
    }

    #[test]
    fn labels_from_index_names() {
        let mut releases = BTreeMap::new();
        releases.insert(
            "deb.debian.org_debian_dists_bookworm".to_owned(),
            ReleaseInfo {
                origin: Some("Debian".into()),
                codename: Some("bookworm".into()),
                ..ReleaseInfo::default()
            },
        );
        releases.insert(
            "deb.debian.org_debian-security_dists_bookworm-security".to_owned(),
            ReleaseInfo {
                origin: Some("Debian".into()),
                codename: Some("bookworm-security".into()),
                ..ReleaseInfo::default()
            },
        );
        releases.insert(
            "repo.example.org_flat_.".to_owned(),
            ReleaseInfo {
                label: Some("Example".into()),
                ..ReleaseInfo::default()
            },
        );
        assert_eq!(
            repository_label(
                "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4",
                &releases
            ),
            "Debian bookworm/main"
        );
        assert_eq!(
            repository_label(
                "deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages",
                &releases
            ),
            "Debian bookworm-security/main"
        );
        assert_eq!(
            repository_label("repo.example.org_flat_._Packages", &releases),
            "Example"
        );
        // No release file beside it: the site and path.
        assert_eq!(
            repository_label(
                "apt.example.net_stable_dists_x_main_binary-amd64_Packages",
                &releases
            ),
            "apt.example.net_stable"
        );
    }

    #[test]
    fn index_matches_exact_name_arch_and_version() {
        let index = "Package: redis-server\nVersion: 5:7.0.15-1~deb12u1\nArchitecture: amd64\nDescription: x\n more\n\n\
                     Package: redis-tools\nVersion: 5:7.0.11-1\nArchitecture: amd64\n\n\
                     Package: tzdata\nArchitecture: all\nVersion: 2024a-0+deb12u1\n";
        let mut wanted: HashMap<PackageKey, Vec<usize>> = HashMap::new();
        let key = |n: &str, a: &str, v: &str| (n.to_owned(), a.to_owned(), v.to_owned());
        wanted.insert(key("redis-server", "amd64", "5:7.0.15-1~deb12u1"), vec![0]);
        // Installed at a version the index no longer carries.
        wanted.insert(key("redis-tools", "amd64", "5:7.0.15-1~deb12u1"), vec![1]);
        // The last paragraph has no trailing blank line.
        wanted.insert(key("tzdata", "all", "2024a-0+deb12u1"), vec![2]);
        let mut found = Vec::new();
        scan_packages_index(index.as_bytes(), &wanted, |idx| found.push(idx)).expect("reads");
        assert_eq!(found, vec![0, 2]);
    }

    #[test]
    fn overlong_index_lines_are_skipped_not_kept() {
        let mut index = "Package: a\nArchitecture: all\nDescription: ".to_owned();
        index.push_str(&"x".repeat(MAX_INDEX_LINE as usize * 2));
        index.push_str("\nVersion: 1\n\n");
        let mut wanted: HashMap<PackageKey, Vec<usize>> = HashMap::new();
        wanted.insert(("a".into(), "all".into(), "1".into()), vec![7]);
        let mut found = Vec::new();
        scan_packages_index(index.as_bytes(), &wanted, |idx| found.push(idx)).expect("reads");
        assert_eq!(found, vec![7]);
    }

    const INDEX: &str = "example.org_debian_dists_stable_main_binary-amd64_Packages";

    /// A root whose apt lists hold one gzip-compressed index listing
    /// hello 2.10-3 amd64, and that package as installed.
    fn root_with_compressed_index() -> (tempfile::TempDir, Vec<InstalledPackage>) {
        let root = tempfile::tempdir().expect("tempdir");
        let lists = root.path().join("var/lib/apt/lists");
        fs::create_dir_all(&lists).expect("mkdir");
        let index = "Package: hello\nVersion: 2.10-3\nArchitecture: amd64\n\n";
        let output = Command::new("sh")
            .arg("-c")
            .arg("printf '%s' \"$1\" | gzip -c > \"$2\"")
            .arg("sh")
            .arg(index)
            .arg(lists.join(format!("{INDEX}.gz")))
            .status();
        assert!(output.is_ok_and(|s| s.success()), "gzip the index");
        let hello = InstalledPackage {
            name: "hello".into(),
            version: "2.10-3".into(),
            arch: "amd64".into(),
            status: "installed".into(),
            multi_arch_same: false,
            origin_field: None,
            conffiles: Vec::new(),
        };
        (root, vec![hello])
    }

    #[test]
    fn compressed_indexes_are_read_through_apt_helper() {
        let (root, installed) = root_with_compressed_index();
        let (origins, problems) = read_origins(root.path(), &installed);
        if Path::new(APT_HELPER.program).exists() {
            assert!(problems.is_empty(), "{problems:?}");
            let label = repository_label(&format!("{INDEX}.gz"), &BTreeMap::new());
            assert_eq!(origins.get(&0), Some(&label));
        } else {
            // Without apt, the index is a problem naming the missing helper.
            assert!(origins.is_empty());
            assert_eq!(problems.len(), 1);
            assert!(
                problems[0]
                    .message
                    .starts_with("cannot read package index: cannot run /usr/lib/apt/apt-helper: "),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn a_hung_apt_helper_is_killed_at_the_timeout_and_is_a_problem() {
        let (root, installed) = root_with_compressed_index();
        let hung = Decompressor {
            program: "sh",
            args: &["-c", "exec sleep 60", "apt-helper"],
            timeout: Duration::from_secs(1),
            max_output: 1024 * 1024,
        };
        let started = std::time::Instant::now();
        let (origins, problems) = read_origins_with(root.path(), &installed, &hung);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        assert!(origins.is_empty());
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            vec!["cannot read package index: sh did not finish within 1 seconds"]
        );
        assert!(problems[0].subject.ends_with(&format!("{INDEX}.gz")));
    }

    #[test]
    fn a_failing_or_flooding_apt_helper_is_a_problem() {
        let (root, installed) = root_with_compressed_index();
        let failing = Decompressor {
            program: "sh",
            args: &["-c", "echo 'E: cannot open' >&2; exit 100", "apt-helper"],
            timeout: Duration::from_secs(30),
            max_output: 1024 * 1024,
        };
        let (origins, problems) = read_origins_with(root.path(), &installed, &failing);
        assert!(origins.is_empty());
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            vec!["cannot read package index: apt-helper cat-file exited with exit status: 100"]
        );

        // The package comes first, then two MiB of padding against a one MiB
        // cap: the match made before the cap is kept, and the cut is a
        // problem.
        let flooding = Decompressor {
            program: "sh",
            args: &[
                "-c",
                "printf 'Package: hello\\nVersion: 2.10-3\\nArchitecture: amd64\\n\\n'; yes 'Description: padding' | head -c 2097152",
                "apt-helper",
            ],
            timeout: Duration::from_secs(30),
            max_output: 1024 * 1024,
        };
        let (origins, problems) = read_origins_with(root.path(), &installed, &flooding);
        assert_eq!(origins.len(), 1);
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            vec![
                "cannot read package index: apt-helper cat-file printed more than 1 MiB; the index was read only that far"
            ]
        );
    }
}
