"""Small tools for the scan benchmarks (bench/scan-*.sh).

Subcommands:
  listen SPEC_FILE          serve the listeners in SPEC_FILE ("address port" per
                            line): accept every connection and close it at once,
                            so repeated scans never fill a backlog
  wait-tcp ADDRESS PORT S   wait up to S seconds until ADDRESS:PORT accepts
  median                    the median of the numbers on stdin
  open perimeter|nmap|rustscan FILE
                            the open (address, port) pairs a tool reported, one
                            "address:port" a line, sorted
  compare NAME_A FILE_A NAME_B FILE_B
                            whether two sorted open sets are identical, and
                            what each has that the other lacks
  services perimeter|nmap FILE
                            "address:port service product version" per open
                            port, as the tool named it (- for none)
  check-services NMAP_SERVICES PERIMETER_SERVICES [verbose]
                            from two `services` listings: did perimeter name
                            every service nmap named, with nmap's version
                            wherever nmap gave one
  syn-rate FILE LIMIT       from `tcpdump -tt -n` lines of SYNs: count, span,
                            mean rate and the busiest 1 s window against LIMIT
  plan-hosts N SEED PORTS_FILE OUT
                            the open ports of a /24 lab: for host i in 1..N,
                            ports drawn from the ranked list, "address port"
                            lines

Only Debian's /usr/bin/python3 and its standard library: the benchmarks must
run on a fresh machine with nothing installed but the test dependencies.
"""

import ipaddress
import json
import random
import selectors
import socket
import sys
import time
import xml.etree.ElementTree as ET


def listen(spec_file):
    selector = selectors.DefaultSelector()
    n_listeners = 0
    with open(spec_file) as spec:
        for line in spec:
            fields = line.split()
            if len(fields) != 2:
                continue
            address, port = fields[0], int(fields[1])
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            server = socket.socket(family, socket.SOCK_STREAM)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind((address, port))
            server.listen(1024)
            server.setblocking(False)
            selector.register(server, selectors.EVENT_READ)
            n_listeners += 1
    print(f"listening on {n_listeners} sockets", flush=True)
    while True:
        for key, _ in selector.select():
            try:
                connection, _ = key.fileobj.accept()
                connection.close()
            except OSError:
                pass


def wait_tcp(address, port, seconds):
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, int(port)), timeout=0.2):
                return 0
        except OSError:
            time.sleep(0.02)
    return 1


def median():
    values = sorted(float(v) for v in sys.stdin.read().split())
    if not values:
        print("n/a")
        return
    mid = len(values) // 2
    value = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    print(f"{value:.3f}")


def open_perimeter(path):
    """Open pairs from `--format json` or `--format jsonl`."""
    with open(path) as f:
        text = f.read()
    results = []
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if isinstance(document, dict) and "results" in document:
        results = document["results"]
    else:
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "address" in record:
                results.append(record)
    return {
        (r["address"], int(r["port"])) for r in results if r.get("state") == "open"
    }


def nmap_hosts(path):
    root = ET.parse(path).getroot()
    for host in root.iter("host"):
        address = next(
            (a.get("addr") for a in host.iter("address") if a.get("addrtype") in ("ipv4", "ipv6")),
            None,
        )
        if address is None:
            continue
        yield address, host


def open_nmap(path):
    pairs = set()
    for address, host in nmap_hosts(path):
        for port in host.iter("port"):
            state = port.find("state")
            if state is not None and state.get("state") == "open":
                pairs.add((address, int(port.get("portid"))))
    return pairs


def open_rustscan(path):
    """RustScan's greppable output: `198.18.0.2 -> [22,80,443]`."""
    pairs = set()
    with open(path) as f:
        for line in f:
            if "->" not in line:
                continue
            address, _, ports = line.partition("->")
            address = address.strip()
            try:
                ipaddress.ip_address(address)
            except ValueError:
                continue
            for port in ports.strip().strip("[]").split(","):
                port = port.strip()
                if port.isdigit():
                    pairs.add((address, int(port)))
    return pairs


def sort_key(pair):
    return (ipaddress.ip_address(pair[0]), pair[1])


def open_pairs(tool, path):
    reader = {"perimeter": open_perimeter, "nmap": open_nmap, "rustscan": open_rustscan}[tool]
    for address, port in sorted(reader(path), key=sort_key):
        print(f"{address}:{port}")


def compare(name_a, file_a, name_b, file_b):
    with open(file_a) as f:
        a = {line.strip() for line in f if line.strip()}
    with open(file_b) as f:
        b = {line.strip() for line in f if line.strip()}
    if a == b:
        print(f"identical ({len(a)} open)")
        return
    only_a = sorted(a - b)
    only_b = sorted(b - a)
    parts = [f"DIFFERENT: {name_a} {len(a)} open, {name_b} {len(b)} open"]
    if only_a:
        parts.append(f"only {name_a}: {' '.join(only_a[:20])}{' ...' if len(only_a) > 20 else ''}")
    if only_b:
        parts.append(f"only {name_b}: {' '.join(only_b[:20])}{' ...' if len(only_b) > 20 else ''}")
    print("; ".join(parts))


def services(tool, path):
    rows = []
    if tool == "perimeter":
        with open(path) as f:
            results = json.load(f).get("results", [])
        for r in results:
            if r.get("state") != "open":
                continue
            rows.append(
                (
                    (r["address"], int(r["port"])),
                    r.get("service") or "-",
                    r.get("product") or "-",
                    r.get("version") or "-",
                    (",".join(sorted({f["rule"] for f in r.get("findings", [])})) or "-")
                    + f";auth={r.get('auth') or '-'}",
                )
            )
    else:
        for address, host in nmap_hosts(path):
            for port in host.iter("port"):
                state = port.find("state")
                if state is None or state.get("state") != "open":
                    continue
                service = port.find("service")
                get = (lambda k: (service.get(k) if service is not None else None) or "-")
                rows.append(
                    (
                        (address, int(port.get("portid"))),
                        get("name"),
                        get("product"),
                        get("version"),
                        "-",
                    )
                )
    for pair, name, product, version, rules in sorted(rows, key=lambda r: sort_key(r[0])):
        product = product.replace(" ", "_")
        version = version.replace(" ", "_")
        print(f"{pair[0]}:{pair[1]} {name} {product} {version} {rules}")


def read_services(path):
    table = {}
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) == 5:
                table[fields[0]] = fields[1:]
    return table


def same_version(nmap_version, perimeter_version):
    """nmap's version strings carry more (`9.2p1 Debian 2+deb12u7`); a
    perimeter version agrees when nmap's starts with it, or contains it."""
    if perimeter_version == "-":
        return False
    nmap_version = nmap_version.replace("_", " ")
    perimeter_version = perimeter_version.replace("_", " ")
    return nmap_version.startswith(perimeter_version) or perimeter_version in nmap_version


def check_services(nmap_path, perimeter_path, verbose=None):
    nmap = read_services(nmap_path)
    perimeter = read_services(perimeter_path)
    problems = []
    n_named = n_versions = 0
    for port in sorted(set(nmap) | set(perimeter), key=lambda p: sort_key(p.rsplit(":", 1))):
        n_fields = nmap.get(port, ["-", "-", "-", "-"])
        p_fields = perimeter.get(port)
        verdict = "ok"
        if p_fields is None:
            verdict = "NOT OPEN in perimeter"
        elif n_fields[0] not in ("-", "unknown") and not n_fields[0].endswith("?"):
            n_named += 1
            if p_fields[0] != n_fields[0]:
                verdict = f"NAMED {p_fields[0]}, nmap {n_fields[0]}"
            elif n_fields[2] != "-":
                n_versions += 1
                if not same_version(n_fields[2], p_fields[2]):
                    verdict = f"VERSION {p_fields[2]}, nmap {n_fields[2]}"
        if verdict != "ok":
            problems.append(f"{port}: {verdict}")
        if verbose:
            p_show = " ".join(p_fields) if p_fields else "(not open)"
            print(f"  {port:<20} nmap: {' '.join(n_fields[:3]):<52} perimeter: {p_show}  [{verdict}]")
    if not verbose:
        if problems:
            print("NO: " + "; ".join(problems))
        else:
            print(f"yes ({n_named} services named by nmap, {n_versions} with versions)")


def syn_rate(path, limit):
    limit = float(limit)
    stamps = []
    with open(path) as f:
        for line in f:
            # Packet lines only ("1795612574.270311 IP 198.19.0.1.40000 > ..."),
            # not tcpdump's own "N packets captured".
            if " IP " not in line:
                continue
            head = line.split(" ", 1)[0]
            try:
                stamps.append(float(head))
            except ValueError:
                continue
    stamps.sort()
    if len(stamps) < 2:
        print(f"syns={len(stamps)} (too few to measure a rate)")
        return
    span = stamps[-1] - stamps[0]
    mean = (len(stamps) - 1) / span if span > 0 else float("inf")
    # The busiest window of one second, by a sliding window over the sorted
    # stamps: the most SYNs whose times lie within [t, t + 1 s).
    busiest = 0
    lo = 0
    for hi, t in enumerate(stamps):
        while t - stamps[lo] >= 1.0:
            lo += 1
        busiest = max(busiest, hi - lo + 1)
    print(
        f"syns={len(stamps)} span={span:.2f}s mean={mean:.1f}/s "
        f"mean_vs_limit={100 * mean / limit:.1f}% busiest_1s={busiest} "
        f"busiest_vs_limit={100 * busiest / limit:.1f}%"
    )


def plan_hosts(n_hosts, seed, ports_file, out):
    """Which ports are open on each host of the /24: every host a few of the
    usual ones (ssh on most, web on many) and one to three drawn from the whole
    list, so open ports are spread over the ranking, not only at its top."""
    with open(ports_file) as f:
        ranked = [int(p) for p in f.read().split() if p.isdigit()]
    rng = random.Random(int(seed))
    with open(out, "w") as f:
        for host in range(1, int(n_hosts) + 1):
            address = f"198.18.1.{host}"
            ports = set()
            if rng.random() < 0.8:
                ports.add(22)
            if rng.random() < 0.5:
                ports.add(80)
            if rng.random() < 0.3:
                ports.add(443)
            for _ in range(rng.randint(1, 3)):
                ports.add(rng.choice(ranked))
            for port in sorted(ports):
                f.write(f"{address} {port}\n")


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "listen":
        listen(*args)
    elif command == "wait-tcp":
        return wait_tcp(*args)
    elif command == "median":
        median()
    elif command == "open":
        open_pairs(*args)
    elif command == "compare":
        compare(*args)
    elif command == "services":
        services(*args)
    elif command == "check-services":
        check_services(*args)
    elif command == "syn-rate":
        syn_rate(*args)
    elif command == "plan-hosts":
        plan_hosts(*args)
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
