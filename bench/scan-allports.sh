#!/usr/bin/env bash
# Scan benchmark 1 (issue 3): all 65,535 TCP ports of one lab host.
#
#   perimeter scan --profile fast -p- --no-identify          (connect scan)
#   perimeter scan --profile fast -p- --no-identify --syn    (SYN scan, raw socket)
#   nmap -sT -p- -T5 --min-rate 10000                        (connect scan)
#   nmap -sS -p- -T5 --min-rate 10000                        (SYN scan)
#   rustscan -r 1-65535 (when installed: `cargo install rustscan`)
#
# side by side, in rotating order, RUNS times each. Prints medians, ratios,
# peak RSS, and whether every run of every tool found the same open set.
#
# The lab: a switch namespace with a bridge; a scanner namespace (198.18.0.1)
# and a target namespace (198.18.0.2) on it by veth pairs; no default route
# anywhere, so nothing leaves the lab. The target listens on OPEN_PORTS
# (accepting and closing at once); every other port answers the kernel's RST.
# All of it is removed on exit, also when interrupted.
#
# Identification is off for perimeter: nmap -sT and RustScan only find open
# ports, and this benchmark compares port scanning. nmap gets -n (no reverse
# DNS), which perimeter does not do either.
#
# Usage: bench/scan-allports.sh [RUNS]     (as root; RUNS defaults to 5)
# Environment: PERIMETER_BIN to time an already built binary; RUSTSCAN_BIN
# (default: rustscan on PATH or ~/.cargo/bin); BENCH_KEEP=1 keeps the raw
# outputs (their directory is printed).
set -euo pipefail
source "$(dirname "$0")/scan/lib.sh"

RUNS=${1:-5}
[[ "$RUNS" =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] || die "RUNS must be a positive number"
SCANNER_ADDR=198.18.0.1
TARGET_ADDR=198.18.0.2
# Spread over the whole range, both ends included.
OPEN_PORTS="1 22 80 443 3306 5432 6379 8080 9200 11211 20000 27017 31337 40000 50000 60000 65000 65535"

require_tools nmap
find_perimeter
RUSTSCAN=${RUSTSCAN_BIN:-$(command -v rustscan || true)}
if [ -z "$RUSTSCAN" ] && [ -x "$HOME/.cargo/bin/rustscan" ]; then
    RUSTSCAN="$HOME/.cargo/bin/rustscan"
fi
if [ -z "$RUSTSCAN" ]; then
    log "RustScan not found: install it with 'cargo install rustscan' to include it"
fi

lab_begin 1
lab_host scan "$SCANNER_ADDR/15"
lab_host target "$TARGET_ADDR/15"
SCANNER="$LAB_TAG-scan"
TARGET="$LAB_TAG-target"

for port in $OPEN_PORTS; do
    echo "$TARGET_ADDR $port"
done >"$LAB_WORK/listeners"
lab_spawn "$TARGET" "$LAB_WORK/listen.log" "$PYTHON" "$HELPER" listen "$LAB_WORK/listeners"
wait_tcp "$SCANNER" "$TARGET_ADDR" 65535
for port in $OPEN_PORTS; do
    echo "$TARGET_ADDR:$port"
done | sort -V >"$LAB_WORK/expected"

PERIMETER_CMD=("$PERIMETER" scan "$TARGET_ADDR" -p- --profile fast --no-identify --no-store --format json --quiet)
PERIMETER_SYN_CMD=("${PERIMETER_CMD[@]}" --syn)
NMAP_CMD=(nmap -n -sT -p- -T5 --min-rate 10000 "$TARGET_ADDR")
NMAP_SYN_CMD=(nmap -n -sS -p- -T5 --min-rate 10000 "$TARGET_ADDR")
# RustScan with a batch as large as the open-file limit allows and a timeout
# above the lab's round trip: its fastest safe settings here.
RUSTSCAN_CMD=("$RUSTSCAN" --no-config --no-banner -g -a "$TARGET_ADDR" -r 1-65535 -b 10000 -t 1000 --ulimit 20000)

TOOLS=(perimeter perimeter-syn nmap nmap-syn)
[ -n "$RUSTSCAN" ] && TOOLS+=(rustscan)

run_tool() {
    local tool=$1 run=$2
    case $tool in
    perimeter) timed perimeter "$run" "$SCANNER" "${PERIMETER_CMD[@]}" ;;
    perimeter-syn) timed perimeter-syn "$run" "$SCANNER" "${PERIMETER_SYN_CMD[@]}" ;;
    nmap) timed nmap "$run" "$SCANNER" "${NMAP_CMD[@]}" -oX "$LAB_WORK/nmap.$run.xml" ;;
    nmap-syn) timed nmap-syn "$run" "$SCANNER" "${NMAP_SYN_CMD[@]}" -oX "$LAB_WORK/nmap-syn.$run.xml" ;;
    rustscan) timed rustscan "$run" "$SCANNER" "${RUSTSCAN_CMD[@]}" ;;
    esac
}

open_set() {
    local tool=$1 run=$2
    case $tool in
    perimeter) "$PYTHON" "$HELPER" open perimeter "$LAB_WORK/perimeter.$run.out" ;;
    perimeter-syn) "$PYTHON" "$HELPER" open perimeter "$LAB_WORK/perimeter-syn.$run.out" ;;
    nmap) "$PYTHON" "$HELPER" open nmap "$LAB_WORK/nmap.$run.xml" ;;
    nmap-syn) "$PYTHON" "$HELPER" open nmap "$LAB_WORK/nmap-syn.$run.xml" ;;
    rustscan) "$PYTHON" "$HELPER" open rustscan "$LAB_WORK/rustscan.$run.out" ;;
    esac
}

log "machine: $(machine_note)"
log "load before: $(load_note)"
log "${#TOOLS[@]} tools x $RUNS runs, 65,535 ports of $TARGET_ADDR (${OPEN_PORTS// /,} open)"
for run in $(seq 1 "$RUNS"); do
    # Rotate the order so no tool always runs first (or last).
    n=${#TOOLS[@]}
    for i in $(seq 0 $((n - 1))); do
        tool=${TOOLS[$(((i + run) % n))]}
        run_tool "$tool" "$run"
        open_set "$tool" "$run" >"$LAB_WORK/$tool.$run.open"
    done
done
LOAD_AFTER=$(load_note)

echo
echo "scan benchmark 1: all 65,535 TCP ports of one lab host, $RUNS runs each"
echo "machine: $(machine_note)"
echo "load after: $LOAD_AFTER"
echo "perimeter:     ${PERIMETER_CMD[*]}"
echo "perimeter-syn: ${PERIMETER_SYN_CMD[*]}"
echo "nmap:          ${NMAP_CMD[*]} -oX FILE"
echo "nmap-syn:      ${NMAP_SYN_CMD[*]} -oX FILE"
[ -n "$RUSTSCAN" ] && echo "rustscan:  ${RUSTSCAN_CMD[*]}"
echo
printf '%-14s %10s %12s  %s\n' tool median_s peak_rss_MB "all runs (s)"
for tool in "${TOOLS[@]}"; do
    printf '%-14s %10.2f %12.1f  %s\n' "$tool" "$(median_seconds "$tool")" \
        "$(echo "$(max_rss_kb "$tool") / 1024" | bc -l)" "$(all_seconds "$tool")"
done
echo
P=$(median_seconds perimeter)
PS=$(median_seconds perimeter-syn)
echo "nmap -sT / perimeter (connect): $(ratio "$(median_seconds nmap)" "$P")x"
echo "nmap -sT / perimeter --syn:     $(ratio "$(median_seconds nmap)" "$PS")x (target >= 3x)"
echo "nmap -sS / perimeter --syn:     $(ratio "$(median_seconds nmap-syn)" "$PS")x (like for like)"
[ -n "$RUSTSCAN" ] && echo "rustscan / perimeter (connect): $(ratio "$(median_seconds rustscan)" "$P")x (target >= 1x)"
echo
echo "open sets against the ports the lab listens on (${OPEN_PORTS// /,}):"
for tool in "${TOOLS[@]}"; do
    for run in $(seq 1 "$RUNS"); do
        printf '  %-14s run %d: %s\n' "$tool" "$run" \
            "$("$PYTHON" "$HELPER" compare lab "$LAB_WORK/expected" "$tool" "$LAB_WORK/$tool.$run.open")"
    done
done
[ -n "${BENCH_KEEP:-}" ] && echo "raw outputs kept in $LAB_WORK"
exit 0
