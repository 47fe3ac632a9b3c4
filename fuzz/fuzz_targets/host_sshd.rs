#![no_main]
//! sshd's configuration as perimeter reads it, all on the same bytes:
//! sshd_config files (the bytes split at NUL into a main file and the files
//! its `Include`s may find) loaded and evaluated the way the audit does (every
//! user worth evaluating in every class of source address, under the
//! command-line options); each line as a `-o` option (which parses as the same
//! line does in a file); `sshd -T` output (which re-parses, rendered back, to
//! the same settings); sshd's command line and process title; and OpenSSH's
//! pattern and address-list matching.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use perimeter_host::procs::parse_cmdline;
use perimeter_host::sshd::{
    self, AuthSettings, ConfigFiles, Connection, DEFAULT_CONFIG, Directive, Item,
};

/// As many evaluations as the audit allows one sshd.
const MAX_EVALUATIONS: usize = 32;

/// Config files held in memory; `Include` globs match with sshd's own
/// wildcards, which cover what glob(3) does for real configs (`*.conf`).
struct MemFiles(Vec<(PathBuf, String)>);

impl ConfigFiles for MemFiles {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.0
            .iter()
            .find(|(name, _)| name == path)
            .map(|(_, text)| text.clone())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn glob(&self, pattern: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = self
            .0
            .iter()
            .map(|(name, _)| name)
            .filter(|name| sshd::match_pattern(&name.to_string_lossy(), pattern))
            .cloned()
            .collect();
        found.sort();
        found
    }
}

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let mut parts = text.split('\0');
    let main = parts.next().unwrap_or_default();
    let mut files = vec![(PathBuf::from(DEFAULT_CONFIG), main.to_owned())];
    for (idx, part) in parts.enumerate() {
        let name = PathBuf::from(format!("/etc/ssh/sshd_config.d/{idx:02}.conf"));
        files.push((name, part.to_owned()));
    }

    let n_lines = main.split('\n').count();
    match sshd::parse_sshd_config(main, Path::new(DEFAULT_CONFIG)) {
        Ok(config) => {
            for item in &config.items {
                let line = match item {
                    Item::Directive(directive) => directive.line,
                    Item::Match(m) => m.line,
                    Item::Include(include) => include.line,
                };
                assert!((1..=n_lines).contains(&line));
            }
        }
        Err(err) => assert!((1..=n_lines).contains(&err.line)),
    }

    let command_line = command_line_options(main);
    if let Ok(config) = sshd::load_sshd_config(Path::new(DEFAULT_CONFIG), &MemFiles(files)) {
        evaluate(&config, &command_line);
    }

    sshd_t(&text);
    let _ = sshd::parse_sshd_cmdline(&parse_cmdline(bytes));
    let _ = sshd::parse_sshd_cmdline(&[text.to_string()]);
    patterns(&text);
});

/// Each line as `-o LINE`: a directive exactly when the same line in a file
/// is one, and the same directive.
fn command_line_options(text: &str) -> Vec<Directive> {
    let mut options = Vec::new();
    for raw in text.split('\n') {
        let in_file = sshd::parse_sshd_config(raw, Path::new("line")).ok();
        let in_file = in_file.as_ref().map(|config| config.items.as_slice());
        match sshd::parse_command_line_option(raw) {
            Ok(option) => {
                let Some([Item::Directive(directive)]) = in_file else {
                    panic!("-o {raw:?} is a directive, the line in a file {in_file:?}");
                };
                let same = (&directive.keyword, &directive.args, directive.setting)
                    == (&option.keyword, &option.args, option.setting);
                assert!(same, "{raw:?}: {directive:?} in a file, {option:?} with -o");
                options.push(option);
            }
            Err(_) => assert!(!matches!(in_file, Some([Item::Directive(_)]))),
        }
    }
    options
}

/// What the audit does with a configuration it could not ask sshd about.
fn evaluate(config: &sshd::SshdConfig, command_line: &[Directive]) {
    let classes = sshd::source_classes(config);
    assert!(!classes.is_empty());
    let users = sshd::users_to_evaluate(config);
    let pairs = users
        .iter()
        .flat_map(|user| classes.iter().map(move |class| (user, class)));
    for (user, class) in pairs.take(MAX_EVALUATIONS) {
        let conn = Connection {
            user: Some(user.clone()),
            groups: Some(vec![user.clone()]),
            host: Some(class.addr.to_string()),
            addr: Some(class.addr),
            laddr: Some(class.addr),
            lport: Some(22),
            rdomain: None,
        };
        let _ = sshd::evaluate(config, command_line, &conn);
    }
    for keyword in ["port", "usedns", "listenaddress"] {
        let _ = sshd::global_value(config, command_line, keyword);
    }
    let _ = config.files();
}

/// `sshd -T` output; what it says re-parses from `keyword value` lines.
fn sshd_t(text: &str) {
    let Ok(settings) = sshd::parse_sshd_t(text) else {
        return;
    };
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let AuthSettings {
        permit_root_login,
        password_authentication,
        kbd_interactive_authentication,
        permit_empty_passwords,
    } = settings;
    let rendered = format!(
        "port 22\npermitrootlogin {}\npasswordauthentication {}\nkbdinteractiveauthentication {}\npermitemptypasswords {}\n",
        permit_root_login.as_str(),
        yes_no(password_authentication),
        yes_no(kbd_interactive_authentication),
        yes_no(permit_empty_passwords),
    );
    assert_eq!(sshd::parse_sshd_t(&rendered), Ok(settings));
}

/// Each line as `STRING PATTERN-LIST`: a string without wildcards matches
/// itself, every string matches `*`.
fn patterns(text: &str) {
    for line in text.lines() {
        let (s, list) = line.split_once(' ').unwrap_or((line, line));
        if !s.contains(['*', '?']) {
            assert!(sshd::match_pattern(s, s));
        }
        assert!(sshd::match_pattern(s, "*"));
        let _ = sshd::match_pattern(s, list);
        let _ = sshd::match_pattern_list(s, list, true);
        let addr = s.parse::<IpAddr>().ok();
        let checked = sshd::addr_match_list(None, list);
        assert!(checked == 0 || checked == -2);
        // A negated match ends the list before a later malformed entry, as
        // in OpenSSH, so only a well-formed list is sure to be read whole.
        let matched = sshd::addr_match_list(addr, list);
        assert!((-2..=1).contains(&matched));
        if checked == 0 {
            assert_ne!(matched, -2);
        }
    }
}
