//! A scanner node's work (issue 11), which `perimeter scanner` runs against a
//! server's API and `perimeter server` runs against its own store when it
//! keeps its state in SQLite: lease a part of a scan job, scan it as `scan
//! --shard K/N --seed S` would, renew the lease while scanning, send the run
//! under the lease, take the next.
//!
//! A node trusts the server with what to scan, within bounds: a job's options
//! are parsed as `perimeter scan`'s flags, may not name files on the node
//! (their lines would become targets), and, with `--allow-targets`, may not
//! reach outside the node's ranges. A part the node will not scan is left to
//! its lease's expiry.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args as _, FromArgMatches as _};
use ipnet::IpNet;
use perimeter_api::client::{ApiClient, ClientError};
use perimeter_api::{FinishRequest, LeaseDoc, LeaseRef, LeaseRequest, LeaseStatus, SCHEMA};
use perimeter_store::fleet::{FleetStore, LeaseCheck};
use perimeter_store::{SHARD_OPTION, encode_run};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::scan::{Executed, Job, execute, settings, udp_ports};
use crate::args::ScanArgs;

/// A part leased to this node.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    pub(crate) lease: String,
    pub(crate) job_id: i64,
    pub(crate) index: u32,
    pub(crate) shards: u32,
    pub(crate) seed: u64,
    pub(crate) scan_args: Vec<String>,
    pub(crate) lease_seconds: u32,
    pub(crate) attempt: u32,
}

/// Whether a lease still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Held {
    Yes,
    /// No: why (expired and taken by another node, the part done).
    Lost(String),
}

/// Where parts come from and runs go.
pub(crate) trait Leases: Sync {
    /// A part to scan; `None` when there is nothing to scan now.
    fn lease(&self) -> impl Future<Output = Result<Option<Part>>> + Send;
    fn renew(&self, lease: &str) -> impl Future<Output = Result<Held>> + Send;
    fn finish(&self, lease: &str, run: String) -> impl Future<Output = Result<Held>> + Send;
}

/// The server's API, with a scanner token.
pub(crate) struct ApiLeases {
    pub(crate) client: ApiClient,
    pub(crate) node: String,
    pub(crate) vantage: Option<String>,
}

fn held(answer: Result<LeaseStatus, ClientError>) -> Result<Held> {
    match answer {
        Ok(_) => Ok(Held::Yes),
        Err(ClientError::Refused { doc, .. }) if doc.error == "lease_lost" => {
            Ok(Held::Lost(doc.message))
        }
        Err(err) => Err(err.into()),
    }
}

impl Leases for ApiLeases {
    async fn lease(&self) -> Result<Option<Part>> {
        let path = format!("{}/leases", perimeter_api::PREFIX);
        let answer: Option<LeaseDoc> = self
            .client
            .post_json_or_none(
                &path,
                &LeaseRequest {
                    schema: SCHEMA.to_owned(),
                    node: self.node.clone(),
                    vantage: self.vantage.clone(),
                },
            )
            .await?;
        Ok(answer.map(|doc| Part {
            lease: doc.lease,
            job_id: doc.job.id,
            index: doc.index,
            shards: doc.job.shards,
            seed: doc.job.seed,
            scan_args: doc.job.scan_args,
            lease_seconds: doc.job.lease_seconds,
            attempt: doc.attempt,
        }))
    }

    async fn renew(&self, lease: &str) -> Result<Held> {
        let path = format!("{}/leases/renew", perimeter_api::PREFIX);
        held(
            self.client
                .post_json(
                    &path,
                    &LeaseRef {
                        schema: SCHEMA.to_owned(),
                        lease: lease.to_owned(),
                    },
                )
                .await,
        )
    }

    async fn finish(&self, lease: &str, run: String) -> Result<Held> {
        let path = format!("{}/leases/finish", perimeter_api::PREFIX);
        let run = serde_json::from_str(&run).context("cannot encode the run")?;
        held(
            self.client
                .post_json(
                    &path,
                    &FinishRequest {
                        schema: SCHEMA.to_owned(),
                        lease: lease.to_owned(),
                        run,
                    },
                )
                .await,
        )
    }
}

/// The server's own store (a server on SQLite runs its jobs itself, as
/// one part, from here).
pub(crate) struct StoreLeases {
    pub(crate) store: Arc<Mutex<Box<dyn FleetStore>>>,
    pub(crate) node: String,
}

impl StoreLeases {
    async fn with<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn FleetStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
            op(store.as_mut())
        })
        .await
        .context("the store's task failed")?
    }
}

fn held_of(check: LeaseCheck) -> Held {
    match check {
        LeaseCheck::Held { .. } => Held::Yes,
        LeaseCheck::Lost(why) => Held::Lost(why),
    }
}

impl Leases for StoreLeases {
    async fn lease(&self) -> Result<Option<Part>> {
        let node = self.node.clone();
        let token = perimeter_server::new_lease_token();
        let lease = self
            .with(move |store| {
                Ok(store.lease_shard(&node, None, &token, OffsetDateTime::now_utc())?)
            })
            .await?;
        Ok(lease.map(|lease| Part {
            job_id: lease.job.id,
            index: lease.index,
            shards: lease.job.shards,
            seed: lease.job.seed,
            lease_seconds: lease.job.lease_seconds,
            attempt: lease.attempt,
            scan_args: lease.job.scan_args,
            lease: lease.token,
        }))
    }

    async fn renew(&self, lease: &str) -> Result<Held> {
        let lease = lease.to_owned();
        let check = self
            .with(move |store| Ok(store.renew_lease(&lease, OffsetDateTime::now_utc())?))
            .await?;
        Ok(held_of(check))
    }

    async fn finish(&self, lease: &str, run: String) -> Result<Held> {
        let lease = lease.to_owned();
        let check = self
            .with(move |store| Ok(store.finish_shard(&lease, OffsetDateTime::now_utc(), &run)?))
            .await?;
        Ok(held_of(check))
    }
}

/// How a node runs.
#[derive(Debug, Clone)]
pub(crate) struct NodeOptions {
    /// For messages.
    pub(crate) name: String,
    /// Targets must fall inside these (none: anything the server asks).
    pub(crate) allow: Vec<IpNet>,
    /// The wait before asking again when there is nothing to scan, or the
    /// server could not be reached.
    pub(crate) poll: Duration,
    /// Stop when there is nothing left to scan.
    pub(crate) once: bool,
}

/// What a node did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) done: u32,
    /// Parts whose lease was lost (expired and taken by another node).
    pub(crate) lost: u32,
    /// Parts this node would not scan.
    pub(crate) refused: u32,
}

/// Asking for work failed this many times in a row in `once` mode: the
/// node gives up.
const ONCE_ATTEMPTS: u32 = 5;
/// A run is sent this many times at most while the server cannot be
/// reached (the lease is renewed in between by nobody: it may expire).
const FINISH_ATTEMPTS: u32 = 4;

/// Leases, scans and sends parts until `stop`, or (with `once`) until
/// there is nothing left to scan.
pub(crate) async fn run_node<L: Leases>(
    leases: &L,
    options: &NodeOptions,
    stop: &CancellationToken,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut failures = 0;
    while !stop.is_cancelled() {
        let part = match leases.lease().await {
            Ok(part) => {
                failures = 0;
                part
            }
            Err(err) => {
                failures += 1;
                eprintln!(
                    "perimeter scanner {}: cannot ask for work: {err:#}",
                    options.name
                );
                if options.once && failures >= ONCE_ATTEMPTS {
                    return Err(err.context(format!("gave up after {failures} attempts")));
                }
                pause(options.poll, stop).await;
                continue;
            }
        };
        let Some(part) = part else {
            if options.once {
                break;
            }
            pause(options.poll, stop).await;
            continue;
        };
        match scan_part(leases, &part, options, stop).await {
            Outcome::Done => tally.done += 1,
            Outcome::Lost => tally.lost += 1,
            Outcome::Refused => {
                tally.refused += 1;
                // The part stays leased to us until it expires: asking again
                // at once would only be told there is nothing else.
                pause(options.poll, stop).await;
            }
            Outcome::Stopped => break,
        }
    }
    Ok(tally)
}

async fn pause(wait: Duration, stop: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = stop.cancelled() => {}
    }
}

enum Outcome {
    Done,
    Lost,
    Refused,
    Stopped,
}

/// The `perimeter scan` flags of a part: the job's options, its shard and
/// seed; refused when they name files or reach outside `allow`.
pub(crate) fn part_args(part: &Part, allow: &[IpNet]) -> Result<ScanArgs> {
    let mut argv = part.scan_args.clone();
    argv.extend([
        "--shard".to_owned(),
        format!("{}/{}", part.index, part.shards),
        "--seed".to_owned(),
        part.seed.to_string(),
    ]);
    let command = ScanArgs::augment_args(clap::Command::new("scan").no_binary_name(true));
    let matches = command
        .try_get_matches_from(&argv)
        .map_err(|err| anyhow!("{}", err.render().to_string().trim_end()))?;
    let args = ScanArgs::from_arg_matches(&matches).map_err(|err| anyhow!("{err}"))?;
    if !args.targets_file.is_empty() || !args.exclude_file.is_empty() {
        bail!(
            "the job names files (--targets-file, --exclude-file), which would be read on this node: give targets inline"
        );
    }
    if !allow.is_empty() {
        for target in &args.targets {
            if !within(target, allow) {
                bail!(
                    "target {target} is not inside this node's --allow-targets ({})",
                    allow
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    Ok(args)
}

/// Whether a target (an address, a CIDR or a range `a-b`) lies inside one
/// of `allow`; a host name never does (it could resolve anywhere).
fn within(target: &str, allow: &[IpNet]) -> bool {
    let inside = |net: &IpNet| allow.iter().any(|allowed| allowed.contains(net));
    if let Ok(net) = target.parse::<IpNet>() {
        return inside(&net);
    }
    if let Ok(address) = target.parse::<IpAddr>() {
        return inside(&IpNet::from(address));
    }
    if let Some((start, end)) = target.split_once('-')
        && let (Ok(start), Ok(end)) = (start.trim().parse::<IpAddr>(), end.trim().parse::<IpAddr>())
    {
        return allow
            .iter()
            .any(|allowed| allowed.contains(&start) && allowed.contains(&end));
    }
    false
}

async fn scan_part<L: Leases>(
    leases: &L,
    part: &Part,
    options: &NodeOptions,
    stop: &CancellationToken,
) -> Outcome {
    let name = &options.name;
    let what = format!(
        "job {} part {}/{} (attempt {})",
        part.job_id, part.index, part.shards, part.attempt
    );
    let prepared = part_args(part, &options.allow).and_then(|args| {
        let settings = settings(&args)?;
        Ok((udp_ports(&args.tuning)?, args, settings))
    });
    let (udp, args, settings) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => {
            eprintln!("perimeter scanner {name}: will not scan {what}: {err:#}");
            return Outcome::Refused;
        }
    };
    eprintln!("perimeter scanner {name}: scanning {what}");
    let cancel = stop.child_token();
    let lost: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let every = Duration::from_secs(u64::from(part.lease_seconds.max(3) / 3));
    let renewing = async {
        loop {
            tokio::time::sleep(every).await;
            match leases.renew(&part.lease).await {
                Ok(Held::Yes) => {}
                Ok(Held::Lost(why)) => {
                    *lost.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
                    cancel.cancel();
                    return;
                }
                // The server out of reach for a moment: the lease may still
                // hold when it is back.
                Err(err) => eprintln!("perimeter scanner {name}: cannot renew {what}: {err:#}"),
            }
        }
    };
    let job = Job {
        request: settings.request,
        ports: settings.ports,
        options: settings.options,
        db: None,
        all_states: args.all_states,
        jsonl: false,
        progress: false,
        record: BTreeMap::from([(
            SHARD_OPTION.to_owned(),
            format!("{}/{}", part.index, part.shards),
        )]),
        syn: args.tuning.syn,
        tcp: !args.tuning.udp || args.tuning.tcp,
        udp_ports: udp,
        cancel: Some(cancel.clone()),
    };
    let scan = execute(job);
    tokio::pin!(scan);
    let executed = tokio::select! {
        biased;
        executed = &mut scan => executed,
        // The lease was lost and the scan cancelled: let it wind down.
        () = renewing => scan.await,
    };
    if let Some(why) = lost.lock().unwrap_or_else(PoisonError::into_inner).take() {
        eprintln!("perimeter scanner {name}: lost {what}: {why}");
        return Outcome::Lost;
    }
    if stop.is_cancelled() {
        eprintln!("perimeter scanner {name}: stopped during {what}: its lease will expire");
        return Outcome::Stopped;
    }
    let Executed { info, results, .. } = match executed {
        Ok(executed) => executed,
        Err(err) => {
            eprintln!("perimeter scanner {name}: {what} failed: {err:#}");
            return Outcome::Refused;
        }
    };
    if !info.complete {
        eprintln!("perimeter scanner {name}: {what} did not finish: its lease will expire");
        return Outcome::Refused;
    }
    let run = match encode_run(&info, &results) {
        Ok(run) => run,
        Err(err) => {
            eprintln!("perimeter scanner {name}: cannot encode {what}: {err}");
            return Outcome::Refused;
        }
    };
    let n_open = results
        .iter()
        .filter(|result| result.state == perimeter_model::PortState::Open)
        .count();
    for attempt in 1..=FINISH_ATTEMPTS {
        match leases.finish(&part.lease, run.clone()).await {
            Ok(Held::Yes) => {
                eprintln!(
                    "perimeter scanner {name}: done {what}: {} probes, {} results, {n_open} open",
                    info.n_probes,
                    results.len()
                );
                return Outcome::Done;
            }
            Ok(Held::Lost(why)) => {
                eprintln!("perimeter scanner {name}: results of {what} refused: {why}");
                return Outcome::Lost;
            }
            Err(err) => {
                eprintln!(
                    "perimeter scanner {name}: cannot send {what} (attempt {attempt} of {FINISH_ATTEMPTS}): {err:#}"
                );
                pause(options.poll, stop).await;
            }
        }
    }
    Outcome::Refused
}
