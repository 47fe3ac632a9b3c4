#!/usr/bin/env bash
# Scan benchmark 2 (issue 3): a /24 lab network, 20% of its hosts filtered and
# 1% random packet loss, perimeter's top 1,000 ports.
#
#   perimeter scan 198.18.1.0/24 --top-ports 1000 --profile fast --no-identify
#   nmap -sT -T4 -p <the same 1,000 ports> 198.18.1.0/24
#
# side by side, in rotating order, RUNS times each. Prints medians, the ratio,
# peak RSS, and for every run whether every port nmap found open was found
# open by perimeter (and how both compare with what the lab really listens on).
#
# The lab: a switch namespace with a bridge; a scanner namespace (198.18.0.1)
# and ONE target namespace carrying 254 addresses, 198.18.1.1 to .254, on its
# veth (.0 and .255 are unassigned: a scan of the /24 meets them as a real
# network's empty addresses). Each host listens on a few ports drawn from the
# ranked list (ssh on most, web on many, one to three others), served by one
# process that accepts and closes. An nftables ruleset in the target drops
# everything to 20% of the hosts (seeded choice) and 1% of all packets at
# random (`numgen random mod 100 < 1 drop`). No default route anywhere;
# everything is removed on exit, also when interrupted.
#
# nmap runs as root here, so it finds hosts by ARP on the lab's link: the
# filtered hosts still answer ARP (nftables' inet family does not see it), so
# nmap scans them as perimeter does, which has no host discovery. The two
# unassigned addresses do not answer ARP; nmap skips them, perimeter probes
# them. Identification is off for perimeter: nmap -sT only finds open ports.
#
# Usage: bench/scan-lan.sh [RUNS]     (as root; RUNS defaults to 3)
# Environment: PERIMETER_BIN to time an already built binary; BENCH_KEEP=1
# keeps the raw outputs (their directory is printed).
set -euo pipefail
source "$(dirname "$0")/scan/lib.sh"

RUNS=${1:-3}
[[ "$RUNS" =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] || die "RUNS must be a positive number"
SCANNER_ADDR=198.18.0.1
NETWORK=198.18.1.0/24
N_HOSTS=254
FILTERED_PERCENT=20
LOSS_PERCENT=1
SEED=3

require_tools nmap
find_perimeter

lab_begin 2
lab_host scan "$SCANNER_ADDR/15"
lab_host hosts
SCANNER="$LAB_TAG-scan"
HOSTS="$LAB_TAG-hosts"
for host in $(seq 1 "$N_HOSTS"); do
    echo "addr add 198.18.1.$host/15 dev eth0"
done >"$LAB_WORK/addresses"
ip -n "$HOSTS" -batch "$LAB_WORK/addresses"

# perimeter's top 1,000, read back from perimeter itself: a scan of the
# scanner namespace's own loopback (nothing leaves the namespace), every
# state reported, so every port of the list appears once.
ip netns exec "$SCANNER" "$PERIMETER" scan 127.0.0.1 --top-ports 1000 --profile fast \
    --no-identify --all-states --no-store --format jsonl --quiet |
    "$PYTHON" -c 'import json, sys; print("\n".join(sorted({str(json.loads(l)["port"]) for l in sys.stdin if l.strip()}, key=int)))' \
        >"$LAB_WORK/ports"
N_PORTS=$(wc -l <"$LAB_WORK/ports")
[ "$N_PORTS" -eq 1000 ] || die "expected 1000 ports from --top-ports 1000, got $N_PORTS"
PORT_LIST=$(paste -sd, "$LAB_WORK/ports")

"$PYTHON" "$HELPER" plan-hosts "$N_HOSTS" "$SEED" "$LAB_WORK/ports" "$LAB_WORK/listeners"
lab_spawn "$HOSTS" "$LAB_WORK/listen.log" "$PYTHON" "$HELPER" listen "$LAB_WORK/listeners"
read -r first_address first_port <"$LAB_WORK/listeners"
wait_tcp "$SCANNER" "$first_address" "$first_port"

# The filtered hosts: a seeded 20%.
"$PYTHON" -c '
import random, sys
n, percent, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
hosts = random.Random(seed).sample(range(1, n + 1), n * percent // 100)
print("\n".join(f"198.18.1.{h}" for h in sorted(hosts)))
' "$N_HOSTS" "$FILTERED_PERCENT" "$SEED" >"$LAB_WORK/filtered"
N_FILTERED=$(wc -l <"$LAB_WORK/filtered")
ip netns exec "$HOSTS" nft -f - <<EOF
table inet pscan_lab {
    set filtered {
        type ipv4_addr
        elements = { $(paste -sd, "$LAB_WORK/filtered") }
    }
    chain input {
        type filter hook input priority filter; policy accept;
        ip daddr @filtered counter drop
        numgen random mod 100 < $LOSS_PERCENT counter drop
    }
}
EOF
# What a perfect scanner would find: the listeners of the hosts not filtered.
awk 'NR == FNR {filtered[$1] = 1; next} !($1 in filtered) {print $1 ":" $2}' \
    "$LAB_WORK/filtered" "$LAB_WORK/listeners" | sort -u >"$LAB_WORK/expected"

PERIMETER_CMD=("$PERIMETER" scan "$NETWORK" --top-ports 1000 --profile fast --no-identify --no-store --format json --quiet)
NMAP_CMD=(nmap -n -sT -T4 -p "$PORT_LIST" "$NETWORK")
TOOLS=(perimeter nmap)

log "machine: $(machine_note)"
log "load before: $(load_note)"
log "$NETWORK: $N_HOSTS hosts, $N_FILTERED filtered, $LOSS_PERCENT% loss, $(wc -l <"$LAB_WORK/expected") open ports on the unfiltered hosts"
for run in $(seq 1 "$RUNS"); do
    for i in 0 1; do
        tool=${TOOLS[$(((i + run) % 2))]}
        case $tool in
        perimeter)
            timed perimeter "$run" "$SCANNER" "${PERIMETER_CMD[@]}"
            "$PYTHON" "$HELPER" open perimeter "$LAB_WORK/perimeter.$run.out" >"$LAB_WORK/perimeter.$run.open"
            ;;
        nmap)
            timed nmap "$run" "$SCANNER" "${NMAP_CMD[@]}" -oX "$LAB_WORK/nmap.$run.xml"
            "$PYTHON" "$HELPER" open nmap "$LAB_WORK/nmap.$run.xml" >"$LAB_WORK/nmap.$run.open"
            ;;
        esac
    done
done
LOAD_AFTER=$(load_note)
DROPS=$(ip netns exec "$HOSTS" nft list chain inet pscan_lab input | grep -o 'packets [0-9]*' | tr '\n' ' ')

echo
echo "scan benchmark 2: $NETWORK, $N_HOSTS hosts ($N_FILTERED filtered), $LOSS_PERCENT% loss, 1,000 ports, $RUNS runs each"
echo "machine: $(machine_note)"
echo "load after: $LOAD_AFTER"
echo "perimeter: ${PERIMETER_CMD[*]}"
echo "nmap:      nmap -n -sT -T4 -p <perimeter's top 1000> $NETWORK -oX FILE"
echo "nftables drop counters (filtered hosts, random loss) over all runs: $DROPS"
echo
printf '%-10s %10s %12s  %s\n' tool median_s peak_rss_MB "all runs (s)"
for tool in "${TOOLS[@]}"; do
    printf '%-10s %10.2f %12.1f  %s\n' "$tool" "$(median_seconds "$tool")" \
        "$(echo "$(max_rss_kb "$tool") / 1024" | bc -l)" "$(all_seconds "$tool")"
done
echo
echo "nmap / perimeter: $(ratio "$(median_seconds nmap)" "$(median_seconds perimeter)")x (target >= 3x)"
echo
echo "open ports, run by run:"
for run in $(seq 1 "$RUNS"); do
    missed=$(comm -23 <(sort "$LAB_WORK/nmap.$run.open") <(sort "$LAB_WORK/perimeter.$run.open") | wc -l)
    echo "  run $run: nmap found $(wc -l <"$LAB_WORK/nmap.$run.open"), perimeter $(wc -l <"$LAB_WORK/perimeter.$run.open"), of them nmap's missed by perimeter: $missed"
    echo "         perimeter vs lab: $("$PYTHON" "$HELPER" compare lab "$LAB_WORK/expected" perimeter "$LAB_WORK/perimeter.$run.open")"
    echo "         nmap vs lab:      $("$PYTHON" "$HELPER" compare lab "$LAB_WORK/expected" nmap "$LAB_WORK/nmap.$run.open")"
done
[ -n "${BENCH_KEEP:-}" ] && echo "raw outputs kept in $LAB_WORK"
exit 0
