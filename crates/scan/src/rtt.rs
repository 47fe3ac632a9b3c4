//! Round trips as the scans measure them, and the timeouts they give: an
//! RFC 6298 estimator (smoothed round trip and its variance), and a table of
//! them per host and per network. The connect scan and the UDP scan wait on
//! the table (issue 13 §5: timeouts that follow the network, per host); the
//! SYN sweep keeps one estimator of its own.

use std::net::IpAddr;
use std::time::Duration;

/// An RFC 6298 round-trip estimator for the adaptive connect timeout.
#[derive(Debug, Default)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl RttEstimator {
    pub(crate) fn observe(&mut self, sample: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(sample);
                self.rttvar = self.rttvar.mul_f64(0.75) + delta.mul_f64(0.25);
                self.srtt = Some(srtt.mul_f64(0.875) + sample.mul_f64(0.125));
            }
        }
    }

    pub(crate) fn timeout(&self, min: Duration, max: Duration) -> Duration {
        match self.srtt {
            None => max,
            Some(srtt) => (srtt + self.rttvar * 4).clamp(min, max),
        }
    }

    fn has_samples(&self) -> bool {
        self.srtt.is_some()
    }
}

/// Round trips as a scan measured them: one estimator per host,
/// and one per network (/24 for IPv4, /64 for IPv6) for the hosts of that
/// network that have not answered yet, such as a host whose firewall drops
/// everything beside hosts that answer in microseconds. A host of a network
/// nothing has answered from waits the profile's whole timeout: its round
/// trip is unknown, and guessing short would call a slow host's open ports
/// filtered.
#[derive(Debug, Default)]
pub(crate) struct RttTable {
    hosts: std::collections::HashMap<IpAddr, RttEstimator>,
    networks: std::collections::HashMap<IpAddr, RttEstimator>,
}

impl RttTable {
    /// Hosts (and networks) given their own estimator; past it, a new
    /// host's samples go to its network only, so a scan of a /8 holds a
    /// bounded table.
    const MAX_ENTRIES: usize = 65_536;

    pub(crate) fn network_of(address: IpAddr) -> IpAddr {
        match address {
            IpAddr::V4(v4) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v4) & 0xffff_ff00)),
            IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        }
    }

    pub(crate) fn observe(&mut self, address: IpAddr, sample: Duration) {
        for (table, key) in [
            (&mut self.hosts, address),
            (&mut self.networks, Self::network_of(address)),
        ] {
            if let Some(estimator) = table.get_mut(&key) {
                estimator.observe(sample);
            } else if table.len() < Self::MAX_ENTRIES {
                table.entry(key).or_default().observe(sample);
            }
        }
    }

    /// The timeout of attempt number `n_unanswered + 1` to `address`: from
    /// the host's own round trips, else its network's, else `max`; doubled
    /// for every attempt that went unanswered (as TCP backs off its own
    /// SYN), never beyond `max`.
    pub(crate) fn timeout(
        &self,
        address: IpAddr,
        n_unanswered: u32,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let base = self
            .hosts
            .get(&address)
            .filter(|e| e.has_samples())
            .or_else(|| {
                self.networks
                    .get(&Self::network_of(address))
                    .filter(|e| e.has_samples())
            })
            .map_or(max, |estimator| estimator.timeout(min, max));
        base.saturating_mul(1 << n_unanswered.min(16)).min(max)
    }
}
