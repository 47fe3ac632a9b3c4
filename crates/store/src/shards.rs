//! Merging the shards of a scan (`perimeter scans merge`, issue 11): which
//! stored runs are the parts of one scan, which run of each part to take,
//! and the one scan they make together. Pure functions over loaded records,
//! like the diffs, so they do not care which database each run came from
//! (each batch job may have written its own).
//!
//! The parts of one scan share its whole target key (targets, excludes,
//! ports), its seed, the shard count N and the technique (connect, syn,
//! udp): the same permutation, cut the same way. Of each part K the newest
//! complete run is taken, else the newest run of any status (which leaves
//! the merged scan incomplete). The merged scan is complete only when all N
//! parts are there and complete.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;

use perimeter_model::{PortResult, Protocol, ScanInfo};
use time::OffsetDateTime;

use crate::target_key::{SHARD_OPTION, TargetKey};
use crate::{ScanStatus, ScanSummary};

/// The option the merged scan records its shard count under.
pub const MERGED_SHARDS_OPTION: &str = "merged_shards";
/// The option the merged scan records its parts under: `K/N=SOURCE#ID`,
/// comma-separated.
pub const MERGED_FROM_OPTION: &str = "merged_from";

/// A part of a scan, as recorded: K (from 0) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardPart {
    pub index: u32,
    pub count: u32,
}

impl ShardPart {
    /// The part a stored scan is, from its [`SHARD_OPTION`]; `None` for a
    /// scan that is not a shard (or whose record is not `K/N` with K < N).
    pub fn of(info: &ScanInfo) -> Option<ShardPart> {
        let (index, count) = info.options.get(SHARD_OPTION)?.split_once('/')?;
        let (index, count) = (index.parse().ok()?, count.parse().ok()?);
        (index < count).then_some(ShardPart { index, count })
    }
}

impl fmt::Display for ShardPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A stored shard run, and where it is stored (`S`: the CLI's database
/// path and scan id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRun<S> {
    pub source: S,
    pub summary: ScanSummary,
    pub part: ShardPart,
}

impl<S> ShardRun<S> {
    /// The stored runs that are shards, each with its part.
    pub fn from_summaries(
        summaries: impl IntoIterator<Item = ScanSummary>,
        source: impl Fn(&ScanSummary) -> S,
    ) -> Vec<ShardRun<S>> {
        summaries
            .into_iter()
            .filter_map(|summary| {
                let part = ShardPart::of(&summary.info)?;
                Some(ShardRun {
                    source: source(&summary),
                    summary,
                    part,
                })
            })
            .collect()
    }

    fn group(&self) -> ScanGroup {
        ScanGroup {
            key: TargetKey::of_whole(&self.summary.info),
            seed: self.summary.info.seed,
            count: self.part.count,
            technique: self.summary.info.options.get("technique").cloned(),
        }
    }

    fn is_complete(&self) -> bool {
        self.summary.status == ScanStatus::Complete
    }
}

/// What the parts of one scan share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScanGroup {
    /// The whole scan's target key, which the merge is stored under.
    pub key: TargetKey,
    pub seed: u64,
    /// N.
    pub count: u32,
    /// `connect`, `syn`, `udp`, `connect+udp`, ... as recorded.
    pub technique: Option<String>,
}

/// Which runs to merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The scan of the newest shard run (of this seed, when given): the
    /// newest complete run of each of its parts.
    Newest { seed: Option<u64> },
    /// Exactly these runs (by position in the candidates): parts of one
    /// scan, one run per part.
    Explicit(Vec<usize>),
}

/// The runs to merge, and what is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergePlan<S> {
    pub group: ScanGroup,
    /// One run per part present, by K.
    pub parts: BTreeMap<u32, ShardRun<S>>,
    /// The parts with no run.
    pub missing: Vec<u32>,
}

impl<S> MergePlan<S> {
    /// The runs taken that are not complete (running, stopped or
    /// interrupted).
    pub fn incomplete(&self) -> impl Iterator<Item = &ShardRun<S>> {
        self.parts.values().filter(|run| !run.is_complete())
    }

    /// Every part there and complete.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.incomplete().next().is_none()
    }
}

/// Why runs cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("no shard runs found (scans stored by `perimeter scan --shard K/N`)")]
    NoShards,
    #[error("no shard runs of seed {0} found")]
    NoShardsOfSeed(u64),
    #[error(
        "the runs named are not parts of one scan: {first} and {other} differ in {what} (the parts of a scan share targets, excludes, ports, seed, shard count and technique)"
    )]
    NotOneScan {
        first: String,
        other: String,
        what: &'static str,
    },
    #[error("two runs of part {part} were named ({first} and {other}): name one run per part")]
    TwicePart {
        part: ShardPart,
        first: String,
        other: String,
    },
    #[error("run {0} named is not a shard run")]
    NoSuchRun(usize),
}

/// Chooses the runs to merge among `candidates` (every shard run found in
/// every database); `describe` names a run in errors.
pub fn plan_merge<S: Clone>(
    candidates: &[ShardRun<S>],
    selection: &Selection,
    describe: impl Fn(&ShardRun<S>) -> String,
) -> Result<MergePlan<S>, MergeError> {
    match selection {
        Selection::Newest { seed } => {
            // Newest by start time: ids of different databases do not compare.
            let newest = candidates
                .iter()
                .filter(|run| seed.is_none_or(|seed| run.summary.info.seed == seed))
                .max_by_key(|run| run.summary.info.started)
                .ok_or(match seed {
                    Some(seed) => MergeError::NoShardsOfSeed(*seed),
                    None => MergeError::NoShards,
                })?;
            let group = newest.group();
            let mut parts: BTreeMap<u32, ShardRun<S>> = BTreeMap::new();
            for run in candidates.iter().filter(|run| run.group() == group) {
                let better = match parts.get(&run.part.index) {
                    None => true,
                    // A complete run over an incomplete one, else the newer.
                    Some(taken) => {
                        (run.is_complete(), run.summary.info.started)
                            > (taken.is_complete(), taken.summary.info.started)
                    }
                };
                if better {
                    parts.insert(run.part.index, run.clone());
                }
            }
            Ok(plan(group, parts))
        }
        Selection::Explicit(named) => {
            // A run named twice is named once.
            let mut seen = BTreeSet::new();
            let mut chosen = named
                .iter()
                .filter(|&&idx| seen.insert(idx))
                .map(|&idx| candidates.get(idx).ok_or(MergeError::NoSuchRun(idx)));
            let Some(first) = chosen.next().transpose()? else {
                return Err(MergeError::NoShards);
            };
            let group = first.group();
            let mut parts = BTreeMap::from([(first.part.index, first.clone())]);
            for run in chosen {
                let run = run?;
                let other = run.group();
                let what = if other.key != group.key {
                    Some("targets, excludes or ports")
                } else if other.seed != group.seed {
                    Some("seed")
                } else if other.count != group.count {
                    Some("shard count")
                } else if other.technique != group.technique {
                    Some("technique")
                } else {
                    None
                };
                if let Some(what) = what {
                    return Err(MergeError::NotOneScan {
                        first: describe(first),
                        other: describe(run),
                        what,
                    });
                }
                if let Some(taken) = parts.get(&run.part.index) {
                    return Err(MergeError::TwicePart {
                        part: run.part,
                        first: describe(taken),
                        other: describe(run),
                    });
                }
                parts.insert(run.part.index, run.clone());
            }
            Ok(plan(group, parts))
        }
    }
}

fn plan<S>(group: ScanGroup, parts: BTreeMap<u32, ShardRun<S>>) -> MergePlan<S> {
    let missing = (0..group.count)
        .filter(|index| !parts.contains_key(index))
        .collect();
    MergePlan {
        group,
        parts,
        missing,
    }
}

/// The merged scan's record: the newest part's targets, ports, profile and
/// options (less the shard, so it is stored under the whole target key),
/// every host name any part resolved, the earliest start and latest finish,
/// the probes of all parts, and complete only when every part is there and
/// complete. `from` names each part's run for [`MERGED_FROM_OPTION`].
pub fn merged_info<S>(
    plan: &MergePlan<S>,
    from: impl Fn(&ShardRun<S>) -> String,
    now: OffsetDateTime,
) -> Option<ScanInfo> {
    let newest = plan
        .parts
        .values()
        .max_by_key(|run| run.summary.info.started)?;
    let mut info = newest.summary.info.clone();
    info.id = 0;
    info.options.remove(SHARD_OPTION);
    info.options.insert(
        MERGED_SHARDS_OPTION.to_owned(),
        plan.group.count.to_string(),
    );
    info.options.insert(
        MERGED_FROM_OPTION.to_owned(),
        plan.parts
            .values()
            .map(|run| format!("{}={}", run.part, from(run)))
            .collect::<Vec<_>>()
            .join(","),
    );
    let mut names: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for run in plan.parts.values() {
        for (name, addresses) in &run.summary.info.resolved {
            let known = names.entry(name.clone()).or_default();
            for address in addresses {
                if !known.contains(address) {
                    known.push(*address);
                }
            }
        }
    }
    info.resolved = names.into_iter().collect();
    info.started = plan
        .parts
        .values()
        .map(|run| run.summary.info.started)
        .min()
        .unwrap_or(now);
    info.finished = Some(
        plan.parts
            .values()
            .filter_map(|run| run.summary.info.finished)
            .max()
            .unwrap_or(now),
    );
    info.complete = plan.is_complete();
    info.n_probes = plan
        .parts
        .values()
        .map(|run| run.summary.info.n_probes)
        .fold(0u64, u64::saturating_add);
    Some(info)
}

/// The union of the parts' results, each (address, port, protocol) once
/// (the first part's, in K order, should two parts hold it: they cannot
/// when both walked the same permutation), and how many were dropped as
/// repeats.
pub fn merge_results(parts: impl IntoIterator<Item = Vec<PortResult>>) -> (Vec<PortResult>, u64) {
    let mut seen: HashSet<(IpAddr, u16, Protocol)> = HashSet::new();
    let mut merged = Vec::new();
    let mut n_repeated = 0u64;
    for results in parts {
        for result in results {
            if seen.insert((result.address, result.port, result.protocol)) {
                merged.push(result);
            } else {
                n_repeated += 1;
            }
        }
    }
    (merged, n_repeated)
}

#[cfg(test)]
mod tests {
    use perimeter_model::PortState;
    use time::macros::datetime;

    use super::*;

    fn run(
        id: i64,
        part: &str,
        seed: u64,
        status: ScanStatus,
        minute: u8,
    ) -> ShardRun<&'static str> {
        let info = ScanInfo {
            id,
            targets: vec!["198.18.0.0/24".into()],
            resolved: Vec::new(),
            excluded: Vec::new(),
            ports: "22,80".into(),
            profile: "normal".into(),
            seed,
            options: BTreeMap::from([
                (SHARD_OPTION.to_owned(), part.to_owned()),
                ("technique".to_owned(), "connect".to_owned()),
            ]),
            started: datetime!(2024-05-01 10:00 UTC) + time::Duration::minutes(i64::from(minute)),
            finished: Some(datetime!(2024-05-01 11:00 UTC)),
            complete: status == ScanStatus::Complete,
            n_probes: 10,
        };
        let summary = ScanSummary {
            target_key: TargetKey::of(&info),
            info,
            status,
            n_results: 0,
            n_open: 0,
        };
        ShardRun::from_summaries([summary], |_| "db")
            .pop()
            .expect("a shard")
    }

    fn describe(run: &ShardRun<&'static str>) -> String {
        format!("scan {}", run.summary.info.id)
    }

    fn ids<S>(plan: &MergePlan<S>) -> Vec<(u32, i64)> {
        plan.parts
            .iter()
            .map(|(k, run)| (*k, run.summary.info.id))
            .collect()
    }

    #[test]
    fn the_newest_scan_and_the_best_run_of_each_part() {
        use ScanStatus::{Complete, Interrupted};
        let candidates = vec![
            run(1, "0/3", 7, Complete, 1),
            run(2, "1/3", 7, Complete, 2),
            run(3, "1/3", 7, Interrupted, 5),
            run(4, "2/3", 7, Complete, 3),
            run(5, "0/3", 7, Complete, 4),
            // An older scan of another seed, and one cut in two.
            run(6, "0/2", 7, Complete, 0),
            run(7, "2/3", 9, Complete, 0),
        ];
        let plan =
            plan_merge(&candidates, &Selection::Newest { seed: None }, describe).expect("a plan");
        // Part 1's newest run is interrupted: its complete run is taken.
        assert_eq!(ids(&plan), [(0, 5), (1, 2), (2, 4)]);
        assert!(plan.is_complete());
        assert_eq!(plan.group.seed, 7);
        assert_eq!(plan.group.count, 3);

        let of_nine = plan_merge(&candidates, &Selection::Newest { seed: Some(9) }, describe)
            .expect("a plan");
        assert_eq!(ids(&of_nine), [(2, 7)]);
        assert_eq!(of_nine.missing, [0, 1]);
        assert!(!of_nine.is_complete());
        assert_eq!(
            plan_merge(&candidates, &Selection::Newest { seed: Some(8) }, describe),
            Err(MergeError::NoShardsOfSeed(8))
        );
        assert_eq!(
            plan_merge(&[], &Selection::Newest { seed: None }, describe),
            Err(MergeError::NoShards)
        );

        // Only an interrupted run of a part: taken, and the merge incomplete.
        let plan = plan_merge(
            &candidates[1..4],
            &Selection::Newest { seed: None },
            describe,
        )
        .expect("a plan");
        assert_eq!(ids(&plan), [(1, 2), (2, 4)]);
        assert_eq!(plan.missing, [0]);
        let plan = plan_merge(
            &[candidates[2].clone(), candidates[3].clone()],
            &Selection::Newest { seed: None },
            describe,
        )
        .expect("a plan");
        assert_eq!(
            plan.incomplete()
                .map(|run| run.part.index)
                .collect::<Vec<_>>(),
            [1]
        );
    }

    #[test]
    fn named_runs_must_be_parts_of_one_scan_once_each() {
        use ScanStatus::Complete;
        let candidates = vec![
            run(1, "0/3", 7, Complete, 1),
            run(2, "1/3", 7, Complete, 2),
            run(3, "1/3", 7, Complete, 5),
            run(4, "0/2", 7, Complete, 3),
            run(5, "2/3", 8, Complete, 3),
        ];
        let plan =
            plan_merge(&candidates, &Selection::Explicit(vec![0, 2]), describe).expect("a plan");
        assert_eq!(ids(&plan), [(0, 1), (1, 3)]);
        assert_eq!(plan.missing, [2]);
        assert_eq!(
            plan_merge(&candidates, &Selection::Explicit(vec![0, 1, 2]), describe)
                .map_err(|e| e.to_string()),
            Err(
                "two runs of part 1/3 were named (scan 2 and scan 3): name one run per part".into()
            )
        );
        assert!(matches!(
            plan_merge(&candidates, &Selection::Explicit(vec![0, 3]), describe),
            Err(MergeError::NotOneScan {
                what: "shard count",
                ..
            })
        ));
        assert!(matches!(
            plan_merge(&candidates, &Selection::Explicit(vec![0, 4]), describe),
            Err(MergeError::NotOneScan { what: "seed", .. })
        ));
        assert_eq!(
            plan_merge(&candidates, &Selection::Explicit(vec![9]), describe),
            Err(MergeError::NoSuchRun(9))
        );
    }

    #[test]
    fn the_merged_record_is_the_whole_scan() {
        use ScanStatus::{Complete, Incomplete};
        let mut second = run(2, "1/2", 7, Complete, 2);
        second.summary.info.resolved =
            vec![("lab".into(), vec!["198.18.0.1".parse().expect("ip")])];
        let candidates = vec![run(1, "0/2", 7, Complete, 1), second];
        let plan =
            plan_merge(&candidates, &Selection::Newest { seed: None }, describe).expect("a plan");
        let info = merged_info(&plan, describe, datetime!(2024-05-02 00:00 UTC)).expect("info");
        assert!(info.complete);
        assert_eq!(info.n_probes, 20);
        assert_eq!(info.started, datetime!(2024-05-01 10:01 UTC));
        assert_eq!(info.resolved.len(), 1);
        assert_eq!(ShardPart::of(&info), None);
        assert_eq!(TargetKey::of(&info), TargetKey::of_whole(&info));
        assert_eq!(
            info.options.get(MERGED_FROM_OPTION).map(String::as_str),
            Some("0/2=scan 1,1/2=scan 2")
        );
        assert_eq!(
            info.options.get(MERGED_SHARDS_OPTION).map(String::as_str),
            Some("2")
        );

        let plan = plan_merge(
            &[
                run(1, "0/2", 7, Incomplete, 1),
                run(2, "1/2", 7, Complete, 2),
            ],
            &Selection::Newest { seed: None },
            describe,
        )
        .expect("a plan");
        let info = merged_info(&plan, describe, datetime!(2024-05-02 00:00 UTC)).expect("info");
        assert!(!info.complete);
    }

    #[test]
    fn results_are_a_union_each_port_once() {
        let result = |address: &str, port: u16, state: PortState| PortResult {
            address: address.parse().expect("ip"),
            port,
            protocol: Protocol::Tcp,
            state,
            service: None,
            findings: Vec::new(),
        };
        let (merged, n_repeated) = merge_results([
            vec![
                result("198.18.0.1", 22, PortState::Open),
                result("198.18.0.2", 22, PortState::Closed),
            ],
            vec![
                result("198.18.0.1", 80, PortState::Open),
                result("198.18.0.1", 22, PortState::Closed),
            ],
        ]);
        assert_eq!(n_repeated, 1);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0].state, PortState::Open);
    }
}
