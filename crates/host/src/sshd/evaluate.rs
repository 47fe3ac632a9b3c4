//! The effective settings for one connection, replaying servconf.c's two
//! passes: the start-up pass (command-line `-o` options, global lines and
//! `Match All`; first value wins), then the per-connection pass over `Match`
//! blocks only, whose values (first matching block wins) override the
//! start-up ones, over OpenSSH's compiled-in defaults.

use std::fmt;

use super::config::{Directive, Item, PermitRootLogin, Setting, SshdConfig};
use super::matching::Connection;

/// The authentication settings perimeter reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthSettings {
    pub permit_root_login: PermitRootLogin,
    pub password_authentication: bool,
    pub kbd_interactive_authentication: bool,
    pub permit_empty_passwords: bool,
}

impl AuthSettings {
    /// OpenSSH's compiled-in defaults (Debian does not change them; its
    /// shipped file sets `KbdInteractiveAuthentication no`).
    pub const DEFAULTS: AuthSettings = AuthSettings {
        permit_root_login: PermitRootLogin::ProhibitPassword,
        password_authentication: true,
        kbd_interactive_authentication: true,
        permit_empty_passwords: false,
    };
}

impl fmt::Display for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "permitrootlogin {}, passwordauthentication {}, kbdinteractiveauthentication {}, permitemptypasswords {}",
            self.permit_root_login.as_str(),
            yes_no(self.password_authentication),
            yes_no(self.kbd_interactive_authentication),
            yes_no(self.permit_empty_passwords)
        )
    }
}

/// Values set so far in one pass; the first value of each wins.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PassValues {
    pub(super) permit_root_login: Option<PermitRootLogin>,
    pub(super) password_authentication: Option<bool>,
    pub(super) kbd_interactive_authentication: Option<bool>,
    pub(super) permit_empty_passwords: Option<bool>,
}

impl PassValues {
    fn take(&mut self, directive: &Directive) {
        if let Some(setting) = directive.setting {
            self.take_setting(setting);
        }
    }

    pub(super) fn take_setting(&mut self, setting: Setting) {
        match setting {
            Setting::PermitRootLogin(v) => {
                self.permit_root_login.get_or_insert(v);
            }
            Setting::PasswordAuthentication(v) => {
                self.password_authentication.get_or_insert(v);
            }
            Setting::KbdInteractiveAuthentication(v) => {
                self.kbd_interactive_authentication.get_or_insert(v);
            }
            Setting::PermitEmptyPasswords(v) => {
                self.permit_empty_passwords.get_or_insert(v);
            }
        }
    }

    /// servconf.c's `copy_set_server_options`: what the connection pass set
    /// overrides what start-up set.
    fn over(self, base: PassValues) -> PassValues {
        PassValues {
            permit_root_login: self.permit_root_login.or(base.permit_root_login),
            password_authentication: self
                .password_authentication
                .or(base.password_authentication),
            kbd_interactive_authentication: self
                .kbd_interactive_authentication
                .or(base.kbd_interactive_authentication),
            permit_empty_passwords: self.permit_empty_passwords.or(base.permit_empty_passwords),
        }
    }

    pub(super) fn or_defaults(self) -> AuthSettings {
        let d = AuthSettings::DEFAULTS;
        AuthSettings {
            permit_root_login: self.permit_root_login.unwrap_or(d.permit_root_login),
            password_authentication: self
                .password_authentication
                .unwrap_or(d.password_authentication),
            kbd_interactive_authentication: self
                .kbd_interactive_authentication
                .unwrap_or(d.kbd_interactive_authentication),
            permit_empty_passwords: self
                .permit_empty_passwords
                .unwrap_or(d.permit_empty_passwords),
        }
    }
}

/// servconf.c's include flags: how `Match` lines in an included file behave.
#[derive(Debug, Clone, Copy, Default)]
struct IncludeFlags {
    /// The connection pass, before the includer's first `Match`: lines are
    /// inactive only because this pass skips global lines, so `Match` blocks
    /// inside are evaluated.
    match_only: bool,
    /// Included from inside a `Match` block that did not match: nothing in the
    /// file can apply.
    never_match: bool,
}

fn walk(
    config: &SshdConfig,
    conn: Option<&Connection>,
    mut flags: IncludeFlags,
    active: &mut bool,
    out: &mut PassValues,
) {
    for item in &config.items {
        match item {
            Item::Directive(directive) => {
                if *active {
                    out.take(directive);
                }
            }
            Item::Match(m) => {
                *active = !flags.never_match && m.matches(conn);
                flags.match_only = false;
            }
            Item::Include(include) => {
                // Each included file starts, and the includer resumes, with the
                // includer's state: a Match block ends with its file.
                let outer_active = *active;
                for file in &include.files {
                    let child = if flags.match_only {
                        IncludeFlags {
                            match_only: true,
                            never_match: false,
                        }
                    } else {
                        IncludeFlags {
                            match_only: false,
                            never_match: !outer_active,
                        }
                    };
                    walk(file, conn, child, active, out);
                    *active = outer_active;
                }
            }
        }
    }
}

/// The effective settings for one connection, as sshd computes them: the
/// start-up pass (command-line `-o` options first, then global lines and
/// `Match All` blocks; first value wins), overridden by the connection pass
/// (only `Match` blocks that match; first value wins), over the defaults.
pub fn evaluate(
    config: &SshdConfig,
    command_line: &[Directive],
    conn: &Connection,
) -> AuthSettings {
    let mut startup = PassValues::default();
    for directive in command_line {
        startup.take(directive);
    }
    let mut active = true;
    walk(
        config,
        None,
        IncludeFlags::default(),
        &mut active,
        &mut startup,
    );

    let mut connection = PassValues::default();
    let mut active = false;
    let flags = IncludeFlags {
        match_only: true,
        never_match: false,
    };
    walk(config, Some(conn), flags, &mut active, &mut connection);
    connection.over(startup).or_defaults()
}

/// The value a global keyword has after the start-up pass, for keywords
/// perimeter does not type (`usedns`, `port`). First value wins.
pub fn global_value<'a>(
    config: &'a SshdConfig,
    command_line: &'a [Directive],
    keyword: &str,
) -> Option<&'a [String]> {
    fn find<'a>(config: &'a SshdConfig, keyword: &str, active: &mut bool) -> Option<&'a [String]> {
        for item in &config.items {
            match item {
                Item::Directive(d) if *active && d.keyword == keyword => return Some(&d.args),
                Item::Match(m) => *active = m.matches(None),
                Item::Include(include) => {
                    let outer = *active;
                    for file in &include.files {
                        if outer && let Some(found) = find(file, keyword, active) {
                            return Some(found);
                        }
                        *active = outer;
                    }
                }
                Item::Directive(_) => {}
            }
        }
        None
    }
    command_line
        .iter()
        .find(|d| d.keyword == keyword)
        .map(|d| d.args.as_slice())
        .or_else(|| find(config, keyword, &mut true))
}
