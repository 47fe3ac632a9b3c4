//! A throwaway PostgreSQL cluster for tests: made with `initdb` in a temporary
//! directory, run as the `postgres` account (PostgreSQL refuses root),
//! listening only on a Unix socket in that directory (no TCP at all), stopped
//! and removed when dropped.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use perimeter_testlab::{PgCluster, require_postgres};
//! if !require_postgres() {
//!     return Ok(()); // skipped, or failed under PERIMETER_TEST_STRICT=1
//! }
//! let mut cluster = PgCluster::start()?;
//! let url = cluster.url(); // postgresql://postgres@/perimeter?host=/tmp/...&port=5432
//! cluster.create_database("another")?;
//! let conninfo = cluster.conninfo_for("another");
//! cluster.restart()?; // every connection is cut; the data stays
//! # let _ = (url, conninfo);
//! # Ok(())
//! # }
//! ```
//!
//! The cluster trusts every local connection (`initdb -A trust`): only root
//! and `postgres` can reach its socket, in a 0700 directory. It runs with
//! `fsync=off`: a killed or restarted server loses nothing committed (each
//! commit still hands its WAL to the kernel before it returns), only a power
//! cut would, and the directory does not outlive the test anyway.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Requirement, require, require_that};

/// The database [`PgCluster::start`] creates, which [`PgCluster::url`] and
/// [`PgCluster::conninfo`] name.
pub const PG_DATABASE: &str = "perimeter";

/// The superuser the cluster is made with.
pub const PG_USER: &str = "postgres";

/// The port names the socket file (`.s.PGSQL.5432`); nothing listens on TCP.
const PORT: u16 = 5432;

/// How long the server may take to accept connections after it starts (crash
/// recovery included, after [`PgCluster::restart`]).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a cluster can be started here: root (to run the server as
/// `postgres`), the `postgres` account, and PostgreSQL's programs. When not,
/// the test is skipped, saying so, or fails under `PERIMETER_TEST_STRICT=1`
/// (see [`require`]).
pub fn require_postgres() -> bool {
    require(Requirement::Root)
        && require(Requirement::Account(PG_USER))
        && require_that(
            "PostgreSQL's server programs (postgres, initdb, pg_isready, createdb)",
            find_bin_dir().map(drop),
        )
}

/// A PostgreSQL server on a Unix socket only, in a temporary directory owned
/// by `postgres`: `data/` (the cluster), the socket, and `postgres.log`.
#[derive(Debug)]
pub struct PgCluster {
    bin_dir: PathBuf,
    uid: u32,
    gid: u32,
    server: Option<Child>,
    /// Last, so it is removed after the server is stopped in `drop`.
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// Makes a cluster, starts its server and creates [`PG_DATABASE`]. Check
    /// [`require_postgres`] first: this fails, rather than skips, when
    /// something is missing.
    pub fn start() -> Result<PgCluster> {
        let bin_dir = find_bin_dir().map_err(anyhow::Error::msg)?;
        let account = nix::unistd::User::from_name(PG_USER)
            .context("look up the postgres account")?
            .context("no postgres account")?;
        let (uid, gid) = (account.uid.as_raw(), account.gid.as_raw());
        let dir = tempfile::Builder::new()
            .prefix("perimeter-pg-")
            .tempdir_in("/tmp")
            .context("make the cluster's directory")?;
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
            .with_context(|| format!("chown {} to postgres", dir.path().display()))?;
        let mut cluster = PgCluster {
            bin_dir,
            uid,
            gid,
            server: None,
            dir,
        };
        let output = cluster
            .command("initdb")
            .arg("-D")
            .arg(cluster.data_dir())
            .args(["-A", "trust", "-U", PG_USER, "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .stdin(Stdio::null())
            .output()
            .context("run initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        cluster.start_server()?;
        cluster.create_database(PG_DATABASE)?;
        Ok(cluster)
    }

    /// The directory of the server's socket (a libpq `host`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `postgresql://` URL of [`PG_DATABASE`] as [`PG_USER`], through the
    /// socket.
    pub fn url(&self) -> String {
        self.url_for(PG_DATABASE)
    }

    /// A `postgresql://` URL of `database` as [`PG_USER`], through the socket.
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgresql://{PG_USER}@/{}?host={}&port={PORT}",
            percent_encode(database),
            percent_encode(&self.socket_dir().to_string_lossy())
        )
    }

    /// A key=value connection string of [`PG_DATABASE`] as [`PG_USER`].
    pub fn conninfo(&self) -> String {
        self.conninfo_for(PG_DATABASE)
    }

    /// A key=value connection string of `database` as [`PG_USER`].
    pub fn conninfo_for(&self, database: &str) -> String {
        format!(
            "host={} port={PORT} user={PG_USER} dbname={database}",
            self.socket_dir().display()
        )
    }

    /// Creates an empty database (a fresh one per test case, say).
    pub fn create_database(&self, name: &str) -> Result<()> {
        let output = Command::new(self.bin_dir.join("createdb"))
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &PORT.to_string(), "-U", PG_USER, "--", name])
            .stdin(Stdio::null())
            .output()
            .context("run createdb")?;
        if !output.status.success() {
            bail!(
                "createdb {name} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Stops the server at once (an immediate shutdown: every connection is
    /// cut, as by a crash) and starts it again on the same cluster, returning
    /// once it accepts connections. The data committed before stays.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.start_server()
    }

    /// Stops the server at once, if it runs (SIGQUIT, an immediate shutdown;
    /// SIGKILL if it has not exited within ten seconds).
    pub fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(server.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = server.kill();
        let _ = server.wait();
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// One of PostgreSQL's programs, run as `postgres`.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command.uid(self.uid).gid(self.gid);
        command
    }

    fn start_server(&mut self) -> Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("open the server's log")?;
        let server = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-k")
            .arg(self.socket_dir())
            .args(["-p", &PORT.to_string()])
            // No TCP socket at all: tests never leave the machine.
            .args(["-c", "listen_addresses="])
            // A commit still waits for its WAL to reach the kernel
            // (synchronous_commit stays on), so an immediate stop or a kill
            // loses nothing committed; only a power cut could.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start postgres")?;
        self.server = Some(server);
        self.wait_ready()
    }

    /// Waits until the server accepts connections, or fails with its log.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(server) = self.server.as_mut()
                && let Some(status) = server.try_wait().context("wait for postgres")?
            {
                self.server = None;
                bail!("postgres exited ({status}): {}", self.log_tail());
            }
            let ready = Command::new(self.bin_dir.join("pg_isready"))
                .arg("-h")
                .arg(self.socket_dir())
                .args(["-p", &PORT.to_string(), "-q"])
                .stdin(Stdio::null())
                .status()
                .context("run pg_isready")?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "postgres did not accept connections within {READY_TIMEOUT:?}: {}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory holding `postgres`, `initdb`, `pg_isready` and `createdb`:
/// the one of `postgres` on PATH (symlinks followed, as Debian's
/// /usr/lib/postgresql/N/bin programs are not on PATH), else the newest
/// /usr/lib/postgresql/N/bin.
fn find_bin_dir() -> Result<PathBuf, String> {
    const PROGRAMS: [&str; 4] = ["postgres", "initdb", "pg_isready", "createdb"];
    let complete = |dir: &Path| PROGRAMS.iter().all(|program| dir.join(program).is_file());
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("postgres"))
        .filter_map(|program| std::fs::canonicalize(program).ok())
        .filter_map(|program| program.parent().map(Path::to_path_buf))
        .find(|dir| complete(dir));
    if let Some(dir) = on_path {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|err| {
            format!("postgres is not on PATH and /usr/lib/postgresql cannot be read: {err}")
        })?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).ok_or_else(|| {
        format!(
            "no directory with {} on PATH or in /usr/lib/postgresql/*/bin \
             (scripts/test installs the postgresql package)",
            PROGRAMS.join(", ")
        )
    })
}

/// Percent-encodes everything but unreserved characters and `/`, for a URL's
/// path or query.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::new();
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
