//! Scan output: the `perimeter.scan/1` JSON document, one JSON Lines record per
//! result, nmap-compatible XML, and the human table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use comfy_table::Color;
use perimeter_model::{Finding, PortResult, PortState, Protocol, ScanInfo, Severity};
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde::Serialize;

use crate::audit::finding_text;
use crate::json::{FindingJson, severity_counts};
use crate::style::Style;
use crate::time_fmt::rfc3339;

/// The schema string of the scan document.
pub const SCHEMA: &str = "perimeter.scan/1";
/// The schema string of each JSON Lines record.
pub const JSONL_SCHEMA: &str = "perimeter.scan-result/1";

#[derive(Debug, Serialize)]
struct ScanJson<'a> {
    id: i64,
    targets: &'a [String],
    resolved: BTreeMap<&'a str, Vec<String>>,
    excluded: &'a [String],
    ports: &'a str,
    profile: &'a str,
    /// Decimal text: a u64 seed does not survive JSON number handling in
    /// many readers.
    seed: String,
    options: &'a BTreeMap<String, String>,
    started: String,
    finished: Option<String>,
    complete: bool,
    n_probes: u64,
}

#[derive(Debug, Serialize)]
struct TlsJson<'a> {
    subject: &'a str,
    issuer: &'a str,
    not_after: Option<String>,
    subject_alt_names: &'a [String],
}

#[derive(Debug, Serialize)]
struct ResultJson<'a> {
    address: String,
    port: u16,
    protocol: &'static str,
    state: &'static str,
    service: Option<&'a str>,
    product: Option<&'a str>,
    version: Option<&'a str>,
    /// `none`, `required` or `unknown`; null when no service was identified.
    auth: Option<&'static str>,
    banner: Option<&'a str>,
    tls: Option<TlsJson<'a>>,
    extra: Option<&'a BTreeMap<String, String>>,
    findings: Vec<FindingJson<'a>>,
}

fn result_json(result: &PortResult) -> ResultJson<'_> {
    let service = result.service.as_ref();
    ResultJson {
        address: result.address.to_string(),
        port: result.port,
        protocol: result.protocol.as_str(),
        state: result.state.as_str(),
        service: service.map(|s| s.name.as_str()),
        product: service.and_then(|s| s.product.as_deref()),
        version: service.and_then(|s| s.version.as_deref()),
        auth: service.map(|s| s.auth.as_str()),
        banner: service.and_then(|s| s.banner.as_deref()),
        tls: service.and_then(|s| s.tls.as_ref()).map(|tls| TlsJson {
            subject: &tls.subject,
            issuer: &tls.issuer,
            not_after: tls.not_after.map(rfc3339),
            subject_alt_names: &tls.subject_alt_names,
        }),
        extra: service.map(|s| &s.extra).filter(|e| !e.is_empty()),
        findings: result.findings.iter().map(FindingJson::from).collect(),
    }
}

fn scan_json(info: &ScanInfo) -> ScanJson<'_> {
    ScanJson {
        id: info.id,
        targets: &info.targets,
        resolved: info
            .resolved
            .iter()
            .map(|(name, addrs)| {
                (
                    name.as_str(),
                    addrs.iter().map(ToString::to_string).collect(),
                )
            })
            .collect(),
        excluded: &info.excluded,
        ports: &info.ports,
        profile: &info.profile,
        seed: info.seed.to_string(),
        options: &info.options,
        started: rfc3339(info.started),
        finished: info.finished.map(rfc3339),
        complete: info.complete,
        n_probes: info.n_probes,
    }
}

#[derive(Debug, Serialize)]
struct SummaryJson {
    hosts_with_open_ports: usize,
    open: u64,
    closed: u64,
    filtered: u64,
    /// UDP ports that stayed silent: only in documents of UDP scans.
    #[serde(skip_serializing_if = "is_zero")]
    open_filtered: u64,
    findings: BTreeMap<&'static str, usize>,
}

/// How many ports the scan found in each state, whether or not each one is
/// among the results written (a scan keeps only open ports unless asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateTotals {
    pub open: u64,
    pub closed: u64,
    pub filtered: u64,
    /// UDP ports that stayed silent (open|filtered).
    pub open_filtered: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The `perimeter.scan/1` document, its summary giving `totals`: the scan's
/// own counts, which also cover the closed and filtered ports not kept in
/// `results`.
pub fn to_json(info: &ScanInfo, results: &[PortResult], totals: StateTotals) -> serde_json::Value {
    let findings = severity_counts(results.iter().flat_map(|r| &r.findings));
    let mut hosts: Vec<IpAddr> = results
        .iter()
        .filter(|r| r.state == PortState::Open)
        .map(|r| r.address)
        .collect();
    hosts.sort();
    hosts.dedup();
    serde_json::json!({
        "schema": SCHEMA,
        "scan": scan_json(info),
        "summary": SummaryJson {
            hosts_with_open_ports: hosts.len(),
            open: totals.open,
            closed: totals.closed,
            filtered: totals.filtered,
            open_filtered: totals.open_filtered,
            findings,
        },
        "results": results.iter().map(result_json).collect::<Vec<_>>(),
    })
}

/// What a `perimeter verify` run was judged against, and from where.
#[derive(Debug, Clone)]
pub struct Verified<'a> {
    /// The inventory of environments read.
    pub inventory: Option<&'a Path>,
    /// The addresses the targets saw the scan come from.
    pub vantage: &'a [IpAddr],
    /// The environments scanned.
    pub environments: Vec<&'a str>,
}

/// The `perimeter.scan/1` document of a verification: the scan's, with a
/// `verify` member saying against what and from where.
pub fn verify_to_json(
    info: &ScanInfo,
    results: &[PortResult],
    totals: StateTotals,
    verified: &Verified<'_>,
) -> serde_json::Value {
    let mut doc = to_json(info, results, totals);
    if let Some(map) = doc.as_object_mut() {
        map.insert(
            "verify".into(),
            serde_json::json!({
                "inventory": verified.inventory.map(|p| p.display().to_string()),
                "vantage": verified.vantage.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "environments": verified.environments,
            }),
        );
    }
    doc
}

/// The human report of a verification: the scan's, then where it was seen
/// from.
pub fn verify_to_human(
    info: &ScanInfo,
    results: &[PortResult],
    totals: StateTotals,
    vantage: &[IpAddr],
    style: Style,
) -> String {
    let mut out = to_human(info, results, totals, style);
    let _ = writeln!(
        out,
        "\nverified from {}",
        if vantage.is_empty() {
            "an unknown address".to_owned()
        } else {
            vantage
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    out
}

/// One JSON Lines record: the result, with the scan's seed and schema so a
/// line read alone still says where it came from.
pub fn to_jsonl_line(result: &PortResult) -> String {
    let mut value = serde_json::to_value(result_json(result)).unwrap_or(serde_json::Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("schema".into(), JSONL_SCHEMA.into());
    }
    value.to_string()
}

/// Results sorted for reading: by address, then port.
pub fn sorted(results: &[PortResult]) -> Vec<&PortResult> {
    let mut sorted: Vec<&PortResult> = results.iter().collect();
    sorted.sort_by(|a, b| a.address.cmp(&b.address).then(a.port.cmp(&b.port)));
    sorted
}

/// The human report, its first line giving `totals` (as for [`to_json`]).
pub fn to_human(
    info: &ScanInfo,
    results: &[PortResult],
    totals: StateTotals,
    style: Style,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} ({} profile, seed {}): {}, {} closed, {} filtered{}{}",
        style.bold("perimeter scan of"),
        info.targets.join(" "),
        info.profile,
        info.seed,
        crate::count(totals.open as usize, "open port"),
        totals.closed,
        totals.filtered,
        if totals.open_filtered > 0 {
            format!(", {} open|filtered", totals.open_filtered)
        } else {
            String::new()
        },
        if info.complete {
            ""
        } else {
            ", INCOMPLETE (interrupted)"
        },
    );
    let _ = writeln!(out);
    if results.is_empty() {
        let _ = writeln!(out, "no open ports");
    } else {
        let mut table = style.table();
        table.set_header(
            [
                "ADDRESS", "PORT", "STATE", "SERVICE", "VERSION", "AUTH", "FINDINGS",
            ]
            .into_iter()
            .map(|h| style.cell(h, None)),
        );
        for result in sorted(results) {
            let service = result.service.as_ref();
            let version = service
                .map(|s| {
                    [s.product.as_deref(), s.version.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let auth = service.map(|s| s.auth.as_str()).unwrap_or("");
            let worst = result.findings.iter().map(|f| f.severity).max();
            let rules: Vec<&str> = result
                .findings
                .iter()
                .filter(|f| f.severity > Severity::Info)
                .map(|f| f.rule.as_str())
                .collect();
            let state_color = match result.state {
                PortState::Open => Some(Color::Green),
                PortState::Closed => Some(Color::DarkGrey),
                PortState::Filtered | PortState::OpenFiltered => Some(Color::Yellow),
            };
            table.add_row(vec![
                style.cell(result.address, None),
                style.cell(format!("{}/{}", result.port, result.protocol), None),
                style.cell(result.state, state_color),
                style.cell(service.map(|s| s.name.as_str()).unwrap_or(""), None),
                style.cell(version, None),
                style.cell(auth, (auth == "none").then_some(Color::Red)),
                style.cell(rules.join(" "), worst.map(Style::severity_color)),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    let mut findings: Vec<&Finding> = results
        .iter()
        .flat_map(|r| &r.findings)
        .filter(|f| f.severity > Severity::Info)
        .collect();
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.subject.cmp(&b.subject)));
    if !findings.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{}",
            style.bold(&crate::count(findings.len(), "finding"))
        );
        for finding in findings {
            out.push_str(&finding_text(finding, style));
        }
    }
    out
}

/// nmap-compatible XML (`-oX`), readable by tools that read nmap's output
/// (ndiff, Metasploit's db_import, ...). Only the elements and attributes
/// those tools rely on are written.
pub fn to_nmap_xml(info: &ScanInfo, results: &[PortResult], args: &str) -> String {
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 1);
    let start = info.started.unix_timestamp();
    let end = info.finished.unwrap_or(info.started).unix_timestamp();
    let _ = writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
    let _ = writer.write_event(Event::DocType(BytesText::from_escaped("nmaprun")));
    let start_text = start.to_string();
    let mut nmaprun = BytesStart::new("nmaprun");
    nmaprun.push_attribute(("scanner", "perimeter"));
    nmaprun.push_attribute(("args", args));
    nmaprun.push_attribute(("start", start_text.as_str()));
    nmaprun.push_attribute(("startstr", rfc3339(info.started).as_str()));
    nmaprun.push_attribute(("version", env!("CARGO_PKG_VERSION")));
    nmaprun.push_attribute(("xmloutputversion", "1.05"));
    let _ = writer.write_event(Event::Start(nmaprun));

    let mut scaninfo = BytesStart::new("scaninfo");
    // nmap's own names for the two techniques perimeter has.
    let technique = match info.options.get("technique").map(String::as_str) {
        Some("syn") => "syn",
        _ => "connect",
    };
    scaninfo.push_attribute(("type", technique));
    // A SYN scan sees the RST itself (nmap: "reset"); a connect scan sees
    // connect(2) refused ("conn-refused").
    let refused = if technique == "syn" {
        "reset"
    } else {
        "conn-refused"
    };
    scaninfo.push_attribute(("protocol", "tcp"));
    // nmap's `services` is a list of port ranges; the scan records its
    // expanded port list as `port_list` (the `ports` spec may read `top:100`).
    let services = info.options.get("port_list").unwrap_or(&info.ports);
    scaninfo.push_attribute(("numservices", count_ports(services).to_string().as_str()));
    scaninfo.push_attribute(("services", services.as_str()));
    let _ = writer.write_event(Event::Empty(scaninfo));
    // nmap.dtd requires these two, in this order, before any host.
    let mut verbose = BytesStart::new("verbose");
    verbose.push_attribute(("level", "0"));
    let _ = writer.write_event(Event::Empty(verbose));
    let mut debugging = BytesStart::new("debugging");
    debugging.push_attribute(("level", "0"));
    let _ = writer.write_event(Event::Empty(debugging));

    let mut by_host: BTreeMap<IpAddr, Vec<&PortResult>> = BTreeMap::new();
    for result in results {
        by_host.entry(result.address).or_default().push(result);
    }
    let n_hosts = by_host.len();
    let mut hosts_up = 0usize;
    for (address, mut ports) in by_host {
        ports.sort_by_key(|r| r.port);
        let mut host = BytesStart::new("host");
        host.push_attribute(("starttime", start_text.as_str()));
        host.push_attribute(("endtime", end.to_string().as_str()));
        let _ = writer.write_event(Event::Start(host));
        let mut status = BytesStart::new("status");
        let any_open = ports.iter().any(|r| r.state == PortState::Open);
        let up = any_open || ports.iter().any(|r| r.state == PortState::Closed);
        if up {
            hosts_up += 1;
        }
        // A scan knows a host is up from a SYN-ACK or a refusal; "unknown"
        // when all was silent.
        status.push_attribute(("state", if up { "up" } else { "unknown" }));
        status.push_attribute((
            "reason",
            if any_open {
                "syn-ack"
            } else if up {
                refused
            } else {
                "no-response"
            },
        ));
        status.push_attribute(("reason_ttl", "0"));
        let _ = writer.write_event(Event::Empty(status));
        let mut addr = BytesStart::new("address");
        addr.push_attribute(("addr", address.to_string().as_str()));
        addr.push_attribute(("addrtype", if address.is_ipv4() { "ipv4" } else { "ipv6" }));
        let _ = writer.write_event(Event::Empty(addr));
        let _ = writer.write_event(Event::Empty(BytesStart::new("hostnames")));
        let _ = writer.write_event(Event::Start(BytesStart::new("ports")));
        for result in ports {
            let mut port = BytesStart::new("port");
            port.push_attribute(("protocol", result.protocol.as_str()));
            port.push_attribute(("portid", result.port.to_string().as_str()));
            let _ = writer.write_event(Event::Start(port));
            let mut state = BytesStart::new("state");
            state.push_attribute(("state", result.state.as_str()));
            state.push_attribute((
                "reason",
                match (result.protocol, result.state) {
                    // nmap's reasons for UDP: a datagram, ICMP port
                    // unreachable, another ICMP unreachable, silence.
                    (Protocol::Udp, PortState::Open) => "udp-response",
                    (Protocol::Udp, PortState::Closed) => "port-unreach",
                    (Protocol::Udp, PortState::Filtered) => "host-unreach",
                    (_, PortState::Open) => "syn-ack",
                    (_, PortState::Closed) => refused,
                    (_, PortState::Filtered | PortState::OpenFiltered) => "no-response",
                },
            ));
            state.push_attribute(("reason_ttl", "0"));
            let _ = writer.write_event(Event::Empty(state));
            if let Some(service) = &result.service {
                let mut element = BytesStart::new("service");
                element.push_attribute(("name", service.name.as_str()));
                if let Some(product) = &service.product {
                    element.push_attribute(("product", product.as_str()));
                }
                if let Some(version) = &service.version {
                    element.push_attribute(("version", version.as_str()));
                }
                if service.tls.is_some() {
                    element.push_attribute(("tunnel", "ssl"));
                }
                element.push_attribute(("method", "probed"));
                element.push_attribute(("conf", "10"));
                let _ = writer.write_event(Event::Empty(element));
            }
            for finding in result
                .findings
                .iter()
                .filter(|f| f.severity > Severity::Info)
            {
                let mut script = BytesStart::new("script");
                script.push_attribute(("id", finding.rule.as_str()));
                script.push_attribute((
                    "output",
                    format!("{}: {}", finding.severity, finding.message).as_str(),
                ));
                let _ = writer.write_event(Event::Empty(script));
            }
            let _ = writer.write_event(Event::End(BytesEnd::new("port")));
        }
        let _ = writer.write_event(Event::End(BytesEnd::new("ports")));
        let _ = writer.write_event(Event::End(BytesEnd::new("host")));
    }
    let _ = writer.write_event(Event::Start(BytesStart::new("runstats")));
    let mut finished = BytesStart::new("finished");
    finished.push_attribute(("time", end.to_string().as_str()));
    finished.push_attribute(("elapsed", (end - start).to_string().as_str()));
    finished.push_attribute(("exit", if info.complete { "success" } else { "error" }));
    let _ = writer.write_event(Event::Empty(finished));
    let mut hosts = BytesStart::new("hosts");
    hosts.push_attribute(("up", hosts_up.to_string().as_str()));
    hosts.push_attribute(("down", (n_hosts - hosts_up).to_string().as_str()));
    hosts.push_attribute(("total", n_hosts.to_string().as_str()));
    let _ = writer.write_event(Event::Empty(hosts));
    let _ = writer.write_event(Event::End(BytesEnd::new("runstats")));
    let _ = writer.write_event(Event::End(BytesEnd::new("nmaprun")));
    let mut text = String::from_utf8_lossy(&writer.into_inner()).into_owned();
    text.push('\n');
    text
}

/// The number of ports in a `22,80,1000-2000` list (0 for what is not one).
fn count_ports(list: &str) -> u32 {
    list.split(',')
        .map(|item| match item.trim().split_once('-') {
            Some((lo, hi)) => match (lo.parse::<u32>(), hi.parse::<u32>()) {
                (Ok(lo), Ok(hi)) if hi >= lo => hi - lo + 1,
                _ => 0,
            },
            None => u32::from(item.trim().parse::<u16>().is_ok()),
        })
        .sum()
}

/// A sorted port list as nmap writes it: `1-1000,1723`.
pub fn port_ranges(ports: &[u16]) -> String {
    let mut sorted = ports.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut idx = 0;
    while idx < sorted.len() {
        let start = sorted[idx];
        let mut end = start;
        while idx + 1 < sorted.len() && sorted[idx + 1] == end.wrapping_add(1) {
            idx += 1;
            end = sorted[idx];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        idx += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use perimeter_model::{AuthState, Protocol, ServiceInfo};

    #[test]
    fn port_lists_compress_and_count() {
        assert_eq!(
            port_ranges(&[80, 22, 23, 24, 443, 1000, 999]),
            "22-24,80,443,999-1000"
        );
        assert_eq!(count_ports("22-24,80,443,999-1000"), 7);
        assert_eq!(count_ports("top:100"), 0);
        assert_eq!(port_ranges(&[]), "");
    }

    fn info() -> ScanInfo {
        ScanInfo {
            id: 7,
            targets: vec!["198.18.0.0/30".into()],
            resolved: vec![],
            excluded: vec![],
            ports: "22,6379".into(),
            profile: "fast".into(),
            seed: u64::MAX,
            options: BTreeMap::new(),
            started: time::macros::datetime!(2026-11-25 12:00:00 UTC),
            finished: Some(time::macros::datetime!(2026-11-25 12:00:03 UTC)),
            complete: true,
            n_probes: 8,
        }
    }

    fn results() -> Vec<PortResult> {
        let mut redis = ServiceInfo::named("redis");
        redis.version = Some("7.0.15".into());
        redis.auth = AuthState::None;
        vec![
            PortResult {
                address: "198.18.0.2".parse().expect("addr"),
                port: 6379,
                protocol: Protocol::Tcp,
                state: PortState::Open,
                service: Some(redis),
                findings: vec![Finding::new(
                    "exposed.redis-noauth",
                    Severity::Critical,
                    "198.18.0.2:6379",
                    "Redis <answers> & without AUTH",
                )],
            },
            PortResult {
                address: "198.18.0.2".parse().expect("addr"),
                port: 22,
                protocol: Protocol::Tcp,
                state: PortState::Closed,
                service: None,
                findings: vec![],
            },
        ]
    }

    #[test]
    fn json_document_has_schema_and_result_fields() {
        let doc = to_json(
            &info(),
            &results(),
            StateTotals {
                open: 1,
                closed: 1,
                filtered: 0,
                open_filtered: 0,
            },
        );
        assert_eq!(doc["schema"], "perimeter.scan/1");
        assert_eq!(doc["scan"]["seed"], "18446744073709551615");
        assert_eq!(doc["summary"]["open"], 1);
        let first = &doc["results"][0];
        for key in [
            "address", "port", "protocol", "state", "service", "version", "findings",
        ] {
            assert!(first.get(key).is_some(), "missing {key}");
        }
        assert_eq!(first["findings"][0]["rule"], "exposed.redis-noauth");
        assert_eq!(first["findings"][0]["severity"], "critical");
        assert_eq!(first["auth"], "none");

        // The scan's own totals, when closed and filtered ports were not kept.
        let totals = StateTotals {
            open: 1,
            closed: 65_000,
            filtered: 3,
            open_filtered: 0,
        };
        let doc = to_json(&info(), &results(), totals);
        assert_eq!(doc["summary"]["closed"], 65_000);
        assert_eq!(doc["summary"]["filtered"], 3);
        assert_eq!(
            doc["results"].as_array().map(Vec::len),
            Some(results().len())
        );
    }

    #[test]
    fn human_first_line_gives_the_totals() {
        let totals = StateTotals {
            open: 1,
            closed: 65_000,
            filtered: 3,
            open_filtered: 0,
        };
        let text = to_human(&info(), &results(), totals, crate::Style::plain());
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.ends_with(": 1 open port, 65000 closed, 3 filtered"),
            "{first}"
        );
    }

    #[test]
    fn jsonl_lines_stand_alone() {
        let line = to_jsonl_line(&results()[1]);
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["schema"], JSONL_SCHEMA);
        assert_eq!(value["state"], "closed");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn nmap_xml_escapes_and_lists_ports() {
        let xml = to_nmap_xml(
            &info(),
            &results(),
            "perimeter scan -p 22,6379 198.18.0.0/30",
        );
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        assert!(xml.contains("<port protocol=\"tcp\" portid=\"22\">"));
        assert!(xml.contains("<state state=\"open\" reason=\"syn-ack\" reason_ttl=\"0\"/>"));
        assert!(xml.contains("<status state=\"up\" reason=\"syn-ack\" reason_ttl=\"0\"/>"));
        assert!(xml.contains("<verbose level=\"0\"/>"));
        assert!(xml.contains("<hosts up=\"1\" down=\"0\" total=\"1\"/>"));
        assert!(xml.contains(
            "<service name=\"redis\" version=\"7.0.15\" method=\"probed\" conf=\"10\"/>"
        ));
        assert!(xml.contains("Redis &lt;answers&gt; &amp; without AUTH"));
        // Ports in order within a host.
        let p22 = xml.find("portid=\"22\"").expect("22");
        let p6379 = xml.find("portid=\"6379\"").expect("6379");
        assert!(p22 < p6379);
    }
}
