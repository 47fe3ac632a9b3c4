//! The rebuild manifest, `perimeter.manifest/1`: what a host is beyond its
//! package database, as a versioned JSON document. The package list (name,
//! version, architecture, origin), the conffiles changed from what their
//! packages shipped, the package files that no longer match (when verified),
//! the executables no package owns and the unit-directory entries no package
//! ships, each file with its sha256, mode and owner.
//!
//! Compatibility: within version 1 fields may be added, never change meaning,
//! so a reader ignores fields it does not know. A manifest of a newer version
//! is refused ("too new"), never misread; anything that is not a manifest is
//! an error with the line and column serde_json reports.

use serde::{Deserialize, Serialize};

/// The schema string this version writes and reads.
pub const MANIFEST_SCHEMA: &str = "perimeter.manifest/1";
const SCHEMA_PREFIX: &str = "perimeter.manifest/";
const VERSION: u32 = 1;

/// A whole manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub hostname: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub perimeter_version: String,
    /// The root the inventory read (`/` for the host itself).
    pub root: String,
    /// Whether every package file was checked (`--verify`); only then is
    /// `modified_files` present.
    pub verified: bool,
    pub packages: Vec<PackageEntry>,
    /// Conffiles changed from what their package shipped.
    pub conffiles: Vec<ChangedFileEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_files: Option<Vec<ChangedFileEntry>>,
    pub unowned_files: Vec<UnownedFileEntry>,
    pub units: Vec<UnitFileEntry>,
}

impl Manifest {
    /// One warning per package listed more than once (same manager, name and
    /// architecture), naming the entries as JSON pointers
    /// (`/packages/3` and `/packages/17`): a diff keys packages on those, so
    /// only the last entry counts, and a hand-edited or merged manifest that
    /// lists one twice deserves a word.
    pub fn duplicate_packages(&self) -> Vec<String> {
        let mut first: std::collections::HashMap<(&str, &str, Option<&str>), usize> =
            std::collections::HashMap::new();
        let mut warnings = Vec::new();
        for (idx, package) in self.packages.iter().enumerate() {
            let key = (
                package.manager.as_str(),
                package.name.as_str(),
                package.arch.as_deref(),
            );
            match first.get(&key) {
                Some(&earlier) => warnings.push(format!(
                    "package {} is listed twice, at /packages/{earlier} and /packages/{idx} (versions {} and {}): the diff uses the second",
                    package.name,
                    self.packages
                        .get(earlier)
                        .map_or("?", |p| p.version.as_str()),
                    package.version
                )),
                None => {
                    first.insert(key, idx);
                }
            }
        }
        warnings
    }
}

/// An installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageEntry {
    /// `dpkg` or `rpm`.
    pub manager: String,
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    /// The repository the version is published in, or the package's own
    /// origin/vendor field; `null` when neither says.
    pub origin: Option<String>,
    /// dpkg's status word (`installed`, `half-configured`, ...).
    pub status: String,
}

/// Mode, owner and content of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAttrs {
    /// Octal permission bits, `0755`.
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    /// Account and group names on the host, when known: uids differ between
    /// hosts, names are what a rebuild recreates.
    pub owner: Option<String>,
    pub group: Option<String>,
    pub size: u64,
    /// Lower-case hex; `null` when the file was not hashed.
    pub sha256: Option<String>,
}

/// A conffile or package file that no longer matches its recorded md5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedFileEntry {
    pub path: String,
    /// Where the package lists it, when a dpkg diversion moved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed_as: Option<String>,
    /// `name` or `name:arch`.
    pub package: String,
    /// `modified`, `missing` or `replaced`.
    pub change: String,
    /// An ELF object or a file with an execute bit.
    pub executable: bool,
    /// `null` for a missing file.
    pub file: Option<FileAttrs>,
}

/// An executable no package owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnownedFileEntry {
    pub path: String,
    /// `system`, `usr-local`, `opt`, `srv` or `elsewhere`.
    pub area: String,
    pub in_path: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// Processes running it when the inventory was taken (inventory output
    /// only; a manifest leaves them out, they are not part of a rebuild).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    pub file: FileAttrs,
}

/// An unpackaged entry of a systemd unit directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitFileEntry {
    pub path: String,
    /// `unit`, `drop-in`, `linked`, `masked` or `enablement`.
    pub kind: String,
    /// For linked units and enablement links: what the link leads to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub in_package_dir: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enabled_by: Vec<String>,
    /// For units, drop-ins and linked units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileAttrs>,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    /// `found` says what was there instead: `schema "perimeter.audit/1"`,
    /// `no schema field`.
    #[error("not a perimeter manifest ({found}; expected {MANIFEST_SCHEMA})")]
    WrongSchema { found: String },
    #[error(
        "written by a newer perimeter (schema {found}); this one reads {MANIFEST_SCHEMA}: upgrade perimeter"
    )]
    TooNew { found: String },
    #[error("invalid {MANIFEST_SCHEMA} document: {0}")]
    Invalid(serde_json::Error),
}

/// Only the schema field, read first so a newer or foreign document is named
/// as such rather than reported as a missing field.
#[derive(Deserialize)]
struct SchemaOnly {
    schema: Option<serde_json::Value>,
}

/// Parses a manifest, refusing other schemas and newer versions.
pub fn parse_manifest(text: &str) -> Result<Manifest, ManifestError> {
    let probe: SchemaOnly = serde_json::from_str(text).map_err(ManifestError::NotJson)?;
    let schema = match probe.schema {
        Some(serde_json::Value::String(schema)) => schema,
        Some(other) => {
            return Err(ManifestError::WrongSchema {
                found: format!("schema {other}"),
            });
        }
        None => {
            return Err(ManifestError::WrongSchema {
                found: "no schema field".to_owned(),
            });
        }
    };
    let version = schema
        .strip_prefix(SCHEMA_PREFIX)
        .and_then(|v| v.parse::<u32>().ok());
    match version {
        Some(VERSION) => serde_json::from_str(text).map_err(ManifestError::Invalid),
        Some(newer) if newer > VERSION => Err(ManifestError::TooNew { found: schema }),
        _ => Err(ManifestError::WrongSchema {
            found: format!("schema {schema:?}"),
        }),
    }
}

/// The manifest as pretty JSON, with a trailing newline.
pub fn manifest_to_json(manifest: &Manifest) -> String {
    let mut text = serde_json::to_string_pretty(manifest).unwrap_or_default();
    text.push('\n');
    text
}

/// Octal mode as the manifest writes it.
pub fn mode_string(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(sha: &str) -> FileAttrs {
        FileAttrs {
            mode: "0755".into(),
            uid: 0,
            gid: 0,
            owner: Some("root".into()),
            group: Some("root".into()),
            size: 12,
            sha256: Some(sha.into()),
        }
    }

    pub(crate) fn sample() -> Manifest {
        Manifest {
            schema: MANIFEST_SCHEMA.into(),
            hostname: "web-1".into(),
            created_at: "2026-11-25T12:00:00Z".into(),
            perimeter_version: "0.1.0".into(),
            root: "/".into(),
            verified: false,
            packages: vec![PackageEntry {
                manager: "dpkg".into(),
                name: "redis-server".into(),
                version: "5:7.0.15-1~deb12u1".into(),
                arch: Some("amd64".into()),
                origin: Some("Debian bookworm/main".into()),
                status: "installed".into(),
            }],
            conffiles: vec![ChangedFileEntry {
                path: "/etc/redis/redis.conf".into(),
                listed_as: None,
                package: "redis-server".into(),
                change: "modified".into(),
                executable: false,
                file: Some(attrs("ab")),
            }],
            modified_files: None,
            unowned_files: vec![UnownedFileEntry {
                path: "/usr/local/bin/redis-server".into(),
                area: "usr-local".into(),
                in_path: true,
                links: vec![],
                pids: vec![],
                file: attrs("cd"),
            }],
            units: vec![UnitFileEntry {
                path: "/etc/systemd/system/redis-tarball.service".into(),
                kind: "unit".into(),
                target: None,
                in_package_dir: false,
                enabled_by: vec!["multi-user.target.wants".into()],
                file: Some(attrs("ef")),
            }],
        }
    }

    #[test]
    fn round_trip() {
        let manifest = sample();
        let text = manifest_to_json(&manifest);
        assert!(text.starts_with("{\n  \"schema\": \"perimeter.manifest/1\""));
        // Absent optional lists are left out, not written as null.
        assert!(!text.contains("modified_files"));
        assert!(!text.contains("pids"));
        assert_eq!(
            parse_manifest(&text).map_err(|e| e.to_string()),
            Ok(manifest)
        );
    }

    #[test]
    fn unknown_fields_of_the_same_version_are_ignored() {
        let mut value = serde_json::to_value(sample()).expect("serialises");
        value["added_in_a_later_1_x"] = serde_json::json!({"x": 1});
        let parsed = parse_manifest(&value.to_string()).map_err(|e| e.to_string());
        assert_eq!(parsed, Ok(sample()));
    }

    #[test]
    fn refusals_say_why() {
        let err = |text: &str| parse_manifest(text).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(
            err(r#"{"schema": "perimeter.manifest/2", "hostname": "x"}"#),
            Err("written by a newer perimeter (schema perimeter.manifest/2); this one reads perimeter.manifest/1: upgrade perimeter".into())
        );
        assert_eq!(
            err(r#"{"schema": "perimeter.audit/1"}"#),
            Err("not a perimeter manifest (schema \"perimeter.audit/1\"; expected perimeter.manifest/1)".into())
        );
        assert_eq!(
            err(r#"{"hostname": "x"}"#),
            Err("not a perimeter manifest (no schema field; expected perimeter.manifest/1)".into())
        );
        assert_eq!(
            err("{\"schema\": \"perimeter.manifest/1\",\n \"hostname\": 7}"),
            Err("invalid perimeter.manifest/1 document: invalid type: integer `7`, expected a string at line 2 column 14".into())
        );
        assert_eq!(
            err("{\"schema\": "),
            Err("not JSON: EOF while parsing a value at line 1 column 11".into())
        );
    }
}
