//! The server benchmark's load generator (issue 9): N simulated agents
//! reporting to a running `perimeter server`, as `bench/server-ingest.sh`
//! drives it. Not the real agent: no audit, no state directory, no queue on
//! disk; the same documents, signatures and connection behaviour.
//!
//! - Each agent has its own ed25519 key and enrols once with the enrolment
//!   secret, then sends one full report of its host: 100 listeners (80 TCP,
//!   20 UDP; a quarter each on 0.0.0.0, 127.0.0.1, 198.18.x.y and ::, one
//!   owner each, with exe, package and user) and 5 findings, about 20 KB of
//!   JSON. Both steps run closed-loop with `--concurrency` requests in flight
//!   (a fleet's rollout, measured but not judged).
//! - Then every agent reports once per `--interval-secs` (60 by default), at
//!   its own offset: the N agents' reports are spread evenly over the
//!   interval and sent open-loop (at their scheduled time whether or not
//!   earlier ones were answered), so a slow server shows up as queueing in
//!   the latency rather than as a slower sender. The reports are deltas:
//!   with probability `--change-percent` (3 by default) a change (two in
//!   three: one listener's owner restarted, a new pid, an upsert of that
//!   listener; one in three: a 101st listener appears, or goes if it was
//!   there), otherwise an empty delta (the heartbeat). The choice is a hash
//!   of (agent, report), so every run sends the same mix.
//! - Every request is made as the real agent makes it: `ApiClient` built
//!   anew for each report (the agent builds one per flush), so each report
//!   opens a new TCP connection and does a full TLS 1.3 handshake, signed
//!   with the agent's key.
//!
//! The latency of a heartbeat is measured from its scheduled time to the end
//! of the answer (queueing in the generator counts against the server, so
//! the figure is pessimistic when the generator is starved of CPU; the lag
//! between schedule and start is reported beside it). Reports scheduled in
//! the first `--discard-secs` of the heartbeat phase are sent but left out of
//! the statistics.
//!
//! Output: one JSON document on standard output (phases, percentiles,
//! errors by kind, the server's CPU and memory at each phase's end when
//! `--server-pid` is given, and what `--hook` printed at each phase's end).
//!
//! ```sh
//! cargo build --release -p perimeter-cli --examples
//! target/release/examples/loadgen --server https://127.0.0.1:8443 \
//!     --fingerprint sha256:... --secret-file secret --agents 1000 --minutes 2
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use perimeter_api::client::{ApiClient, Auth, ClientError, Trust};
use perimeter_api::sign::AgentKey;
use perimeter_api::{
    EnrolRequest, EnrolResponse, FindingDoc, HostState, ListenerDoc, OwnerDoc, Report, ReportAck,
    SCHEMA, StateDelta,
};
use time::OffsetDateTime;
use tokio::sync::Semaphore;

/// Listeners of every simulated host (the issue's figure).
const N_LISTENERS: usize = 100;
const REPORTS_PATH: &str = "/api/v1/reports";
const ENROL_PATH: &str = "/api/v1/enrol";

#[derive(Debug, Parser)]
#[command(about = "simulated agents reporting to perimeter server (bench/server-ingest.sh)")]
struct Args {
    /// The server, https://HOST:PORT (loopback or a lab namespace only).
    #[arg(long)]
    server: String,
    /// The server certificate's fingerprint, as `perimeter server` prints it.
    #[arg(long)]
    fingerprint: String,
    /// The enrolment secret's file.
    #[arg(long)]
    secret_file: PathBuf,
    /// Simulated agents.
    #[arg(long)]
    agents: usize,
    /// How long the heartbeat phase lasts, in minutes (fractions allowed).
    #[arg(long, default_value = "2")]
    minutes: f64,
    /// Each agent's reporting period.
    #[arg(long, default_value = "60")]
    interval_secs: f64,
    /// Heartbeats scheduled in the first seconds of the phase are sent but
    /// not counted.
    #[arg(long, default_value = "20")]
    discard_secs: f64,
    /// Percent of heartbeats that carry a change.
    #[arg(long, default_value = "3")]
    change_percent: u64,
    /// Requests in flight during enrolment and the full reports.
    #[arg(long, default_value = "32")]
    concurrency: usize,
    /// The server's pid: its CPU time and memory are read at each phase's end.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A shell command run at each phase's end with the phase's name as $1;
    /// what it prints goes into the output (the database's size, say).
    #[arg(long)]
    hook: Option<String>,
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    /// The server answered with an error document: its code.
    Refused(&'static str),
    Unreachable,
    Other,
}

impl Outcome {
    fn of(result: &Result<(), ClientError>) -> Outcome {
        match result {
            Ok(()) => Outcome::Ok,
            Err(ClientError::Refused { doc, .. }) => Outcome::Refused(match doc.error.as_str() {
                "rate_limited" => "rate_limited",
                "out_of_order" => "out_of_order",
                "forked" => "forked",
                "need_full" => "need_full",
                "too_large" => "too_large",
                "bad_request" => "bad_request",
                "unauthenticated" => "unauthenticated",
                "clock_skew" => "clock_skew",
                "internal" => "internal",
                _ => "other_refusal",
            }),
            Err(ClientError::Unreachable { .. }) => Outcome::Unreachable,
            Err(_) => Outcome::Other,
        }
    }

    fn name(self) -> String {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::Refused(code) => format!("refused:{code}"),
            Outcome::Unreachable => "unreachable".into(),
            Outcome::Other => "other".into(),
        }
    }
}

/// One simulated agent.
struct SimAgent {
    idx: usize,
    key: Arc<AgentKey>,
    id: String,
    hostname: String,
    /// The next report's sequence number.
    seq: AtomicU64,
    /// Owner restarts so far (each gives the restarted listener new pids).
    generation: AtomicU64,
    /// Whether the 101st listener is there.
    extra: std::sync::atomic::AtomicBool,
}

/// 64-bit mix (splitmix64's finaliser): the mix of reports without a random
/// source, the same in every run.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Listener `j` of agent `agent`, its owner at `generation`.
fn listener(agent: usize, j: usize, generation: u64) -> ListenerDoc {
    let (address, scope) = match j % 4 {
        0 => ("0.0.0.0".to_owned(), "wildcard"),
        1 => ("127.0.0.1".to_owned(), "loopback"),
        2 => (
            format!("198.18.{}.{}", (agent / 250) % 256, agent % 250 + 1),
            "private",
        ),
        _ => ("::".to_owned(), "wildcard"),
    };
    let service = j / 4;
    ListenerDoc {
        netns: "host".into(),
        protocol: if j < 80 { "tcp" } else { "udp" }.into(),
        address,
        port: 1024 + (j as u16) * 37 + (agent % 30) as u16,
        scope: scope.into(),
        owners: vec![OwnerDoc {
            pid: 1000 + service as u32 * 3 + generation as u32 * 131,
            name: format!("svc{service}d"),
            exe: Some(format!("/usr/sbin/svc{service}d")),
            package: Some(format!("svc{service}-server")),
            user: if service.is_multiple_of(3) {
                "root".into()
            } else {
                format!("svc{service}")
            },
        }],
        reach: None,
    }
}

fn host_state(agent: usize, hostname: &str) -> HostState {
    let findings = (0..5)
        .map(|n| FindingDoc {
            rule: format!("listener.unapproved-{n}"),
            severity: ["low", "medium", "high"][n % 3].into(),
            subject: format!("tcp 0.0.0.0:{}", 1024 + n * 37),
            message: "a listener beyond loopback that no approval covers".into(),
            evidence: vec![format!("svc{n}d (pid {}) as root", 1000 + n * 3)],
            remedy: "approve it with a reason, or bind it to loopback".into(),
        })
        .collect();
    let mut state = HostState {
        hostname: hostname.to_owned(),
        listeners: (0..N_LISTENERS).map(|j| listener(agent, j, 0)).collect(),
        findings,
    };
    state.canonicalise();
    state
}

/// The next heartbeat's delta of `agent` (its `k`th), and what changed.
fn heartbeat_delta(agent: &SimAgent, k: u64, change_percent: u64) -> (StateDelta, &'static str) {
    let roll = mix(((agent.idx as u64) << 32) ^ k ^ 0x5eed) % 300;
    let mut delta = StateDelta::default();
    if roll < change_percent * 2 {
        let j = (mix(roll ^ k ^ agent.idx as u64) % N_LISTENERS as u64) as usize;
        let generation = agent.generation.fetch_add(1, Ordering::Relaxed) + 1;
        delta.upsert.push(listener(agent.idx, j, generation));
        (delta, "owner_restarted")
    } else if roll < change_percent * 3 {
        let extra = listener(agent.idx, N_LISTENERS, 0);
        if agent.extra.fetch_xor(true, Ordering::Relaxed) {
            delta.remove.push(ListenerDoc {
                owners: Vec::new(),
                ..extra
            });
            (delta, "listener_gone")
        } else {
            delta.upsert.push(extra);
            (delta, "listener_new")
        }
    } else {
        (delta, "empty")
    }
}

fn report(
    agent: &SimAgent,
    seq: u64,
    full: Option<HostState>,
    delta: Option<StateDelta>,
) -> Report {
    Report {
        schema: SCHEMA.into(),
        agent_id: agent.id.clone(),
        seq,
        taken_at: OffsetDateTime::now_utc(),
        hostname: agent.hostname.clone(),
        full,
        delta,
        events: Vec::new(),
        dropped_events: 0,
    }
}

/// Sends a report as the agent does: a new client (a new connection and TLS
/// handshake), the body signed.
async fn send(
    base: &str,
    trust: &Trust,
    agent: &SimAgent,
    body: Vec<u8>,
) -> Result<(), ClientError> {
    let client = ApiClient::new(base, trust, Auth::Agent(Arc::clone(&agent.key)))?;
    client
        .post_raw::<ReportAck>(REPORTS_PATH, body)
        .await
        .map(drop)
}

/// Latencies and outcomes of one phase.
#[derive(Default)]
struct Samples {
    /// Milliseconds from the scheduled time (or, closed-loop, the start) to
    /// the end of the answer.
    latency_ms: Vec<f64>,
    /// Milliseconds between the scheduled time and the actual start.
    lag_ms: Vec<f64>,
    outcomes: BTreeMap<String, u64>,
    kinds: BTreeMap<&'static str, u64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(values: &[f64]) -> serde_json::Value {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let round = |x: f64| (x * 100.0).round() / 100.0;
    serde_json::json!({
        "n": sorted.len(),
        "p50": round(percentile(&sorted, 50.0)),
        "p90": round(percentile(&sorted, 90.0)),
        "p99": round(percentile(&sorted, 99.0)),
        "p999": round(percentile(&sorted, 99.9)),
        "max": round(sorted.last().copied().unwrap_or(f64::NAN)),
    })
}

/// utime + stime (seconds), VmRSS and VmHWM (KiB) of a process.
fn process_usage(pid: &str) -> Option<serde_json::Value> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3,
    // utime 14 and stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Linux reports these in clock ticks of USER_HZ, 100 on every
    // architecture Linux exports to user space this way.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some(serde_json::json!({
        "cpu_s": ticks as f64 / 100.0,
        "rss_kib": kib("VmRSS:"),
        "hwm_kib": kib("VmHWM:"),
        "threads": kib("Threads:"),
    }))
}

struct Run {
    args: Args,
    base: String,
    trust: Trust,
    started: Instant,
    phases: Vec<serde_json::Value>,
}

impl Run {
    fn checkpoint(&mut self, phase: &str, mut doc: serde_json::Value, samples: &Samples) {
        doc["phase"] = phase.into();
        doc["ended_at_s"] = ((self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0).into();
        doc["latency_ms"] = summary(&samples.latency_ms);
        if !samples.lag_ms.is_empty() {
            doc["schedule_lag_ms"] = summary(&samples.lag_ms);
        }
        doc["outcomes"] = serde_json::to_value(&samples.outcomes).unwrap_or_default();
        if !samples.kinds.is_empty() {
            doc["kinds"] = serde_json::to_value(&samples.kinds).unwrap_or_default();
        }
        if let Some(pid) = self.args.server_pid {
            doc["server"] = process_usage(&pid.to_string()).unwrap_or_default();
        }
        doc["loadgen"] = process_usage("self").unwrap_or_default();
        if let Some(hook) = &self.args.hook {
            let output = std::process::Command::new("sh")
                .args(["-c", hook, "hook", phase])
                .stdin(std::process::Stdio::null())
                .output();
            doc["hook"] = match output {
                Ok(output) => String::from_utf8_lossy(&output.stdout).trim().into(),
                Err(err) => format!("hook failed: {err}").into(),
            };
        }
        eprintln!("loadgen: {phase} done: {doc}");
        self.phases.push(doc);
    }

    /// Runs `job` for every agent, `concurrency` at a time; closed loop.
    async fn closed_loop<F, Fut>(&self, agents: &[Arc<SimAgent>], job: F) -> Samples
    where
        F: Fn(Arc<SimAgent>) -> Fut,
        Fut: std::future::Future<Output = Result<(), ClientError>> + Send + 'static,
    {
        let slots = Arc::new(Semaphore::new(self.args.concurrency.max(1)));
        let samples = Arc::new(Mutex::new(Samples::default()));
        let mut tasks = tokio::task::JoinSet::new();
        for agent in agents {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let future = job(Arc::clone(agent));
            let samples = Arc::clone(&samples);
            tasks.spawn(async move {
                let start = Instant::now();
                let result = future.await;
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                drop(permit);
                if let Ok(mut samples) = samples.lock() {
                    samples.latency_ms.push(ms);
                    *samples
                        .outcomes
                        .entry(Outcome::of(&result).name())
                        .or_default() += 1;
                }
                if let Err(err) = result {
                    eprintln!("loadgen: {err}");
                }
            });
            // Keep the set small.
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        Arc::try_unwrap(samples)
            .ok()
            .and_then(|m| m.into_inner().ok())
            .unwrap_or_default()
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    let trust = Trust::parse_fingerprint(&args.fingerprint)
        .context("--fingerprint is not a SHA-256 fingerprint")?;
    let secret = std::fs::read_to_string(&args.secret_file)
        .with_context(|| format!("read {}", args.secret_file.display()))?
        .trim()
        .to_owned();
    let base = args.server.trim_end_matches('/').to_owned();
    let mut run = Run {
        args,
        base,
        trust,
        started: Instant::now(),
        phases: Vec::new(),
    };
    let n_agents = run.args.agents;

    let agents: Vec<Arc<SimAgent>> = (0..n_agents)
        .map(|idx| {
            let key = AgentKey::generate();
            Arc::new(SimAgent {
                idx,
                id: key.agent_id(),
                key: Arc::new(key),
                hostname: format!("sim-{idx:05}"),
                seq: AtomicU64::new(1),
                generation: AtomicU64::new(0),
                extra: std::sync::atomic::AtomicBool::new(false),
            })
        })
        .collect();

    // Enrolment.
    let t = Instant::now();
    let (base, trust) = (run.base.clone(), run.trust.clone());
    let samples = run
        .closed_loop(&agents, |agent| {
            let (base, trust, secret) = (base.clone(), trust.clone(), secret.clone());
            async move {
                let client = ApiClient::new(&base, &trust, Auth::None)?;
                let answer: EnrolResponse = client
                    .post_json(
                        ENROL_PATH,
                        &EnrolRequest {
                            schema: SCHEMA.into(),
                            public_key: agent.key.public_key_base64(),
                            hostname: agent.hostname.clone(),
                            secret,
                        },
                    )
                    .await?;
                if answer.status != "accepted" {
                    eprintln!("loadgen: {} is {}", answer.agent_id, answer.status);
                }
                Ok(())
            }
        })
        .await;
    let secs = t.elapsed().as_secs_f64();
    run.checkpoint(
        "enrol",
        serde_json::json!({"secs": secs, "per_s": n_agents as f64 / secs}),
        &samples,
    );

    // The first report of each: the full state.
    let t = Instant::now();
    let full_bytes = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&full_bytes);
    let samples = run
        .closed_loop(&agents, |agent| {
            let (base, trust) = (base.clone(), trust.clone());
            let counted = Arc::clone(&counted);
            async move {
                let state = host_state(agent.idx, &agent.hostname);
                let body =
                    serde_json::to_vec(&report(&agent, 1, Some(state), None)).unwrap_or_default();
                counted.fetch_add(body.len() as u64, Ordering::Relaxed);
                let result = send(&base, &trust, &agent, body).await;
                if result.is_ok() {
                    agent.seq.store(2, Ordering::Relaxed);
                }
                result
            }
        })
        .await;
    let secs = t.elapsed().as_secs_f64();
    let mean_bytes = full_bytes.load(Ordering::Relaxed) / n_agents as u64;
    run.checkpoint(
        "full",
        serde_json::json!({"secs": secs, "per_s": n_agents as f64 / secs, "mean_body_bytes": mean_bytes}),
        &samples,
    );

    // Heartbeats, open loop: report j (of agent j % N, its (j / N)th) at
    // t0 + j * interval / N.
    let interval = Duration::from_secs_f64(run.args.interval_secs);
    let total =
        ((run.args.minutes * 60.0 / run.args.interval_secs) * n_agents as f64).round() as u64;
    let step = interval.as_secs_f64() / n_agents as f64;
    let discard = Duration::from_secs_f64(run.args.discard_secs);
    let change_percent = run.args.change_percent;
    let samples = Arc::new(Mutex::new(Samples::default()));
    let t0 = tokio::time::Instant::now() + Duration::from_millis(200);
    let mut tasks = tokio::task::JoinSet::new();
    for j in 0..total {
        let offset = Duration::from_secs_f64(j as f64 * step);
        let due = t0 + offset;
        tokio::time::sleep_until(due).await;
        let agent = Arc::clone(&agents[(j % n_agents as u64) as usize]);
        let k = j / n_agents as u64;
        let (base, trust, samples) = (base.clone(), trust.clone(), Arc::clone(&samples));
        let counted = offset >= discard;
        tasks.spawn(async move {
            let started = tokio::time::Instant::now();
            let (delta, kind) = heartbeat_delta(&agent, k, change_percent);
            let seq = agent.seq.load(Ordering::Relaxed);
            let body =
                serde_json::to_vec(&report(&agent, seq, None, Some(delta))).unwrap_or_default();
            let result = send(&base, &trust, &agent, body).await;
            let ended = tokio::time::Instant::now();
            if result.is_ok() {
                agent.seq.store(seq + 1, Ordering::Relaxed);
            }
            if !counted {
                return;
            }
            if let Ok(mut samples) = samples.lock() {
                samples
                    .latency_ms
                    .push((ended - due).as_secs_f64() * 1000.0);
                samples.lag_ms.push((started - due).as_secs_f64() * 1000.0);
                *samples
                    .outcomes
                    .entry(Outcome::of(&result).name())
                    .or_default() += 1;
                *samples.kinds.entry(kind).or_default() += 1;
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    let in_flight_at_end = tasks.len();
    while tasks.join_next().await.is_some() {}
    let samples = Arc::try_unwrap(samples)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    let secs = (tokio::time::Instant::now() - t0).as_secs_f64();
    run.checkpoint(
        "heartbeat",
        serde_json::json!({
            "secs": secs,
            "scheduled": total,
            "target_per_s": n_agents as f64 / interval.as_secs_f64(),
            "in_flight_at_last_send": in_flight_at_end,
            "discard_secs": run.args.discard_secs,
            "change_percent": change_percent,
        }),
        &samples,
    );

    let doc = serde_json::json!({
        "schema": "perimeter.bench.loadgen/1",
        "agents": n_agents,
        "listeners_per_agent": N_LISTENERS,
        "interval_secs": run.args.interval_secs,
        "minutes": run.args.minutes,
        "concurrency": run.args.concurrency,
        "phases": run.phases,
    });
    println!("{doc}");
    Ok(())
}
