//! uid → account, resolved through NSS (`getpwuid_r`), so accounts from LDAP or
//! SSSD resolve as well as those in /etc/passwd. Lookups are cached for the
//! run: a host has hundreds of processes but a handful of users, and an NSS
//! backend may be a network round trip.

use std::collections::HashMap;

use nix::unistd::{Uid, User};
use perimeter_model::Account;

/// The NSS lookup itself failed (as opposed to the uid having no account).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot look up uid {uid} through nss: {errno}")]
pub struct AccountError {
    pub uid: u32,
    pub errno: nix::Error,
}

/// Accounts by uid, looked up once per run.
#[derive(Debug, Default)]
pub struct AccountCache {
    accounts: HashMap<u32, Result<Option<Account>, AccountError>>,
}

impl AccountCache {
    pub fn new() -> Self {
        AccountCache::default()
    }

    /// The account of `uid`; `Ok(None)` when no account has that uid. Failures
    /// are cached too, so a broken NSS backend is asked once per uid, not once
    /// per process.
    pub fn lookup(&mut self, uid: u32) -> Result<Option<Account>, AccountError> {
        self.accounts
            .entry(uid)
            .or_insert_with(|| lookup_account(uid))
            .clone()
    }
}

/// One uncached NSS lookup.
pub fn lookup_account(uid: u32) -> Result<Option<Account>, AccountError> {
    let user = User::from_uid(Uid::from_raw(uid)).map_err(|errno| AccountError { uid, errno })?;
    Ok(user.map(|user| {
        let text = |path: std::path::PathBuf| {
            let text = path.to_string_lossy().into_owned();
            (!text.is_empty()).then_some(text)
        };
        Account {
            name: user.name,
            uid,
            shell: text(user.shell),
            home: text(user.dir),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves() {
        let mut cache = AccountCache::new();
        let root = cache
            .lookup(0)
            .expect("nss works")
            .expect("uid 0 has an account");
        assert_eq!(root.name, "root");
        assert_eq!(root.uid, 0);
        assert_eq!(root.home.as_deref(), Some("/root"));
        assert!(root.shell.is_some());
        // The second lookup is served from the cache and agrees.
        assert_eq!(cache.lookup(0), Ok(Some(root)));
    }

    #[test]
    fn nobody_has_no_login_shell() {
        let nobody = lookup_account(65534)
            .expect("nss works")
            .expect("nobody exists on Debian");
        assert_eq!(nobody.name, "nobody");
        assert!(!nobody.has_login_shell());
    }

    #[test]
    fn unknown_uid_is_none_not_an_error() {
        assert_eq!(lookup_account(3_999_999_999), Ok(None));
    }
}
