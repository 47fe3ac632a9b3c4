#!/usr/bin/env bash
# Scan benchmark 3 (issue 3): service identification on a lab of several
# hosts, perimeter (identification and unauthenticated-service checks on, the
# default) against nmap's version detection, on the same hosts and ports.
#
#   perimeter scan <hosts> -p 22,80,6379,7777,11211 --profile fast
#   nmap -sT -sV -p 22,80,6379,7777,11211 <hosts>
#
# side by side, in rotating order, RUNS times each. Prints medians, the ratio,
# peak RSS, and port by port what each tool named (service, product, version)
# and whether perimeter named every service nmap named, with the version
# wherever nmap gave one.
#
# The lab: a switch namespace with a bridge; a scanner namespace (198.18.0.1)
# and six host namespaces, each with one service:
#   198.18.3.1  sshd (its own config and host key)          port 22
#   198.18.3.2  /usr/bin/python3 -m http.server             port 80
#   198.18.3.3  redis-server, no password                   port 6379
#   198.18.3.4  redis-server with requirepass               port 6379
#   198.18.3.5  redis-server, no password, unusual port     port 7777
#   198.18.3.6  memcached                                   port 11211
# Every host is scanned on all five ports (30 pairs, 6 open). No default route
# anywhere; daemons and namespaces are removed on exit, also when interrupted.
# nmap gets -n (no reverse DNS), which perimeter does not do either.
#
# Usage: bench/scan-services.sh [RUNS]     (as root; RUNS defaults to 5)
# Environment: PERIMETER_BIN to time an already built binary; PROFILE
# (default fast) for perimeter's profile; BENCH_KEEP=1 keeps the raw outputs.
set -euo pipefail
source "$(dirname "$0")/scan/lib.sh"

RUNS=${1:-5}
[[ "$RUNS" =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] || die "RUNS must be a positive number"
PROFILE=${PROFILE:-fast}
PORTS=22,80,6379,7777,11211
HOSTS_RANGE=198.18.3.1-198.18.3.6

require_tools nmap redis-server memcached /usr/sbin/sshd ssh-keygen
find_perimeter

lab_begin 3
lab_host scan 198.18.0.1/15
for i in 1 2 3 4 5 6; do
    lab_host "h$i" "198.18.3.$i/15"
done
SCANNER="$LAB_TAG-scan"
ns_of() { echo "$LAB_TAG-h$1"; }

# sshd: a fresh host key and a config of its own; it needs its privilege
# separation directory.
ssh-keygen -q -t ed25519 -N "" -f "$LAB_WORK/ssh_host_ed25519_key"
mkdir -p /run/sshd
cat >"$LAB_WORK/sshd_config" <<EOF
Port 22
ListenAddress 198.18.3.1
HostKey $LAB_WORK/ssh_host_ed25519_key
PidFile none
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
EOF
lab_spawn "$(ns_of 1)" "$LAB_WORK/sshd.log" /usr/sbin/sshd -D -e -f "$LAB_WORK/sshd_config"

mkdir -p "$LAB_WORK/www"
echo "<html><head><title>lab web</title></head><body>lab</body></html>" >"$LAB_WORK/www/index.html"
lab_spawn "$(ns_of 2)" "$LAB_WORK/http.log" "$PYTHON" -m http.server --bind 198.18.3.2 --directory "$LAB_WORK/www" 80

redis() {
    local host=$1 port=$2
    shift 2
    lab_spawn "$(ns_of "$host")" "$LAB_WORK/redis.$host.log" redis-server --port "$port" \
        --bind "198.18.3.$host" --protected-mode no --save "" --appendonly no \
        --dir "$LAB_WORK" "$@"
}
redis 3 6379
redis 4 6379 --requirepass "bench-$$-secret"
redis 5 7777
lab_spawn "$(ns_of 6)" "$LAB_WORK/memcached.log" memcached -u nobody -l 198.18.3.6 -p 11211 -U 0

wait_tcp "$SCANNER" 198.18.3.1 22
wait_tcp "$SCANNER" 198.18.3.2 80
wait_tcp "$SCANNER" 198.18.3.3 6379
wait_tcp "$SCANNER" 198.18.3.4 6379
wait_tcp "$SCANNER" 198.18.3.5 7777
wait_tcp "$SCANNER" 198.18.3.6 11211

PERIMETER_CMD=("$PERIMETER" scan "$HOSTS_RANGE" -p "$PORTS" --profile "$PROFILE" --no-store --format json --quiet)
NMAP_CMD=(nmap -n -sT -sV -p "$PORTS" 198.18.3.1-6)
TOOLS=(perimeter nmap)

log "machine: $(machine_note)"
log "load before: $(load_note)"
for run in $(seq 1 "$RUNS"); do
    for i in 0 1; do
        tool=${TOOLS[$(((i + run) % 2))]}
        case $tool in
        perimeter) timed perimeter "$run" "$SCANNER" "${PERIMETER_CMD[@]}" ;;
        nmap) timed nmap "$run" "$SCANNER" "${NMAP_CMD[@]}" -oX "$LAB_WORK/nmap.$run.xml" ;;
        esac
    done
done
LOAD_AFTER=$(load_note)

echo
echo "scan benchmark 3: service identification, 6 hosts x ports $PORTS, $RUNS runs each"
echo "machine: $(machine_note)"
echo "load after: $LOAD_AFTER"
echo "perimeter: ${PERIMETER_CMD[*]}"
echo "nmap:      ${NMAP_CMD[*]} -oX FILE"
echo
printf '%-10s %10s %12s  %s\n' tool median_s peak_rss_MB "all runs (s)"
for tool in "${TOOLS[@]}"; do
    printf '%-10s %10.2f %12.1f  %s\n' "$tool" "$(median_seconds "$tool")" \
        "$(echo "$(max_rss_kb "$tool") / 1024" | bc -l)" "$(all_seconds "$tool")"
done
echo
echo "nmap / perimeter: $(ratio "$(median_seconds nmap)" "$(median_seconds perimeter)")x (target >= 10x)"
echo
for run in $(seq 1 "$RUNS"); do
    "$PYTHON" "$HELPER" services perimeter "$LAB_WORK/perimeter.$run.out" >"$LAB_WORK/perimeter.$run.services"
    "$PYTHON" "$HELPER" services nmap "$LAB_WORK/nmap.$run.xml" >"$LAB_WORK/nmap.$run.services"
done
echo "run 1, port by port (service product version findings):"
"$PYTHON" "$HELPER" check-services "$LAB_WORK/nmap.1.services" "$LAB_WORK/perimeter.1.services" verbose
echo
echo "every run: perimeter named every service nmap named, with nmap's versions?"
for run in $(seq 1 "$RUNS"); do
    echo "  run $run: $("$PYTHON" "$HELPER" check-services "$LAB_WORK/nmap.$run.services" "$LAB_WORK/perimeter.$run.services")"
done
[ -n "${BENCH_KEEP:-}" ] && echo "raw outputs kept in $LAB_WORK"
exit 0
