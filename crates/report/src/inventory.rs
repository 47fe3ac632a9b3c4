//! `perimeter inventory`'s output: the `perimeter.inventory/1` JSON document
//! and the human report, plus the rebuild manifest (`manifest`) and the
//! comparison of two manifests (`diff`).
//!
//! The inventory document carries the manifest's lists (the same entries, so a
//! consumer reads one shape) plus what only a live look has: running
//! processes, findings, problems and the counts and timings of the run.

pub mod diff;
pub mod manifest;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use perimeter_model::{Finding, Problem};
use serde::Serialize;

use crate::json::{FindingJson, ProblemJson, severity_counts};
use crate::style::Style;
use manifest::Manifest;

/// The schema string of the inventory document.
pub const INVENTORY_SCHEMA: &str = "perimeter.inventory/1";

/// A running process whose executable no package owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessEntry {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub uid: u32,
    pub user: Option<String>,
    pub unit: Option<String>,
    /// `unpackaged`, or `unknown` with a reason.
    pub ownership: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Counts and timings of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsEntry {
    /// Paths in the package database's file lists.
    pub index_paths: usize,
    pub swept_entries: usize,
    pub swept_executables: usize,
    pub conffiles_checked: usize,
    pub files_verified: usize,
    pub bytes_hashed: u64,
    pub packages_without_md5sums: usize,
    pub checksum_backend: Option<String>,
    /// What the backend was chosen on: (backend, MB hashed per second on one
    /// core) for each candidate measured, fastest first; empty when the
    /// backend was forced (`PERIMETER_MD5`) or is the only one this CPU runs.
    pub checksum_calibration: Vec<(String, u64)>,
    pub workers: usize,
    /// Of the checksum phase, milliseconds spent ordering the files by size.
    pub checksum_order_ms: u64,
    /// Wall-clock milliseconds per phase, in the order they ran.
    pub phases_ms: Vec<(String, u64)>,
}

/// Everything the inventory report shows.
#[derive(Debug)]
pub struct InventoryView<'a> {
    /// The lists; `unowned_files` carry their running pids.
    pub manifest: &'a Manifest,
    pub processes: &'a [ProcessEntry],
    /// Worst first.
    pub findings: &'a [Finding],
    pub problems: &'a [Problem],
    pub stats: &'a StatsEntry,
}

#[derive(Debug, Serialize)]
struct Document<'a> {
    schema: &'static str,
    host: HostJson<'a>,
    packages: &'a [manifest::PackageEntry],
    unowned_files: &'a [manifest::UnownedFileEntry],
    processes: &'a [ProcessEntry],
    units: &'a [manifest::UnitFileEntry],
    conffiles: &'a [manifest::ChangedFileEntry],
    /// `null` unless the files were verified (`--verify`).
    modified_files: Option<&'a [manifest::ChangedFileEntry]>,
    findings: Vec<FindingJson<'a>>,
    problems: Vec<ProblemJson<'a>>,
    stats: &'a StatsEntry,
    summary: SummaryJson,
}

#[derive(Debug, Serialize)]
struct HostJson<'a> {
    hostname: &'a str,
    root: &'a str,
    taken_at: &'a str,
    perimeter_version: &'a str,
    verified: bool,
}

#[derive(Debug, Serialize)]
struct SummaryJson {
    packages: usize,
    packages_without_origin: usize,
    unowned_files: usize,
    unowned_processes: usize,
    /// Units, drop-ins and linked units (not masks or enablement links).
    unowned_units: usize,
    conffiles_changed: usize,
    files_modified: Option<usize>,
    findings: BTreeMap<&'static str, usize>,
    problems: usize,
}

/// Unit-directory entries that are code (units, drop-ins, linked units).
fn is_unit_kind(kind: &str) -> bool {
    matches!(kind, "unit" | "drop-in" | "linked")
}

/// The `perimeter.inventory/1` document.
pub fn to_json(view: &InventoryView<'_>) -> serde_json::Value {
    let manifest = view.manifest;
    let findings = severity_counts(view.findings);
    let document = Document {
        schema: INVENTORY_SCHEMA,
        host: HostJson {
            hostname: &manifest.hostname,
            root: &manifest.root,
            taken_at: &manifest.created_at,
            perimeter_version: &manifest.perimeter_version,
            verified: manifest.verified,
        },
        packages: &manifest.packages,
        unowned_files: &manifest.unowned_files,
        processes: view.processes,
        units: &manifest.units,
        conffiles: &manifest.conffiles,
        modified_files: manifest.modified_files.as_deref(),
        findings: view.findings.iter().map(FindingJson::from).collect(),
        problems: view.problems.iter().map(ProblemJson::from).collect(),
        stats: view.stats,
        summary: SummaryJson {
            packages: manifest.packages.len(),
            packages_without_origin: manifest
                .packages
                .iter()
                .filter(|p| p.origin.is_none())
                .count(),
            unowned_files: manifest.unowned_files.len(),
            unowned_processes: view.processes.len(),
            unowned_units: manifest
                .units
                .iter()
                .filter(|u| is_unit_kind(&u.kind))
                .count(),
            conffiles_changed: manifest.conffiles.len(),
            files_modified: manifest.modified_files.as_ref().map(Vec::len),
            findings,
            problems: view.problems.len(),
        },
    };
    serde_json::to_value(&document).unwrap_or(serde_json::Value::Null)
}

/// How many package names to list inline before counting the rest.
const MAX_INLINE_PACKAGES: usize = 12;

/// The human report: a header, one section per kind of departure from the
/// package database, the findings worst first, and the problems. With
/// `list_packages`, the full package table too.
pub fn to_human(view: &InventoryView<'_>, style: Style, list_packages: bool) -> String {
    let manifest = view.manifest;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} (root {}) at {}",
        style.bold("perimeter inventory of"),
        style.bold(&manifest.hostname),
        manifest.root,
        manifest.created_at,
    );

    let without_origin: Vec<&manifest::PackageEntry> = manifest
        .packages
        .iter()
        .filter(|p| p.origin.is_none())
        .collect();
    let mut by_origin: BTreeMap<&str, usize> = BTreeMap::new();
    for package in &manifest.packages {
        if let Some(origin) = &package.origin {
            *by_origin.entry(origin).or_default() += 1;
        }
    }
    let origins: Vec<String> = by_origin
        .iter()
        .map(|(origin, n)| format!("{n} {origin}"))
        .collect();
    let _ = writeln!(
        out,
        "\n{} {} installed{}",
        style.bold("Packages:"),
        manifest.packages.len(),
        if origins.is_empty() {
            String::new()
        } else {
            format!(" ({})", origins.join(", "))
        }
    );
    if !without_origin.is_empty() {
        let names: Vec<String> = without_origin
            .iter()
            .take(MAX_INLINE_PACKAGES)
            .map(|p| format!("{} {}", p.name, p.version))
            .collect();
        let more = without_origin.len().saturating_sub(MAX_INLINE_PACKAGES);
        let _ = writeln!(
            out,
            "  {} in no configured repository at their installed version: {}{}",
            without_origin.len(),
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    if list_packages && !manifest.packages.is_empty() {
        let mut table = style.table();
        table.set_header(
            ["PACKAGE", "VERSION", "ARCH", "STATUS", "ORIGIN"].map(|h| style.cell(h, None)),
        );
        for package in &manifest.packages {
            table.add_row(vec![
                style.cell(&package.name, None),
                style.cell(&package.version, None),
                style.cell(package.arch.as_deref().unwrap_or("-"), None),
                style.cell(&package.status, None),
                style.cell(package.origin.as_deref().unwrap_or("-"), None),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }

    let _ = writeln!(
        out,
        "\n{} {}",
        style.bold("Executables no package owns:"),
        manifest.unowned_files.len()
    );
    if !manifest.unowned_files.is_empty() {
        let mut table = style.table();
        table.set_header(["PATH", "AREA", "MODE", "OWNER", "RUNNING"].map(|h| style.cell(h, None)));
        for file in &manifest.unowned_files {
            let mut path = file.path.clone();
            for link in &file.links {
                let _ = write!(path, " (via {link})");
            }
            let running: Vec<String> = file.pids.iter().map(u32::to_string).collect();
            table.add_row(vec![
                style.cell(path, None),
                style.cell(&file.area, None),
                style.cell(&file.file.mode, None),
                style.cell(owner(&file.file), None),
                style.cell(running.join(" "), None),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }

    let _ = writeln!(
        out,
        "\n{} {}",
        style.bold("Running processes whose executable no package owns:"),
        view.processes.len()
    );
    if !view.processes.is_empty() {
        let mut table = style.table();
        table.set_header(["PID", "USER", "EXE", "UNIT", "WHY"].map(|h| style.cell(h, None)));
        for process in view.processes {
            table.add_row(vec![
                style.cell(process.pid, None),
                style.cell(
                    process
                        .user
                        .clone()
                        .unwrap_or_else(|| process.uid.to_string()),
                    None,
                ),
                style.cell(&process.exe, None),
                style.cell(process.unit.as_deref().unwrap_or("-"), None),
                style.cell(
                    process.reason.as_deref().unwrap_or("no package owns it"),
                    None,
                ),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }

    // Enablement links are state a rebuild needs (they are in the JSON and
    // the manifest) but not code; the table shows units, drop-ins, linked
    // units and masks, and counts the links.
    let shown: Vec<&manifest::UnitFileEntry> = manifest
        .units
        .iter()
        .filter(|u| u.kind != "enablement")
        .collect();
    let n_units = shown.iter().filter(|u| is_unit_kind(&u.kind)).count();
    let n_masked = shown.len() - n_units;
    let n_links = manifest.units.len() - shown.len();
    let _ = writeln!(
        out,
        "\n{} {} ({} masked, {} enablement links made by systemctl enable)",
        style.bold("systemd units no package ships:"),
        n_units,
        n_masked,
        n_links
    );
    if !shown.is_empty() {
        let mut table = style.table();
        table.set_header(["PATH", "KIND", "ENABLED BY / TARGET"].map(|h| style.cell(h, None)));
        for unit in shown {
            let detail = match (&unit.target, unit.enabled_by.is_empty()) {
                (Some(target), _) => format!("-> {target}"),
                (None, false) => unit.enabled_by.join(", "),
                (None, true) => "-".to_owned(),
            };
            table.add_row(vec![
                style.cell(&unit.path, None),
                style.cell(&unit.kind, None),
                style.cell(detail, None),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }

    let _ = writeln!(
        out,
        "\n{} {} of {} checked",
        style.bold("Conffiles changed from what their package shipped:"),
        manifest.conffiles.len(),
        view.stats.conffiles_checked
    );
    changed_table(&mut out, &manifest.conffiles, style);

    match &manifest.modified_files {
        Some(files) => {
            let _ = writeln!(
                out,
                "\n{} {} of {} checked ({} MB read, {} workers, {})",
                style.bold("Package files that no longer match their md5sums:"),
                files.len(),
                view.stats.files_verified,
                view.stats.bytes_hashed / 1_000_000,
                view.stats.workers,
                view.stats.checksum_backend.as_deref().unwrap_or("-")
            );
            changed_table(&mut out, files, style);
        }
        None => {
            let _ = writeln!(
                out,
                "\n{} not checked (--verify reads every package file)",
                style.bold("Package files:")
            );
        }
    }

    if !view.findings.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("Findings"));
        let mut table = style.table();
        table.set_header(["SEVERITY", "RULE", "SUBJECT", "MESSAGE"].map(|h| style.cell(h, None)));
        for finding in view.findings {
            table.add_row(vec![
                style.cell(
                    finding.severity.as_str(),
                    Some(Style::severity_color(finding.severity)),
                ),
                style.cell(&finding.rule, None),
                style.cell(&finding.subject, None),
                style.cell(&finding.message, None),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    if !view.problems.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("Problems (not covered above)"));
        for problem in view.problems {
            let _ = write!(out, "  {}: {}", problem.subject, problem.message);
            if let Some(hint) = &problem.hint {
                let _ = write!(out, " ({hint})");
            }
            let _ = writeln!(out);
        }
    }
    out
}

fn owner(attrs: &manifest::FileAttrs) -> String {
    format!(
        "{}:{}",
        attrs.owner.clone().unwrap_or_else(|| attrs.uid.to_string()),
        attrs.group.clone().unwrap_or_else(|| attrs.gid.to_string())
    )
}

fn changed_table(out: &mut String, files: &[manifest::ChangedFileEntry], style: Style) {
    if files.is_empty() {
        return;
    }
    let mut table = style.table();
    table.set_header(["PATH", "PACKAGE", "CHANGE"].map(|h| style.cell(h, None)));
    for file in files {
        let mut change = file.change.clone();
        if file.executable {
            change.push_str(" (code)");
        }
        table.add_row(vec![
            style.cell(&file.path, None),
            style.cell(&file.package, None),
            style.cell(change, None),
        ]);
    }
    let _ = writeln!(out, "{table}");
}

#[cfg(test)]
mod tests {
    use super::manifest::{
        ChangedFileEntry, FileAttrs, MANIFEST_SCHEMA, PackageEntry, UnitFileEntry, UnownedFileEntry,
    };
    use super::*;
    use perimeter_model::Severity;

    fn view_parts() -> (
        Manifest,
        Vec<ProcessEntry>,
        Vec<Finding>,
        Vec<Problem>,
        StatsEntry,
    ) {
        let attrs = FileAttrs {
            mode: "0755".into(),
            uid: 0,
            gid: 0,
            owner: Some("root".into()),
            group: Some("root".into()),
            size: 10,
            sha256: None,
        };
        let manifest = Manifest {
            schema: MANIFEST_SCHEMA.into(),
            hostname: "web-1".into(),
            created_at: "2026-11-25T12:00:00Z".into(),
            perimeter_version: "0.1.0".into(),
            root: "/".into(),
            verified: false,
            packages: vec![
                PackageEntry {
                    manager: "dpkg".into(),
                    name: "bash".into(),
                    version: "5.2.15-2+b2".into(),
                    arch: Some("amd64".into()),
                    origin: Some("Debian bookworm/main".into()),
                    status: "installed".into(),
                },
                PackageEntry {
                    manager: "dpkg".into(),
                    name: "nodejs".into(),
                    version: "20.20.2-1nodesource1".into(),
                    arch: Some("amd64".into()),
                    origin: None,
                    status: "installed".into(),
                },
            ],
            conffiles: vec![ChangedFileEntry {
                path: "/etc/bash.bashrc".into(),
                listed_as: None,
                package: "bash".into(),
                change: "modified".into(),
                executable: false,
                file: Some(attrs.clone()),
            }],
            modified_files: None,
            unowned_files: vec![UnownedFileEntry {
                path: "/usr/local/bin/redis-server".into(),
                area: "usr-local".into(),
                in_path: true,
                links: vec![],
                pids: vec![812],
                file: attrs.clone(),
            }],
            units: vec![
                UnitFileEntry {
                    path: "/etc/systemd/system/redis.service".into(),
                    kind: "unit".into(),
                    target: None,
                    in_package_dir: false,
                    enabled_by: vec!["multi-user.target.wants".into()],
                    file: Some(attrs),
                },
                UnitFileEntry {
                    path: "/etc/systemd/system/multi-user.target.wants/redis.service".into(),
                    kind: "enablement".into(),
                    target: Some("/etc/systemd/system/redis.service".into()),
                    in_package_dir: false,
                    enabled_by: vec![],
                    file: None,
                },
            ],
        };
        let processes = vec![ProcessEntry {
            pid: 812,
            comm: "redis-server".into(),
            exe: "/usr/local/bin/redis-server".into(),
            uid: 0,
            user: Some("root".into()),
            unit: Some("redis.service".into()),
            ownership: "unpackaged",
            reason: None,
        }];
        let findings = vec![Finding::new(
            "pkg.unowned-file",
            Severity::Medium,
            "/usr/local/bin/redis-server",
            "executable in /usr/local that no package installed, running now",
        )];
        (manifest, processes, findings, vec![], StatsEntry::default())
    }

    #[test]
    fn json_document_shape() {
        let (manifest, processes, findings, problems, stats) = view_parts();
        let view = InventoryView {
            manifest: &manifest,
            processes: &processes,
            findings: &findings,
            problems: &problems,
            stats: &stats,
        };
        let doc = to_json(&view);
        assert_eq!(doc["schema"], INVENTORY_SCHEMA);
        assert_eq!(doc["host"]["hostname"], "web-1");
        assert_eq!(doc["host"]["verified"], false);
        assert_eq!(doc["packages"][1]["origin"], serde_json::Value::Null);
        assert_eq!(doc["unowned_files"][0]["pids"][0], 812);
        assert_eq!(doc["unowned_files"][0]["file"]["mode"], "0755");
        assert_eq!(doc["modified_files"], serde_json::Value::Null);
        assert_eq!(doc["findings"][0]["rule"], "pkg.unowned-file");
        assert_eq!(doc["summary"]["packages_without_origin"], 1);
        assert_eq!(doc["summary"]["unowned_units"], 1);
        assert_eq!(doc["summary"]["findings"]["medium"], 1);
        assert_eq!(doc["summary"]["files_modified"], serde_json::Value::Null);
    }

    #[test]
    fn human_report_sections() {
        let (manifest, processes, findings, problems, stats) = view_parts();
        let view = InventoryView {
            manifest: &manifest,
            processes: &processes,
            findings: &findings,
            problems: &problems,
            stats: &stats,
        };
        let text = to_human(&view, Style::plain(), false);
        assert!(
            text.starts_with("perimeter inventory of web-1 (root /) at 2026-11-25T12:00:00Z\n"),
            "{text}"
        );
        assert!(
            text.contains("Packages: 2 installed (1 Debian bookworm/main)"),
            "{text}"
        );
        assert!(text.contains("1 in no configured repository at their installed version: nodejs 20.20.2-1nodesource1"), "{text}");
        assert!(
            text.contains(
                "systemd units no package ships: 1 (0 masked, 1 enablement links made by systemctl enable)"
            ),
            "{text}"
        );
        assert!(
            !text.contains("multi-user.target.wants/redis.service"),
            "{text}"
        );
        assert!(text.contains("Package files: not checked"), "{text}");
        assert!(
            !text.contains("PACKAGE  VERSION"),
            "no package table unless asked: {text}"
        );
        let with_table = to_human(&view, Style::plain(), true);
        assert!(with_table.contains("Debian bookworm/main"), "{with_table}");
    }
}
