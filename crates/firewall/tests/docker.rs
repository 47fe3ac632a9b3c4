//! Docker's published ports behind ufw, as the real tools wrote them
//! (tests/fixtures/docker/generate.sh): Debian 12's dockerd in a lab
//! namespace publishing `-p 198.18.91.1:6379:6379`, `-p
//! 127.0.0.1:6380:6379` and `-p 8080:80` (with a DOCKER-USER rule dropping
//! sources outside 198.18.91.0/24 to the last), then ufw's `default deny
//! incoming` with only 22 allowed. ufw's input chain denies 6379 and 8080,
//! but Docker's DNAT in nat PREROUTING sends those connections through FORWARD
//! instead, where Docker accepts them: the walk of the input path alone says
//! "denied", the published path says who really gets through.

use expect_test::{Expect, expect};
mod common;

use common::{fixture_in, probe};
use perimeter_firewall::reachability::{Link, describe_sources, published, reachability};
use perimeter_firewall::{
    AddrFamily, Backend, Ruleset, iptables_nft_tables, parse_iptables_save, parse_nft_json,
    read_through_iptables,
};

fn fixture(name: &str) -> String {
    fixture_in("docker", name)
}

/// The namespace's ruleset read as `host::firewall` reads it: nft's view,
/// iptables-nft's tables (every one here holds xt expressions) through the
/// save commands.
fn ruleset() -> Ruleset {
    ruleset_with(&fixture("published.iptables-save"))
}

/// [`ruleset`] with `iptables_save` as the IPv4 tables' listing.
fn ruleset_with(iptables_save: &str) -> Ruleset {
    let mut ruleset = parse_nft_json(&fixture("published.json")).expect("fixture parses");
    let tables = iptables_nft_tables(&ruleset);
    let mut saved = parse_iptables_save(iptables_save, AddrFamily::V4, Backend::IptablesNft)
        .expect("iptables-save fixture parses");
    saved.extend(
        parse_iptables_save(
            &fixture("published.ip6tables-save"),
            AddrFamily::V6,
            Backend::IptablesNft,
        )
        .expect("ip6tables-save fixture parses"),
    );
    let replaced = read_through_iptables(&mut ruleset, &tables, saved);
    assert_eq!(replaced, tables, "every xt table is read through iptables");
    ruleset
}

/// `ip -o -4 addr show` of the namespace: `docker0 198.18.90.1/24`.
fn links() -> Vec<Link> {
    fixture("published.links")
        .lines()
        .filter_map(|line| {
            let (interface, net) = line.split_once(' ')?;
            let (addr, len) = net.split_once('/')?;
            Some(Link {
                interface: interface.to_owned(),
                addr: addr.parse().ok()?,
                prefix_len: len.parse().ok()?,
            })
        })
        .collect()
}

/// Per probe: what the input path allows, then each DNAT met, where it
/// sends the connection and whom the forward path lets through.
fn check(ruleset: &Ruleset, links: &[Link], probes: &[&str], expect: Expect) {
    let mut text = String::new();
    for spec in probes {
        let probe = probe(spec);
        let version = probe.version();
        let input = reachability(ruleset, &probe);
        text.push_str(&format!(
            "{probe}: input allows {}\n",
            describe_sources(&input.allowed, version)
        ));
        let (paths, undecided) = published(ruleset, &probe, links);
        for path in paths {
            text.push_str(&format!(
                "  dnat {} `{}` from {}\n    to {} via {}: forward allows {}\n",
                path.dnat.chain,
                path.dnat.text,
                describe_sources(&path.dnat.sources, version),
                path.to.map_or("?".to_owned(), |to| to.to_string()),
                path.oif.as_deref().unwrap_or("?"),
                describe_sources(&path.allowed, version),
            ));
            for (net, reason) in path.unknown.iter().take(2) {
                text.push_str(&format!("    unknown {net}: {reason}\n"));
            }
        }
        for (net, reason) in undecided.iter().take(2) {
            text.push_str(&format!("  translation unknown {net}: {reason}\n"));
        }
    }
    expect.assert_eq(&text);
}

#[test]
fn published_ports_bypass_ufw_input() {
    check(
        &ruleset(),
        &links(),
        &[
            "tcp/6379 198.18.91.1",
            "tcp/6380 127.0.0.1",
            "tcp/8080 0.0.0.0",
            "tcp/22 198.18.91.1",
            "udp/6379 198.18.91.1",
        ],
        expect![[r#"
            tcp/6379 to 198.18.91.1: input allows no source
              dnat iptables-nft: ip nat DOCKER `-A DOCKER -d 198.18.91.1/32 ! -i docker0 -p tcp -m tcp --dport 6379 -j DNAT --to-destination 198.18.90.2:6379` from every source
                to 198.18.90.2:6379 via docker0: forward allows every source
            tcp/6380 to 127.0.0.1: input allows no source
            tcp/8080 to 0.0.0.0: input allows no source
              dnat iptables-nft: ip nat DOCKER `-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.18.90.4:80` from every source
                to 198.18.90.4:80 via docker0: forward allows 198.18.91.0/24
            tcp/22 to 198.18.91.1: input allows every source
            udp/6379 to 198.18.91.1: input allows no source
        "#]],
    );
}

/// Without the namespace's links the bridge cannot be told from the
/// interface a client comes in on: the translation is unknown, never
/// guessed.
#[test]
fn without_links_the_bridge_is_unknown() {
    check(
        &ruleset(),
        &[],
        &["tcp/6379 198.18.91.1"],
        expect![[r#"
            tcp/6379 to 198.18.91.1: input allows no source
              translation unknown 0.0.0.0/0: iptables-nft: ip nat DOCKER: rule 1 `-A DOCKER -i docker0 -j RETURN`: interface docker0: depends on the interface the connection arrives on
        "#]],
    );
}

/// DOCKER-USER rules that restrict a published port by conntrack's original
/// tuple, as Docker's documentation does it (after the DNAT the packet's own
/// destination is the container's, so `--dport` would name the container's
/// port, and `-s` would also match the container's replies): the walk
/// follows `--ctorigsrc` and `--ctorigdstport`, which name the client and
/// the host's port, instead of calling them unknown. Written as
/// iptables-save prints them, into the recorded ruleset.
#[test]
fn docker_user_restricts_by_the_original_tuple() {
    let restricted = fixture("published.iptables-save").replace(
        "-A DOCKER-USER -j RETURN",
        "-A DOCKER-USER -p tcp -m conntrack ! --ctorigsrc 198.18.91.7 --ctorigdstport 6379 -j DROP\n\
         -A DOCKER-USER -p tcp -m conntrack --ctorigsrc 198.18.91.128/25 --ctorigdstport 8080 -j DROP\n\
         -A DOCKER-USER -m conntrack --ctdir REPLY --ctorigdstport 9999 -j DROP\n\
         -A DOCKER-USER -j RETURN",
    );
    check(
        &ruleset_with(&restricted),
        &links(),
        &[
            "tcp/6379 198.18.91.1",
            "tcp/8080 0.0.0.0",
            "tcp/22 198.18.91.1",
        ],
        expect![[r#"
            tcp/6379 to 198.18.91.1: input allows no source
              dnat iptables-nft: ip nat DOCKER `-A DOCKER -d 198.18.91.1/32 ! -i docker0 -p tcp -m tcp --dport 6379 -j DNAT --to-destination 198.18.90.2:6379` from every source
                to 198.18.90.2:6379 via docker0: forward allows 198.18.91.7/32
            tcp/8080 to 0.0.0.0: input allows no source
              dnat iptables-nft: ip nat DOCKER `-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.18.90.4:80` from every source
                to 198.18.90.4:80 via docker0: forward allows 198.18.91.0/25
            tcp/22 to 198.18.91.1: input allows every source
        "#]],
    );
}

/// A DOCKER-USER rule that names the allowed client by `-s` matches the
/// container's replies too (their source is the container): it drops every
/// connection to the port, the allowed client's included, as a real
/// connection shows (tests/docker.rs in the CLI). The walk follows the
/// replies back through the forward chains and says so.
#[test]
fn a_docker_user_rule_that_drops_the_replies_stops_every_connection() {
    let restricted = fixture("published.iptables-save").replace(
        "-A DOCKER-USER -j RETURN",
        "-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 6379 ! -s 198.18.91.7/32 -j DROP\n\
         -A DOCKER-USER -j RETURN",
    );
    check(
        &ruleset_with(&restricted),
        &links(),
        &["tcp/6379 198.18.91.1", "tcp/8080 0.0.0.0"],
        expect![[r#"
            tcp/6379 to 198.18.91.1: input allows no source
              dnat iptables-nft: ip nat DOCKER `-A DOCKER -d 198.18.91.1/32 ! -i docker0 -p tcp -m tcp --dport 6379 -j DNAT --to-destination 198.18.90.2:6379` from every source
                to 198.18.90.2:6379 via docker0: forward allows no source
            tcp/8080 to 0.0.0.0: input allows no source
              dnat iptables-nft: ip nat DOCKER `-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.18.90.4:80` from every source
                to 198.18.90.4:80 via docker0: forward allows 198.18.91.0/24
        "#]],
    );
}

/// The replies cross prerouting's filter chains too, on their way in from
/// the container: a mangle PREROUTING rule dropping the container's replies
/// to half the clients' range stops those clients' connections, though the
/// forward chains accept them.
#[test]
fn a_prerouting_rule_that_drops_the_replies_stops_those_connections() {
    let mut ruleset = ruleset();
    ruleset.extend(
        parse_iptables_save(
            "*mangle\n\
             :PREROUTING ACCEPT [0:0]\n\
             -A PREROUTING -s 198.18.90.4/32 -d 198.18.91.0/25 -i docker0 -p tcp -m tcp --sport 80 -j DROP\n\
             COMMIT\n",
            AddrFamily::V4,
            Backend::IptablesNft,
        )
        .expect("mangle table parses"),
    );
    check(
        &ruleset,
        &links(),
        &["tcp/8080 0.0.0.0"],
        expect![[r#"
            tcp/8080 to 0.0.0.0: input allows no source
              dnat iptables-nft: ip nat DOCKER `-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.18.90.4:80` from every source
                to 198.18.90.4:80 via docker0: forward allows 198.18.91.128/25
        "#]],
    );
}
