//! What a scan is asked to do, and what it runs with.
//!
//! A [`Profile`] (fast, normal, stealth) names a set of [`ProfileDefaults`]:
//! the rate ceiling and burst, jitter, concurrency, the connect timeout
//! (adaptive to the round trip for fast and normal, and the UDP scan's waits
//! with it), retries, and identification's
//! banner wait, per-port deadline and probe count. The caller fills
//! [`ScanOptions`] (the CLI from its flags), whose explicit values override
//! the profile's. [`ScanOptions::settings`] checks them and resolves them,
//! with the size of the scan and the open-file budget, into the [`Settings`]
//! the engine runs with, including the [`SpreadSchedule`] of a scan paced
//! over a window. The settings are recorded in `ScanInfo.options`, so a
//! stored scan says how it was run.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::engine::ScanError;
use crate::identify::IdentifySettings;
use crate::rate::RateLimit;
use crate::shard::Shard;

/// How hard a scan pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Profile {
    /// As fast as the machine and network allow: high concurrency bounded by file
    /// descriptors, a short timeout adapted to the observed round-trip time, one
    /// retry. The concurrency and the round trip set the pace; the rate ceiling
    /// (a million attempts a second unless `--rate` says otherwise) is only a
    /// safety net. At 100,000 a second it was the pace itself on a local
    /// network: all 65,535 ports of a host in the lab took twice as long as the
    /// machine needed.
    Fast,
    /// The default: a moderate rate and concurrency, two retries.
    #[default]
    Normal,
    /// Low rate, random jitter between probes, few probes per open port; with a
    /// `spread`, paced to finish near the end of the window.
    Stealth,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Fast, Profile::Normal, Profile::Stealth];

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Fast => "fast",
            Profile::Normal => "normal",
            Profile::Stealth => "stealth",
        }
    }

    /// The profile's own values, before options override them.
    pub fn defaults(self) -> ProfileDefaults {
        match self {
            Profile::Fast => ProfileDefaults {
                rate: 1_000_000.0,
                burst: 200,
                jitter: 0.0,
                concurrency: 2048,
                timeout: Duration::from_secs(1),
                min_timeout: Some(Duration::from_millis(250)),
                retries: 1,
                banner_wait: Duration::from_millis(700),
                ask_after: Duration::from_millis(50),
                port_deadline: Duration::from_secs(5),
                max_probes: usize::MAX,
            },
            Profile::Normal => ProfileDefaults {
                rate: 1_000.0,
                burst: 20,
                jitter: 0.0,
                concurrency: 256,
                timeout: Duration::from_secs(2),
                // The connect timeout follows the round trips measured per
                // host (per network before a host answered), between this
                // floor and the 2 s ceiling, doubling on each silence. The
                // UDP scan's waits do too (its scouts wait the ceiling), and
                // its retries are asked only where they can change a state
                // (`udp::Timing::retries`).
                min_timeout: Some(Duration::from_millis(100)),
                retries: 2,
                banner_wait: Duration::from_secs(2),
                ask_after: Duration::from_millis(250),
                port_deadline: Duration::from_secs(10),
                max_probes: usize::MAX,
            },
            Profile::Stealth => ProfileDefaults {
                rate: 2.0,
                burst: 1,
                jitter: 1.0,
                concurrency: 8,
                timeout: Duration::from_secs(3),
                min_timeout: None,
                retries: 1,
                banner_wait: Duration::from_secs(3),
                // The whole banner wait: a quiet scan opens a second
                // connection only when the first said nothing.
                ask_after: Duration::from_secs(3),
                port_deadline: Duration::from_secs(20),
                max_probes: 2,
            },
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not a profile name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scan profile `{0}` (expected fast, normal or stealth)")]
pub struct ProfileParseError(pub String);

impl FromStr for Profile {
    type Err = ProfileParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| ProfileParseError(text.to_owned()))
    }
}

/// A profile's values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProfileDefaults {
    pub rate: f64,
    pub burst: u32,
    pub jitter: f64,
    pub concurrency: usize,
    /// The connect timeout (with `min_timeout`, the upper bound of the adaptive one).
    pub timeout: Duration,
    /// When set, the connect timeout adapts to the observed round-trip time
    /// (srtt + 4 × rttvar, as TCP does) between this and `timeout`.
    pub min_timeout: Option<Duration>,
    pub retries: u32,
    pub banner_wait: Duration,
    /// How long identification lets a port stay silent before it asks on a
    /// second connection what the rest of the probes ask, without waiting
    /// out the banner wait. Short enough that a service that waits to be
    /// asked is asked at once; long enough that one that speaks first has
    /// usually done so (a greeting that comes later still names it, on
    /// either connection).
    pub ask_after: Duration,
    pub port_deadline: Duration,
    pub max_probes: usize,
}

/// What the caller asks for: a profile, and explicit values that override it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanOptions {
    pub profile: Profile,
    /// Connection attempts per second, a hard ceiling.
    pub rate: Option<f64>,
    /// Connections in flight at once (also capped by the open-file limit).
    pub concurrency: Option<usize>,
    /// Connect timeout; an explicit value turns off the fast profile's adaptation.
    pub timeout: Option<Duration>,
    /// Extra attempts for a port that did not answer.
    pub retries: Option<u32>,
    /// Pace the scan so it finishes near the end of this window.
    pub spread: Option<Duration>,
    /// Random extra delay between probes, as a fraction of the interval.
    pub jitter: Option<f64>,
    /// The permutation seed; random when not given. Recorded in `ScanInfo`.
    pub seed: Option<u64>,
    /// The part of the permutation to walk ([`Shard::WHOLE`] for all of
    /// it). Every shard of a scan needs the same seed; the rate and the
    /// concurrency are this shard's own.
    pub shard: Shard,
    /// Run service identification on open ports.
    pub identify: bool,
    /// How long to wait for a banner or an answer (each read).
    pub banner_wait: Option<Duration>,
    /// The most time identification may spend on one port.
    pub port_deadline: Option<Duration>,
    pub max_probes_per_port: Option<usize>,
    /// How often a `Progress` event is sent.
    pub progress_interval: Duration,
    /// Raise `RLIMIT_NOFILE` to the hard limit before scanning.
    pub raise_fd_limit: bool,
    /// Send a `Result` event for closed and filtered ports too (they are
    /// counted either way). Off, a scan of every port of a host sends a few
    /// events instead of 65,535.
    pub report_unanswered: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions::new(Profile::Normal)
    }
}

impl ScanOptions {
    pub fn new(profile: Profile) -> ScanOptions {
        ScanOptions {
            profile,
            rate: None,
            concurrency: None,
            timeout: None,
            retries: None,
            spread: None,
            jitter: None,
            seed: None,
            shard: Shard::WHOLE,
            identify: true,
            banner_wait: None,
            port_deadline: None,
            max_probes_per_port: None,
            progress_interval: Duration::from_millis(500),
            raise_fd_limit: true,
            report_unanswered: true,
        }
    }

    /// The concrete settings for a scan of `n_pairs` (address, port) pairs
    /// (this shard's, for a shard), with at most `fd_budget` sockets open at
    /// once.
    pub fn settings(&self, n_pairs: u64, fd_budget: Option<usize>) -> Result<Settings, ScanError> {
        let defaults = self.profile.defaults();
        let invalid =
            |name: &'static str, reason: &'static str| ScanError::InvalidOption { name, reason };
        if self
            .rate
            .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
        {
            return Err(invalid(
                "rate",
                "must be a positive number of probes per second",
            ));
        }
        if self.concurrency == Some(0) {
            return Err(invalid("concurrency", "must be at least 1"));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(invalid("timeout", "must be longer than zero"));
        }
        if self.spread.is_some_and(|s| s.is_zero()) {
            return Err(invalid("spread", "must be longer than zero"));
        }
        if self
            .jitter
            .is_some_and(|j| !(j.is_finite() && (0.0..=10.0).contains(&j)))
        {
            return Err(invalid("jitter", "must be between 0 and 10"));
        }
        if !self.shard.is_whole() && self.seed.is_none() {
            return Err(invalid(
                "shard",
                "needs an explicit seed: every shard of a scan must walk the same permutation",
            ));
        }
        if self.max_probes_per_port == Some(0) && self.identify {
            return Err(invalid(
                "max-probes-per-port",
                "must be at least 1 when identification is on",
            ));
        }

        let timeout = self.timeout.unwrap_or(defaults.timeout);
        let min_timeout = match self.timeout {
            Some(_) => None,
            None => defaults.min_timeout,
        };
        let retries = self.retries.unwrap_or(defaults.retries);
        let port_deadline = self.port_deadline.unwrap_or(defaults.port_deadline);
        let jitter = self.jitter.unwrap_or(defaults.jitter);

        // With a spread, the schedule sets the pace; the ceiling leaves room for
        // retries and identification connections on top of it.
        let schedule = self.spread.map(|spread| {
            let tail = (timeout * (retries + 1))
                + if self.identify {
                    port_deadline
                } else {
                    Duration::ZERO
                };
            let window = spread.saturating_sub(tail.min(spread / 2));
            SpreadSchedule { spread, window }
        });
        let per_second = match (self.rate, schedule) {
            (Some(rate), _) => rate,
            (None, Some(schedule)) => {
                (2.0 * n_pairs as f64 / schedule.window.as_secs_f64()).max(0.01)
            }
            (None, None) => defaults.rate,
        };
        let requested_concurrency = self.concurrency.unwrap_or(defaults.concurrency);
        let concurrency = match fd_budget {
            Some(budget) => requested_concurrency.min(budget).max(1),
            None => requested_concurrency,
        };
        Ok(Settings {
            profile: self.profile,
            rate: RateLimit {
                per_second,
                // The burst after a quiet spell never exceeds what the rate
                // allows in one second: `--rate 2` once let the normal
                // profile's 20 probes out in 9 ms.
                burst: burst_within(defaults.burst, per_second),
                jitter,
            },
            concurrency,
            requested_concurrency,
            timeout,
            min_timeout,
            retries,
            schedule,
            identify: self.identify,
            identify_settings: IdentifySettings {
                read_timeout: self.banner_wait.unwrap_or(defaults.banner_wait),
                ask_after: defaults.ask_after,
                connect_timeout: timeout,
                max_probes: self.max_probes_per_port.unwrap_or(defaults.max_probes),
            },
            port_deadline,
            seed: self.seed.unwrap_or_else(rand::random),
            shard: self.shard,
            progress_interval: self.progress_interval.max(Duration::from_millis(10)),
            report_unanswered: self.report_unanswered,
        })
    }
}

/// The profile's burst, capped at the probes `per_second` allows in one
/// second (and at least 1, which every token bucket needs).
fn burst_within(profile_burst: u32, per_second: f64) -> u32 {
    let one_second = if per_second.is_finite() && per_second >= 1.0 {
        // Truncation is the point: 2.9 probes a second allow 2 at once.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive, finite rate floored into u32's range"
        )]
        let whole = per_second.floor().min(f64::from(u32::MAX)) as u32;
        whole
    } else {
        1
    };
    profile_burst.min(one_second).max(1)
}

/// When to launch first attempts so a scan ends near the end of its spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpreadSchedule {
    /// The window the caller asked for.
    pub spread: Duration,
    /// The part of it first attempts are spread over: the spread less the time
    /// the last port may still need (its retries and identification), so the
    /// scan finishes close to, not after, the end.
    pub window: Duration,
}

/// The concrete settings a scan runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub profile: Profile,
    pub rate: RateLimit,
    pub concurrency: usize,
    /// What was asked before the open-file limit capped it.
    pub requested_concurrency: usize,
    pub timeout: Duration,
    pub min_timeout: Option<Duration>,
    pub retries: u32,
    pub schedule: Option<SpreadSchedule>,
    pub identify: bool,
    pub identify_settings: IdentifySettings,
    pub port_deadline: Duration,
    pub seed: u64,
    pub shard: Shard,
    pub progress_interval: Duration,
    /// Send results for closed and filtered ports too.
    pub report_unanswered: bool,
}

impl Settings {
    /// The settings as `key=value` pairs for `ScanInfo.options`.
    pub(crate) fn record(&self, n_pairs: u64) -> BTreeMap<String, String> {
        let mut options = BTreeMap::new();
        let mut put = |key: &str, value: String| {
            options.insert(key.to_owned(), value);
        };
        put("rate", format!("{}", self.rate.per_second));
        put("burst", self.rate.burst.to_string());
        put("jitter", format!("{}", self.rate.jitter));
        put("concurrency", self.concurrency.to_string());
        put("timeout", format!("{:?}", self.timeout));
        if let Some(min) = self.min_timeout {
            put("timeout_min", format!("{min:?}"));
        }
        put("retries", self.retries.to_string());
        if let Some(schedule) = self.schedule {
            put("spread", format!("{:?}", schedule.spread));
        }
        put("identify", self.identify.to_string());
        put(
            "banner_wait",
            format!("{:?}", self.identify_settings.read_timeout),
        );
        put(
            "ask_after",
            format!("{:?}", self.identify_settings.ask_after),
        );
        put("port_deadline", format!("{:?}", self.port_deadline));
        put("n_pairs", n_pairs.to_string());
        if !self.shard.is_whole() {
            put("shard", self.shard.to_string());
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_override_the_profile() {
        let mut opts = ScanOptions::new(Profile::Stealth);
        let defaults = opts.settings(100, None).expect("valid");
        assert_eq!(defaults.rate.per_second, 2.0);
        assert_eq!(defaults.rate.jitter, 1.0);
        assert_eq!(defaults.identify_settings.max_probes, 2);
        opts.rate = Some(50.0);
        opts.concurrency = Some(3);
        opts.timeout = Some(Duration::from_millis(700));
        opts.retries = Some(4);
        opts.seed = Some(99);
        let settings = opts.settings(100, None).expect("valid");
        assert_eq!(settings.rate.per_second, 50.0);
        assert_eq!(settings.concurrency, 3);
        assert_eq!(settings.timeout, Duration::from_millis(700));
        assert_eq!(settings.retries, 4);
        assert_eq!(settings.seed, 99);

        let mut fast = ScanOptions::new(Profile::Fast);
        assert!(fast.settings(1, None).expect("valid").min_timeout.is_some());
        fast.timeout = Some(Duration::from_secs(1));
        assert_eq!(fast.settings(1, None).expect("valid").min_timeout, None);

        let invalid = |change: fn(&mut ScanOptions)| {
            let mut opts = ScanOptions::new(Profile::Normal);
            change(&mut opts);
            opts.settings(1, None).err().map(|e| e.to_string())
        };
        assert_eq!(
            invalid(|o| o.rate = Some(0.0)),
            Some("invalid option rate: must be a positive number of probes per second".into())
        );
        assert_eq!(
            invalid(|o| o.concurrency = Some(0)),
            Some("invalid option concurrency: must be at least 1".into())
        );
        assert!(invalid(|o| o.timeout = Some(Duration::ZERO)).is_some());
        assert!(invalid(|o| o.spread = Some(Duration::ZERO)).is_some());
        assert!(invalid(|o| o.jitter = Some(f64::NAN)).is_some());
        assert_eq!("Stealth".parse::<Profile>(), Ok(Profile::Stealth));
        assert_eq!(
            "quick".parse::<Profile>().map_err(|e| e.to_string()),
            Err("unknown scan profile `quick` (expected fast, normal or stealth)".into())
        );
    }

    #[test]
    fn the_burst_never_exceeds_one_second_of_the_rate() {
        assert_eq!(burst_within(20, 2.0), 2);
        assert_eq!(burst_within(20, 2.9), 2);
        assert_eq!(burst_within(20, 0.5), 1);
        assert_eq!(burst_within(200, 1_000_000.0), 200);
        assert_eq!(burst_within(1, 100.0), 1);
        assert_eq!(burst_within(20, f64::INFINITY), 1);
        let normal = ScanOptions {
            rate: Some(2.0),
            ..ScanOptions::new(Profile::Normal)
        };
        let settings = normal.settings(1000, None).expect("settings");
        assert_eq!(settings.rate.burst, 2);
    }
}
