//! dpkg's `status` file, the `Conffiles:` of each package and the `md5sums`
//! each package ships: what `perimeter inventory` lists and verifies.
//!
//! Pure parsers over the files' bytes, and [`PackageDb::installed`], which
//! reads `status` under the root.

use std::fs;
use std::path::{Path, PathBuf};

use perimeter_model::{PackageRef, Problem};

use super::PackageDb;
use super::dpkg::{DpkgError, MAX_PATH_LINE, bytes_to_path, dpkg_problem};

/// A `status` paragraph longer than this is not dpkg's: the longest real
/// paragraphs (long Descriptions, hundreds of conffiles) are tens of KiB.
const MAX_STATUS_PARAGRAPH: usize = 4 * 1024 * 1024;

/// What went wrong in dpkg's `status` file or a `.md5sums` file. Each names
/// the file and line, so a reader can open the database at the spot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("{file}: line {line}: continuation line outside a field")]
    OrphanContinuation { file: PathBuf, line: usize },
    #[error("{file}: line {line}: not a `Field: value` line")]
    NotAField { file: PathBuf, line: usize },
    #[error("{file}: line {line}: paragraph has no Package field")]
    NoPackage { file: PathBuf, line: usize },
    #[error("{file}: line {line}: package {package} has no {field} field")]
    MissingField {
        file: PathBuf,
        line: usize,
        package: String,
        field: &'static str,
    },
    #[error("{file}: line {line}: Conffiles entry is not `/path md5 [flags]`")]
    BadConffile { file: PathBuf, line: usize },
    #[error("{file}: line {line}: paragraph longer than {MAX_STATUS_PARAGRAPH} bytes")]
    ParagraphTooLong { file: PathBuf, line: usize },
    #[error("{file}: line {line}: not `MD5  path` (32 hex digits, two spaces, a relative path)")]
    BadMd5sumsLine { file: PathBuf, line: usize },
}

/// One package in dpkg's `status` file that is on the system: unpacked or
/// further (`installed`, `half-configured`, `unpacked`, `half-installed`,
/// `triggers-awaited`, `triggers-pending`). `not-installed` and `config-files`
/// paragraphs are not packages on the system and are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    /// `amd64`, `all`, ...
    pub arch: String,
    /// The third word of `Status:` (`installed`, `half-configured`, ...).
    pub status: String,
    /// `Multi-Arch: same`: dpkg names the package's info files `NAME:ARCH.*`.
    pub multi_arch_same: bool,
    /// The package's own `Origin:` field (the vendor that built it), rarely set.
    pub origin_field: Option<String>,
    pub conffiles: Vec<Conffile>,
}

impl InstalledPackage {
    /// The package as findings and ownership name it (`libc6:amd64` for a
    /// multi-arch "same" package, else the bare name).
    pub fn package_ref(&self) -> PackageRef {
        PackageRef {
            manager: "dpkg".to_owned(),
            name: self.name.clone(),
            arch: self.multi_arch_same.then(|| self.arch.clone()),
        }
    }
}

/// One `Conffiles:` entry: a configuration file dpkg shipped, with the md5 of
/// the version it shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conffile {
    pub path: PathBuf,
    /// `None` while dpkg has not recorded a hash yet (`newconffile`).
    pub md5: Option<[u8; 16]>,
    /// No longer shipped by the current version of the package; dpkg keeps
    /// the file but no longer manages it.
    pub obsolete: bool,
    /// Removed by dpkg on the next upgrade.
    pub remove_on_upgrade: bool,
}

/// Status words of packages whose files are on disk.
const ON_DISK_STATUSES: [&str; 6] = [
    "installed",
    "half-configured",
    "unpacked",
    "half-installed",
    "triggers-awaited",
    "triggers-pending",
];

/// Parses dpkg's `status` file (deb822 paragraphs) into the packages on the
/// system. A malformed paragraph is an error naming its line and is skipped;
/// the others are kept, so one bad entry does not hide the database.
pub fn parse_dpkg_status(text: &str, file: &Path) -> (Vec<InstalledPackage>, Vec<StatusError>) {
    let mut packages = Vec::new();
    let mut errors = Vec::new();
    let mut paragraph: Vec<(usize, &str)> = Vec::new();
    let mut paragraph_bytes = 0usize;
    let mut too_long = false;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((line_idx, line)) = lines.next() {
        let blank = line.trim().is_empty();
        if !blank {
            paragraph_bytes += line.len() + 1;
            if paragraph_bytes > MAX_STATUS_PARAGRAPH {
                if !too_long {
                    errors.push(StatusError::ParagraphTooLong {
                        file: file.to_owned(),
                        line: line_idx + 1,
                    });
                }
                too_long = true;
            } else {
                paragraph.push((line_idx + 1, line));
            }
        }
        if blank || lines.peek().is_none() {
            if !paragraph.is_empty() && !too_long {
                match parse_status_paragraph(&paragraph, file) {
                    Ok(Some(package)) => packages.push(package),
                    Ok(None) => {}
                    Err(err) => errors.push(err),
                }
            }
            paragraph.clear();
            paragraph_bytes = 0;
            too_long = false;
        }
    }
    (packages, errors)
}

/// A field of a paragraph: name, value on the field's line, and continuation
/// lines with their line numbers.
type StatusField<'a> = (&'a str, &'a str, Vec<(usize, &'a str)>);

/// One paragraph: `Ok(None)` for a package that is not on the system.
fn parse_status_paragraph(
    lines: &[(usize, &str)],
    file: &Path,
) -> Result<Option<InstalledPackage>, StatusError> {
    let first_line = lines.first().map_or(0, |(line, _)| *line);
    // Fields with their continuation lines; only the fields we read are kept.
    let mut fields: Vec<StatusField<'_>> = Vec::new();
    for &(line_no, line) in lines {
        if line.starts_with([' ', '\t']) {
            match fields.last_mut() {
                Some((_, _, continuation)) => continuation.push((line_no, line)),
                None => {
                    return Err(StatusError::OrphanContinuation {
                        file: file.to_owned(),
                        line: line_no,
                    });
                }
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(StatusError::NotAField {
                file: file.to_owned(),
                line: line_no,
            });
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(StatusError::NotAField {
                file: file.to_owned(),
                line: line_no,
            });
        }
        fields.push((name, value.trim(), Vec::new()));
    }
    let field = |wanted: &str| {
        fields
            .iter()
            .find(|(name, _, _)| name.eq_ignore_ascii_case(wanted))
    };
    let Some((_, name, _)) = field("Package") else {
        return Err(StatusError::NoPackage {
            file: file.to_owned(),
            line: first_line,
        });
    };
    let name = (*name).to_owned();
    let missing = |field: &'static str| StatusError::MissingField {
        file: file.to_owned(),
        line: first_line,
        package: name.clone(),
        field,
    };
    let (_, status, _) = field("Status").ok_or_else(|| missing("Status"))?;
    let status = status.split_whitespace().nth(2).unwrap_or("").to_owned();
    if !ON_DISK_STATUSES.contains(&status.as_str()) {
        return Ok(None);
    }
    let (_, version, _) = field("Version").ok_or_else(|| missing("Version"))?;
    let (_, arch, _) = field("Architecture").ok_or_else(|| missing("Architecture"))?;
    let multi_arch_same = field("Multi-Arch").is_some_and(|(_, value, _)| *value == "same");
    let origin_field = field("Origin")
        .map(|(_, value, _)| (*value).to_owned())
        .filter(|value| !value.is_empty());
    let mut conffiles = Vec::new();
    if let Some((_, _, entries)) = field("Conffiles") {
        for &(line_no, entry) in entries {
            conffiles.push(parse_conffile_entry(entry).ok_or_else(|| {
                StatusError::BadConffile {
                    file: file.to_owned(),
                    line: line_no,
                }
            })?);
        }
    }
    Ok(Some(InstalledPackage {
        name,
        version: (*version).to_owned(),
        arch: (*arch).to_owned(),
        status,
        multi_arch_same,
        origin_field,
        conffiles,
    }))
}

/// ` /etc/ssh/sshd_config 4d4a... [obsolete] [remove-on-upgrade]`. Conffile
/// paths cannot contain spaces in dpkg's format, so splitting on whitespace is
/// how dpkg itself reads the field.
fn parse_conffile_entry(entry: &str) -> Option<Conffile> {
    let mut words = entry.split_whitespace();
    let path = words.next().filter(|p| p.starts_with('/'))?;
    let hash = words.next()?;
    let md5 = match hash {
        "newconffile" => None,
        hex => Some(parse_md5_hex(hex.as_bytes())?),
    };
    let mut conffile = Conffile {
        path: PathBuf::from(path),
        md5,
        obsolete: false,
        remove_on_upgrade: false,
    };
    for flag in words {
        match flag {
            "obsolete" => conffile.obsolete = true,
            "remove-on-upgrade" => conffile.remove_on_upgrade = true,
            _ => return None,
        }
    }
    Some(conffile)
}

/// 32 hex digits into 16 bytes.
pub fn parse_md5_hex(hex: &[u8]) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        let (Some(high), Some(low)) = (
            pair.first().copied().and_then(digit),
            pair.get(1).copied().and_then(digit),
        ) else {
            return None;
        };
        *byte = u8::try_from(high * 16 + low).ok()?;
    }
    Some(out)
}

/// One `info/PACKAGE.md5sums`: `MD5  relative/path` lines, as dpkg-deb writes
/// them (32 lower-case hex digits, two spaces, the path without its leading
/// `/`). Paths are bytes, as in the file lists. A malformed line is an error
/// naming it and is skipped.
pub fn parse_md5sums(text: &[u8], file: &Path) -> (Vec<(PathBuf, [u8; 16])>, Vec<StatusError>) {
    let mut sums = Vec::new();
    let mut errors = Vec::new();
    for (line_idx, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let parsed = line
            .split_at_checked(32)
            .and_then(|(hex, rest)| Some((parse_md5_hex(hex)?, rest.strip_prefix(b"  ")?)))
            .filter(|(_, path)| {
                !path.is_empty() && path.len() < MAX_PATH_LINE && !path.contains(&0)
            });
        match parsed {
            Some((md5, path)) => {
                // dpkg-deb writes relative paths; some old packages wrote `/`-rooted
                // ones, which dpkg accepts too.
                let path = path.strip_prefix(b"/").unwrap_or(path);
                let mut absolute = Vec::with_capacity(path.len() + 1);
                absolute.push(b'/');
                absolute.extend_from_slice(path);
                sums.push((bytes_to_path(&absolute), md5));
            }
            None => errors.push(StatusError::BadMd5sumsLine {
                file: file.to_owned(),
                line: line_idx + 1,
            }),
        }
    }
    (sums, errors)
}

impl PackageDb {
    /// The packages dpkg has on the system, from `<root>/var/lib/dpkg/status`.
    /// Without a dpkg database the list is empty and nothing is a problem.
    pub fn installed(&self) -> (Vec<InstalledPackage>, Vec<Problem>) {
        if self.dpkg_info.is_none() {
            return (Vec::new(), Vec::new());
        }
        let file = self.root.join("var/lib/dpkg/status");
        match fs::read(&file) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let (packages, errors) = parse_dpkg_status(&text, &file);
                let problems = errors
                    .iter()
                    .map(|err| Problem::new(file.display().to_string(), err.to_string()))
                    .collect();
                (packages, problems)
            }
            Err(source) => (
                Vec::new(),
                vec![dpkg_problem(&DpkgError::Read { file, source })],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> PathBuf {
        PathBuf::from(text)
    }

    const STATUS: &str = "\
Package: openssh-server
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: foreign
Version: 1:9.2p1-2+deb12u3
Conffiles:
 /etc/default/ssh 500e3cf069fe9a7b9936108eb9d9c035
 /etc/init.d/ssh 3649a6fe8c18ad1d5245fd91737de507
 /etc/ssh/moduli 7ef1d7ae3ae1ee9ed4a4b1ed8f5d1a6a obsolete
Description: secure shell (SSH) server
 This is the portable version of OpenSSH.
 .
 More text.

Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u4

Package: old-thing
Status: deinstall ok config-files
Architecture: all
Version: 1.0
Conffiles:
 /etc/old-thing.conf 0123456789abcdef0123456789abcdef

Package: pkgconf
Status: install ok half-configured
Architecture: amd64
Version: 1.8.1-1
Origin: Example
Conffiles:
 /etc/dpkg/dpkg.cfg.d/pkgconf-hook-config newconffile remove-on-upgrade
";

    #[test]
    fn status_packages_with_conffiles() {
        let (packages, errors) = parse_dpkg_status(STATUS, Path::new("status"));
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<(&str, &str, &str)> = packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.status.as_str()))
            .collect();
        // config-files is not on the system.
        assert_eq!(
            names,
            vec![
                ("openssh-server", "1:9.2p1-2+deb12u3", "installed"),
                ("libc6", "2.36-9+deb12u4", "installed"),
                ("pkgconf", "1.8.1-1", "half-configured"),
            ]
        );
        let ssh = &packages[0];
        assert_eq!(ssh.package_ref().to_string(), "openssh-server");
        assert_eq!(packages[1].package_ref().to_string(), "libc6:amd64");
        assert_eq!(
            ssh.conffiles,
            vec![
                Conffile {
                    path: p("/etc/default/ssh"),
                    md5: parse_md5_hex(b"500e3cf069fe9a7b9936108eb9d9c035"),
                    obsolete: false,
                    remove_on_upgrade: false,
                },
                Conffile {
                    path: p("/etc/init.d/ssh"),
                    md5: parse_md5_hex(b"3649a6fe8c18ad1d5245fd91737de507"),
                    obsolete: false,
                    remove_on_upgrade: false,
                },
                Conffile {
                    path: p("/etc/ssh/moduli"),
                    md5: parse_md5_hex(b"7ef1d7ae3ae1ee9ed4a4b1ed8f5d1a6a"),
                    obsolete: true,
                    remove_on_upgrade: false,
                },
            ]
        );
        let pkgconf = &packages[2];
        assert_eq!(pkgconf.origin_field.as_deref(), Some("Example"));
        assert_eq!(
            pkgconf.conffiles,
            vec![Conffile {
                path: p("/etc/dpkg/dpkg.cfg.d/pkgconf-hook-config"),
                md5: None,
                obsolete: false,
                remove_on_upgrade: true,
            }]
        );
    }

    #[test]
    fn bad_status_paragraphs_are_named_and_skipped() {
        let text = "Package: a\nStatus: install ok installed\nArchitecture: all\n\n\
                    Package: b\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n\n\
                    Version: 2\n\n\
                    Package: c\nStatus: install ok installed\nArchitecture: all\nVersion: 1\nConffiles:\n etc/relative 0123\n\n\
                    \x20leading continuation\n\n\
                    Package: d\nnonsense line\n";
        let (packages, errors) = parse_dpkg_status(text, Path::new("/var/lib/dpkg/status"));
        let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["b"]);
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec![
                "/var/lib/dpkg/status: line 1: package a has no Version field",
                "/var/lib/dpkg/status: line 10: paragraph has no Package field",
                "/var/lib/dpkg/status: line 17: Conffiles entry is not `/path md5 [flags]`",
                "/var/lib/dpkg/status: line 19: continuation line outside a field",
                "/var/lib/dpkg/status: line 22: not a `Field: value` line",
            ]
        );
    }

    #[test]
    fn md5sums_lines() {
        let text = b"7210080490f9fd139c1b44fa0f730988  bin/bash\n\
                     12c7981c8fed81743552e47dd4b1483e  usr/share/doc/with space/x\n\
                     51d96ce5874f0434a095f7932ed7f319 usr/bin/one-space\n\
                     zz10080490f9fd139c1b44fa0f730988  usr/bin/not-hex\n\
                     d41d8cd98f00b204e9800998ecf8427e  /usr/bin/rooted\n";
        let (sums, errors) = parse_md5sums(text, Path::new("bash.md5sums"));
        let paths: Vec<&Path> = sums.iter().map(|(path, _)| path.as_path()).collect();
        assert_eq!(
            paths,
            vec![
                Path::new("/bin/bash"),
                Path::new("/usr/share/doc/with space/x"),
                Path::new("/usr/bin/rooted"),
            ]
        );
        assert_eq!(
            sums[0].1,
            [
                0x72, 0x10, 0x08, 0x04, 0x90, 0xf9, 0xfd, 0x13, 0x9c, 0x1b, 0x44, 0xfa, 0x0f, 0x73,
                0x09, 0x88
            ]
        );
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec![
                "bash.md5sums: line 3: not `MD5  path` (32 hex digits, two spaces, a relative path)",
                "bash.md5sums: line 4: not `MD5  path` (32 hex digits, two spaces, a relative path)",
            ]
        );
    }

    #[test]
    fn md5_hex() {
        assert_eq!(
            parse_md5_hex(b"d41d8cd98f00b204e9800998ecf8427E").map(|d| d[15]),
            Some(0x7e)
        );
        assert_eq!(parse_md5_hex(b"d41d8cd98f00b204e9800998ecf8427"), None);
        assert_eq!(parse_md5_hex(b"g41d8cd98f00b204e9800998ecf8427e"), None);
        assert_eq!(
            parse_md5_hex("é1d8cd98f00b204e9800998ecf8427e".as_bytes()),
            None
        );
    }
}
