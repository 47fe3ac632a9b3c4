"""Port states for the scan benchmarks (bench/scan-rtt.sh): every (address,
port) pair a scan covered, with the state each tool gave it, and the
comparison of two such listings.

Subcommands:
  states perimeter FILE           "address:port state" per pair of a
                                  `perimeter scan --all-states --format json`
  states nmap FILE PORTS          the same from nmap's XML; PORTS (22,80,...)
                                  fills in the ports nmap folded into one
                                  <extraports> element of a host
  compare NMAP_STATES PERIMETER_STATES
                                  "identical (N pairs: ...)" or every pair
                                  whose states differ
  misfiltered NMAP_STATES PERIMETER_STATES
                                  the pairs perimeter called filtered (or did
                                  not report) that nmap called open or closed,
                                  one "address:port nmap=STATE perimeter=STATE"
                                  a line; nothing when there are none

Only Debian's /usr/bin/python3 and its standard library, like helper.py.
"""

import collections
import ipaddress
import json
import sys
import xml.etree.ElementTree as ET


def sort_key(pair):
    address, port = pair.rsplit(":", 1)
    return (ipaddress.ip_address(address), int(port))


def perimeter_states(path):
    with open(path) as f:
        document = json.load(f)
    return {f"{r['address']}:{int(r['port'])}": r["state"] for r in document.get("results", [])}


def nmap_states(path, ports):
    ports = [int(p) for p in ports.split(",") if p]
    states = {}
    root = ET.parse(path).getroot()
    for host in root.iter("host"):
        address = next(
            (a.get("addr") for a in host.iter("address") if a.get("addrtype") in ("ipv4", "ipv6")),
            None,
        )
        if address is None:
            continue
        listed = {}
        for port in host.iter("port"):
            state = port.find("state")
            if state is not None:
                listed[int(port.get("portid"))] = state.get("state")
        extra = [e.get("state") for e in host.iter("extraports")]
        for port in ports:
            if port in listed:
                states[f"{address}:{port}"] = listed[port]
            elif len(extra) == 1:
                states[f"{address}:{port}"] = extra[0]
            else:
                # Folded into more than one <extraports>: nmap's XML does not
                # say which port had which state.
                states[f"{address}:{port}"] = "unknown"
    return states


def print_states(states):
    for pair in sorted(states, key=sort_key):
        print(f"{pair} {states[pair]}")


def read_states(path):
    table = {}
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) == 2:
                table[fields[0]] = fields[1]
    return table


def compare(nmap_path, perimeter_path):
    nmap = read_states(nmap_path)
    perimeter = read_states(perimeter_path)
    differences = []
    for pair in sorted(set(nmap) | set(perimeter), key=sort_key):
        n_state = nmap.get(pair, "(none)")
        p_state = perimeter.get(pair, "(none)")
        if n_state != p_state:
            differences.append(f"{pair} nmap={n_state} perimeter={p_state}")
    if differences:
        print(f"DIFFERENT in {len(differences)} of {len(set(nmap) | set(perimeter))} pairs: " + "; ".join(differences))
    else:
        counts = collections.Counter(nmap.values())
        summary = ", ".join(f"{counts[s]} {s}" for s in sorted(counts))
        print(f"identical ({len(nmap)} pairs: {summary})")


def misfiltered(nmap_path, perimeter_path):
    nmap = read_states(nmap_path)
    perimeter = read_states(perimeter_path)
    for pair in sorted(nmap, key=sort_key):
        if nmap[pair] not in ("open", "closed"):
            continue
        p_state = perimeter.get(pair, "(none)")
        if p_state in ("filtered", "(none)"):
            print(f"{pair} nmap={nmap[pair]} perimeter={p_state}")


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "states" and args[0] == "perimeter":
        print_states(perimeter_states(args[1]))
    elif command == "states" and args[0] == "nmap":
        print_states(nmap_states(args[1], args[2]))
    elif command == "compare":
        compare(*args)
    elif command == "misfiltered":
        misfiltered(*args)
    else:
        print(f"unknown command {' '.join(argv[1:2])}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
