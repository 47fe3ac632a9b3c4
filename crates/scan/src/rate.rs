//! The rate ceiling: every connection attempt (first tries, retries and
//! identification connections) takes a token here first.
//!
//! It is a token bucket in its GCRA form (a "theoretical arrival time" instead of
//! a token count), which gives a hard guarantee that is easy to state and test:
//! over any window of length `D`, at most `burst + D × rate` tokens are granted.
//! Every grant is computed under one plain lock, held for a few instructions,
//! from the time it is granted. A token that is ready is taken without waiting
//! (on a fast scan, nearly always: a wait there would hand the scan from
//! thread to thread once per connection); when none is, waiters line up
//! behind a fair (FIFO) async mutex held across the wait, so only the head of
//! the line sleeps and thousands of waiting tasks cost no thundering herd. Optional jitter only ever lengthens the gap between grants,
//! so it can make a scan slower and less regular but never faster than the
//! ceiling. Tokio's timer has millisecond granularity; GCRA absorbs that (a late
//! wake-up lets the next few waiters through at once, still within the bound
//! measured from the actual grant times). With a burst of 1 there is no room
//! to absorb it, so with jitter on, the time a wake-up came late is taken out
//! of the next jitter draws instead: lateness already lengthened a gap, as the
//! jitter would have, and the mean rate stays what the jitter alone gives
//! (a slow timer would otherwise cut a stealth scan at 100/s by a tenth).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How fast a scan may go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens per second, the ceiling. Must be positive and finite; `None` in
    /// [`RateLimiter::new`] means no ceiling at all.
    pub per_second: f64,
    /// Tokens that may be taken back to back after a quiet spell (at least 1).
    pub burst: u32,
    /// Extra random delay between grants, as a fraction of the base interval:
    /// 0 is none, 1.0 makes each gap between 1 and 2 intervals.
    pub jitter: f64,
}

#[derive(Debug)]
struct State {
    /// The theoretical arrival time: when the bucket would be full again had no
    /// token been taken since.
    tat: Instant,
    rng: ChaCha8Rng,
    /// How late the timer woke us, not yet taken out of a jitter draw.
    lateness: Duration,
}

/// Hands out connection tokens under a [`RateLimit`].
#[derive(Debug)]
pub struct RateLimiter {
    limit: Option<RateLimit>,
    interval: Duration,
    tolerance: Duration,
    /// The bucket, under a plain lock held only to compute one grant.
    state: std::sync::Mutex<State>,
    /// The line of waiters when no token is ready: first come, first served,
    /// and only the one at its head sleeps.
    line: Mutex<()>,
    /// Waiters in (or joining) the line.
    n_queued: AtomicUsize,
    n_granted: AtomicU64,
}

/// A place in the line, given up when the waiter is granted or dropped.
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RateLimiter {
    /// A limiter for `limit`; `None` grants at once, always. `seed` drives the
    /// jitter so a replayed scan jitters the same way.
    pub fn new(limit: Option<RateLimit>, seed: u64) -> RateLimiter {
        let limit = limit.filter(|l| l.per_second.is_finite() && l.per_second > 0.0);
        let (interval, tolerance) = match limit {
            Some(l) => {
                // Capped at a day per token: slower than that is not a scan.
                let interval = Duration::from_secs_f64((1.0 / l.per_second).min(86_400.0));
                (interval, interval * l.burst.max(1).saturating_sub(1))
            }
            None => (Duration::ZERO, Duration::ZERO),
        };
        RateLimiter {
            limit,
            interval,
            tolerance,
            state: std::sync::Mutex::new(State {
                tat: Instant::now(),
                rng: ChaCha8Rng::seed_from_u64(seed),
                lateness: Duration::ZERO,
            }),
            line: Mutex::new(()),
            n_queued: AtomicUsize::new(0),
            n_granted: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> Option<RateLimit> {
        self.limit
    }

    /// Waits for a token. Cancel-safe: dropping the future before it completes
    /// takes no token.
    pub async fn acquire(&self) {
        let Some(limit) = self.limit else {
            self.n_granted.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // A token that is ready is taken at once, unless others already wait:
        // they came first.
        if self.n_queued.load(Ordering::Acquire) == 0 && self.try_grant(limit, None).is_ok() {
            return;
        }
        self.n_queued.fetch_add(1, Ordering::AcqRel);
        let _in_line = InLine(&self.n_queued);
        let _turn = self.line.lock().await;
        let mut slept_until = None;
        loop {
            match self.try_grant(limit, slept_until) {
                Ok(()) => return,
                Err(earliest) => {
                    tokio::time::sleep_until(earliest).await;
                    slept_until = Some(earliest);
                }
            }
        }
    }

    /// Takes up to `wanted` tokens that are ready now, without waiting, under
    /// one lock: for a sender that sends in batches (the SYN scan's), which
    /// would otherwise take the lock once per packet. Returns how many it
    /// took and, when that is fewer than `wanted`, when the next one will be
    /// ready. `slept_until` is the instant the caller last slept until
    /// waiting for a token, if it did (for the jitter's repayment, as in
    /// [`RateLimiter::acquire`]).
    ///
    /// It does not queue behind [`RateLimiter::acquire`]'s waiters: the
    /// ceiling binds every grant either way, and a batch sender that waited
    /// its turn in the line would be handed from task to task once per token.
    pub fn try_take(&self, wanted: u32, slept_until: Option<Instant>) -> (u32, Option<Instant>) {
        let Some(limit) = self.limit else {
            self.n_granted
                .fetch_add(u64::from(wanted), Ordering::Relaxed);
            return (wanted, None);
        };
        let mut state = self.lock_state();
        let mut slept_until = slept_until;
        for n_taken in 0..wanted {
            if let Err(earliest) = self.grant_locked(&mut state, limit, slept_until.take()) {
                return (n_taken, Some(earliest));
            }
        }
        (wanted, None)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding the lock, and the state is consistent
        // after every statement, so a poisoned lock's state is still good.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a token if one is ready now; otherwise says when the next one
    /// will be. `slept_until` is the instant the caller's last sleep aimed
    /// at, if it slept.
    fn try_grant(&self, limit: RateLimit, slept_until: Option<Instant>) -> Result<(), Instant> {
        let mut state = self.lock_state();
        self.grant_locked(&mut state, limit, slept_until)
    }

    fn grant_locked(
        &self,
        state: &mut State,
        limit: RateLimit,
        slept_until: Option<Instant>,
    ) -> Result<(), Instant> {
        let now = Instant::now();
        let earliest = state.tat.checked_sub(self.tolerance).unwrap_or(state.tat);
        if earliest > now {
            return Err(earliest);
        }
        let jitter = if limit.jitter > 0.0 {
            let max_jitter = self.interval.mul_f64(limit.jitter);
            let drawn = max_jitter.mul_f64(state.rng.random_range(0.0..1.0));
            // Only a wake-up after a sleep is late; a waiter that found the
            // bucket ready was not held back by the timer. What cannot be
            // repaid soon is forgotten, so the debt stays below one draw.
            if let Some(target) = slept_until {
                state.lateness =
                    (state.lateness + now.saturating_duration_since(target)).min(max_jitter);
            }
            let repaid = state.lateness.min(drawn);
            state.lateness -= repaid;
            drawn - repaid
        } else {
            Duration::ZERO
        };
        state.tat = state.tat.max(now) + self.interval + jitter;
        self.n_granted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Tokens granted so far: the number of connection attempts, since every
    /// attempt takes one.
    pub fn n_granted(&self) -> u64 {
        self.n_granted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Runs `n_tasks` tasks each taking `per_task` tokens and returns the grant
    /// times, sorted.
    async fn grant_times(
        limit: Option<RateLimit>,
        n_tasks: usize,
        per_task: usize,
    ) -> Vec<Instant> {
        let limiter = Arc::new(RateLimiter::new(limit, 9));
        let times = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n_tasks {
            let limiter = limiter.clone();
            let times = times.clone();
            tasks.spawn(async move {
                for _ in 0..per_task {
                    limiter.acquire().await;
                    times.lock().expect("not poisoned").push(Instant::now());
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let mut times = std::mem::take(&mut *times.lock().expect("not poisoned"));
        times.sort();
        times
    }

    /// The ceiling: for every pair of grants i < j, the j - i + 1 grants between
    /// them fit in burst + (t_j - t_i) × rate.
    fn assert_ceiling(times: &[Instant], limit: RateLimit) {
        for (i, &start) in times.iter().enumerate() {
            for (j, &end) in times.iter().enumerate().skip(i) {
                let n_in_window = (j - i + 1) as f64;
                let allowed =
                    f64::from(limit.burst) + (end - start).as_secs_f64() * limit.per_second;
                assert!(
                    n_in_window <= allowed + 1e-9,
                    "{n_in_window} grants in {:?} exceed the ceiling of {allowed}",
                    end - start
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn never_exceeds_the_ceiling() {
        let limit = RateLimit {
            per_second: 100.0,
            burst: 5,
            jitter: 0.0,
        };
        let start = Instant::now();
        let times = grant_times(Some(limit), 50, 10).await;
        assert_eq!(times.len(), 500);
        assert_ceiling(&times, limit);
        // And it is not needlessly slow: 500 tokens at 100/s with a burst of 5
        // take just under 5 s of virtual time.
        let elapsed = times.last().map(|&t| t - start).unwrap_or_default();
        assert!(elapsed >= Duration::from_millis(4940), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(5010), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn burst_after_a_quiet_spell_is_capped() {
        let limit = RateLimit {
            per_second: 10.0,
            burst: 3,
            jitter: 0.0,
        };
        let limiter = RateLimiter::new(Some(limit), 1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..6 {
            limiter.acquire().await;
            times.push(Instant::now() - start);
        }
        // Three at once (the burst), then one per 100 ms.
        assert_eq!(
            times,
            [0, 0, 0, 100, 200, 300].map(Duration::from_millis).to_vec()
        );
        assert_eq!(limiter.n_granted(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_only_slows_down() {
        let limit = RateLimit {
            per_second: 20.0,
            burst: 1,
            jitter: 1.0,
        };
        let start = Instant::now();
        let times = grant_times(Some(limit), 4, 50).await;
        assert_ceiling(&times, limit);
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        // Gaps between 1 and 2 intervals (50 to 100 ms), not all equal.
        assert!(
            gaps.iter()
                .all(|&g| g >= Duration::from_millis(50) && g <= Duration::from_millis(101))
        );
        let distinct: std::collections::BTreeSet<_> = gaps.iter().collect();
        assert!(
            distinct.len() > 10,
            "jitter produced only {} distinct gaps",
            distinct.len()
        );
        // Average rate lands between rate / 2 and rate.
        let elapsed = times.last().map(|&t| t - start).unwrap_or_default();
        assert!(
            elapsed > Duration::from_secs(10) && elapsed < Duration::from_secs(15),
            "{elapsed:?}"
        );
    }

    /// The timer wakes on whole milliseconds, so a wait for 3.3 ms ends at 4 ms;
    /// with a burst of 1 nothing absorbs that, and the jitter pays it back: the
    /// mean gap is the 1.5 intervals the jitter alone gives, and no gap is
    /// shorter than one interval.
    #[tokio::test(start_paused = true)]
    async fn jitter_repays_late_wake_ups() {
        let limit = RateLimit {
            per_second: 300.0,
            burst: 1,
            jitter: 1.0,
        };
        let times = grant_times(Some(limit), 1, 3000).await;
        assert_ceiling(&times, limit);
        let interval = Duration::from_secs_f64(1.0 / 300.0);
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&gap| gap >= interval));
        let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
        // 1.5 intervals is 5.0 ms; 3000 uniform draws put the mean within
        // 0.1 ms of it, while the unrepaid rounding alone adds about 0.5 ms.
        assert!(
            mean >= Duration::from_micros(4900) && mean <= Duration::from_micros(5100),
            "{mean:?}"
        );
    }

    /// A token that frees up while others wait goes to the first in line, not
    /// to a newcomer that happens to ask at that moment.
    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order() {
        let limit = RateLimit {
            per_second: 10.0,
            burst: 1,
            jitter: 0.0,
        };
        let limiter = Arc::new(RateLimiter::new(Some(limit), 1));
        limiter.acquire().await;
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for name in ["first", "second", "third"] {
            let limiter = limiter.clone();
            let order = order.clone();
            tasks.spawn(async move {
                limiter.acquire().await;
                order.lock().expect("not poisoned").push(name);
            });
            // Let it get in line before the next one comes.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while tasks.join_next().await.is_some() {}
        assert_eq!(
            *order.lock().expect("not poisoned"),
            ["first", "second", "third"]
        );
        assert_eq!(limiter.n_granted(), 4);
    }

    /// A batch sender taking many tokens at a time gets no more than the
    /// ceiling allows, told when the next one is ready, and its grants
    /// share the bucket with single waiters.
    #[tokio::test(start_paused = true)]
    async fn batches_take_only_what_the_ceiling_allows() {
        let limit = RateLimit {
            per_second: 1000.0,
            burst: 10,
            jitter: 0.0,
        };
        let limiter = Arc::new(RateLimiter::new(Some(limit), 1));
        let start = Instant::now();
        // The burst at once, then nothing until the next interval.
        assert_eq!(
            limiter.try_take(64, None),
            (10, Some(start + Duration::from_millis(1)))
        );
        assert_eq!(limiter.try_take(64, None).0, 0);
        let single = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                limiter.acquire().await;
                Instant::now()
            })
        };
        let mut times = vec![start; 10];
        while times.len() < 1000 {
            let (granted, next) = limiter.try_take(64, None);
            times.extend(std::iter::repeat_n(Instant::now(), granted as usize));
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => tokio::task::yield_now().await,
            }
        }
        times.push(single.await.expect("single waiter"));
        times.sort();
        assert_ceiling(&times, limit);
        assert_eq!(limiter.n_granted(), times.len() as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_grants_at_once() {
        let start = Instant::now();
        let times = grant_times(None, 10, 100).await;
        assert_eq!(times.len(), 1000);
        assert!(times.iter().all(|&t| t == start));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_a_waiter_takes_no_token() {
        let limit = RateLimit {
            per_second: 1.0,
            burst: 1,
            jitter: 0.0,
        };
        let limiter = RateLimiter::new(Some(limit), 1);
        limiter.acquire().await;
        let waited = tokio::time::timeout(Duration::from_millis(100), limiter.acquire()).await;
        assert!(waited.is_err(), "the second token came too early");
        assert_eq!(limiter.n_granted(), 1);
        let start = Instant::now();
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_millis(900));
    }
}
