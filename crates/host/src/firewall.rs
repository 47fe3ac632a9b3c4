//! The live firewall of a network namespace: `nft -j list ruleset` and the
//! iptables save commands run inside it (through `nsenter --net`), bounded,
//! and read into the `perimeter-firewall` model. A table iptables-nft manages
//! (xt expressions in nft's listing) is read through `iptables-nft-save`. What could not be listed
//! becomes a `Problem` naming the capability that would fix it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use perimeter_firewall::{
    AddrFamily, Backend, Family, Ruleset, iptables_nft_tables, parse_iptables_save, parse_nft_json,
    read_through_iptables, verdict_of,
};
use perimeter_model::{FirewallVerdict, Problem};

use crate::command::{BoundedOutput, find_tool, run_bounded};

/// The most a ruleset listing may print before it is cut off. A full listing
/// with large sets can run to megabytes; past this, the terse listing
/// (without set elements) is used instead.
const MAX_LISTING: usize = 16 * 1024 * 1024;

/// How long one listing may take.
const LISTING_TIMEOUT: Duration = Duration::from_secs(10);

/// The rulesets of a namespace (this process's, or the one behind
/// `netns_file`, entered with `nsenter --net`), and what could not be read.
pub fn read_ruleset(netns_file: Option<&Path>) -> (Ruleset, Vec<Problem>, Vec<String>) {
    let mut ruleset = Ruleset::default();
    let mut problems = Vec::new();
    let mut unread = Vec::new();
    let nsenter = find_tool("nsenter");
    let runner = |tool: &Path, args: &[&str]| -> Result<BoundedOutput, String> {
        let mut command = match (netns_file, &nsenter) {
            (Some(file), Some(nsenter)) => {
                let mut command = Command::new(nsenter);
                command
                    .arg(format!("--net={}", file.display()))
                    .arg("--")
                    .arg(tool);
                command
            }
            (Some(_), None) => return Err("nsenter is not installed".to_owned()),
            (None, _) => Command::new(tool),
        };
        command.args(args);
        run_bounded(command, LISTING_TIMEOUT, MAX_LISTING).map_err(|err| err.to_string())
    };
    let subject = |tool: &str| match netns_file {
        Some(file) => format!("{tool} in {}", file.display()),
        None => tool.to_owned(),
    };

    let nft = find_tool("nft");
    if let Some(nft) = &nft {
        let mut listing = runner(nft, &["-j", "list", "ruleset"]);
        let terse = listing.as_ref().is_ok_and(|out| out.truncated);
        if terse {
            listing = runner(nft, &["-j", "-t", "list", "ruleset"]);
        }
        match listing.and_then(|out| checked_stdout(out, "nft")) {
            Ok(text) => match parse_nft_json(&text) {
                Ok(mut parsed) => {
                    if terse {
                        // The terse listing shows sets and maps without their
                        // elements, and an empty set would read as one that
                        // nothing is in. Without them, lookups are unknown.
                        parsed.sets.clear();
                        parsed.maps.clear();
                        problems.push(Problem::new(
                            subject("nft -j list ruleset"),
                            format!(
                                "the listing is larger than {} MiB and was read without set and map elements, so tests of named sets and maps are unknown",
                                MAX_LISTING / (1024 * 1024)
                            ),
                        ));
                    }
                    // Tables iptables-nft manages (ufw's, Docker's) show
                    // their matches only as xt expressions: read them
                    // through iptables' own view.
                    let xt_tables = iptables_nft_tables(&parsed);
                    if !xt_tables.is_empty() {
                        let mut saved = Ruleset::default();
                        for (tool_name, version, family) in [
                            ("iptables-nft-save", AddrFamily::V4, Family::Ip),
                            ("ip6tables-nft-save", AddrFamily::V6, Family::Ip6),
                        ] {
                            if !xt_tables.iter().any(|(f, _)| *f == family) {
                                continue;
                            }
                            let Some(tool) = find_tool(tool_name) else {
                                problems.push(
                                    Problem::new(
                                        subject(tool_name),
                                        format!("iptables-nft manages tables of family {} whose matches nft shows only as xt expressions, and {tool_name} is not installed to read them, so their tests are unknown", family.as_str()),
                                    )
                                    .with_hint("install iptables"),
                                );
                                continue;
                            };
                            match runner(&tool, &[]).and_then(|out| checked_stdout(out, tool_name))
                            {
                                Ok(text) => {
                                    match parse_iptables_save(&text, version, Backend::IptablesNft)
                                    {
                                        Ok(part) => saved.extend(part),
                                        Err(err) => problems.push(Problem::new(
                                            subject(tool_name),
                                            err.to_string(),
                                        )),
                                    }
                                }
                                Err(message) => {
                                    problems.push(listing_problem(subject(tool_name), &message));
                                }
                            }
                        }
                        read_through_iptables(&mut parsed, &xt_tables, saved);
                    }
                    ruleset.extend(parsed);
                }
                Err(err) => {
                    problems.push(Problem::new(
                        subject("nft -j list ruleset"),
                        err.to_string(),
                    ));
                    unread.push("nft".to_owned());
                }
            },
            Err(message) => {
                problems.push(listing_problem(subject("nft -j list ruleset"), &message));
                unread.push("nft".to_owned());
            }
        }
    }

    // Legacy x_tables, which nft does not show. Without nft, iptables-nft's
    // tables come from its own save command.
    let mut savers: Vec<(Backend, &str, &str)> = vec![(
        Backend::IptablesLegacy,
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    )];
    if nft.is_none() {
        savers.push((
            Backend::IptablesNft,
            "iptables-nft-save",
            "ip6tables-nft-save",
        ));
    }
    // Older systems have only the plain names, for whichever backend they were
    // built with; `--version` says which ("(nf_tables)" or "(legacy)", or
    // nothing before iptables 1.8, which had only the legacy one).
    if find_tool("iptables-legacy-save").is_none()
        && find_tool("iptables-nft-save").is_none()
        && let Some(plain) = find_tool("iptables-save")
    {
        let version = run_bounded(
            {
                let mut command = Command::new(&plain);
                command.arg("--version");
                command
            },
            LISTING_TIMEOUT,
            4096,
        )
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
        let backend = if version.contains("nf_tables") {
            Backend::IptablesNft
        } else {
            Backend::IptablesLegacy
        };
        if backend == Backend::IptablesLegacy || nft.is_none() {
            savers.push((backend, "iptables-save", "ip6tables-save"));
        }
    }
    let mut any_saver = false;
    for (backend, v4_tool, v6_tool) in savers {
        for (tool_name, version) in [(v4_tool, AddrFamily::V4), (v6_tool, AddrFamily::V6)] {
            let Some(tool) = find_tool(tool_name) else {
                continue;
            };
            any_saver = true;
            match runner(&tool, &[]).and_then(|out| checked_stdout(out, tool_name)) {
                Ok(text) => match parse_iptables_save(&text, version, backend) {
                    Ok(parsed) => ruleset.extend(parsed),
                    Err(err) => {
                        problems.push(Problem::new(subject(tool_name), err.to_string()));
                        unread.push(tool_name.to_owned());
                    }
                },
                Err(message) => {
                    problems.push(listing_problem(subject(tool_name), &message));
                    unread.push(tool_name.to_owned());
                }
            }
        }
    }
    if nft.is_none() && !any_saver {
        unread.push("nft, iptables-legacy-save and iptables-nft-save are not installed".to_owned());
        problems.push(
            Problem::new(
                subject("firewall"),
                "no firewall tool is installed to list the ruleset",
            )
            .with_hint("install nftables (nft) or iptables"),
        );
    }
    (ruleset, problems, unread)
}

/// Whether the namespace denies inbound traffic by default. Reads the host's
/// own namespace when `netns_file` is `None`, else the namespace the file
/// (`/run/netns/NAME`, `/proc/PID/ns/net`) refers to.
pub fn firewall_verdict(netns_file: Option<&Path>) -> (FirewallVerdict, Vec<Problem>) {
    let (ruleset, problems, unread) = read_ruleset(netns_file);
    let verdict = verdict_of(&ruleset, &problems, &unread);
    (verdict, problems)
}

fn listing_problem(subject: String, message: &str) -> Problem {
    let problem = Problem::new(subject, message.to_owned());
    if message.contains("Operation not permitted") || message.contains("Permission denied") {
        problem.with_hint(
            "listing firewall rules needs CAP_NET_ADMIN (and entering another network namespace CAP_SYS_ADMIN): run perimeter as root",
        )
    } else {
        problem
    }
}

fn checked_stdout(out: BoundedOutput, tool: &str) -> Result<String, String> {
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message");
        let status = out
            .status
            .code()
            .map_or_else(|| "a signal".to_owned(), |c| c.to_string());
        return Err(format!("{tool} exited with {status}: {first}"));
    }
    if out.truncated {
        return Err(format!("{tool} printed more than {MAX_LISTING} bytes"));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("{tool} printed text that is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_say_cap_net_admin() {
        // Runs nft as nobody, which is how a non-root audit would see it.
        use perimeter_testlab::{Requirement, require};
        if !require(Requirement::Root)
            || !require(Requirement::Tool("nft"))
            || !require(Requirement::Tool("setpriv"))
        {
            return;
        }
        let (Some(nft), Some(setpriv)) = (find_tool("nft"), find_tool("setpriv")) else {
            panic!("nft and setpriv are installed but find_tool misses them");
        };
        let mut command = Command::new(setpriv);
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(nft)
            .args(["-j", "list", "ruleset"]);
        let out =
            run_bounded(command, Duration::from_secs(30), MAX_LISTING).map_err(|e| e.to_string());
        let Ok(out) = out else {
            panic!("{out:?}");
        };
        let Err(message) = checked_stdout(out, "nft") else {
            panic!("nft listed the ruleset without privileges");
        };
        assert!(message.contains("Operation not permitted"), "{message}");
        let problem = listing_problem("nft -j list ruleset".to_owned(), &message);
        assert!(
            problem
                .hint
                .is_some_and(|h| h.starts_with("listing firewall rules needs CAP_NET_ADMIN"))
        );
    }
}
