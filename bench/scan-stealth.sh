#!/usr/bin/env bash
# Scan benchmark 4 (issue 3): 198.18.0.0/16 x 100 ports in stealth mode at a
# fixed rate, for 60 s: peak RSS (target under 64 MB) and the rate ceiling
# (target: held within 5%), counted on the wire.
#
#   timeout -s INT 60 perimeter scan 198.18.0.0/16 --top-ports 100 \
#       --profile stealth --rate RATE
#
# for each PROFILE:RATE in CONFIGS (default stealth at 100 and at 1000 probes
# per second, a quiet scan's rate and ten times that to stress the limiter
# and the memory; and normal at 1000 for reference). Stealth adds random
# jitter of up to one interval between probes, so its mean is about two
# thirds of the ceiling by design; the ceiling is what is checked: the
# busiest one-second window on the wire against RATE. The normal profile has
# no jitter, so there the mean shows how close to the ceiling the limiter
# runs.
#
# The /16 has 6.5 million (address, port) pairs; the scan cannot finish in a
# minute and is stopped with SIGINT (Ctrl-C), as an operator would. Peak RSS
# is GNU time's. SYNs are counted twice, in the sink namespace: an nftables
# counter on SYNs (total), and tcpdump's time stamps of each SYN, from which
# the mean rate and the busiest one-second window are computed.
#
# The lab: a scanner namespace (198.19.0.1/24) joined by a veth pair through
# the lab bridge to a sink namespace (198.19.0.2/24); the scanner's only routes
# are its /24 and 198.18.0.0/16 via the sink. The sink holds the whole /16 as
# local addresses (`ip route add local 198.18.0.0/16 dev lo`), so its kernel
# answers every SYN with a RST (closed), as a real network of hosts would
# answer most probes. No default route anywhere; everything is removed on
# exit, also when interrupted.
#
# Usage: bench/scan-stealth.sh [RUNS]     (as root; RUNS defaults to 1)
# Environment: PERIMETER_BIN to time an already built binary; CONFIGS
# (default "stealth:100 stealth:1000 normal:1000"); DURATION (default 60)
# seconds; BENCH_KEEP=1 keeps the raw outputs.
set -euo pipefail
source "$(dirname "$0")/scan/lib.sh"

RUNS=${1:-1}
[[ "$RUNS" =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] || die "RUNS must be a positive number"
CONFIGS=${CONFIGS:-stealth:100 stealth:1000 normal:1000}
DURATION=${DURATION:-60}

require_tools tcpdump timeout
find_perimeter

lab_begin 4
lab_host scan 198.19.0.1/24
lab_host sink 198.19.0.2/24
SCANNER="$LAB_TAG-scan"
SINK="$LAB_TAG-sink"
ip -n "$SCANNER" route add 198.18.0.0/16 via 198.19.0.2
ip -n "$SINK" route add local 198.18.0.0/16 dev lo
ip netns exec "$SINK" nft -f - <<'EOF'
table inet pscan_lab {
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "eth0" tcp flags & (syn | ack) == syn counter
    }
}
EOF
syn_count() {
    ip netns exec "$SINK" nft list chain inet pscan_lab input |
        awk '/counter packets/ {for (i = 1; i <= NF; i++) if ($i == "packets") print $(i + 1)}'
}

# perimeter_cmd PROFILE:RATE
perimeter_cmd() {
    PROFILE=${1%%:*}
    RATE=${1#*:}
    PERIMETER_CMD=("$PERIMETER" scan 198.18.0.0/16 --top-ports 100 --profile "$PROFILE" --rate "$RATE" --no-store --format json --quiet)
}

log "machine: $(machine_note)"
log "load before: $(load_note)"
for config in $CONFIGS; do
perimeter_cmd "$config"
for run in $(seq 1 "$RUNS"); do
    run="$PROFILE-$RATE.$run"
    before=$(syn_count)
    lab_spawn "$SINK" "$LAB_WORK/tcpdump.$run.log" tcpdump -i eth0 -n -tt -l -Q in \
        'tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn'
    TCPDUMP_PID=$SPAWNED_PID
    sleep 1
    timed perimeter "$run" "$SCANNER" timeout -s INT "$DURATION" "${PERIMETER_CMD[@]}"
    sleep 0.5
    kill -INT "$TCPDUMP_PID" 2>/dev/null || true
    wait "$TCPDUMP_PID" 2>/dev/null || true
    after=$(syn_count)
    echo $((after - before)) >"$LAB_WORK/counter.$run"
done
done
LOAD_AFTER=$(load_note)

echo
echo "scan benchmark 4: 198.18.0.0/16 x 100 ports, stopped after ${DURATION}s, $RUNS run(s) per profile and rate"
echo "machine: $(machine_note)"
echo "load after: $LOAD_AFTER"
for config in $CONFIGS; do
perimeter_cmd "$config"
echo
echo "perimeter: timeout -s INT $DURATION ${PERIMETER_CMD[*]}"
for run in $(seq 1 "$RUNS"); do
    run="$PROFILE-$RATE.$run"
    rss_kb=$(awk -v r="$run" '$1 == "perimeter" && $2 "" == r "" {print $4}' "$LAB_WORK/times")
    wall=$(awk -v r="$run" '$1 == "perimeter" && $2 "" == r "" {print $3}' "$LAB_WORK/times")
    counted=$(cat "$LAB_WORK/counter.$run")
    probes=$("$PYTHON" -c 'import json, sys; s = json.load(open(sys.argv[1]))["scan"]; print(s["n_probes"], "complete" if s["complete"] else "incomplete")' "$LAB_WORK/perimeter.$run.out" 2>/dev/null || echo "? ?")
    echo "$PROFILE at $RATE/s, run ${run##*.}: wall ${wall}s, peak RSS $(echo "$rss_kb / 1024" | bc -l | xargs printf '%.1f') MB (target < 64 MB)"
    echo "  perimeter's own count: ${probes% *} probes, scan marked ${probes#* }"
    echo "  nftables SYN counter: $counted SYNs, $(echo "$counted / $wall" | bc -l | xargs printf '%.1f')/s over the whole run (ceiling $RATE/s)"
    echo "  tcpdump: $("$PYTHON" "$HELPER" syn-rate "$LAB_WORK/tcpdump.$run.log" "$RATE")"
done
done
[ -n "${BENCH_KEEP:-}" ] && echo "raw outputs kept in $LAB_WORK"
exit 0
