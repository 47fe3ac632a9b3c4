#![no_main]
//! The /proc text formats and links the audit and the watch read, all on the
//! same bytes: the /proc/net/{tcp,tcp6,udp,udp6} tables (each socket found
//! re-parses from a row rendered back), /proc/PID/status (its facts re-parse
//! from a status file rendered back) and its CapEff line, /proc/PID/cgroup
//! (with the unit and container hint of its path), /proc/PID/cmdline, and the
//! fd, exe and ns/net links (each re-parses from its rendering).

use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;

use libfuzzer_sys::fuzz_target;
use perimeter_host::netns::parse_ns_link;
use perimeter_host::procs::{self, StatusFacts};
use perimeter_host::sockets::{self, Family, RawSocket};
use perimeter_model::Protocol;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    proc_net(&text);
    status(&text);
    cgroup(&text);
    cmdline(bytes);
    links(bytes, &text);
});

fn proc_net(text: &str) {
    let n_lines = text.lines().count();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        for family in [Family::Inet, Family::Inet6] {
            let (found, errors) = sockets::parse_proc_net(text, protocol, family);
            assert!(found.len() + errors.len() <= n_lines);
            assert!(errors.iter().all(|err| (1..=n_lines).contains(&err.line)));
            for socket in &found {
                assert_eq!(socket.protocol, protocol);
                assert_eq!(socket.address.is_ipv4(), family == Family::Inet);
                assert_eq!((socket.v6only, socket.ifindex), (None, None));
                let row = proc_net_row(socket);
                let again = sockets::parse_proc_net(&row, protocol, family);
                assert_eq!(again, (vec![socket.clone()], Vec::new()), "{row}");
            }
        }
    }
}

/// A table row as the kernel prints it: each 32-bit word of the address as a
/// native-endian integer in hex, the port in host order.
fn proc_net_row(socket: &RawSocket) -> String {
    let hex_words = |octets: &[u8]| -> String {
        octets
            .chunks_exact(4)
            .map(|word| {
                let word: [u8; 4] = word.try_into().unwrap_or_default();
                format!("{:08X}", u32::from_ne_bytes(word))
            })
            .collect()
    };
    let (local, remote) = match socket.address {
        IpAddr::V4(v4) => (hex_words(&v4.octets()), "0".repeat(8)),
        IpAddr::V6(v6) => (hex_words(&v6.octets()), "0".repeat(32)),
    };
    let state = match socket.protocol {
        Protocol::Tcp => "0A",
        Protocol::Udp => "07",
    };
    format!(
        "   0: {local}:{:04X} {remote}:0000 {state} 00000000:00000000 00:00000000 00000000 {:5} 0 {} 1 0000000000000000 100 0 0 10 0\n",
        socket.port, socket.uid, socket.inode
    )
}

fn status(text: &str) {
    let _ = procs::parse_effective_capabilities(text);
    if let Ok(facts) = procs::parse_status(text) {
        let rendered = status_file(&facts);
        assert_eq!(procs::parse_status(&rendered), Ok(facts), "{rendered:?}");
    }
}

/// The lines of /proc/PID/status the parser reads, `Name:` escaped as the
/// kernel escapes it (newline and backslash only).
fn status_file(facts: &StatusFacts) -> String {
    let name = facts.name.replace('\\', "\\\\").replace('\n', "\\n");
    format!(
        "Name:\t{name}\nUmask:\t0022\nState:\tS (sleeping)\nPPid:\t{}\nUid:\t1\t{}\t2\t3\n",
        facts.ppid, facts.euid
    )
}

fn cgroup(text: &str) {
    let facts = procs::parse_cgroup(text);
    match &facts.path {
        Some(path) => assert_eq!(facts.unit, procs::unit_from_cgroup(path)),
        None => assert_eq!(facts.unit, None),
    }
    if let Some(unit) = &facts.unit {
        assert!(unit.ends_with(".service") || unit.ends_with(".scope"));
    }
    if let Some(container) = &facts.container {
        let runtimes = ["docker:", "podman:", "lxc:", "kubernetes"];
        assert!(
            runtimes.iter().any(|r| container.starts_with(r)),
            "{container}"
        );
    }
    for path in text.lines().filter_map(|line| line.splitn(3, ':').nth(2)) {
        let _ = procs::container_hint(path);
    }
}

fn cmdline(bytes: &[u8]) {
    let args = procs::parse_cmdline(bytes);
    let joined = args.join("\0");
    assert_eq!(procs::parse_cmdline(joined.as_bytes()), args);
    let kept = bytes.iter().rposition(|b| *b != 0).map_or(0, |idx| idx + 1);
    if std::str::from_utf8(bytes).is_ok() {
        assert_eq!(joined.as_bytes(), &bytes[..kept]);
    }
}

fn links(bytes: &[u8], text: &str) {
    if let Some(inode) = procs::parse_socket_link(bytes) {
        let link = format!("socket:[{inode}]");
        assert_eq!(procs::parse_socket_link(link.as_bytes()), Some(inode));
    }
    let (path, deleted) = procs::parse_exe_link(bytes);
    let mut link = path.as_os_str().as_bytes().to_vec();
    if deleted {
        link.extend_from_slice(b" (deleted)");
    }
    assert_eq!(link, bytes);
    assert_eq!(procs::parse_exe_link(&link), (path, deleted));
    if let Some(inode) = parse_ns_link(text) {
        assert_eq!(parse_ns_link(&format!("net:[{inode}]")), Some(inode));
    }
}
