//! The dashboard's sessions, kept in the server's memory, and the login
//! attempts it counts.
//!
//! A session id is 256 random bits, handed to the browser once in the
//! `perimeter_session` cookie; the server keeps only its SHA-256, so neither a
//! memory dump nor the timing of the map's lookup gives a usable id away. A
//! session ends after [`SessionLimits::idle`] without a request, after
//! [`SessionLimits::absolute`] in any case, at logout, and when the map is full
//! (the least recently used goes first). Each session has its own CSRF token,
//! which every form that changes something carries and the server compares in
//! constant time. A restart of the server ends every session: people sign in
//! again, which is the safe default for a first version.
//!
//! Every method takes the current `Instant`, so the tests move the clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::auth::same_secret;

/// The name of the session cookie.
pub(crate) const COOKIE: &str = "perimeter_session";

/// How long sessions live and how many there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionLimits {
    pub(crate) idle: Duration,
    pub(crate) absolute: Duration,
    pub(crate) max_sessions: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            idle: Duration::from_secs(8 * 3600),
            absolute: Duration::from_secs(24 * 3600),
            max_sessions: 10_000,
        }
    }
}

/// A signed-in person, as a request sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionView {
    pub(crate) user: String,
    pub(crate) csrf: String,
}

#[derive(Debug)]
struct Session {
    user: String,
    csrf: String,
    created: Instant,
    last_used: Instant,
}

/// The sessions of this server process.
#[derive(Debug)]
pub(crate) struct Sessions {
    limits: SessionLimits,
    /// By the SHA-256 (hex) of the session id.
    map: Mutex<HashMap<String, Session>>,
}

/// A new session: the id for the cookie (shown to the browser once) and its
/// CSRF token.
#[derive(Debug)]
pub(crate) struct NewSession {
    pub(crate) id: String,
    pub(crate) csrf: String,
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

fn key(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

impl Sessions {
    pub(crate) fn new(limits: SessionLimits) -> Sessions {
        Sessions {
            limits,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn limits(&self) -> SessionLimits {
        self.limits
    }

    fn live(&self, session: &Session, now: Instant) -> bool {
        now.saturating_duration_since(session.last_used) < self.limits.idle
            && now.saturating_duration_since(session.created) < self.limits.absolute
    }

    /// Starts a session for `user`.
    pub(crate) fn create(&self, user: &str, now: Instant) -> NewSession {
        let new = NewSession {
            id: random_hex(),
            csrf: random_hex(),
        };
        let Ok(mut map) = self.map.lock() else {
            // A poisoned lock: the session is not kept, so the person is
            // asked to sign in again rather than let in unchecked.
            return new;
        };
        if map.len() >= self.limits.max_sessions {
            map.retain(|_, session| self.live(session, now));
        }
        while map.len() >= self.limits.max_sessions.max(1) {
            let oldest = map
                .iter()
                .min_by_key(|(_, session)| session.last_used)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(oldest) => map.remove(&oldest),
                None => break,
            };
        }
        map.insert(
            key(&new.id),
            Session {
                user: user.to_owned(),
                csrf: new.csrf.clone(),
                created: now,
                last_used: now,
            },
        );
        new
    }

    /// The session with this id, if it is live; using it keeps it from idling
    /// out. An expired one is removed.
    pub(crate) fn get(&self, id: &str, now: Instant) -> Option<SessionView> {
        if id.len() != 64 {
            return None;
        }
        let mut map = self.map.lock().ok()?;
        let key = key(id);
        let live = self.live(map.get(&key)?, now);
        if !live {
            map.remove(&key);
            return None;
        }
        let session = map.get_mut(&key)?;
        session.last_used = now;
        Some(SessionView {
            user: session.user.clone(),
            csrf: session.csrf.clone(),
        })
    }

    /// Ends a session (logout, or its user was disabled).
    pub(crate) fn remove(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(&key(id));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().map(|map| map.len()).unwrap_or(0)
    }
}

/// Whether a form's CSRF token is the session's.
pub(crate) fn csrf_matches(session: &SessionView, given: &str) -> bool {
    !given.is_empty() && same_secret(&session.csrf, given)
}

/// The session id in a request's cookies, if any.
pub(crate) fn cookie_value<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

/// Failed logins, counted per source address and per user name over a
/// window; a key with too many is refused until its window ends.
#[derive(Debug)]
pub(crate) struct LoginAttempts {
    window: Duration,
    max_per_address: u32,
    max_per_user: u32,
    max_keys: usize,
    map: Mutex<HashMap<String, (Instant, u32)>>,
}

impl LoginAttempts {
    pub(crate) fn new(window: Duration, max_per_address: u32, max_per_user: u32) -> Self {
        LoginAttempts {
            window,
            max_per_address,
            max_per_user,
            max_keys: 100_000,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn keys(address: &str, user: &str) -> [(String, bool); 2] {
        [
            (format!("addr:{address}"), true),
            (format!("user:{}", user.to_lowercase()), false),
        ]
    }

    /// How long until this address or user name may try again, when either
    /// has failed too often.
    pub(crate) fn blocked(&self, address: &str, user: &str, now: Instant) -> Option<Duration> {
        let map = self.map.lock().ok()?;
        Self::keys(address, user)
            .iter()
            .filter_map(|(key, is_address)| {
                let (start, count) = map.get(key)?;
                let elapsed = now.saturating_duration_since(*start);
                let max = if *is_address {
                    self.max_per_address
                } else {
                    self.max_per_user
                };
                (elapsed < self.window && *count >= max).then(|| self.window - elapsed)
            })
            .max()
    }

    /// Counts a failed login against the address and the user name.
    pub(crate) fn failed(&self, address: &str, user: &str, now: Instant) {
        let Ok(mut map) = self.map.lock() else {
            return;
        };
        if map.len() >= self.max_keys {
            map.retain(|_, (start, _)| now.saturating_duration_since(*start) < self.window);
            if map.len() >= self.max_keys {
                // Flooded with distinct keys: forget them rather than grow.
                map.clear();
            }
        }
        for (key, _) in Self::keys(address, user) {
            let entry = map.entry(key).or_insert((now, 0));
            if now.saturating_duration_since(entry.0) >= self.window {
                *entry = (now, 0);
            }
            entry.1 = entry.1.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SessionLimits {
        SessionLimits {
            idle: Duration::from_secs(100),
            absolute: Duration::from_secs(250),
            max_sessions: 3,
        }
    }

    #[test]
    fn a_session_lives_while_used_and_dies_idle_or_old() {
        let sessions = Sessions::new(limits());
        let t0 = Instant::now();
        let new = sessions.create("alice", t0);
        assert_eq!(new.id.len(), 64);
        let view = sessions.get(&new.id, t0).expect("live");
        assert_eq!(view.user, "alice");
        assert_eq!(view.csrf, new.csrf);
        // Used every 90 s it never idles out...
        for step in 1..=2 {
            assert!(
                sessions
                    .get(&new.id, t0 + Duration::from_secs(90 * step))
                    .is_some()
            );
        }
        // ...but ends at the absolute limit all the same.
        assert!(
            sessions
                .get(&new.id, t0 + Duration::from_secs(250))
                .is_none()
        );
        assert_eq!(sessions.len(), 0, "the expired session is removed");

        let idle = sessions.create("bob", t0);
        assert!(
            sessions
                .get(&idle.id, t0 + Duration::from_secs(100))
                .is_none()
        );
    }

    #[test]
    fn unknown_malformed_and_removed_ids_are_refused() {
        let sessions = Sessions::new(limits());
        let t0 = Instant::now();
        let new = sessions.create("alice", t0);
        assert!(sessions.get("", t0).is_none());
        assert!(sessions.get(&"0".repeat(64), t0).is_none());
        assert!(
            sessions.get(&new.csrf, t0).is_none(),
            "the CSRF token is no id"
        );
        let mut tampered = new.id.clone();
        tampered.replace_range(0..1, if tampered.starts_with('a') { "b" } else { "a" });
        assert!(sessions.get(&tampered, t0).is_none());
        sessions.remove(&new.id);
        assert!(sessions.get(&new.id, t0).is_none());
    }

    #[test]
    fn the_count_is_bounded_and_the_least_recently_used_goes() {
        let sessions = Sessions::new(limits());
        let t0 = Instant::now();
        let a = sessions.create("a", t0);
        let b = sessions.create("b", t0 + Duration::from_secs(1));
        let c = sessions.create("c", t0 + Duration::from_secs(2));
        assert!(sessions.get(&a.id, t0 + Duration::from_secs(3)).is_some());
        let d = sessions.create("d", t0 + Duration::from_secs(4));
        assert_eq!(sessions.len(), 3);
        assert!(sessions.get(&b.id, t0 + Duration::from_secs(5)).is_none());
        for live in [&a, &c, &d] {
            assert!(
                sessions
                    .get(&live.id, t0 + Duration::from_secs(5))
                    .is_some()
            );
        }
    }

    #[test]
    fn csrf_tokens_must_match_the_session() {
        let sessions = Sessions::new(limits());
        let t0 = Instant::now();
        let alice = sessions.create("alice", t0);
        let bob = sessions.create("bob", t0);
        let view = sessions.get(&alice.id, t0).expect("live");
        assert!(csrf_matches(&view, &alice.csrf));
        assert!(!csrf_matches(&view, &bob.csrf), "another session's token");
        assert!(!csrf_matches(&view, ""));
        assert!(!csrf_matches(&view, &alice.csrf[..63]));
        assert_ne!(alice.csrf, bob.csrf);
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            "a=1; perimeter_session=abc ; b=2".parse().expect("header"),
        );
        assert_eq!(cookie_value(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie_value(&headers, "missing"), None);
    }

    #[test]
    fn failed_logins_block_the_address_and_the_user_for_a_window() {
        let attempts = LoginAttempts::new(Duration::from_secs(60), 4, 2);
        let t0 = Instant::now();
        assert!(attempts.blocked("10.0.0.1", "alice", t0).is_none());
        attempts.failed("10.0.0.1", "alice", t0);
        attempts.failed("10.0.0.2", "Alice", t0);
        // The user name is blocked from any address, whatever its case.
        assert!(attempts.blocked("10.0.0.3", "alice", t0).is_some());
        assert!(attempts.blocked("10.0.0.3", "bob", t0).is_none());
        // The address is blocked for any user name after four failures.
        for user in ["u1", "u2"] {
            attempts.failed("10.0.0.9", user, t0);
        }
        assert!(attempts.blocked("10.0.0.9", "u3", t0).is_none());
        for user in ["u3", "u4"] {
            attempts.failed("10.0.0.9", user, t0);
        }
        let wait = attempts
            .blocked("10.0.0.9", "u5", t0 + Duration::from_secs(20))
            .expect("blocked");
        assert_eq!(wait, Duration::from_secs(40));
        // The window ends.
        assert!(
            attempts
                .blocked("10.0.0.9", "u5", t0 + Duration::from_secs(60))
                .is_none()
        );
        assert!(
            attempts
                .blocked("10.0.0.1", "alice", t0 + Duration::from_secs(61))
                .is_none()
        );
    }
}
