"""Small tools for bench/scan-udp.sh (the shared ones are in bench/scan/helper.py).

Subcommands:
  plan SEED N_LIVE N_SERVICES N_FIREWALLED OUT_DIR
                            which of the /24's 256 addresses is what: OUT_DIR/live
                            (hosts of their own: closed ports answer ICMP port
                            unreachable), OUT_DIR/services (the live hosts that
                            also run the UDP daemons), OUT_DIR/firewalled (held
                            by one host that drops all UDP: silent) and
                            OUT_DIR/empty (held by nobody); last octets, one a
                            line, sorted
  ports FILE                the distinct ports of a `perimeter scan --all-states
                            --format jsonl` run, sorted numerically
  states perimeter|nmap FILE PLAN_DIR
                            "open N closed N filtered N open|filtered N" over the
                            whole scan, then the same per kind of address (live,
                            services, firewalled, empty) where the output says
                            it: nmap's XML gives every host, perimeter's JSON
                            only its totals (open ports per kind from results),
                            whether its scan was complete, the datagrams sent
                            and the profile and options it recorded

Only Debian's /usr/bin/python3 and its standard library.
"""

import json
import os
import random
import sys
import xml.etree.ElementTree as ET

PREFIX = "198.18.60."
STATES = ("open", "closed", "filtered", "open|filtered")


def plan(seed, n_live, n_services, n_firewalled, out_dir):
    rng = random.Random(int(seed))
    octets = list(range(256))
    rng.shuffle(octets)
    n_live, n_services, n_firewalled = int(n_live), int(n_services), int(n_firewalled)
    live = sorted(octets[:n_live])
    firewalled = sorted(octets[n_live : n_live + n_firewalled])
    empty = sorted(octets[n_live + n_firewalled :])
    services = sorted(rng.sample(live, n_services))
    for name, octets_of in (
        ("live", live),
        ("services", services),
        ("firewalled", firewalled),
        ("empty", empty),
    ):
        with open(os.path.join(out_dir, name), "w") as f:
            f.write("".join(f"{o}\n" for o in octets_of))


def ports(path):
    found = set()
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if "port" in record:
                found.add(int(record["port"]))
    print("\n".join(str(p) for p in sorted(found)))


def kinds(plan_dir):
    """address -> kind; the service hosts are `services`, not `live`."""
    kind_of = {}
    for kind in ("live", "firewalled", "empty", "services"):
        with open(os.path.join(plan_dir, kind)) as f:
            for line in f:
                if line.strip():
                    kind_of[PREFIX + line.strip()] = kind
    return kind_of


def line(label, counts):
    # perimeter's JSON spells open|filtered `open_filtered`.
    return label + " " + " ".join(
        f"{s} {counts.get(s, counts.get(s.replace('|', '_'), 0))}" for s in STATES
    )


def states_nmap(path, plan_dir):
    kind_of = kinds(plan_dir)
    total, per_kind = {}, {}
    hosts_up = {}
    root = ET.parse(path).getroot()
    for host in root.iter("host"):
        address = next((a.get("addr") for a in host.iter("address") if a.get("addrtype") == "ipv4"), None)
        status = host.find("status")
        if address is None or status is None or status.get("state") != "up":
            continue
        kind = kind_of.get(address, "outside-the-plan")
        hosts_up[kind] = hosts_up.get(kind, 0) + 1
        counts = per_kind.setdefault(kind, {})
        ports = host.find("ports")
        if ports is None:
            continue
        for extra in ports.findall("extraports"):
            state, n = extra.get("state"), int(extra.get("count"))
            counts[state] = counts.get(state, 0) + n
            total[state] = total.get(state, 0) + n
        for port in ports.findall("port"):
            state = port.find("state").get("state")
            counts[state] = counts.get(state, 0) + 1
            total[state] = total.get(state, 0) + 1
    print(line("all", total))
    for kind in ("live", "services", "firewalled", "empty", "outside-the-plan"):
        if kind in per_kind or kind in hosts_up:
            print(line(kind, per_kind.get(kind, {})) + f" (hosts up {hosts_up.get(kind, 0)})")


def states_perimeter(path, plan_dir):
    kind_of = kinds(plan_dir)
    with open(path) as f:
        document = json.load(f)
    summary = document.get("summary", {})
    print(line("all", summary))
    per_kind = {}
    for r in document.get("results", []):
        kind = kind_of.get(r["address"], "outside-the-plan")
        counts = per_kind.setdefault(kind, {})
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    for kind in ("live", "services", "firewalled", "empty", "outside-the-plan"):
        if kind in per_kind:
            print(line(kind, per_kind[kind]) + " (results written: open only)")
    scan = document.get("scan", {})
    print(f"complete {str(scan.get('complete')).lower()} probes {scan.get('n_probes')}")
    options = scan.get("options", {})
    print(
        f"recorded profile {scan.get('profile')} "
        + " ".join(f"{k} {v}" for k, v in sorted(options.items()) if k != "udp_port_list")
    )


def main(argv):
    command = argv[1]
    if command == "plan":
        plan(*argv[2:7])
    elif command == "ports":
        ports(argv[2])
    elif command == "states":
        {"perimeter": states_perimeter, "nmap": states_nmap}[argv[2]](argv[3], argv[4])
    else:
        sys.exit(f"unknown subcommand {command}")


if __name__ == "__main__":
    main(sys.argv)
