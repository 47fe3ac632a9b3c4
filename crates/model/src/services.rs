//! Facts about the usual suspects, read from the running services themselves.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::host::Netns;

/// What a Redis instance said when asked, read-only, on its listening address.
/// Only a confirmed Redis ([`RedisAuth::is_confirmed`]) is recorded: a listener
/// that answered something else, or nothing, is not Redis as far as anyone can
/// tell, and gets no Redis findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisFacts {
    /// The listener the instance was found on (`tcp 0.0.0.0:6379`).
    pub endpoint: String,
    pub netns: Netns,
    pub pids: Vec<u32>,
    /// The address actually connected to (loopback for a wildcard listener).
    pub probed: SocketAddr,
    pub auth: RedisAuth,
    pub version: Option<String>,
    /// `config_file` from INFO server: Redis rewrites its process title, so this is
    /// the only reliable way to find the file the instance was started from. Empty
    /// when it was started without one; `None` when INFO did not say (not asked,
    /// refused, or no such field), which is not the same thing.
    pub config_file: Option<String>,
    /// `protected-mode` from CONFIG GET, when CONFIG answered.
    pub protected_mode: Option<bool>,
    /// `bind` from CONFIG GET, when CONFIG answered.
    pub bind: Option<String>,
}

/// How a Redis instance treated an unauthenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAuth {
    /// It answered PING (and more) without AUTH.
    Open,
    /// It asked for AUTH (`-NOAUTH`).
    Required,
    /// It refused because protected mode is on and we were not on loopback.
    ProtectedMode,
    /// It answered, but not as Redis does.
    NotRedis(String),
    /// Connecting or reading failed; the text says how.
    Unreachable(String),
}

impl RedisAuth {
    /// Whether the answer shows the listener is Redis: it answered PING as
    /// Redis does, or refused it as only Redis does (`-NOAUTH`, `-DENIED`).
    pub fn is_confirmed(&self) -> bool {
        matches!(
            self,
            RedisAuth::Open | RedisAuth::Required | RedisAuth::ProtectedMode
        )
    }
}

/// The effective settings of one running sshd, per class of client source
/// address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshdFacts {
    pub pid: u32,
    pub exe: Option<PathBuf>,
    /// The file given by `-f`, or the default /etc/ssh/sshd_config.
    pub config_file: PathBuf,
    /// How the evaluations were made: `sshd -T` (the daemon's own evaluation) or
    /// `parsed` (perimeter's reading of the files, when `sshd -T` could not run).
    pub method: String,
    pub evaluations: Vec<SshdEvaluation>,
}

/// The effective authentication settings for one class of source addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshdEvaluation {
    /// The source addresses this holds for, in words: `198.51.100.0/24` for a
    /// `Match Address` block, `any other address` for the default.
    pub sources: String,
    /// The connection criteria evaluated (`user=root,host=...,addr=198.51.100.1`).
    pub criteria: String,
    /// `yes`, `no`, `prohibit-password`, `without-password` or `forced-commands-only`.
    pub permit_root_login: String,
    pub password_authentication: bool,
    pub kbd_interactive_authentication: bool,
    pub permit_empty_passwords: bool,
}
