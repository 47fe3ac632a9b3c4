#!/usr/bin/env bash
# The audit on a Kubernetes-sized nat table (issue 12): what listing the ports
# a DNAT forwards (published ports nothing listens on) costs `perimeter audit`
# on a node whose kube-proxy wrote thousands of chains.
#
# Two network namespaces this script creates and removes, each with one
# wildcard listener (22) and one on a lab address, and a veth to a third
# namespace standing for the pods (198.18.64.0/18): "bare" has no ruleset,
# "kube" has an iptables-nft ruleset shaped like kube-proxy's (N_SVC
# ClusterIP services, each a KUBE-SERVICES rule, a KUBE-SVC chain and a
# KUBE-SEP chain with its DNAT; N_NODEPORT of them also NodePorts through
# KUBE-NODEPORTS), an input chain that drops by default and a forward chain
# that accepts the pods' range. The ClusterIPs are in 198.19.0.0/16; no packet
# is sent anywhere: the audit only reads the ruleset.
#
# Timed side by side with hyperfine, as users run it: `perimeter audit
# --no-store --format json` in each namespace, against `ss -tulpn` and
# `iptables-save` (what an operator would read for the same answer) in the
# kube namespace; peak RSS from GNU time. Before timing, the kube audit must
# list exactly the N_NODEPORT NodePorts as published ports and no ClusterIP.
#
# Usage: bench/audit-nat.sh [RUNS]   (as root; RUNS defaults to 20, at least 5)
# Environment: PERIMETER_BIN (default: a release build), N_SVC (2000),
# N_NODEPORT (100), BENCH_OUT to keep the raw results.
set -euo pipefail

RUNS=${1:-20}
if ! [[ "$RUNS" =~ ^[0-9]+$ ]] || [ "$RUNS" -lt 5 ]; then
    echo "audit-nat.sh: RUNS must be a number, at least 5" >&2
    exit 2
fi
N_SVC=${N_SVC:-2000}
N_NODEPORT=${N_NODEPORT:-100}
if ! [[ "$N_SVC" =~ ^[0-9]+$ && "$N_NODEPORT" =~ ^[0-9]+$ ]] || [ "$N_NODEPORT" -gt "$N_SVC" ] ||
    [ "$N_SVC" -gt 60000 ]; then
    echo "audit-nat.sh: N_SVC (at most 60000) and N_NODEPORT (at most N_SVC) are numbers" >&2
    exit 2
fi
for tool in ip ss iptables-nft-restore iptables-nft-save hyperfine python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "audit-nat.sh: $tool is missing (apt-get install iproute2 iptables hyperfine python3)" >&2
        exit 2
    fi
done
if [ "$(id -u)" -ne 0 ]; then
    echo "audit-nat.sh: run as root (network namespaces)" >&2
    exit 2
fi

cd "$(dirname "$0")/.."
if [ -z "${PERIMETER_BIN:-}" ]; then
    cargo build --release --locked -p perimeter-cli >&2
    PERIMETER_BIN=target/release/perimeter
fi
PERIMETER_BIN=$(realpath "$PERIMETER_BIN")

WORK=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$WORK"
SUFFIX=$$
BARE="perimeter-bench-nat-bare-$SUFFIX"
KUBE="perimeter-bench-nat-kube-$SUFFIX"
PODS="perimeter-bench-nat-pods-$SUFFIX"
LISTENERS=()

cleanup() {
    for pid in "${LISTENERS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for ns in "$BARE" "$KUBE" "$PODS"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    [ -n "${BENCH_OUT:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ip netns add "$PODS"
ip -n "$PODS" link set lo up
for ns in "$BARE" "$KUBE"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add 198.18.0.1/32 dev lo
    tag=${ns##*-nat-}
    ip -n "$ns" link add "cni0" type veth peer name "p-${tag%%-*}" netns "$PODS"
    ip -n "$ns" addr add 198.18.64.1/18 dev cni0
    ip -n "$ns" link set cni0 up
    # One wildcard listener and one on the lab address: never accepted.
    ip netns exec "$ns" python3 -c '
import socket, time
socks = []
for addr, port in (("0.0.0.0", 22), ("198.18.0.1", 8443)):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(); socks.append(s)
time.sleep(3600)
' &
    LISTENERS+=("$!")
done

# kube-proxy's shape, service by service.
python3 - "$N_SVC" "$N_NODEPORT" >"$WORK/kube.rules" <<'EOF'
import sys
n_svc, n_nodeport = int(sys.argv[1]), int(sys.argv[2])
nat = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
       ":POSTROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]"]
rules = ["-A PREROUTING -j KUBE-SERVICES"]
for i in range(n_svc):
    nat += [f":KUBE-SVC-{i} - [0:0]", f":KUBE-SEP-{i} - [0:0]"]
    cluster_ip = f"198.19.{i // 250}.{i % 250 + 1}"
    pod = f"198.18.{64 + i // 250}.{i % 250 + 2}"
    rules.append(f"-A KUBE-SERVICES -d {cluster_ip}/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-{i}")
    rules.append(f"-A KUBE-SVC-{i} -j KUBE-SEP-{i}")
    rules.append(f"-A KUBE-SEP-{i} -p tcp -m tcp -j DNAT --to-destination {pod}:8080")
    if i < n_nodeport:
        nat.append(f":KUBE-EXT-{i} - [0:0]")
        rules.append(f"-A KUBE-NODEPORTS -p tcp -m tcp --dport {30000 + i} -j KUBE-EXT-{i}")
        rules.append(f"-A KUBE-EXT-{i} -j KUBE-SVC-{i}")
rules.append("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
print("\n".join(nat + rules + ["COMMIT"]))
print("\n".join([
    "*filter", ":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
    "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A INPUT -i lo -j ACCEPT",
    "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
    "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A FORWARD -d 198.18.64.0/18 -j ACCEPT",
    "COMMIT",
]))
EOF
ip netns exec "$KUBE" iptables-nft-restore <"$WORK/kube.rules"
n_rules=$(grep -c '^-A' "$WORK/kube.rules")
sleep 1

# What the audit must find before it is timed.
ip netns exec "$KUBE" "$PERIMETER_BIN" audit --no-store --format json >"$WORK/kube.json" || [ $? -eq 1 ]
python3 - "$WORK/kube.json" "$N_NODEPORT" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
published = sorted(l["port"] for l in doc["listeners"] if l.get("published"))
want = list(range(30000, 30000 + int(sys.argv[2])))
if published != want:
    sys.exit(f"audit-nat.sh: published ports {published[:5]}... ({len(published)}), want {len(want)} NodePorts")
clusterip = [l for l in doc["listeners"] if l["address"].startswith("198.19.")]
if clusterip:
    sys.exit(f"audit-nat.sh: ClusterIPs listed: {clusterip[:2]}")
print(f"audit lists the {len(published)} NodePorts as published ports, no ClusterIP", file=sys.stderr)
EOF

hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$WORK/hyperfine.json" -i \
    -n "perimeter audit (kube ruleset)" "ip netns exec $KUBE $PERIMETER_BIN audit --no-store --format json" \
    -n "perimeter audit (no ruleset)" "ip netns exec $BARE $PERIMETER_BIN audit --no-store --format json" \
    -n "ss -tulpn (kube)" "ip netns exec $KUBE ss -tulpn" \
    -n "iptables-save (kube)" "ip netns exec $KUBE iptables-nft-save" >&2

rss() {
    local max=0 kb
    for _ in $(seq 10); do
        kb=$(/usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1)
        [ "$kb" -gt "$max" ] && max=$kb
    done
    echo "$max"
}
rss_kube=$(rss ip netns exec "$KUBE" "$PERIMETER_BIN" audit --no-store --format json)
rss_bare=$(rss ip netns exec "$BARE" "$PERIMETER_BIN" audit --no-store --format json)
rss_save=$(rss ip netns exec "$KUBE" iptables-nft-save)

python3 - "$WORK/hyperfine.json" "$N_SVC" "$N_NODEPORT" "$n_rules" "$rss_kube" "$rss_bare" "$rss_save" <<'EOF'
import json, statistics, sys
results = json.load(open(sys.argv[1]))["results"]
n_svc, n_nodeport, n_rules = sys.argv[2:5]
rss = {"perimeter audit (kube ruleset)": sys.argv[5], "perimeter audit (no ruleset)": sys.argv[6],
       "iptables-save (kube)": sys.argv[7]}
base = statistics.median(next(r["times"] for r in results if r["command"] == "iptables-save (kube)"))
print(f"{n_svc} services, {n_nodeport} NodePorts, {n_rules} rules; medians of {len(results[0]['times'])} runs")
print(f"| command | median ms | vs iptables-save | peak RSS MB |")
print(f"|---|---:|---:|---:|")
for r in results:
    median = statistics.median(r["times"])
    mb = f"{int(rss[r['command']]) / 1024:.1f}" if r["command"] in rss else "-"
    print(f"| {r['command']} | {median * 1000:.1f} | {median / base:.2f}x | {mb} |")
EOF
