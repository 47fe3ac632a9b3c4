//! Comparing two rebuild manifests (two hosts, or one host at two times):
//! packages added, removed or at another version; files (changed conffiles,
//! modified package files, unowned executables, unit-directory entries) added,
//! removed or changed in content, mode or owner. The `perimeter.manifest-diff/1`
//! document and the human table.
//!
//! Owners are compared by name when both manifests know the names, else by
//! number: two hosts give the same account different uids, and a rebuild
//! recreates the name.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::manifest::{FileAttrs, Manifest, PackageEntry};
use crate::style::Style;

/// The schema string of the diff document.
pub const DIFF_SCHEMA: &str = "perimeter.manifest-diff/1";

/// What kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    PackageAdded,
    PackageRemoved,
    PackageChanged,
    FileAdded,
    FileRemoved,
    FileChanged,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::PackageAdded => "package-added",
            ChangeKind::PackageRemoved => "package-removed",
            ChangeKind::PackageChanged => "package-changed",
            ChangeKind::FileAdded => "file-added",
            ChangeKind::FileRemoved => "file-removed",
            ChangeKind::FileChanged => "file-changed",
        }
    }
}

/// One difference between manifest A and manifest B.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestChange {
    pub kind: ChangeKind,
    /// `name:arch` for packages, the path for files.
    pub subject: String,
    /// For files: `conffile`, `modified-file`, `unowned-file` or `unit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<&'static str>,
    /// The version, or a short description of the file, in A and in B.
    pub before: Option<String>,
    pub after: Option<String>,
    /// For changed files: each attribute that differs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// Every difference, packages first, each group by subject.
pub fn diff_manifests(a: &Manifest, b: &Manifest) -> Vec<ManifestChange> {
    let mut changes = Vec::new();
    let packages_a = packages_by_key(a);
    let packages_b = packages_by_key(b);
    for (key, before) in &packages_a {
        match packages_b.get(key) {
            None => changes.push(ManifestChange {
                kind: ChangeKind::PackageRemoved,
                subject: key.1.clone(),
                category: None,
                before: Some(before.version.clone()),
                after: None,
                details: Vec::new(),
            }),
            Some(after) if after.version != before.version => changes.push(ManifestChange {
                kind: ChangeKind::PackageChanged,
                subject: key.1.clone(),
                category: None,
                before: Some(before.version.clone()),
                after: Some(after.version.clone()),
                details: Vec::new(),
            }),
            Some(_) => {}
        }
    }
    for (key, after) in &packages_b {
        if !packages_a.contains_key(key) {
            changes.push(ManifestChange {
                kind: ChangeKind::PackageAdded,
                subject: key.1.clone(),
                category: None,
                before: None,
                after: Some(after.version.clone()),
                details: Vec::new(),
            });
        }
    }
    changes.sort_by(|x, y| x.subject.cmp(&y.subject).then(x.kind.cmp(&y.kind)));

    let files_a = files_by_path(a);
    let files_b = files_by_path(b);
    let mut file_changes = Vec::new();
    for (path, before) in &files_a {
        match files_b.get(path) {
            None => file_changes.push(ManifestChange {
                kind: ChangeKind::FileRemoved,
                subject: path.to_string(),
                category: Some(before.category),
                before: Some(before.describe()),
                after: None,
                details: Vec::new(),
            }),
            Some(after) => {
                let details = before.differences(after);
                if !details.is_empty() {
                    file_changes.push(ManifestChange {
                        kind: ChangeKind::FileChanged,
                        subject: path.to_string(),
                        category: Some(after.category),
                        before: Some(before.describe()),
                        after: Some(after.describe()),
                        details,
                    });
                }
            }
        }
    }
    for (path, after) in &files_b {
        if !files_a.contains_key(path) {
            file_changes.push(ManifestChange {
                kind: ChangeKind::FileAdded,
                subject: path.to_string(),
                category: Some(after.category),
                before: None,
                after: Some(after.describe()),
                details: Vec::new(),
            });
        }
    }
    file_changes.sort_by(|x, y| x.subject.cmp(&y.subject));
    changes.extend(file_changes);
    changes
}

/// Packages by (manager, `name:arch`).
fn packages_by_key(manifest: &Manifest) -> BTreeMap<(String, String), &PackageEntry> {
    manifest
        .packages
        .iter()
        .map(|p| {
            let label = match &p.arch {
                Some(arch) => format!("{}:{arch}", p.name),
                None => p.name.clone(),
            };
            ((p.manager.clone(), label), p)
        })
        .collect()
}

/// A file as the diff sees it, whatever list it came from.
#[derive(Debug)]
struct FileView<'a> {
    category: &'static str,
    /// `modified`/`missing`/`replaced` for package files, the entry kind for
    /// units, `executable` for unowned files.
    state: &'a str,
    target: Option<&'a str>,
    attrs: Option<&'a FileAttrs>,
}

fn files_by_path(manifest: &Manifest) -> BTreeMap<&str, FileView<'_>> {
    let mut files: BTreeMap<&str, FileView<'_>> = BTreeMap::new();
    for file in &manifest.conffiles {
        files.entry(&file.path).or_insert(FileView {
            category: "conffile",
            state: &file.change,
            target: None,
            attrs: file.file.as_ref(),
        });
    }
    for file in manifest.modified_files.iter().flatten() {
        files.entry(&file.path).or_insert(FileView {
            category: "modified-file",
            state: &file.change,
            target: None,
            attrs: file.file.as_ref(),
        });
    }
    for file in &manifest.unowned_files {
        files.entry(&file.path).or_insert(FileView {
            category: "unowned-file",
            state: "executable",
            target: None,
            attrs: Some(&file.file),
        });
    }
    for unit in &manifest.units {
        files.entry(&unit.path).or_insert(FileView {
            category: "unit",
            state: &unit.kind,
            target: unit.target.as_deref(),
            attrs: unit.file.as_ref(),
        });
    }
    files
}

impl FileView<'_> {
    /// `unowned-file, sha256 1a2b3c4d5e6f, 0755 root:root`.
    fn describe(&self) -> String {
        let mut text = format!("{} {}", self.category, self.state);
        if let Some(target) = self.target {
            let _ = write!(text, " -> {target}");
        }
        if let Some(attrs) = self.attrs {
            if let Some(sha) = &attrs.sha256 {
                let _ = write!(text, ", sha256 {}", short(sha));
            }
            let _ = write!(
                text,
                ", {} {}:{}",
                attrs.mode,
                owner_label(attrs.owner.as_deref(), attrs.uid),
                owner_label(attrs.group.as_deref(), attrs.gid)
            );
        }
        text
    }

    fn differences(&self, other: &FileView<'_>) -> Vec<String> {
        let mut details = Vec::new();
        if self.category != other.category {
            details.push(format!("category {} -> {}", self.category, other.category));
        }
        if self.state != other.state {
            details.push(format!("{} -> {}", self.state, other.state));
        }
        if self.target != other.target {
            details.push(format!(
                "target {} -> {}",
                self.target.unwrap_or("none"),
                other.target.unwrap_or("none")
            ));
        }
        match (self.attrs, other.attrs) {
            (Some(a), Some(b)) => {
                if let (Some(sha_a), Some(sha_b)) = (&a.sha256, &b.sha256)
                    && sha_a != sha_b
                {
                    details.push(format!("sha256 {} -> {}", short(sha_a), short(sha_b)));
                }
                if a.mode != b.mode {
                    details.push(format!("mode {} -> {}", a.mode, b.mode));
                }
                if !same_id(a.owner.as_deref(), a.uid, b.owner.as_deref(), b.uid) {
                    details.push(format!(
                        "owner {} -> {}",
                        owner_label(a.owner.as_deref(), a.uid),
                        owner_label(b.owner.as_deref(), b.uid)
                    ));
                }
                if !same_id(a.group.as_deref(), a.gid, b.group.as_deref(), b.gid) {
                    details.push(format!(
                        "group {} -> {}",
                        owner_label(a.group.as_deref(), a.gid),
                        owner_label(b.group.as_deref(), b.gid)
                    ));
                }
            }
            (None, Some(_)) => details.push("file appeared".to_owned()),
            (Some(_), None) => details.push("file disappeared".to_owned()),
            (None, None) => {}
        }
        details
    }
}

fn same_id(name_a: Option<&str>, id_a: u32, name_b: Option<&str>, id_b: u32) -> bool {
    match (name_a, name_b) {
        (Some(a), Some(b)) => a == b,
        _ => id_a == id_b,
    }
}

fn owner_label(name: Option<&str>, id: u32) -> String {
    name.map_or_else(|| id.to_string(), str::to_owned)
}

/// The first 12 hex digits, enough to tell contents apart by eye.
fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// Which manifest a side of the diff is.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestSide {
    pub file: String,
    pub hostname: String,
    pub created_at: String,
}

#[derive(Debug, Serialize)]
struct DiffDocument<'a> {
    schema: &'static str,
    a: &'a ManifestSide,
    b: &'a ManifestSide,
    changes: &'a [ManifestChange],
    summary: BTreeMap<&'static str, usize>,
}

/// The `perimeter.manifest-diff/1` document.
pub fn diff_to_json(
    a: &ManifestSide,
    b: &ManifestSide,
    changes: &[ManifestChange],
) -> serde_json::Value {
    let mut summary: BTreeMap<&'static str, usize> = [
        ChangeKind::PackageAdded,
        ChangeKind::PackageRemoved,
        ChangeKind::PackageChanged,
        ChangeKind::FileAdded,
        ChangeKind::FileRemoved,
        ChangeKind::FileChanged,
    ]
    .into_iter()
    .map(|kind| (kind.as_str(), 0))
    .collect();
    for change in changes {
        *summary.entry(change.kind.as_str()).or_default() += 1;
    }
    let document = DiffDocument {
        schema: DIFF_SCHEMA,
        a,
        b,
        changes,
        summary,
    };
    serde_json::to_value(&document).unwrap_or(serde_json::Value::Null)
}

/// The human table: one line per change.
pub fn diff_to_human(
    a: &ManifestSide,
    b: &ManifestSide,
    changes: &[ManifestChange],
    style: Style,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} ({}, {}) -> {} ({}, {}): {} changes",
        style.bold("manifest diff"),
        a.file,
        a.hostname,
        a.created_at,
        b.file,
        b.hostname,
        b.created_at,
        changes.len()
    );
    if changes.is_empty() {
        return out;
    }
    let _ = writeln!(out);
    let mut table = style.table();
    table.set_header(["CHANGE", "SUBJECT", "WHAT"].map(|h| style.cell(h, None)));
    for change in changes {
        let what = match change.kind {
            ChangeKind::PackageAdded => change.after.clone().unwrap_or_default(),
            ChangeKind::PackageRemoved => change.before.clone().unwrap_or_default(),
            ChangeKind::PackageChanged => format!(
                "{} -> {}",
                change.before.as_deref().unwrap_or(""),
                change.after.as_deref().unwrap_or("")
            ),
            ChangeKind::FileAdded => change.after.clone().unwrap_or_default(),
            ChangeKind::FileRemoved => change.before.clone().unwrap_or_default(),
            ChangeKind::FileChanged => format!(
                "{}: {}",
                change.category.unwrap_or("file"),
                change.details.join(", ")
            ),
        };
        table.add_row(vec![
            style.cell(change.kind.as_str(), None),
            style.cell(&change.subject, None),
            style.cell(what, None),
        ]);
    }
    let _ = writeln!(out, "{table}");
    out
}

#[cfg(test)]
mod tests {
    use super::super::manifest::{
        ChangedFileEntry, MANIFEST_SCHEMA, UnitFileEntry, UnownedFileEntry,
    };
    use super::*;

    fn attrs(sha: &str, mode: &str, uid: u32, owner: Option<&str>) -> FileAttrs {
        FileAttrs {
            mode: mode.into(),
            uid,
            gid: 0,
            owner: owner.map(Into::into),
            group: Some("root".into()),
            size: 1,
            sha256: Some(sha.into()),
        }
    }

    fn package(name: &str, version: &str) -> PackageEntry {
        PackageEntry {
            manager: "dpkg".into(),
            name: name.into(),
            version: version.into(),
            arch: Some("amd64".into()),
            origin: None,
            status: "installed".into(),
        }
    }

    fn manifest(packages: Vec<PackageEntry>, unowned: Vec<UnownedFileEntry>) -> Manifest {
        Manifest {
            schema: MANIFEST_SCHEMA.into(),
            hostname: "h".into(),
            created_at: "2026-11-25T00:00:00Z".into(),
            perimeter_version: "0.1.0".into(),
            root: "/".into(),
            verified: false,
            packages,
            conffiles: vec![],
            modified_files: None,
            unowned_files: unowned,
            units: vec![],
        }
    }

    fn unowned(path: &str, attrs: FileAttrs) -> UnownedFileEntry {
        UnownedFileEntry {
            path: path.into(),
            area: "usr-local".into(),
            in_path: true,
            links: vec![],
            pids: vec![],
            file: attrs,
        }
    }

    #[test]
    fn packages_and_files_in_both_directions() {
        let a = manifest(
            vec![
                package("curl", "7.88.1-10"),
                package("redis-server", "5:7.0.11-1"),
                package("gone", "1"),
            ],
            vec![
                unowned(
                    "/usr/local/bin/same",
                    attrs("aaaa", "0755", 0, Some("root")),
                ),
                unowned(
                    "/usr/local/bin/tool",
                    attrs("1111111111111111", "0755", 0, Some("root")),
                ),
                unowned("/usr/local/bin/old", attrs("bbbb", "0755", 0, Some("root"))),
                // Same owner name under another uid on the other host: no change.
                unowned(
                    "/usr/local/bin/deploy",
                    attrs("cccc", "0750", 1001, Some("deploy")),
                ),
            ],
        );
        let mut b = manifest(
            vec![
                package("curl", "7.88.1-10"),
                package("redis-server", "5:7.0.15-1~deb12u1"),
                package("new", "2"),
            ],
            vec![
                unowned(
                    "/usr/local/bin/same",
                    attrs("aaaa", "0755", 0, Some("root")),
                ),
                unowned(
                    "/usr/local/bin/tool",
                    attrs("2222222222222222", "0775", 1000, Some("alice")),
                ),
                unowned(
                    "/usr/local/bin/deploy",
                    attrs("cccc", "0750", 1002, Some("deploy")),
                ),
            ],
        );
        b.units.push(UnitFileEntry {
            path: "/etc/systemd/system/new.service".into(),
            kind: "unit".into(),
            target: None,
            in_package_dir: false,
            enabled_by: vec![],
            file: Some(attrs("dddd", "0644", 0, Some("root"))),
        });
        b.conffiles.push(ChangedFileEntry {
            path: "/etc/redis/redis.conf".into(),
            listed_as: None,
            package: "redis-server".into(),
            change: "missing".into(),
            executable: false,
            file: None,
        });
        let changes = diff_manifests(&a, &b);
        let summary: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| (c.kind.as_str(), c.subject.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("package-removed", "gone:amd64"),
                ("package-added", "new:amd64"),
                ("package-changed", "redis-server:amd64"),
                ("file-added", "/etc/redis/redis.conf"),
                ("file-added", "/etc/systemd/system/new.service"),
                ("file-removed", "/usr/local/bin/old"),
                ("file-changed", "/usr/local/bin/tool"),
            ]
        );
        let tool = &changes[6];
        assert_eq!(
            tool.details,
            vec![
                "sha256 111111111111 -> 222222222222",
                "mode 0755 -> 0775",
                "owner root -> alice"
            ]
        );
        assert_eq!(changes[2].before.as_deref(), Some("5:7.0.11-1"));
        assert_eq!(changes[2].after.as_deref(), Some("5:7.0.15-1~deb12u1"));
        assert_eq!(changes[3].after.as_deref(), Some("conffile missing"));
        assert!(diff_manifests(&a, &a).is_empty());
    }

    #[test]
    fn json_document() {
        let a = manifest(vec![package("x", "1")], vec![]);
        let b = manifest(vec![package("x", "2")], vec![]);
        let side = |file: &str| ManifestSide {
            file: file.into(),
            hostname: "h".into(),
            created_at: "t".into(),
        };
        let changes = diff_manifests(&a, &b);
        let doc = diff_to_json(&side("a.json"), &side("b.json"), &changes);
        assert_eq!(doc["schema"], DIFF_SCHEMA);
        assert_eq!(doc["changes"][0]["kind"], "package-changed");
        assert_eq!(doc["changes"][0]["before"], "1");
        assert_eq!(doc["summary"]["package-changed"], 1);
        assert_eq!(doc["summary"]["file-added"], 0);
        let human = diff_to_human(&side("a.json"), &side("b.json"), &changes, Style::plain());
        assert!(human.contains("package-changed"), "{human}");
        assert!(human.contains("1 -> 2"), "{human}");
    }
}
