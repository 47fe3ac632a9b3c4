//! sshd_config parsing and evaluation: on literal files, and against the real
//! `/usr/sbin/sshd -T -C ...` (OpenSSH's own evaluation) for many configs and
//! connection criteria. sshd is never started listening here.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use perimeter_host::sshd::{
    AuthSettings, ConfigFiles, Connection, OTHER_USER, PermitRootLogin, SshdConfig, evaluate,
    groups_of, inspect_sshd, inspect_sshd_listening, load_sshd_config, parse_command_line_option,
    parse_sshd_config, run_sshd_t, source_classes, users_to_evaluate,
};
use perimeter_testlab::{Requirement, require};

/// Config files held in memory.
struct MemFiles(BTreeMap<PathBuf, String>);

impl MemFiles {
    fn new(files: &[(&str, &str)]) -> MemFiles {
        MemFiles(
            files
                .iter()
                .map(|(path, text)| (PathBuf::from(path), text.to_string()))
                .collect(),
        )
    }
}

impl ConfigFiles for MemFiles {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn glob(&self, pattern: &str) -> Vec<PathBuf> {
        let Ok(pattern) = glob::Pattern::new(pattern) else {
            return Vec::new();
        };
        self.0
            .keys()
            .filter(|p| pattern.matches_path(p))
            .cloned()
            .collect()
    }
}

fn load(files: &[(&str, &str)]) -> SshdConfig {
    let files = MemFiles::new(files);
    load_sshd_config(Path::new("/etc/ssh/sshd_config"), &files).expect("config loads")
}

fn load_err(files: &[(&str, &str)]) -> String {
    let files = MemFiles::new(files);
    match load_sshd_config(Path::new("/etc/ssh/sshd_config"), &files) {
        Ok(config) => panic!("expected an error, parsed {config:?}"),
        Err(err) => err.to_string(),
    }
}

fn conn(user: &str, addr: &str) -> Connection {
    Connection {
        user: Some(user.to_owned()),
        groups: groups_of(user),
        host: Some(addr.to_owned()),
        addr: addr.parse().ok(),
        laddr: None,
        lport: None,
        rdomain: None,
    }
}

fn short(settings: AuthSettings) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    format!(
        "root={} password={} kbd={} empty={}",
        settings.permit_root_login.as_str(),
        yes_no(settings.password_authentication),
        yes_no(settings.kbd_interactive_authentication),
        yes_no(settings.permit_empty_passwords)
    )
}

#[test]
fn debian_default_file() {
    let config = load(&[(
        "/etc/ssh/sshd_config",
        "Include /etc/ssh/sshd_config.d/*.conf\n\n#PermitRootLogin prohibit-password\nKbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\nPrintMotd no\nAcceptEnv LANG LC_*\nSubsystem\tsftp\t/usr/lib/openssh/sftp-server\n",
    )]);
    assert_eq!(
        short(evaluate(&config, &[], &conn("root", "198.51.100.7"))),
        "root=prohibit-password password=yes kbd=no empty=no"
    );
    let subsystem = config.items.iter().find_map(|item| match item {
        perimeter_host::sshd::Item::Directive(d) if d.keyword == "subsystem" => {
            Some(d.args.clone())
        }
        _ => None,
    });
    assert_eq!(
        subsystem,
        Some(vec![
            "sftp".to_owned(),
            "/usr/lib/openssh/sftp-server".to_owned()
        ])
    );
}

#[test]
fn first_value_wins_and_match_overrides() {
    let config = load(&[(
        "/etc/ssh/sshd_config",
        "PasswordAuthentication no\nPasswordAuthentication yes\npermitrootlogin=yes\n\
         Match Address 10.0.0.0/8,!10.1.0.0/16\n  PasswordAuthentication yes\n  PermitRootLogin no\n\
         Match Address 10.0.0.0/8\n  PasswordAuthentication no\n  PermitEmptyPasswords yes\n",
    )]);
    assert_eq!(
        short(evaluate(&config, &[], &conn("root", "198.51.100.7"))),
        "root=yes password=no kbd=yes empty=no"
    );
    // Both blocks match 10.2.x: the first block's values win, the second adds
    // what the first did not set.
    assert_eq!(
        short(evaluate(&config, &[], &conn("root", "10.2.3.4"))),
        "root=no password=yes kbd=yes empty=yes"
    );
    // The negation excludes 10.1.x from the first block.
    assert_eq!(
        short(evaluate(&config, &[], &conn("root", "10.1.3.4"))),
        "root=yes password=no kbd=yes empty=yes"
    );
}

#[test]
fn match_all_applies_at_start_up_and_to_every_connection() {
    let config = load(&[(
        "/etc/ssh/sshd_config",
        "Match All\nPasswordAuthentication no\nMatch User alice\nPasswordAuthentication yes\n",
    )]);
    assert_eq!(
        short(evaluate(&config, &[], &conn("alice", "192.0.2.1"))),
        "root=prohibit-password password=no kbd=yes empty=no"
    );
}

#[test]
fn includes_keep_the_includers_match_state() {
    let config = load(&[
        (
            "/etc/ssh/sshd_config",
            "Include sshd_config.d/*.conf\nPermitEmptyPasswords yes\nMatch Address 192.0.2.0/24\nInclude /etc/ssh/extra.conf\n",
        ),
        // A Match block ends with its file: 20-b's lines are global again.
        (
            "/etc/ssh/sshd_config.d/10-a.conf",
            "Match Address 10.0.0.0/8\nPasswordAuthentication no\n",
        ),
        ("/etc/ssh/sshd_config.d/20-b.conf", "PermitRootLogin no\n"),
        (
            "/etc/ssh/sshd_config.d/ignored.txt",
            "PermitRootLogin yes\n",
        ),
        // Included inside a Match block that does not match: nothing applies,
        // not even Match All.
        (
            "/etc/ssh/extra.conf",
            "Match All\nKbdInteractiveAuthentication no\n",
        ),
    ]);
    assert_eq!(
        short(evaluate(&config, &[], &conn("root", "198.51.100.7"))),
        "root=no password=yes kbd=yes empty=yes"
    );
    assert_eq!(
        short(evaluate(&config, &[], &conn("root", "10.9.9.9"))),
        "root=no password=no kbd=yes empty=yes"
    );
    assert_eq!(
        short(evaluate(&config, &[], &conn("root", "192.0.2.9"))),
        "root=no password=yes kbd=no empty=yes"
    );
    let files: Vec<String> = config
        .files()
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    assert_eq!(
        files,
        vec![
            "/etc/ssh/sshd_config",
            "/etc/ssh/sshd_config.d/10-a.conf",
            "/etc/ssh/sshd_config.d/20-b.conf",
            "/etc/ssh/extra.conf"
        ]
    );
}

#[test]
fn command_line_options_beat_the_file_but_not_match_blocks() {
    let config = load(&[(
        "/etc/ssh/sshd_config",
        "PasswordAuthentication yes\nMatch Address 10.0.0.0/8\nPasswordAuthentication yes\n",
    )]);
    let options =
        vec![parse_command_line_option("PasswordAuthentication=no").expect("option parses")];
    assert!(!evaluate(&config, &options, &conn("root", "192.0.2.1")).password_authentication);
    assert!(evaluate(&config, &options, &conn("root", "10.0.0.1")).password_authentication);
    assert_eq!(
        parse_command_line_option("Match All")
            .map_err(|e| e.to_string())
            .err(),
        Some("command-line:0: Match is not allowed on the command line".to_owned())
    );
}

#[test]
fn errors_name_file_and_line() {
    assert_eq!(
        load_err(&[("/etc/ssh/sshd_config", "Port 22\nMatch Colour blue\n")]),
        "/etc/ssh/sshd_config:2: unknown Match criterion `Colour`"
    );
    assert_eq!(
        load_err(&[("/etc/ssh/sshd_config", "Banner \"/etc/issue\nPort 22\n")]),
        "/etc/ssh/sshd_config:1: unterminated quote"
    );
    assert_eq!(
        load_err(&[
            ("/etc/ssh/sshd_config", "Include /etc/ssh/a.conf\n"),
            ("/etc/ssh/a.conf", "# a\nInclude /etc/ssh/b.conf\n"),
            ("/etc/ssh/b.conf", "\n\nInclude /etc/ssh/a.conf\n"),
        ]),
        "/etc/ssh/b.conf:3: include loop: /etc/ssh/a.conf includes itself"
    );
    assert_eq!(
        load_err(&[("/etc/ssh/sshd_config", "Match Address 10.0.0.1/8\n")]),
        "/etc/ssh/sshd_config:1: invalid address list `10.0.0.1/8`"
    );
    assert_eq!(
        load_err(&[("/etc/ssh/sshd_config", "Match User root All\n")]),
        "/etc/ssh/sshd_config:1: `Match All` cannot be combined with other criteria"
    );
    assert_eq!(
        load_err(&[("/etc/ssh/sshd_config", "PermitRootLogin maybe\n")]),
        "/etc/ssh/sshd_config:1: unsupported value `maybe` for PermitRootLogin"
    );
    assert_eq!(
        load_err(&[("/etc/ssh/sshd_config", "PasswordAuthentication\n")]),
        "/etc/ssh/sshd_config:1: no argument after keyword `PasswordAuthentication`"
    );
    assert_eq!(
        load_err(&[("/etc/ssh/sshd_config", "PermitEmptyPasswords yes no\n")]),
        "/etc/ssh/sshd_config:1: PermitEmptyPasswords takes one argument"
    );
    assert_eq!(
        load_err(&[("/etc/ssh/sshd_config", "Match User\n")]),
        "/etc/ssh/sshd_config:1: Match criterion `User` needs a value"
    );
    // A missing include is not an error: glob finds nothing.
    assert!(
        load_sshd_config(
            Path::new("/etc/ssh/sshd_config"),
            &MemFiles::new(&[("/etc/ssh/sshd_config", "Include /etc/ssh/missing.conf\n")])
        )
        .is_ok()
    );
}

#[test]
fn deep_includes_are_bounded() {
    let mut files: Vec<(String, String)> = Vec::new();
    for depth in 0..20 {
        let name = if depth == 0 {
            "/etc/ssh/sshd_config".to_owned()
        } else {
            format!("/etc/ssh/d{depth}.conf")
        };
        files.push((name, format!("Include /etc/ssh/d{}.conf\n", depth + 1)));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        load_err(&refs),
        "/etc/ssh/d16.conf:1: includes nested deeper than 16"
    );
}

#[test]
fn parse_keeps_every_directive_case_folded() {
    let config = parse_sshd_config(
        "  LISTENADDRESS 0.0.0.0  \n#Port 2222\nPort=2222 # the usual\n\u{c}\n",
        Path::new("/x"),
    )
    .expect("parses");
    let rendered: Vec<String> = config
        .items
        .iter()
        .map(|item| match item {
            perimeter_host::sshd::Item::Directive(d) => {
                format!("{}:{} {:?}", d.line, d.keyword, d.args)
            }
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        rendered,
        vec!["1:listenaddress [\"0.0.0.0\"]", "3:port [\"2222\"]"]
    );
}

#[test]
fn source_classes_from_match_address_blocks() {
    let config = load(&[(
        "/etc/ssh/sshd_config",
        "PasswordAuthentication no\n\
         Match Address 10.0.0.0/8\n PasswordAuthentication yes\n\
         Match Address 10.1.0.0/16,!10.1.2.0/24 User alice\n PermitRootLogin yes\n\
         Match Address 192.168.*,2001:db8:1::/48\n PermitEmptyPasswords yes\n",
    )]);
    let classes: Vec<String> = source_classes(&config)
        .iter()
        .map(|c| format!("{} <- {}", c.addr, c.description))
        .collect();
    assert_eq!(
        classes,
        vec![
            "198.51.100.7 <- any other address",
            "10.0.0.1 <- Address 10.0.0.0/8 (/etc/ssh/sshd_config:2)",
            "10.1.0.1 <- Address 10.0.0.0/8 (/etc/ssh/sshd_config:2); Address 10.1.0.0/16,!10.1.2.0/24 (/etc/ssh/sshd_config:4)",
            "2001:db8:1::1 <- Address 192.168.*,2001:db8:1::/48 (/etc/ssh/sshd_config:6)",
        ]
    );
    // Every representative really is inside its class and outside the others.
    for class in source_classes(&config) {
        let settings = evaluate(&config, &[], &conn("alice", &class.addr.to_string()));
        if class.description == "any other address" {
            assert!(!settings.password_authentication);
        }
    }
    assert_eq!(
        users_to_evaluate(&config),
        vec!["root", "alice", OTHER_USER]
    );

    let plain = load(&[("/etc/ssh/sshd_config", "PermitRootLogin no\n")]);
    let classes = source_classes(&plain);
    assert_eq!(classes.len(), 1);
    assert_eq!(classes[0].description, "any address");
}

// ---------------------------------------------------------------------------
// Against the real sshd

const SSHD: &str = "/usr/sbin/sshd";

/// A temporary directory with a host key, so `sshd -T` can run on configs
/// written there.
struct SshdLab {
    dir: tempfile::TempDir,
}

impl SshdLab {
    /// `None` when this machine cannot run `sshd -T` (root, sshd and
    /// ssh-keygen), after [`require`] said so or failed the test.
    fn new() -> Option<SshdLab> {
        if !require(Requirement::Root)
            || !require(Requirement::Tool(SSHD))
            || !require(Requirement::Tool("ssh-keygen"))
        {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("host_ed25519");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success());
        Some(SshdLab { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a main config (with the lab's host key) and further files;
    /// `@` in any text stands for the lab directory.
    fn write(&self, main: &str, others: &[(&str, &str)]) -> PathBuf {
        let dir = self.dir.path().display().to_string();
        for (name, text) in others {
            let path = self.path(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&path, text.replace('@', &dir)).expect("write");
        }
        let main_path = self.path("sshd_config");
        let text = format!(
            "HostKey {}\n{}",
            self.path("host_ed25519").display(),
            main.replace('@', &dir)
        );
        std::fs::write(&main_path, text).expect("write");
        main_path
    }
}

/// Compares perimeter's evaluation with sshd's for every connection.
fn compare(config_path: &Path, options: &[&str], connections: &[Connection]) -> usize {
    let files = perimeter_host::sshd::RealFiles::default();
    let config = load_sshd_config(config_path, &files).expect("perimeter parses the config");
    let directives: Vec<_> = options
        .iter()
        .map(|o| parse_command_line_option(o).expect("option parses"))
        .collect();
    let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
    for conn in connections {
        let theirs = run_sshd_t(Path::new(SSHD), config_path, &options, conn)
            .unwrap_or_else(|err| panic!("sshd -T on {}: {err}", config_path.display()));
        let ours = evaluate(&config, &directives, conn);
        assert_eq!(
            ours,
            theirs,
            "{} for {}:\n{}",
            config_path.display(),
            conn.criteria(),
            std::fs::read_to_string(config_path).unwrap_or_default()
        );
    }
    connections.len()
}

fn connections_for(config_path: &Path, extra_addrs: &[&str]) -> Vec<Connection> {
    let config =
        load_sshd_config(config_path, &perimeter_host::sshd::RealFiles::default()).expect("parses");
    let mut addrs: Vec<IpAddr> = source_classes(&config).iter().map(|c| c.addr).collect();
    addrs.extend(extra_addrs.iter().filter_map(|a| a.parse::<IpAddr>().ok()));
    let mut users = users_to_evaluate(&config);
    users.push("alice".into());
    users.dedup();
    let mut connections = Vec::new();
    for addr in &addrs {
        for user in &users {
            connections.push(conn(user, &addr.to_string()));
        }
    }
    // Criteria left out, as sshd -T allows: every criterion on them fails.
    connections.push(Connection {
        addr: addrs.first().copied(),
        ..Connection::default()
    });
    connections.push(Connection {
        user: Some("root".into()),
        groups: groups_of("root"),
        ..Connection::default()
    });
    connections
}

#[test]
fn agrees_with_sshd_t_on_handwritten_configs() {
    let Some(lab) = SshdLab::new() else { return };
    // (main file, other files, extra source addresses to evaluate)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        ("", vec![], vec![]),
        (
            "PermitRootLogin without-password\nPasswordAuthentication=no\n",
            vec![],
            vec![],
        ),
        (
            "PasswordAuthentication no\nMatch All\nPasswordAuthentication yes\nPermitRootLogin yes\n",
            vec![],
            vec![],
        ),
        (
            "Match Address 10.0.0.0/8\nPasswordAuthentication no\nMatch All\nPasswordAuthentication yes\nMatch Address 10.1.0.0/16,!10.1.2.0/24\nPermitRootLogin yes\n",
            vec![],
            vec!["10.1.2.3", "10.1.3.3", "10.200.0.1"],
        ),
        (
            "Include @/inc/*.conf\nPermitEmptyPasswords yes\n",
            vec![
                (
                    "inc/10-a.conf",
                    "Match Address 10.0.0.0/8\nPasswordAuthentication no\n",
                ),
                (
                    "inc/20-b.conf",
                    "PermitRootLogin no\nPasswordAuthentication yes\n",
                ),
            ],
            vec!["10.9.8.7"],
        ),
        (
            "Match Address 192.0.2.0/24\nInclude @/inc2.conf\nPermitEmptyPasswords yes\n",
            vec![(
                "inc2.conf",
                "PermitRootLogin no\nMatch All\nKbdInteractiveAuthentication no\n",
            )],
            vec!["192.0.2.50"],
        ),
        (
            "Include @/inc3.conf\nPasswordAuthentication no\n",
            vec![(
                "inc3.conf",
                "Match Address 10.0.0.0/8\nPermitRootLogin yes\n",
            )],
            vec![],
        ),
        (
            "Match Address 10.0.0.0/8\nInclude @/inc4.conf\nPasswordAuthentication no\n",
            vec![(
                "inc4.conf",
                "Match Address 10.1.0.0/16\nPermitRootLogin yes\n",
            )],
            vec!["10.1.1.1", "10.2.1.1"],
        ),
        (
            "Include @/inc5.conf\nPermitRootLogin yes\nMatch Address 10.0.0.0/8\nPermitRootLogin forced-commands-only\n",
            vec![("inc5.conf", "Match All\nPermitRootLogin no\n")],
            vec![],
        ),
        (
            "Match user root,!bob address 10.0.0.0/8\nPasswordAuthentication no\nMatch User=alice\nPermitEmptyPasswords yes\n",
            vec![],
            vec![],
        ),
        (
            "Match Address \"10.0.0.0/8,192.0.2.0/24\" # lab\nPasswordAuthentication no\nMatch all # x\nKbdInteractiveAuthentication no\n",
            vec![],
            vec![],
        ),
        (
            "Match Address 10.*,2001:db8::/32\nPasswordAuthentication no\nMatch Host *.example.com,192.168.*\nPermitRootLogin no\n",
            vec![],
            vec!["2001:db8::5", "192.168.1.1", "::ffff:10.0.0.1"],
        ),
        (
            "ChallengeResponseAuthentication no\nKbdInteractiveAuthentication yes\nMatch Group root\nPasswordAuthentication no\n",
            vec![],
            vec![],
        ),
        (
            "PasswordAuthentication YES\npermitrootlogin Prohibit-Password\n  \tKbdInteractiveAuthentication\tno\r\n",
            vec![],
            vec![],
        ),
    ];
    let mut n_compared = 0;
    for (main, others, extra) in &cases {
        let path = lab.write(main, others);
        n_compared += compare(&path, &[], &connections_for(&path, extra));
    }
    // Command-line options, as sshd's -o.
    let path = lab.write("Match Address 10.0.0.0/8\nPasswordAuthentication no\n", &[]);
    n_compared += compare(
        &path,
        &["PasswordAuthentication=yes", "PermitRootLogin no"],
        &connections_for(&path, &[]),
    );
    // Local address and port, given: sshd -T insists on lport when the
    // config has Match LocalPort (unlike every other criterion).
    let path = lab.write(
        "Match LocalPort 2222\nPasswordAuthentication no\nMatch LocalAddress 127.0.0.0/8\nPermitRootLogin yes\n",
        &[],
    );
    let locals: Vec<Connection> = [("127.0.0.5", 22), ("198.18.0.1", 2222), ("::1", 2222)]
        .iter()
        .map(|(laddr, lport)| Connection {
            laddr: laddr.parse().ok(),
            lport: Some(*lport),
            ..conn("root", "198.51.100.7")
        })
        .collect();
    n_compared += compare(&path, &[], &locals);
    assert!(n_compared > 120, "compared {n_compared} evaluations");
}

/// A small deterministic generator (xorshift), so a failing config can be
/// regenerated from its index.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[test]
fn agrees_with_sshd_t_on_generated_configs() {
    let Some(lab) = SshdLab::new() else { return };
    let settings = [
        "PermitRootLogin yes",
        "PermitRootLogin no",
        "PermitRootLogin prohibit-password",
        "PermitRootLogin forced-commands-only",
        "PasswordAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication yes",
        "ChallengeResponseAuthentication no",
        "PermitEmptyPasswords yes",
        "PermitEmptyPasswords no",
        "X11Forwarding no",
    ];
    let matches = [
        "Match Address 10.0.0.0/8",
        "Match Address 10.1.0.0/16,!10.1.1.0/24",
        "Match Address 192.0.2.0/24,2001:db8::/32",
        "Match Address 172.16.*",
        "Match User root",
        "Match User alice,bob",
        "Match User !root,*",
        "Match User root Address 10.0.0.0/8",
        "Match Host 10.*",
        "Match All",
        "Match Group nogroup",
    ];
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut n_compared = 0;
    for case in 0..40 {
        let mut include_text = String::new();
        for _ in 0..(rng.next() % 3) {
            if rng.next().is_multiple_of(3) {
                include_text.push_str(rng.pick(&matches));
                include_text.push('\n');
            }
            include_text.push_str(rng.pick(&settings));
            include_text.push('\n');
        }
        let mut main = String::new();
        let n_lines = 2 + rng.next() % 10;
        for _ in 0..n_lines {
            match rng.next() % 6 {
                0 | 1 => main.push_str(rng.pick(&matches)),
                2 => main.push_str(&format!("Include @/gen{case}/*.conf")),
                _ => main.push_str(rng.pick(&settings)),
            }
            main.push('\n');
        }
        let include_name = format!("gen{case}/a.conf");
        let path = lab.write(&main, &[(&include_name, &include_text)]);
        n_compared += compare(
            &path,
            &[],
            &connections_for(&path, &["10.1.1.9", "172.16.5.5", "2001:db8::1"]),
        );
    }
    assert!(n_compared > 400, "compared {n_compared} evaluations");
}

#[test]
fn inspects_a_daemon_by_its_process_title() {
    let Some(lab) = SshdLab::new() else { return };
    let path = lab.write(
        "PasswordAuthentication no\nPermitRootLogin no\nMatch Address 198.18.0.0/15\n  PasswordAuthentication yes\n  PermitRootLogin yes\n",
        &[],
    );
    let title = vec![format!(
        "sshd: {SSHD} -D -f {} [listener] 0 of 10-100 startups",
        path.display()
    )];
    // This process stands in for the daemon: same mount namespace.
    let (facts, problems) = inspect_sshd(std::process::id(), Some(Path::new(SSHD)), &title);
    assert!(problems.is_empty(), "{problems:?}");
    let facts = facts.expect("facts");
    assert_eq!(facts.method, "sshd -T");
    assert_eq!(facts.config_file, path);
    let rows: Vec<String> = facts
        .evaluations
        .iter()
        .map(|e| {
            format!(
                "{} | {} | root={} password={}",
                e.sources,
                e.criteria.split(',').next().unwrap_or(""),
                e.permit_root_login,
                e.password_authentication
            )
        })
        .collect();
    let config = path.display().to_string();
    assert_eq!(
        rows,
        vec![
            "any other address | user=root | root=no password=false".to_owned(),
            format!("any other address | user={OTHER_USER} | root=no password=false"),
            format!("Address 198.18.0.0/15 ({config}:4) | user=root | root=yes password=true"),
            format!(
                "Address 198.18.0.0/15 ({config}:4) | user={OTHER_USER} | root=yes password=true"
            ),
        ]
    );
    assert!(facts.evaluations[0].criteria.contains("addr=198.51.100.7"));
    assert!(facts.evaluations[2].criteria.contains("addr=198.18.0.1"));

    // Without a usable binary, perimeter's own reading gives the same answers.
    let (parsed, problems) = inspect_sshd(
        std::process::id(),
        Some(Path::new("/nonexistent/sshd")),
        &[SSHD.to_owned(), "-f".to_owned(), path.display().to_string()],
    );
    let parsed = parsed.expect("facts");
    assert_eq!(parsed.method, "parsed");
    assert_eq!(parsed.evaluations, facts.evaluations);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.contains("cannot run sshd -T"),
        "{problems:?}"
    );
}

#[test]
fn sshd_t_failure_falls_back_with_a_problem() {
    let Some(lab) = SshdLab::new() else { return };
    // sshd -T refuses a config whose only host key is missing.
    let path = lab.path("nokey_config");
    std::fs::write(&path, "HostKey /nonexistent/key\nPermitRootLogin yes\n").expect("write");
    let argv = vec![
        SSHD.to_owned(),
        "-D".to_owned(),
        format!("-f{}", path.display()),
    ];
    let (facts, problems) = inspect_sshd(std::process::id(), Some(Path::new(SSHD)), &argv);
    let facts = facts.expect("facts");
    assert_eq!(facts.method, "parsed");
    assert!(
        facts
            .evaluations
            .iter()
            .all(|e| e.permit_root_login == "yes")
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.starts_with("sshd -T failed:"),
        "{problems:?}"
    );
    assert_eq!(
        problems[0].hint.as_deref(),
        Some("sshd -T loads the host keys, which needs root")
    );
}

#[test]
fn local_address_blocks_need_the_listeners() {
    let Some(lab) = SshdLab::new() else { return };
    let path = lab.write("Match LocalPort 2222\n  PasswordAuthentication no\n", &[]);
    let argv = vec![SSHD.to_owned(), "-f".to_owned(), path.display().to_string()];
    let (_, problems) = inspect_sshd(std::process::id(), Some(Path::new(SSHD)), &argv);
    assert!(
        problems.iter().any(|p| p.message
            == "no listening address was given, so Match LocalAddress blocks were not evaluated \
                and Match LocalPort was evaluated for port 22 only"),
        "{problems:?}"
    );
    let listeners = [
        "0.0.0.0:22".parse().expect("literal"),
        "[::]:2222".parse().expect("literal"),
    ];
    let (facts, problems) =
        inspect_sshd_listening(std::process::id(), Some(Path::new(SSHD)), &argv, &listeners);
    assert!(problems.is_empty(), "{problems:?}");
    let by_port: Vec<(String, bool)> = facts
        .expect("facts")
        .evaluations
        .iter()
        .filter(|e| e.criteria.starts_with("user=root"))
        .map(|e| {
            (
                e.criteria.rsplit(',').next().unwrap_or("").to_owned(),
                e.password_authentication,
            )
        })
        .collect();
    assert_eq!(
        by_port,
        vec![
            ("lport=22".to_owned(), true),
            ("lport=2222".to_owned(), false)
        ]
    );
    // The evaluation stays in sshd's own terms.
    assert_eq!(
        PermitRootLogin::ProhibitPassword.as_str(),
        "prohibit-password"
    );
}

mod no_panics {
    use std::path::Path;

    use perimeter_host::sshd::{
        Connection, addr_match_list, evaluate, match_pattern_list, parse_sshd_cmdline,
        parse_sshd_config, parse_sshd_t, source_classes,
    };
    use proptest::prelude::*;

    const LINE: &str = "(Match|PermitRootLogin|PasswordAuthentication|Include|KbdInteractiveAuthentication|Port|#)?[ =\t]{0,2}(All|User|Address|Host|LocalPort|Group|yes|no|\"|'|\\\\|#|!|,|\\*|\\?|[0-9a-f.:/]{1,12}|[ \t=]){0,10}";

    proptest! {
        /// Lines built from sshd_config's vocabulary: a config or an error,
        /// never a panic; and whatever parses can be evaluated and classed.
        #[test]
        fn configs(lines in proptest::collection::vec(LINE, 0..10)) {
            let text = lines.join("\n");
            if let Ok(config) = parse_sshd_config(&text, Path::new("/fuzz")) {
                let classes = source_classes(&config);
                prop_assert!(!classes.is_empty());
                for class in classes {
                    let conn = Connection {
                        user: Some("root".into()),
                        addr: Some(class.addr),
                        host: Some(class.addr.to_string()),
                        ..Connection::default()
                    };
                    let _ = evaluate(&config, &[], &conn);
                }
            }
        }

        #[test]
        fn patterns_and_titles(s in "[ -~]{0,40}", list in "[!,*?0-9a-f.:/]{0,40}") {
            let _ = match_pattern_list(&s, &list, true);
            let _ = addr_match_list(s.parse().ok(), &list);
            let _ = addr_match_list(None, &list);
            let _ = parse_sshd_t(&s);
            let _ = parse_sshd_cmdline(std::slice::from_ref(&s));
            let _ = parse_sshd_cmdline(&s.split(' ').map(str::to_owned).collect::<Vec<_>>());
        }
    }
}
