//! `perimeter scans`: the stored scans, newest first; `scans merge`: the
//! shard runs of one scan (`scan --shard K/N`), from this database and
//! others, combined into one stored scan.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use perimeter_report::history::{StoredScan, scans_to_human, scans_to_json};
use perimeter_store::{
    MergePlan, Selection, ShardRun, SqliteStore, Store, merge_results, merged_info, plan_merge,
};
use time::OffsetDateTime;

use crate::args::{Format, MergeArgs, ScansAction, ScansArgs};
use crate::exit_codes::ExitCode;
use crate::pipeline::store;
use crate::settings;
use crate::terminal::Terminal;

/// Results are written to the merged scan in batches of this many.
const MERGE_BATCH: usize = 4096;

pub(crate) fn run(args: ScansArgs, _terminal: &Terminal) -> Result<ExitCode> {
    if let Some(ScansAction::Merge(merge_args)) = args.action {
        return merge(merge_args);
    }
    if args.limit == 0 {
        anyhow::bail!("--limit 0 would list nothing: give a count of at least 1");
    }
    let db = store::open_read_only(&args.db)?;
    let scans = db.list_scans(args.limit)?;
    let rows: Vec<StoredScan> = scans
        .iter()
        .map(|s| StoredScan {
            info: &s.info,
            status: s.status.as_str(),
            n_results: s.n_results,
            n_open: s.n_open,
        })
        .collect();
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&scans_to_json(&rows))?),
        Format::Human => out!(
            "{}",
            scans_to_human(&rows, &settings::db_path(args.db.db.as_deref())?)
        ),
    }
    Ok(ExitCode::Clean)
}

/// Where a shard run is stored: the database (index into the sources) and
/// its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunAt {
    source: usize,
    id: i64,
}

/// A database shard runs are read from.
struct Source {
    /// As the user gave it (for messages and `--scan FILE:ID`).
    path: PathBuf,
    /// `None` for --db, whose store is the one written.
    store: Option<SqliteStore>,
}

fn merge(args: MergeArgs) -> Result<ExitCode> {
    let db_path = settings::db_path(args.db.db.as_deref())?;
    let mut db = store::open(&args.db)?;
    let mut sources = vec![Source {
        path: db_path.clone(),
        store: None,
    }];
    let db_identity = identity(&db_path);
    for path in &args.from {
        // The database written is read already: named again, it would offer
        // each of its runs twice.
        if db_identity.is_some() && identity(path) == db_identity {
            continue;
        }
        let store = SqliteStore::open_read_only(path)
            .with_context(|| format!("cannot read the shard runs of {}", path.display()))?;
        sources.push(Source {
            path: path.clone(),
            store: Some(store),
        });
    }

    let mut candidates: Vec<ShardRun<RunAt>> = Vec::new();
    for (source_idx, source) in sources.iter().enumerate() {
        let store = source.store.as_ref().unwrap_or(&db);
        candidates.extend(ShardRun::from_summaries(
            store.list_scans(usize::MAX)?,
            |summary| RunAt {
                source: source_idx,
                id: summary.info.id,
            },
        ));
    }
    let name = |at: &RunAt| describe(&sources, *at);
    let selection = if args.scans.is_empty() {
        Selection::Newest { seed: args.seed }
    } else {
        let mut named = Vec::new();
        for text in &args.scans {
            let at = parse_run(text, &sources)?;
            let idx = candidates
                .iter()
                .position(|run| run.source == at)
                .with_context(|| {
                    format!(
                        "--scan {text}: no shard run {} in {} (scans stored by `perimeter scan --shard K/N`)",
                        at.id,
                        sources.get(at.source).map_or(Path::new("?"), |s| &s.path).display()
                    )
                })?;
            named.push(idx);
        }
        Selection::Explicit(named)
    };
    let plan = plan_merge(&candidates, &selection, |run| name(&run.source))?;

    let mut parts = Vec::with_capacity(plan.parts.len());
    for run in plan.parts.values() {
        let store = sources
            .get(run.source.source)
            .and_then(|source| source.store.as_ref())
            .unwrap_or(&db);
        let (_, results) = store
            .load_scan(run.source.id)
            .with_context(|| format!("cannot load shard {} ({})", run.part, name(&run.source)))?;
        parts.push(results);
    }
    let (results, n_repeated) = merge_results(parts);
    let Some(info) = merged_info(&plan, |run| name(&run.source), OffsetDateTime::now_utc()) else {
        bail!("no shard runs to merge");
    };

    let merged_id = db.begin_scan(&info)?;
    for batch in results.chunks(MERGE_BATCH) {
        db.record_results(merged_id, batch)?;
    }
    db.finish_scan(
        merged_id,
        info.finished.unwrap_or(info.started),
        info.complete,
        info.n_probes,
    )?;

    let n_open = results
        .iter()
        .filter(|result| result.state == perimeter_model::PortState::Open)
        .count();
    outln!(
        "merged {} of {} shards of seed {} ({}, ports {}) into scan #{} in {}: {} results, {} open, {}",
        plan.parts.len(),
        plan.group.count,
        plan.group.seed,
        info.targets.join(" "),
        info.ports,
        merged_id,
        db_path.display(),
        results.len(),
        n_open,
        if info.complete {
            "complete"
        } else {
            "INCOMPLETE"
        }
    );
    for run in plan.parts.values() {
        outln!(
            "  shard {}: {}, {}, {} results",
            run.part,
            name(&run.source),
            run.summary.status.as_str(),
            run.summary.n_results
        );
    }
    if n_repeated > 0 {
        eprintln!(
            "perimeter: warning: {n_repeated} results were in more than one shard and were kept once (the shards did not walk the same permutation)"
        );
    }
    if info.complete {
        return Ok(ExitCode::Clean);
    }
    eprintln!(
        "perimeter: error: merged scan #{merged_id} is stored incomplete: {}",
        what_is_missing(&plan, name)
    );
    Ok(ExitCode::Error)
}

/// The parts missing and the parts incomplete, for the message.
fn what_is_missing(plan: &MergePlan<RunAt>, describe: impl Fn(&RunAt) -> String) -> String {
    let mut said = Vec::new();
    if !plan.missing.is_empty() {
        let parts: Vec<String> = plan
            .missing
            .iter()
            .map(|index| format!("{index}/{}", plan.group.count))
            .collect();
        said.push(format!(
            "{} {} missing (no run found of seed {})",
            if parts.len() == 1 { "shard" } else { "shards" },
            parts.join(", "),
            plan.group.seed
        ));
    }
    for run in plan.incomplete() {
        said.push(format!(
            "shard {} is {} ({})",
            run.part,
            run.summary.status.as_str(),
            describe(&run.source)
        ));
    }
    said.join("; ")
}

fn describe(sources: &[Source], at: RunAt) -> String {
    let path = sources
        .get(at.source)
        .map_or_else(|| "?".into(), |source| source.path.display().to_string());
    format!("{path} scan {}", at.id)
}

/// `ID` (in --db) or `FILE:ID` (in the --from database given as FILE).
fn parse_run(text: &str, sources: &[Source]) -> Result<RunAt> {
    let (file, id) = match text.rsplit_once(':') {
        Some((file, id)) => (Some(file), id),
        None => (None, text),
    };
    let id: i64 = id
        .trim()
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .with_context(|| format!("--scan {text}: expected a scan id, or FILE:ID"))?;
    let source = match file {
        None => 0,
        Some(file) => {
            let wanted = identity(Path::new(file));
            sources
                .iter()
                .position(|source| {
                    source.path == Path::new(file)
                        || (wanted.is_some() && identity(&source.path) == wanted)
                })
                .with_context(|| {
                    format!("--scan {text}: {file} is not --db or one of the --from databases")
                })?
        }
    };
    Ok(RunAt { source, id })
}

/// A file's device and inode, to tell two spellings of one database apart
/// from two databases.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|metadata| (metadata.dev(), metadata.ino()))
}
