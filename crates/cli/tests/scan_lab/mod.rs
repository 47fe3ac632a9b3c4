//! The lab the scan tests run in, and the readers they check output with.
//!
//! A [`ServiceLab`] is a scanner namespace and three target hosts on one lab
//! bridge (198.18.0.0/15 and fd00:198:18::/64, no route beyond it), with real
//! servers started inside: a web host (Python's http.server, a Redis without a
//! password on the unusual port 7379, memcached), a database host (sshd and a
//! Redis with `requirepass`, on IPv4 and IPv6, and two firewalled ports) and a
//! hardened host (default-drop firewall that lets only a passwordless Redis
//! through). Everything is stopped and removed when the lab drops.
//!
//! The XML reader here is deliberately generic (a tiny element tree over
//! quick-xml): the same function reads nmap's `-oX` output and perimeter's, so
//! "nmap-shaped" means "what reads nmap's XML reads ours".

#![allow(dead_code, reason = "each test uses a different subset")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use perimeter_testlab::{Daemon, Lab, Ns, Requirement, require};
use quick_xml::events::{BytesStart, Event};
use serde_json::Value;

/// The scanner's addresses. The scanner namespace has no route: it reaches
/// the lab bridge and nothing else.
pub(crate) const SCANNER: [&str; 2] = ["198.18.0.1/15", "fd00:198:18::1/64"];
pub(crate) const WEB: &str = "198.18.0.2";
pub(crate) const DB: &str = "198.18.0.3";
pub(crate) const DB_V6: &str = "fd00:198:18::3";
pub(crate) const FW: &str = "198.18.0.4";

/// The ports every service-lab test scans: something open, closed or
/// filtered on every host, few enough that nmap lists each one (it folds a
/// state into `<extraports>` only when many ports share it).
pub(crate) const PORTS: &str = "22,80,6379,7379,8080,9000,9001,11211";
pub(crate) const PORT_LIST: [u16; 8] = [22, 80, 6379, 7379, 8080, 9000, 9001, 11211];

/// How long a daemon may take to start listening: generous, because the
/// machine is shared with other tests; it is a bound on a wait, not a check.
const START_WAIT: Duration = Duration::from_secs(20);

pub(crate) fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

pub(crate) fn sock(address: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(address), port)
}

/// A lab with a scanner namespace and empty target hosts.
#[derive(Debug)]
pub(crate) struct BareLab {
    pub(crate) scanner: Arc<Ns>,
    pub(crate) lab: Lab,
}

impl BareLab {
    pub(crate) fn new() -> BareLab {
        let mut lab = Lab::new().expect("lab bridge");
        let scanner = lab.add_host("scan", &SCANNER).expect("scanner host");
        BareLab { scanner, lab }
    }

    /// A target host with these addresses (CIDR form), its neighbour entries
    /// and the scanner's pinned both ways (see [`pin_neighbours`]).
    pub(crate) fn host(&mut self, tag: &str, addresses: &[&str]) -> Arc<Ns> {
        let host = self.lab.add_host(tag, addresses).expect("target host");
        pin_neighbours(&self.scanner, &SCANNER, &host, addresses);
        host
    }
}

/// The MAC address of `eth0` in `ns`.
fn mac_of(ns: &Ns) -> String {
    let text = ns
        .ip(&["-j", "link", "show", "dev", "eth0"])
        .expect("ip link show eth0");
    let links: Value = serde_json::from_str(&text).expect("ip -j prints JSON");
    links[0]["address"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no MAC address for eth0 in {text}"))
}

/// Permanent ARP and NDP entries between two lab hosts, both ways.
///
/// Why: the kernel's IPv4 neighbour table is one table for every namespace,
/// capped at `net.ipv4.neigh.default.gc_thresh3` (1,024) entries, and a
/// benchmark sweeping a /16 of lab addresses on the same machine fills it;
/// then no namespace can resolve a new address, SYNs are dropped before they
/// leave, and every port of a live host looks filtered ("neighbor table
/// overflow!" in the kernel log). Permanent entries are exempt from that cap,
/// so these tests see the lab as it is whatever else runs. Nothing is sent to
/// set them up.
pub(crate) fn pin_neighbours(a: &Ns, a_addresses: &[&str], b: &Ns, b_addresses: &[&str]) {
    let (a_mac, b_mac) = (mac_of(a), mac_of(b));
    for (ns, mac, addresses) in [(a, &b_mac, b_addresses), (b, &a_mac, a_addresses)] {
        for cidr in addresses {
            let address = cidr.split('/').next().unwrap_or(cidr);
            ns.ip(&[
                "neigh",
                "replace",
                address,
                "lladdr",
                mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])
            .expect("pin a neighbour entry");
        }
    }
}

/// `redis-server` on `binds` (space-separated, Redis's own syntax), with a
/// password or without one.
pub(crate) fn start_redis(ns: &Ns, binds: &str, port: u16, password: Option<&str>) -> Daemon {
    let port_text = port.to_string();
    let mut args = vec![
        "--port",
        port_text.as_str(),
        "--bind",
        binds,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        "/tmp",
    ];
    match password {
        Some(password) => args.extend(["--requirepass", password]),
        // Without a password Redis only answers loopback unless told otherwise;
        // the exposed-by-mistake instance this stands for was told otherwise.
        None => args.extend(["--protected-mode", "no"]),
    }
    let first = binds.split_whitespace().next().expect("a bind address");
    started(
        ns,
        ns.spawn("/usr/bin/redis-server", &args),
        sock(first, port),
    )
}

pub(crate) fn start_memcached(ns: &Ns, bind: &str, port: u16) -> Daemon {
    let port_text = port.to_string();
    // memcached refuses to run as root without -u; -U 0 turns UDP off.
    let daemon = ns.spawn(
        "/usr/bin/memcached",
        &["-u", "nobody", "-l", bind, "-p", &port_text, "-U", "0"],
    );
    started(ns, daemon, sock(bind, port))
}

/// Python's http.server serving an empty directory (never the repository).
pub(crate) fn start_http(ns: &Ns, bind: &str, port: u16, root: &Path) -> Daemon {
    let port_text = port.to_string();
    let root_text = root.to_string_lossy().into_owned();
    // /usr/bin/python3, not the PATH one: that may be a pyenv shim under /root.
    let daemon = ns.spawn(
        "/usr/bin/python3",
        &[
            "-m",
            "http.server",
            "--bind",
            bind,
            "--directory",
            &root_text,
            &port_text,
        ],
    );
    started(ns, daemon, sock(bind, port))
}

/// sshd in the foreground with a fresh host key and a config of its own in
/// `dir`, listening on `bind` only.
pub(crate) fn start_sshd(ns: &Ns, bind: &str, port: u16, dir: &Path) -> Daemon {
    let key = dir.join("ssh_host_ed25519_key");
    perimeter_testlab::run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            &key.to_string_lossy(),
        ],
    )
    .expect("sshd host key");
    std::fs::create_dir_all("/run/sshd").expect("sshd privilege separation directory");
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress {bind}\nHostKey {}\nPidFile none\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n",
            key.display()
        ),
    )
    .expect("sshd config");
    let daemon = ns.spawn(
        "/usr/sbin/sshd",
        &["-D", "-e", "-f", &config.to_string_lossy()],
    );
    started(ns, daemon, sock(bind, port))
}

fn started(ns: &Ns, daemon: anyhow::Result<Daemon>, address: SocketAddr) -> Daemon {
    let mut daemon = daemon.expect("start the daemon");
    if let Err(err) = ns.wait_tcp(address, START_WAIT) {
        let why = daemon.ensure_running().err();
        panic!("{address} never listened: {err:#}; {why:?}");
    }
    daemon.ensure_running().expect("daemon still running");
    daemon
}

/// The service lab described in the module documentation.
#[derive(Debug)]
pub(crate) struct ServiceLab {
    // Declared first so it drops first: daemons stop before their namespaces go.
    daemons: Vec<Daemon>,
    pub(crate) scanner: Arc<Ns>,
    pub(crate) web: Arc<Ns>,
    pub(crate) db: Arc<Ns>,
    pub(crate) fw: Arc<Ns>,
    _lab: BareLab,
    _dir: tempfile::TempDir,
}

/// What [`ServiceLab::start`] needs: namespaces and every program it starts.
/// Each test asks before it starts one.
pub(crate) fn require_service_lab() -> bool {
    require(Requirement::Netns)
        && [
            "/usr/bin/redis-server",
            "/usr/bin/memcached",
            "/usr/sbin/sshd",
            "/usr/bin/ssh-keygen",
            "/usr/bin/python3",
            "/usr/sbin/nft",
        ]
        .into_iter()
        .all(|tool| require(Requirement::Tool(tool)))
}

impl ServiceLab {
    pub(crate) fn start() -> ServiceLab {
        let mut bare = BareLab::new();
        let web = bare.host("web", &[&format!("{WEB}/15")]);
        let db = bare.host("db", &[&format!("{DB}/15"), &format!("{DB_V6}/64")]);
        let fw = bare.host("fw", &[&format!("{FW}/15")]);
        let dir = tempfile::tempdir().expect("tempdir");
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).expect("web root");
        let ssh_dir = dir.path().join("ssh");
        std::fs::create_dir_all(&ssh_dir).expect("sshd dir");

        // The database host drops 9000 silently and refuses 9001 with an ICMP
        // error: both are filtered, as nmap defines it.
        db.nft(
            "table inet perimeter_lab {
                chain input {
                    type filter hook input priority filter; policy accept;
                    tcp dport 9000 drop
                    tcp dport 9001 reject with icmpx type admin-prohibited
                }
            }",
        )
        .expect("db ruleset");
        // The hardened host answers nothing but its Redis.
        fw.nft(
            "table inet perimeter_lab {
                chain input {
                    type filter hook input priority filter; policy drop;
                    iif lo accept
                    ct state established,related accept
                    tcp dport 6379 accept
                }
            }",
        )
        .expect("fw ruleset");

        let daemons = vec![
            start_http(&web, WEB, 8080, &www),
            start_redis(&web, WEB, 7379, None),
            start_memcached(&web, WEB, 11211),
            start_sshd(&db, DB, 22, &ssh_dir),
            start_redis(
                &db,
                &format!("{DB} {DB_V6}"),
                6379,
                Some("lab-only-secret-7f3a"),
            ),
            start_redis(&fw, FW, 6379, None),
        ];
        ServiceLab {
            daemons,
            scanner: Arc::clone(&bare.scanner),
            web,
            db,
            fw,
            _lab: bare,
            _dir: dir,
        }
    }

    /// Another host on the lab bridge that scans from its own namespace (a
    /// scanner node, a server), its neighbour entries and every target
    /// host's pinned both ways, as the scanner's are.
    #[allow(dead_code)] // not every test crate that includes the lab uses it
    pub(crate) fn add_vantage(&mut self, tag: &str, addresses: &[&str]) -> Arc<Ns> {
        let host = self._lab.lab.add_host(tag, addresses).expect("lab host");
        pin_neighbours(&host, addresses, &self.web, &[&format!("{WEB}/15")]);
        pin_neighbours(
            &host,
            addresses,
            &self.db,
            &[&format!("{DB}/15"), &format!("{DB_V6}/64")],
        );
        pin_neighbours(&host, addresses, &self.fw, &[&format!("{FW}/15")]);
        host
    }

    /// Every target address, as perimeter and nmap are given them.
    pub(crate) fn targets() -> [&'static str; 4] {
        [WEB, DB, FW, DB_V6]
    }
}

/// Run perimeter in `ns` (see `common::run`).
pub(crate) fn perimeter_in(ns: &Ns, args: &[&str]) -> Output {
    crate::common::run(Some(ns), args)
}

/// Perimeter's stdout as one JSON document, or a panic that shows both streams.
pub(crate) fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "perimeter's output is not JSON ({err}); exit {:?}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            crate::common::stdout(output),
            crate::common::stderr(output)
        )
    })
}

/// `(address, port) → state` from a `perimeter.scan/1` document or a list of
/// JSON Lines records.
pub(crate) fn json_states<'a>(
    results: impl IntoIterator<Item = &'a Value>,
) -> BTreeMap<(IpAddr, u16), String> {
    let mut states = BTreeMap::new();
    for result in results {
        let address = result["address"].as_str().expect("address is text");
        let port = result["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("port is a number");
        let state = result["state"].as_str().expect("state is text");
        let previous = states.insert((ip(address), port), state.to_owned());
        assert_eq!(previous, None, "{address}:{port} reported twice");
    }
    states
}

pub(crate) fn results(doc: &Value) -> &[Value] {
    doc["results"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// One result of a scan document.
pub(crate) fn result_at<'a>(doc: &'a Value, address: &str, port: u16) -> &'a Value {
    results(doc)
        .iter()
        .find(|r| r["address"] == address && r["port"] == port)
        .unwrap_or_else(|| panic!("no result for {address}:{port} in {doc:#}"))
}

/// The sorted rule ids of a result's findings.
pub(crate) fn rules_of(result: &Value) -> Vec<String> {
    let mut rules: Vec<String> = result["findings"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| f["rule"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    rules.sort();
    rules
}

/// An XML element with its attributes and child elements (text is dropped:
/// neither nmap's format nor ours carries data in it).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub(crate) name: String,
    pub(crate) attrs: BTreeMap<String, String>,
    pub(crate) children: Vec<Element>,
}

impl Element {
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }

    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    pub(crate) fn first(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

fn element_of(start: &BytesStart<'_>) -> Result<Element, String> {
    let mut element = Element {
        name: start.name().as_ref().to_owned(),
        ..Element::default()
    };
    for attr in start.attributes() {
        let attr = attr.map_err(|e| format!("bad attribute in <{}>: {e}", element.name))?;
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Explicit1_0)
            .map_err(|e| format!("bad attribute value in <{}>: {e}", element.name))?;
        element
            .attrs
            .insert(attr.key.as_ref().to_owned(), value.into_owned());
    }
    Ok(element)
}

/// Parse a whole XML document into its root element; any well-formedness
/// error (mismatched or unclosed tags, two roots) is an `Err`.
pub(crate) fn parse_xml(text: &str) -> Result<Element, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        let finished = match event {
            Event::Start(start) => {
                stack.push(element_of(&start)?);
                None
            }
            Event::Empty(start) => Some(element_of(&start)?),
            Event::End(_) => Some(stack.pop().ok_or("a closing tag without an opening one")?),
            Event::Eof => break,
            _ => None,
        };
        if let Some(element) = finished {
            match stack.last_mut() {
                Some(parent) => parent.children.push(element),
                None if root.is_none() => root = Some(element),
                None => return Err(format!("a second root element <{}>", element.name)),
            }
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("<{}> is never closed", open.name));
    }
    root.ok_or_else(|| "no root element".to_owned())
}

/// `(address, port) → state` from nmap-format XML (nmap's own `-oX`, or
/// perimeter's): `nmaprun/host/address` and `nmaprun/host/ports/port/state`.
pub(crate) fn xml_states(root: &Element) -> Result<BTreeMap<(IpAddr, u16), String>, String> {
    if root.name != "nmaprun" {
        return Err(format!(
            "the root element is <{}>, not <nmaprun>",
            root.name
        ));
    }
    let mut states = BTreeMap::new();
    for host in root.all("host") {
        // nmap may add an <address addrtype="mac">; the IP one names the host.
        let address = host
            .all("address")
            .find(|a| matches!(a.attr("addrtype"), Some("ipv4" | "ipv6")))
            .and_then(|a| a.attr("addr"))
            .ok_or("a <host> without an IP <address>")?;
        let address: IpAddr = address
            .parse()
            .map_err(|e| format!("<address addr=\"{address}\">: {e}"))?;
        let ports = host.first("ports").ok_or("a <host> without <ports>")?;
        if let Some(extra) = ports.first("extraports") {
            // Folded ports are counted, not listed: the comparison would be blind.
            return Err(format!(
                "{address}: {} ports folded into <extraports>; scan fewer ports",
                extra.attr("count").unwrap_or("?")
            ));
        }
        for port in ports.all("port") {
            let portid: u16 = port
                .attr("portid")
                .and_then(|p| p.parse().ok())
                .ok_or("a <port> without a numeric portid")?;
            let state = port
                .first("state")
                .and_then(|s| s.attr("state"))
                .ok_or("a <port> without <state state=...>")?;
            states.insert((address, portid), state.to_owned());
        }
    }
    Ok(states)
}

/// nmap's TCP connect scan (`-sT -Pn -n`) of `targets` from inside `ns`, as
/// `(address, port) → state`. IPv4 and IPv6 targets go in separate runs
/// (nmap takes one family per run).
pub(crate) fn nmap_states(
    ns: &Ns,
    targets: &[&str],
    ports: &str,
) -> BTreeMap<(IpAddr, u16), String> {
    nmap_states_by(ns, "-sT", targets, ports)
}

/// nmap's port states with a technique of its own (`-sT` connect, `-sS` SYN).
pub(crate) fn nmap_states_by(
    ns: &Ns,
    technique: &str,
    targets: &[&str],
    ports: &str,
) -> BTreeMap<(IpAddr, u16), String> {
    let (v6, v4): (Vec<&str>, Vec<&str>) = targets.iter().partition(|t| t.contains(':'));
    let mut states = BTreeMap::new();
    for (family, list) in [(None, v4), (Some("-6"), v6)] {
        if list.is_empty() {
            continue;
        }
        let mut args: Vec<&str> = family.into_iter().collect();
        args.extend([technique, "-Pn", "-n", "-p", ports, "-oX", "-"]);
        args.extend(list);
        let xml = ns.exec("nmap", &args).expect("nmap runs");
        let root = parse_xml(&xml).unwrap_or_else(|e| panic!("nmap's XML: {e}\n{xml}"));
        states.extend(xml_states(&root).unwrap_or_else(|e| panic!("nmap's XML: {e}\n{xml}")));
    }
    states
}

/// The packets the `counter` in `chain input` of table `perimeter_lab` has
/// counted.
pub(crate) fn counted_packets(ns: &Ns) -> u64 {
    let listing = ns
        .exec("nft", &["list", "chain", "inet", "perimeter_lab", "input"])
        .expect("list the counter");
    listing
        .split("counter packets ")
        .nth(1)
        .and_then(|after| after.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet counter in:\n{listing}"))
}

/// The version a locally installed program reports, by running it: the test
/// then checks that the scan read the same version off the wire.
pub(crate) fn installed_version(program: &str, args: &[&str], prefix: &str) -> String {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the program for its version");
    // ssh -V writes to stderr, the others to stdout.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no `{prefix}` in {program}'s version text: {text}"))
        + prefix.len();
    text[start..]
        .split(|c: char| c.is_whitespace() || c == ',')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A perimeter process whose stdout lines are read on a thread as they come.
/// Killed (SIGKILL) on drop if it is still running, so a failing test never
/// leaves a scan behind.
#[derive(Debug)]
pub(crate) struct Streaming {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// How long to wait for the next line before deciding the scan hangs. Not a
/// check on speed: a bound on how long a broken build can stall the suite.
const LINE_WAIT: Duration = Duration::from_secs(90);

impl Streaming {
    pub(crate) fn spawn(ns: &Ns, args: &[&str]) -> Streaming {
        let mut child = ns
            .command(crate::common::perimeter())
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("PERIMETER_APPROVALS")
            .env_remove("PERIMETER_DB")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start perimeter");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
            text
        });
        Streaming {
            child: Some(child),
            lines,
            stderr: Some(stderr),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The next line of stdout, or `None` at end of output.
    pub(crate) fn next_line(&self) -> Option<String> {
        match self.lines.recv_timeout(LINE_WAIT) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("perimeter wrote nothing for {LINE_WAIT:?}")
            }
        }
    }

    pub(crate) fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = i32::try_from(self.pid()).expect("pid fits");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).expect("send the signal");
    }

    /// Read the rest of stdout, wait for the exit: (exit code, remaining
    /// lines, stderr).
    pub(crate) fn finish(mut self) -> (i32, Vec<String>, String) {
        let mut rest = Vec::new();
        while let Some(line) = self.next_line() {
            rest.push(line);
        }
        let status = self
            .child
            .take()
            .expect("still held")
            .wait()
            .expect("wait for perimeter");
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (status.code().unwrap_or(-1), rest, stderr)
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
