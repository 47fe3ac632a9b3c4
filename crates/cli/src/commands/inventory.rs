//! `perimeter inventory`: the package database as the source of truth. With
//! no subcommand, the report (installed packages, and everything on the host
//! that is not theirs, with `pkg.*` findings); `export` writes the rebuild
//! manifest; `diff` compares two manifests.

use std::path::Path;

use anyhow::{Context, Result, bail};
use perimeter_checks::pkg::{self, ChangedPackageFile, PkgFacts, UnownedExecutable, UnownedUnit};
use perimeter_inventory::{
    Backend, ChangedFile, FileMeta, Inventory, InventoryOptions, ProcessOwnership,
};
use perimeter_model::{FileChange, Finding, Severity, UnitKind};
use perimeter_report::inventory::diff::{
    ManifestSide, diff_manifests, diff_to_human, diff_to_json,
};
use perimeter_report::inventory::manifest::{
    ChangedFileEntry, FileAttrs, MANIFEST_SCHEMA, Manifest, PackageEntry, UnitFileEntry,
    UnownedFileEntry, hex, manifest_to_json, mode_string, parse_manifest,
};
use perimeter_report::inventory::{InventoryView, ProcessEntry, StatsEntry, to_human, to_json};
use perimeter_report::rfc3339;
use time::OffsetDateTime;

use crate::args::{
    ExportArgs, Format, InventoryAction, InventoryArgs, ManifestDiffArgs, ShowArgs, SourceArgs,
};
use crate::exit_codes::ExitCode;
use crate::terminal::Terminal;

pub(crate) fn run(args: InventoryArgs, terminal: &Terminal) -> Result<ExitCode> {
    match args.action {
        None => show(args.show, terminal),
        Some(InventoryAction::Export(export_args)) => export(export_args),
        Some(InventoryAction::Diff(diff_args)) => diff(diff_args, terminal),
    }
}

/// Validated settings from the raw flags.
fn options(source: &SourceArgs, hash_files: bool) -> Result<InventoryOptions> {
    if !source.root.is_dir() {
        bail!("--root {}: not a directory", source.root.display());
    }
    let mut opts = InventoryOptions::for_root(&source.root);
    opts.verify = source.verify;
    opts.hash_files = hash_files;
    opts.origins = !source.no_origins;
    opts.processes = opts.processes && !source.no_processes;
    if let Some(workers) = source.workers {
        opts.workers = usize::from(workers);
    }
    opts.md5_backend = match source.md5_backend.as_str() {
        "auto" | "" => None,
        name => {
            let Some(backend) = Backend::from_name(name) else {
                bail!("PERIMETER_MD5={name}: not one of auto, avx512, avx2, portable");
            };
            if !backend.is_supported() {
                bail!(
                    "PERIMETER_MD5={name}: this CPU does not run the {} backend",
                    backend.as_str()
                );
            }
            Some(backend)
        }
    };
    Ok(opts)
}

fn show(args: ShowArgs, terminal: &Terminal) -> Result<ExitCode> {
    let opts = options(&args.source, false)?;
    let taken_at = OffsetDateTime::now_utc();
    let collected = perimeter_inventory::collect(&opts);
    let findings = findings(&collected);
    let manifest = manifest_of(&collected, taken_at, true);
    let processes = process_entries(&collected);
    let stats = stats_entry(&collected);
    let view = InventoryView {
        manifest: &manifest,
        processes: &processes,
        findings: &findings,
        problems: &collected.problems,
        stats: &stats,
    };
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&to_json(&view))?),
        Format::Human => out!(
            "{}",
            to_human(&view, terminal.stdout_style(), args.packages)
        ),
    }
    let threshold: Option<Severity> = args.fail_on.map(Into::into);
    let failed = threshold.is_some_and(|t| findings.iter().any(|f| f.severity >= t));
    Ok(ExitCode::findings_if(failed))
}

fn export(args: ExportArgs) -> Result<ExitCode> {
    let opts = options(&args.source, true)?;
    let taken_at = OffsetDateTime::now_utc();
    let collected = perimeter_inventory::collect(&opts);
    let manifest = manifest_of(&collected, taken_at, false);
    let text = manifest_to_json(&manifest);
    match &args.output {
        Some(path) => perimeter_files::write_atomic(path, text.as_bytes(), 0o644)
            .context("cannot write the manifest")?,
        None => out!("{text}"),
    }
    // The manifest records the host; what could not be read is said here so
    // nobody mistakes an incomplete manifest for a complete one.
    for problem in &collected.problems {
        eprintln!(
            "perimeter: warning: {}: {}",
            problem.subject, problem.message
        );
    }
    Ok(ExitCode::Clean)
}

fn diff(args: ManifestDiffArgs, terminal: &Terminal) -> Result<ExitCode> {
    let a = read_manifest(&args.a)?;
    let b = read_manifest(&args.b)?;
    let side = |path: &Path, manifest: &Manifest| ManifestSide {
        file: path.display().to_string(),
        hostname: manifest.hostname.clone(),
        created_at: manifest.created_at.clone(),
    };
    let (side_a, side_b) = (side(&args.a, &a), side(&args.b, &b));
    let changes = diff_manifests(&a, &b);
    match args.format {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&diff_to_json(&side_a, &side_b, &changes))?
        ),
        Format::Human => out!(
            "{}",
            diff_to_human(&side_a, &side_b, &changes, terminal.stdout_style())
        ),
    }
    Ok(ExitCode::findings_if(!changes.is_empty()))
}

fn read_manifest(path: &Path) -> Result<Manifest> {
    let text = perimeter_files::read_text(path, "a manifest", perimeter_files::MAX_DOCUMENT_BYTES)
        .context("cannot read the manifest")?;
    let manifest = parse_manifest(&text).with_context(|| path.display().to_string())?;
    for warning in manifest.duplicate_packages() {
        eprintln!("perimeter: warning: {}: {warning}", path.display());
    }
    Ok(manifest)
}

/// The `pkg.*` findings for an inventory.
fn findings(collected: &Inventory) -> Vec<Finding> {
    let conffile_packages: Vec<String> = collected
        .conffiles
        .iter()
        .map(|f| f.package.to_string())
        .collect();
    let modified_packages: Vec<String> = collected
        .modified_files
        .iter()
        .flatten()
        .map(|f| f.package.to_string())
        .collect();
    let conffiles = changed_facts(&collected.conffiles, &conffile_packages);
    let modified_files = changed_facts(
        collected.modified_files.as_deref().unwrap_or_default(),
        &modified_packages,
    );
    let facts = PkgFacts {
        unowned_files: collected
            .unowned_files
            .iter()
            .map(|file| UnownedExecutable {
                path: &file.path,
                area: file.area,
                in_path: file.in_path,
                mode: file.meta.mode,
                pids: &file.pids,
                links: &file.links,
            })
            .collect(),
        units: collected
            .units
            .iter()
            .map(|unit| UnownedUnit {
                path: &unit.path,
                kind: unit.kind.clone(),
                in_package_dir: unit.in_package_dir,
                enabled_by: &unit.enabled_by,
            })
            .collect(),
        conffiles,
        modified_files,
    };
    pkg::check(&facts)
}

/// Changed files as the rules see them, each with its package's name.
fn changed_facts<'a>(
    files: &'a [ChangedFile],
    packages: &'a [String],
) -> Vec<ChangedPackageFile<'a>> {
    files
        .iter()
        .zip(packages)
        .map(|(file, package)| ChangedPackageFile {
            path: &file.path,
            listed_as: file.listed_as.as_deref(),
            package,
            change: file.change,
            executable: file.executable,
        })
        .collect()
}

fn attrs(collected: &Inventory, meta: &FileMeta, sha256: Option<&[u8; 32]>) -> FileAttrs {
    FileAttrs {
        mode: mode_string(meta.mode),
        uid: meta.uid,
        gid: meta.gid,
        owner: collected.user_names.get(&meta.uid).cloned(),
        group: collected.group_names.get(&meta.gid).cloned(),
        size: meta.size,
        sha256: sha256.map(|digest| hex(digest)),
    }
}

fn changed_entry(collected: &Inventory, file: &ChangedFile) -> ChangedFileEntry {
    ChangedFileEntry {
        path: file.path.display().to_string(),
        listed_as: file.listed_as.as_ref().map(|p| p.display().to_string()),
        package: file.package.to_string(),
        change: file.change.as_str().to_owned(),
        executable: file.executable,
        file: file
            .meta
            .as_ref()
            .filter(|_| file.change != FileChange::Missing)
            .map(|meta| attrs(collected, meta, file.sha256.as_ref())),
    }
}

/// The inventory as manifest entries; `with_pids` for the inventory report
/// (a manifest leaves running pids out).
fn manifest_of(collected: &Inventory, taken_at: OffsetDateTime, with_pids: bool) -> Manifest {
    Manifest {
        schema: MANIFEST_SCHEMA.to_owned(),
        hostname: collected.hostname.clone(),
        created_at: rfc3339(taken_at),
        perimeter_version: env!("CARGO_PKG_VERSION").to_owned(),
        root: collected.root.display().to_string(),
        verified: collected.verified,
        packages: collected
            .packages
            .iter()
            .map(|p| PackageEntry {
                manager: p.manager.to_owned(),
                name: p.name.clone(),
                version: p.version.clone(),
                arch: p.arch.clone(),
                origin: p.origin.clone(),
                status: p.status.clone(),
            })
            .collect(),
        conffiles: collected
            .conffiles
            .iter()
            .map(|f| changed_entry(collected, f))
            .collect(),
        modified_files: collected
            .modified_files
            .as_ref()
            .map(|files| files.iter().map(|f| changed_entry(collected, f)).collect()),
        unowned_files: collected
            .unowned_files
            .iter()
            .map(|f| UnownedFileEntry {
                path: f.path.display().to_string(),
                area: f.area.as_str().to_owned(),
                in_path: f.in_path,
                links: f.links.iter().map(|l| l.display().to_string()).collect(),
                pids: if with_pids {
                    f.pids.clone()
                } else {
                    Vec::new()
                },
                file: attrs(collected, &f.meta, f.sha256.as_ref()),
            })
            .collect(),
        units: collected
            .units
            .iter()
            .map(|u| UnitFileEntry {
                path: u.path.display().to_string(),
                kind: u.kind.as_str().to_owned(),
                target: match &u.kind {
                    UnitKind::Linked { target } => Some(target.display().to_string()),
                    UnitKind::Enablement { target } => {
                        target.as_ref().map(|t| t.display().to_string())
                    }
                    UnitKind::Masked => Some("/dev/null".to_owned()),
                    UnitKind::Unit | UnitKind::DropIn => None,
                },
                in_package_dir: u.in_package_dir,
                enabled_by: u.enabled_by.clone(),
                file: u
                    .meta
                    .as_ref()
                    .map(|meta| attrs(collected, meta, u.sha256.as_ref())),
            })
            .collect(),
    }
}

fn process_entries(collected: &Inventory) -> Vec<ProcessEntry> {
    collected
        .processes
        .iter()
        .map(|p| {
            let (ownership, reason) = match &p.ownership {
                ProcessOwnership::Unpackaged => ("unpackaged", None),
                ProcessOwnership::Unknown(reason) => ("unknown", Some(reason.clone())),
            };
            ProcessEntry {
                pid: p.pid,
                comm: p.comm.clone(),
                exe: p.exe.display().to_string(),
                uid: p.uid,
                user: p.user.clone(),
                unit: p.unit.clone(),
                ownership,
                reason,
            }
        })
        .collect()
}

fn stats_entry(collected: &Inventory) -> StatsEntry {
    let stats = &collected.stats;
    StatsEntry {
        index_paths: stats.n_index_paths,
        swept_entries: stats.sweep.n_entries,
        swept_executables: stats.sweep.n_executables,
        conffiles_checked: stats.n_conffiles_checked,
        files_verified: stats.n_files_verified,
        bytes_hashed: stats.n_bytes_hashed,
        packages_without_md5sums: stats.n_packages_without_md5sums,
        checksum_backend: stats.checksum_backend.map(str::to_owned),
        checksum_calibration: stats
            .checksum_calibration
            .iter()
            .map(|(backend, speed)| (backend.as_str().to_owned(), speed / 1_000_000))
            .collect(),
        workers: stats.n_workers,
        checksum_order_ms: u64::try_from(stats.order_time.as_millis()).unwrap_or(u64::MAX),
        phases_ms: stats
            .phases
            .iter()
            .map(|(phase, took)| {
                (
                    (*phase).to_owned(),
                    u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                )
            })
            .collect(),
    }
}
