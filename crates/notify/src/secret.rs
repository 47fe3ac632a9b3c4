//! Secrets: SMTP passwords, HMAC keys and webhook URLs (which carry their
//! tokens in the path or query), read from a file or an environment
//! variable and never printed.
//!
//! The configuration names where a secret is (`file = "/etc/perimeter/smtp-password"`
//! or `env = "PERIMETER_SMTP_PASSWORD"`), never the secret itself, so that
//! perimeter.toml can be world-readable and kept in version control. The
//! environment is passed in as a lookup function: only the binary touches
//! the process environment, and tests give their own.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// The largest secret file read: a password, a key or a URL is far smaller,
/// while a wrong path (a log, `/dev/zero`) is stopped at once.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// A value that must not be shown: `Debug` and `Display` print `[redacted]`.
/// Only [`Secret::expose`] gives the value, to the code that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret the caller already holds (a test's key).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Read the secret `source` names. `env` looks up an environment
    /// variable (`std::env::var_os` in the binary). A file's content is
    /// taken whole, less one trailing newline (`\n` or `\r\n`), since editors
    /// and `echo` add one; it must be UTF-8 and not empty.
    pub fn load(
        source: &SecretSource,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Secret, SecretError> {
        match source {
            SecretSource::File(path) => read_secret_file(path),
            SecretSource::Env(name) => {
                let value =
                    env(name).ok_or_else(|| SecretError::EnvMissing { name: name.clone() })?;
                let value = value
                    .into_string()
                    .map_err(|_| SecretError::EnvNotUnicode { name: name.clone() })?;
                if value.is_empty() {
                    return Err(SecretError::Empty {
                        place: source.to_string(),
                    });
                }
                Ok(Secret(value))
            }
        }
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

fn read_secret_file(path: &Path) -> Result<Secret, SecretError> {
    let bytes = perimeter_files::read_bytes(path, "a secret", MAX_SECRET_BYTES)?;
    // Not `read_text`: its error for bad UTF-8 quotes the offending byte,
    // which is a byte of the secret.
    let text = String::from_utf8(bytes).map_err(|_| SecretError::NotUtf8 {
        path: path.to_owned(),
    })?;
    let value = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(SecretError::Empty {
            place: format!("file {}", path.display()),
        });
    }
    Ok(Secret(value.to_owned()))
}

/// Where a secret is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding the value (owned by the monitor's user, mode 0600 or
    /// 0400: see [`readable_by_others`]).
    File(PathBuf),
    /// An environment variable holding the value.
    Env(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "file {}", path.display()),
            SecretSource::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// Why a secret could not be read. No variant carries any of its value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    File(#[from] perimeter_files::FileError),
    #[error("{}: a secret must be UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("the secret in {place} is empty")]
    Empty { place: String },
    #[error("the environment variable {name} that should hold a secret is not set")]
    EnvMissing { name: String },
    #[error("the environment variable {name} does not hold UTF-8 text")]
    EnvNotUnicode { name: String },
}

/// Whether a file of this mode (`st_mode`, or just its permission bits) may
/// be read by its group or by everyone. A secret file should be readable by
/// its owner alone; the configuration refuses one that is not.
pub fn readable_by_others(mode: u32) -> bool {
    mode & 0o044 != 0
}

/// Whether a file of this mode may be changed by its group or by everyone:
/// whoever can change a webhook URL or an SMTP relay's password file can
/// send the alerts elsewhere.
pub fn writable_by_others(mode: u32) -> bool {
    mode & 0o022 != 0
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&secret)), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn secrets_come_from_files_less_one_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("password");
        for (content, expected) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret", "s3cret"),
            ("two lines\nkept\n", "two lines\nkept"),
            (" spaced \n\n", " spaced \n"),
        ] {
            std::fs::write(&path, content).expect("write");
            let secret = Secret::load(&SecretSource::File(path.clone()), no_env).expect("load");
            assert_eq!(secret.expose(), expected, "{content:?}");
        }
    }

    #[test]
    fn bad_secret_files_say_why_without_the_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let load = |path: &Path| {
            Secret::load(&SecretSource::File(path.to_owned()), no_env)
                .map(|_| ())
                .map_err(|err| err.to_string())
        };
        let path = dir.path().join("secret");
        std::fs::write(&path, b"s\xffcret").expect("write");
        assert_eq!(
            load(&path),
            Err(format!("{}: a secret must be UTF-8 text", path.display()))
        );
        std::fs::write(&path, "\n").expect("write");
        assert_eq!(
            load(&path),
            Err(format!("the secret in file {} is empty", path.display()))
        );
        let missing = dir.path().join("missing");
        assert!(
            load(&missing).is_err_and(|err| err.contains("No such file")),
            "{:?}",
            load(&missing)
        );
        assert_eq!(
            load(Path::new("/dev/zero")),
            Err("/dev/zero: is a character device, not a regular file".to_owned())
        );
        std::fs::write(&path, "x".repeat(70_000)).expect("write");
        assert!(load(&path).is_err_and(|err| err.contains("larger than")));
    }

    #[test]
    fn secrets_come_from_the_environment_given() {
        let env = |name: &str| (name == "PERIMETER_TEST_KEY").then(|| OsString::from("k3y"));
        let source = SecretSource::Env("PERIMETER_TEST_KEY".to_owned());
        assert_eq!(Secret::load(&source, env).expect("set").expose(), "k3y");
        let unset = SecretSource::Env("PERIMETER_UNSET".to_owned());
        assert_eq!(
            Secret::load(&unset, env).map_err(|e| e.to_string()),
            Err(
                "the environment variable PERIMETER_UNSET that should hold a secret is not set"
                    .to_owned()
            )
        );
        let empty = |_: &str| Some(OsString::new());
        assert_eq!(
            Secret::load(&source, empty).map_err(|e| e.to_string()),
            Err("the secret in environment variable PERIMETER_TEST_KEY is empty".to_owned())
        );
    }

    #[test]
    fn modes_that_expose_a_secret() {
        for (mode, readable, writable) in [
            (0o600, false, false),
            (0o400, false, false),
            (0o700, false, false),
            (0o640, true, false),
            (0o604, true, false),
            (0o644, true, false),
            (0o620, false, true),
            (0o602, false, true),
            (0o666, true, true),
            // st_mode carries the file type too.
            (0o100_600, false, false),
            (0o100_640, true, false),
        ] {
            assert_eq!(readable_by_others(mode), readable, "{mode:o}");
            assert_eq!(writable_by_others(mode), writable, "{mode:o}");
        }
        // And the bits of a real file.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, "k").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert!(readable_by_others(mode));
    }
}
