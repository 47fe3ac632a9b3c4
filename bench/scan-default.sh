#!/usr/bin/env bash
# Scan benchmark 5 (issue 13 §6): the default path. All 65,535 TCP ports of
# one lab host where ssh, http and redis listen, identification on (the
# default), results stored in a history database, JSON out; and the same
# scan without identification, for what identification adds; and one open
# port at a time, for identification's own time on each service.
#
#   perimeter scan T -p- --profile fast --db DB --format json --quiet [--syn]
#   perimeter scan T -p- --profile fast --db DB --format json --quiet --no-identify [--syn]
#   perimeter scan T -p PORT --profile fast --db DB --format json --quiet   (PORT 22, 80, 6379)
#   perimeter scan T --db DB --format json --quiet     (what a user types: the normal
#                                                       profile's 1,000/s and its top ports)
#
# in rotating order, RUNS times each. Prints medians, and whether every
# full scan found exactly the three open ports and named ssh, http and redis
# (with the unauthenticated Redis flagged) on them.
#
# The lab: a switch namespace with a bridge; a scanner namespace
# (198.18.0.1) and a target namespace (198.18.0.2) on it, where sshd (its own
# config and host key) listens on 22, /usr/bin/python3 -m http.server on 80
# and redis-server without a password on 6379. No default route anywhere;
# daemons and namespaces are removed on exit, also when interrupted. The
# database is a fresh file in the lab's work directory, one per variant.
#
# Usage: bench/scan-default.sh [RUNS]     (as root; RUNS defaults to 5)
# Environment: PERIMETER_BIN to time an already built binary; BENCH_KEEP=1
# keeps the raw outputs.
set -euo pipefail
source "$(dirname "$0")/scan/lib.sh"

RUNS=${1:-5}
[[ "$RUNS" =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] || die "RUNS must be a positive number"
TARGET_ADDR=198.18.0.2

require_tools redis-server /usr/sbin/sshd ssh-keygen
find_perimeter

lab_begin 5
lab_host scan 198.18.0.1/15
lab_host target "$TARGET_ADDR/15"
SCANNER="$LAB_TAG-scan"
TARGET="$LAB_TAG-target"

ssh-keygen -q -t ed25519 -N "" -f "$LAB_WORK/ssh_host_ed25519_key"
mkdir -p /run/sshd
cat >"$LAB_WORK/sshd_config" <<EOF
Port 22
ListenAddress $TARGET_ADDR
HostKey $LAB_WORK/ssh_host_ed25519_key
PidFile none
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
EOF
lab_spawn "$TARGET" "$LAB_WORK/sshd.log" /usr/sbin/sshd -D -e -f "$LAB_WORK/sshd_config"
mkdir -p "$LAB_WORK/www"
echo "<html><head><title>lab web</title></head><body>lab</body></html>" >"$LAB_WORK/www/index.html"
lab_spawn "$TARGET" "$LAB_WORK/http.log" "$PYTHON" -m http.server --bind "$TARGET_ADDR" --directory "$LAB_WORK/www" 80
lab_spawn "$TARGET" "$LAB_WORK/redis.log" redis-server --port 6379 --bind "$TARGET_ADDR" \
    --protected-mode no --save "" --appendonly no --dir "$LAB_WORK"
wait_tcp "$SCANNER" "$TARGET_ADDR" 22
wait_tcp "$SCANNER" "$TARGET_ADDR" 80
wait_tcp "$SCANNER" "$TARGET_ADDR" 6379

# scan_cmd VARIANT: the command line of a variant, its database its own.
scan_cmd() {
    local variant=$1
    local cmd=("$PERIMETER" scan "$TARGET_ADDR" --profile fast --db "$LAB_WORK/$variant.db" --format json --quiet)
    case $variant in
    default) cmd=("$PERIMETER" scan "$TARGET_ADDR" --db "$LAB_WORK/$variant.db" --format json --quiet) ;;
    identify) cmd+=(-p-) ;;
    identify-syn) cmd+=(-p- --syn) ;;
    ports) cmd+=(-p- --no-identify) ;;
    ports-syn) cmd+=(-p- --no-identify --syn) ;;
    ssh) cmd+=(-p 22) ;;
    http) cmd+=(-p 80) ;;
    redis) cmd+=(-p 6379) ;;
    esac
    echo "${cmd[@]}"
}

VARIANTS=(identify identify-syn ports ports-syn ssh http redis default)

log "machine: $(machine_note)"
log "load before: $(load_note)"
for run in $(seq 1 "$RUNS"); do
    n=${#VARIANTS[@]}
    for i in $(seq 0 $((n - 1))); do
        variant=${VARIANTS[$(((i + run) % n))]}
        # shellcheck disable=SC2046 # the command line is words on purpose
        timed "$variant" "$run" "$SCANNER" $(scan_cmd "$variant")
    done
done
LOAD_AFTER=$(load_note)

echo
echo "scan benchmark 5: the default path, all 65,535 ports of $TARGET_ADDR (ssh, http, redis open), $RUNS runs each"
echo "machine: $(machine_note)"
echo "load after: $LOAD_AFTER"
for variant in "${VARIANTS[@]}"; do
    printf '%-13s %s\n' "$variant:" "$(scan_cmd "$variant" | sed "s|$LAB_WORK/||")"
done
echo
printf '%-13s %10s %12s  %s\n' variant median_s peak_rss_MB "all runs (s)"
for variant in "${VARIANTS[@]}"; do
    printf '%-13s %10.2f %12.1f  %s\n' "$variant" "$(median_seconds "$variant")" \
        "$(echo "$(max_rss_kb "$variant") / 1024" | bc -l)" "$(all_seconds "$variant")"
done
echo
added() {
    "$PYTHON" -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):+.2f} s')" "$1" "$2"
}
echo "identification adds (connect): $(added "$(median_seconds identify)" "$(median_seconds ports)")"
echo "identification adds (--syn):   $(added "$(median_seconds identify-syn)" "$(median_seconds ports-syn)")"
echo
# Every full scan with identification must name the three services, with
# the Redis finding, and find nothing else open.
EXPECTED="$TARGET_ADDR:22 ssh|$TARGET_ADDR:80 http|$TARGET_ADDR:6379 redis exposed.redis-noauth"
echo "services named by every full scan ($EXPECTED):"
for variant in identify identify-syn default; do
    for run in $(seq 1 "$RUNS"); do
        got=$("$PYTHON" "$HELPER" services perimeter "$LAB_WORK/$variant.$run.out" |
            awk '{rules = $5; sub(/;.*/, "", rules); printf "%s%s %s%s", sep, $1, $2, (rules == "exposed.service" ? "" : " " rules); sep = "|"}')
        verdict=$([ "$got" = "$EXPECTED" ] && echo same || echo "DIFFERENT: $got")
        printf '  %-13s run %d: %s\n' "$variant" "$run" "$verdict"
    done
done
for variant in ports ports-syn; do
    for run in $(seq 1 "$RUNS"); do
        got=$("$PYTHON" "$HELPER" open perimeter "$LAB_WORK/$variant.$run.out" | tr '\n' ' ')
        printf '  %-13s run %d: open %s\n' "$variant" "$run" "$got"
    done
done
[ -n "${BENCH_KEEP:-}" ] && echo "raw outputs kept in $LAB_WORK"
exit 0
