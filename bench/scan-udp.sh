#!/usr/bin/env bash
# UDP scan benchmark (issue 13): the UDP top 100 over a /24 lab network,
# perimeter against nmap -sU -T4 with the same ports.
#
#   perimeter scan -sU --top-ports 100 198.18.60.0/24 --no-store --format json
#     the same with --profile fast                       (perimeter-fast)
#     the same with --profile fast --concurrency 8192    (perimeter-wide)
#   nmap -sU -T4 -n -Pn -p U:<perimeter's UDP top 100> 198.18.60.0/24 -oX FILE
#
# side by side, in rotating order, RUNS times each, inside the scanner
# namespace. Prints medians, ratios, peak RSS, and for every run the open set
# and the count of ports in each state (open, closed, filtered, open|filtered)
# per tool, compared with each other and with what the lab really runs.
#
# The lab (seeded, the same on every run of the script): a switch namespace
# with a bridge; a scanner namespace, 198.18.0.1/15; and the /24
# 198.18.60.0/24, whose 256 addresses are of three kinds:
#
#   live        N_LIVE hosts, each a namespace of its own on the bridge, so
#               each has its own ICMP rate limits as separate machines do: a
#               port nobody listens on answers ICMP port unreachable. Five of
#               them run real UDP services (below).
#   firewalled  N_FIREWALLED addresses held by one more namespace whose
#               nftables ruleset drops every UDP datagram: silent (they answer
#               ARP, as a host behind its own firewall does).
#   empty       the rest: held by nobody, so nothing answers ARP. nmap finds
#               them down (it resolves the MAC itself, -Pn or not) and skips
#               them; to a connected UDP socket they are silent (the kernel's
#               host unreachable after a failed ARP is a soft error, reported
#               only to sockets with IP_RECVERR).
#
# The services, each daemon listening on its host's address only:
#   dnsmasq   udp 53     (no upstream, no recursion possible)
#   snmpd     udp 161    (rocommunity public)
#   memcached udp 11211  (-U 11211)
#   chronyd   udp 123    (-x: never touches the clock; `local stratum 10`)
# one service on each of four hosts and all four on a fifth: 8 open pairs.
#
# ICMP limits: Linux rate-limits the ICMP errors it sends per destination
# (net.ipv4.icmp_ratelimit, 1000 ms, after a burst of 6) and per namespace
# (icmp_msgs_per_sec, icmp_msgs_burst), except on loopback. The headline runs
# leave the target namespaces' sysctls at the kernel's defaults, what users
# meet; they are printed. With RELAXED_RUNS=N, N more runs of each command
# follow with icmp_ratelimit=0 and icmp_msgs_per_sec/burst raised in the live
# hosts' namespaces (only there; these sysctls are per namespace), labelled
# "relaxed" everywhere.
#
# Safety: no namespace of the lab has a default route or any route beyond
# 198.18.0.0/15, and the bridge has no uplink; the script checks that before
# the first packet and refuses to run otherwise. Everything is removed on
# exit, also when interrupted.
#
# Usage: bench/scan-udp.sh [RUNS]     (as root; RUNS defaults to 3)
# perimeter holds one socket and one 64 KiB receive buffer per port in
# flight, so perimeter-wide needs 8192 descriptors and its memory grows with
# it. perimeter raises its soft open-file limit to the hard one and lowers its
# concurrency to 7/8 of that if needed; the scanner namespace's soft and hard
# limits are printed, and so is the concurrency each perimeter run used.
#
# Environment: PERIMETER_BIN to time an already built binary; FAST_FLAGS and
# WIDE_FLAGS replace the tuned variants' flags (defaults above); RELAXED_RUNS
# (default 0); BENCH_KEEP=1 keeps the raw outputs (their directory is printed).
set -euo pipefail
source "$(dirname "$0")/scan/lib.sh"
UDP_HELPER="$SCAN_BENCH_LIB/../scan-udp/helper.py"

RUNS=${1:-3}
[[ "$RUNS" =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] || die "RUNS must be a positive number"
RELAXED_RUNS=${RELAXED_RUNS:-0}
[[ "$RELAXED_RUNS" =~ ^[0-9]+$ ]] || die "RELAXED_RUNS must be a number"
read -r -a FAST_FLAGS <<<"${FAST_FLAGS:---profile fast}"
read -r -a WIDE_FLAGS <<<"${WIDE_FLAGS:---profile fast --concurrency 8192}"
SCANNER_ADDR=198.18.0.1
NETWORK=198.18.60.0/24
PREFIX=198.18.60.
N_LIVE=64
N_SERVICES=5
N_FIREWALLED=32
SEED=60
ICMP_SYSCTLS=(net.ipv4.icmp_ratelimit net.ipv4.icmp_ratemask net.ipv4.icmp_msgs_per_sec net.ipv4.icmp_msgs_burst)

require_tools nmap /usr/sbin/dnsmasq /usr/sbin/snmpd /usr/bin/memcached /usr/sbin/chronyd
find_perimeter

lab_begin udp
lab_host scan "$SCANNER_ADDR/15"
SCANNER="$LAB_TAG-scan"
"$PYTHON" "$UDP_HELPER" plan "$SEED" "$N_LIVE" "$N_SERVICES" "$N_FIREWALLED" "$LAB_WORK"
mapfile -t LIVE <"$LAB_WORK/live"
mapfile -t SERVICES <"$LAB_WORK/services"
mapfile -t FIREWALLED <"$LAB_WORK/firewalled"
N_EMPTY=$(wc -l <"$LAB_WORK/empty")
log "lab: $N_LIVE live hosts (${#SERVICES[@]} with services), $N_FIREWALLED firewalled, $N_EMPTY empty addresses in $NETWORK"
for octet in "${LIVE[@]}"; do
    lab_host "h$octet" "$PREFIX$octet/15"
done
FIREWALLED_CIDRS=()
for octet in "${FIREWALLED[@]}"; do
    FIREWALLED_CIDRS+=("$PREFIX$octet/15")
done
lab_host fw "${FIREWALLED_CIDRS[@]}"
ip netns exec "$LAB_TAG-fw" nft -f - <<'EOF'
table inet pscan_lab {
    chain input {
        type filter hook input priority filter; policy accept;
        meta l4proto udp counter drop
    }
}
EOF

# Every namespace of the lab: no default route, no route outside
# 198.18.0.0/15 (IPv4) and none but link-local ones (IPv6), no address outside
# 198.18.0.0/15 but loopback and IPv6 link-local, and from the scanner no way
# to the host's own network. Checked before the first packet and again before
# the measured runs.
check_isolated() {
    local ns route address
    for ns in "${LAB_NAMESPACES[@]}"; do
        [ -z "$(ip -n "$ns" -4 route show default)$(ip -n "$ns" -6 route show default)" ] ||
            die "namespace $ns has a default route"
        while read -r route; do
            [ -z "$route" ] && continue
            case $route in
            198.18.0.0/15\ *) ;;
            *) die "namespace $ns has a route beyond the lab: $route" ;;
            esac
        done < <(ip -n "$ns" -4 route show table all type unicast)
        while read -r route; do
            [ -z "$route" ] && continue
            case $route in
            fe80::/64\ * | ::1\ dev\ lo\ *) ;;
            *) die "namespace $ns has an IPv6 route beyond the link: $route" ;;
            esac
        done < <(ip -n "$ns" -6 route show table all type unicast)
        while read -r address; do
            [ -z "$address" ] && continue
            case $address in
            # 198.18.0.0/15 is exactly 198.18.* and 198.19.*.
            127.0.0.1/8 | ::1/128 | fe80:* | 198.18.* | 198.19.*) ;;
            *) die "namespace $ns has an address outside 198.18.0.0/15: $address" ;;
            esac
        done < <(ip -n "$ns" -o addr show | awk '{print $4}')
    done
    local links
    links=$(ip -n "$SCANNER" -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort | paste -sd' ')
    [ "$links" = "eth0 lo" ] || die "the scanner namespace has links other than lo and eth0: $links"
    links=$(ip -n "$SWITCH" -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | { grep -v -x -e lo -e br0 -e "v${$}x[0-9]*" || true; } | paste -sd' ')
    [ -z "$links" ] || die "the switch namespace has links other than lo, br0 and the lab's veths: $links"
    # `ip route get` only asks the namespace's routing table (netlink): it
    # sends no packet. Each of these must have no route at all.
    local outside
    for outside in 192.0.2.1 8.8.8.8 10.0.0.1 172.16.0.1 192.168.0.1 198.20.0.1; do
        if ip netns exec "$SCANNER" ip route get "$outside" >/dev/null 2>&1; then
            die "the scanner namespace has a route to $outside, beyond the lab"
        fi
    done
}
check_isolated

# wait_udp NS ADDRESS PORT: wait up to 15 s until something in NS has bound
# udp PORT (on ADDRESS or on every address).
wait_udp() {
    local ns=$1 address=$2 port=$3 hex_port hex_address
    hex_port=$(printf '%04X' "$port")
    hex_address=$(printf '%02X' $(echo "$address" | tr . ' ' | awk '{print $4, $3, $2, $1}'))
    for _ in $(seq 1 150); do
        if ip netns exec "$ns" cat /proc/net/udp |
            awk -v a="$hex_address:$hex_port" -v any="00000000:$hex_port" '$2 == a || $2 == any {found = 1} END {exit !found}'; then
            return 0
        fi
        sleep 0.1
    done
    die "nothing bound udp $address:$port in $ns"
}

# The daemons run as copies named pscan-*: scripts/test stops every
# memcached, snmpd and chronyd of the machine by name (pkill -x) before a test
# run, which took the lab's services away in the middle of a benchmark once.
# The benchmark also checks after every run that each daemon still runs.
DAEMON_BIN="$LAB_WORK/bin"
mkdir "$DAEMON_BIN"
chmod 755 "$DAEMON_BIN"
for daemon in /usr/sbin/dnsmasq /usr/sbin/snmpd /usr/bin/memcached /usr/sbin/chronyd; do
    cp "$daemon" "$DAEMON_BIN/pscan-$(basename "$daemon")"
done
DAEMONS=()

# start_service KIND OCTET: one daemon on the live host PREFIX.OCTET.
start_service() {
    local kind=$1 octet=$2 port
    local ns="$LAB_TAG-h$octet" address="$PREFIX$octet" dir="$LAB_WORK/$kind.$octet"
    mkdir -p "$dir"
    chmod 755 "$dir"
    case $kind in
    dns)
        lab_spawn "$ns" "$dir/log" "$DAEMON_BIN/pscan-dnsmasq" --keep-in-foreground --conf-file=/dev/null \
            --no-resolv --no-hosts --bind-interfaces "--listen-address=$address" --pid-file= --port=53
        wait_udp "$ns" "$address" 53
        ;;
    snmp)
        printf 'agentAddress udp:%s:161\nrocommunity public\n' "$address" >"$dir/snmpd.conf"
        lab_spawn "$ns" "$dir/log" /usr/bin/env "SNMP_PERSISTENT_DIR=$dir" MIBS= \
            "$DAEMON_BIN/pscan-snmpd" -f -Lo -C -c "$dir/snmpd.conf"
        wait_udp "$ns" "$address" 161
        ;;
    memcached)
        lab_spawn "$ns" "$dir/log" "$DAEMON_BIN/pscan-memcached" -l "$address" -p 11211 -U 11211 -u nobody
        wait_udp "$ns" "$address" 11211
        ;;
    ntp)
        # -x: chronyd never adjusts the clock (the machine's, shared by every
        # namespace); no sources, `local` so it serves time as a stratum 10;
        # no command port and no command socket (`bindcmdaddress /`: the two
        # chronyds would otherwise share /run/chrony/chronyd.sock).
        cat >"$dir/chrony.conf" <<EOF
port 123
bindaddress $address
cmdport 0
allow all
local stratum 10
bindcmdaddress /
pidfile $dir/chronyd.pid
EOF
        lab_spawn "$ns" "$dir/log" "$DAEMON_BIN/pscan-chronyd" -d -x -u root -f "$dir/chrony.conf"
        wait_udp "$ns" "$address" 123
        ;;
    esac
    case $kind in
    dns) port=53 ;;
    snmp) port=161 ;;
    memcached) port=11211 ;;
    ntp) port=123 ;;
    esac
    echo "$address:$port" >>"$LAB_WORK/expected.unsorted"
    DAEMONS+=("$kind@$address:$SPAWNED_PID")
}
: >"$LAB_WORK/expected.unsorted"
start_service dns "${SERVICES[0]}"
start_service snmp "${SERVICES[1]}"
start_service memcached "${SERVICES[2]}"
start_service ntp "${SERVICES[3]}"
for kind in dns snmp memcached ntp; do
    start_service "$kind" "${SERVICES[4]}"
done
sort -t: -k1,1V -k2,2n "$LAB_WORK/expected.unsorted" >"$LAB_WORK/expected"

# perimeter's UDP top 100, read back from perimeter itself: a scan of the
# scanner namespace's own loopback (nothing leaves the namespace; closed
# loopback ports answer at once, loopback has no ICMP limit), every state
# reported, so every port of the list appears once.
ip netns exec "$SCANNER" "$PERIMETER" scan -sU 127.0.0.1 --top-ports 100 --all-states \
    --no-store --format jsonl --quiet >"$LAB_WORK/ports.jsonl"
"$PYTHON" "$UDP_HELPER" ports "$LAB_WORK/ports.jsonl" >"$LAB_WORK/ports"
N_PORTS=$(wc -l <"$LAB_WORK/ports")
[ "$N_PORTS" -eq 100 ] || die "expected 100 ports from -sU --top-ports 100, got $N_PORTS"
PORT_LIST=$(paste -sd, "$LAB_WORK/ports")

ICMP_DEFAULTS=$(ip netns exec "$LAB_TAG-h${LIVE[0]}" sysctl "${ICMP_SYSCTLS[@]}" | paste -sd' ')
for octet in "${LIVE[@]}"; do
    [ "$(ip netns exec "$LAB_TAG-h$octet" sysctl "${ICMP_SYSCTLS[@]}" | paste -sd' ')" = "$ICMP_DEFAULTS" ] ||
        die "the ICMP sysctls differ between live hosts"
done
HOST_ICMP=$(sysctl "${ICMP_SYSCTLS[@]}" | paste -sd' ')

PERIMETER_DEFAULT=("$PERIMETER" scan -sU --top-ports 100 "$NETWORK" --no-store --format json)
PERIMETER_FAST=("${PERIMETER_DEFAULT[@]}" "${FAST_FLAGS[@]}")
PERIMETER_WIDE=("${PERIMETER_DEFAULT[@]}" "${WIDE_FLAGS[@]}")
NMAP_CMD=(nmap -sU -T4 -n -Pn -p "U:$PORT_LIST" "$NETWORK")
TOOLS=(perimeter perimeter-fast perimeter-wide nmap)

# check_daemons WHEN: every service daemon of the lab still runs, or the
# benchmark stops (a run without its services is void).
check_daemons() {
    local daemon
    for daemon in "${DAEMONS[@]}"; do
        kill -0 "${daemon##*:}" 2>/dev/null ||
            die "the lab's ${daemon%:*} daemon (pid ${daemon##*:}) is gone $1: the run is void (see its log under $LAB_WORK)"
    done
}

# run_all LABEL N: N rounds of the four commands, in rotating order.
run_all() {
    local label=$1 n=$2 run i tool name
    for run in $(seq 1 "$n"); do
        for i in 0 1 2 3; do
            tool=${TOOLS[$(((i + run) % 4))]}
            name="$tool$label"
            log "$name run $run ($(load_note))"
            echo "$name $run $(cut -d' ' -f1-3 /proc/loadavg)" >>"$LAB_WORK/loads"
            case $tool in
            perimeter) timed "$name" "$run" "$SCANNER" "${PERIMETER_DEFAULT[@]}" ;;
            perimeter-fast) timed "$name" "$run" "$SCANNER" "${PERIMETER_FAST[@]}" ;;
            perimeter-wide) timed "$name" "$run" "$SCANNER" "${PERIMETER_WIDE[@]}" ;;
            nmap) timed "$name" "$run" "$SCANNER" "${NMAP_CMD[@]}" -oX "$LAB_WORK/$name.$run.xml" ;;
            esac
            local out="$LAB_WORK/$name.$run.out" kind=perimeter
            if [ "$tool" = nmap ]; then
                out="$LAB_WORK/$name.$run.xml"
                kind=nmap
            fi
            "$PYTHON" "$HELPER" open "$kind" "$out" >"$LAB_WORK/$name.$run.open"
            "$PYTHON" "$UDP_HELPER" states "$kind" "$out" "$LAB_WORK" >"$LAB_WORK/$name.$run.states"
            check_daemons "after $name run $run"
        done
    done
}

# report LABEL N: medians, ratios, RSS, and the run-by-run comparison.
report() {
    local label=$1 n=$2 tool name run
    printf '%-24s %10s %12s  %s\n' command median_s peak_rss_MB "all runs (s)"
    for tool in "${TOOLS[@]}"; do
        name="$tool$label"
        printf '%-24s %10.2f %12.1f  %s\n' "$name" "$(median_seconds "$name")" \
            "$(echo "$(max_rss_kb "$name") / 1024" | bc -l)" "$(all_seconds "$name")"
    done
    for tool in perimeter perimeter-fast perimeter-wide; do
        echo "nmap / $tool: $("$PYTHON" -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$(median_seconds "nmap$label")" "$(median_seconds "$tool$label")")x" \
            "(per run, side by side: $(for run in $(seq 1 "$n"); do
                awk -v a="nmap$label" -v b="$tool$label" -v r="$run" '$2 == r && $1 == a {x = $3} $2 == r && $1 == b {y = $3} END {printf "%.2f ", x / y}' "$LAB_WORK/times"
            done))"
    done
    echo "(target: at least 10x with the same open set)"
    echo
    for run in $(seq 1 "$n"); do
        echo "run $run:"
        for tool in "${TOOLS[@]}"; do
            name="$tool$label"
            echo "  $name: $(grep -m1 '^all ' "$LAB_WORK/$name.$run.states" | cut -d' ' -f2-), exit $(awk -v n="$name" -v r="$run" '$1 == n && $2 == r {print $5}' "$LAB_WORK/times")"
            grep -v '^all ' "$LAB_WORK/$name.$run.states" | sed 's/^/      /'
            echo "      open vs lab: $("$PYTHON" "$HELPER" compare lab "$LAB_WORK/expected" "$name" "$LAB_WORK/$name.$run.open")"
        done
        for tool in perimeter perimeter-fast perimeter-wide; do
            echo "  open, $tool vs nmap: $("$PYTHON" "$HELPER" compare "$tool" "$LAB_WORK/$tool$label.$run.open" nmap "$LAB_WORK/nmap$label.$run.open")"
        done
    done
}

check_isolated
log "machine: $(machine_note)"
log "load before: $(load_note)"
LOAD_BEFORE=$(load_note)
run_all "" "$RUNS"
LOAD_AFTER=$(load_note)
if [ "$RELAXED_RUNS" -gt 0 ]; then
    for octet in "${LIVE[@]}"; do
        ip netns exec "$LAB_TAG-h$octet" sysctl -q -w net.ipv4.icmp_ratelimit=0 \
            net.ipv4.icmp_msgs_per_sec=100000 net.ipv4.icmp_msgs_burst=100000
    done
    ICMP_RELAXED=$(ip netns exec "$LAB_TAG-h${LIVE[0]}" sysctl "${ICMP_SYSCTLS[@]}" | paste -sd' ')
    [ "$(sysctl "${ICMP_SYSCTLS[@]}" | paste -sd' ')" = "$HOST_ICMP" ] ||
        die "the host's own ICMP sysctls changed"
    run_all "-relaxed" "$RELAXED_RUNS"
    LOAD_AFTER_RELAXED=$(load_note)
fi

echo
echo "UDP scan benchmark: $NETWORK, UDP top 100, $RUNS runs each"
echo "machine: $(machine_note)"
echo "load before: $LOAD_BEFORE"
echo "load after:  $LOAD_AFTER"
echo "loadavg at the start of each run:"
awk '{printf "  %-24s run %s: %s %s %s\n", $1, $2, $3, $4, $5}' "$LAB_WORK/loads"
echo "nmap: $(nmap --version | head -n 1)"
echo "lab: scanner $SCANNER_ADDR; $N_LIVE live hosts (own namespaces; closed ports answer ICMP port unreachable),"
echo "     $N_FIREWALLED firewalled (one namespace, nftables drops all UDP: silent), $N_EMPTY empty (nobody answers ARP)"
echo "  live:       $(sed "s/^/$PREFIX/" "$LAB_WORK/live" | paste -sd' ')"
echo "  services:   $(paste -sd' ' "$LAB_WORK/expected")"
echo "  firewalled: $(sed "s/^/$PREFIX/" "$LAB_WORK/firewalled" | paste -sd' ')"
echo "  empty:      $(sed "s/^/$PREFIX/" "$LAB_WORK/empty" | paste -sd' ')"
N_SERVICE_PAIRS=$(wc -l <"$LAB_WORK/expected")
echo "what the lab holds, of $((256 * N_PORTS)) pairs: open $N_SERVICE_PAIRS; closed $((N_LIVE * N_PORTS - N_SERVICE_PAIRS)) (ICMP port unreachable, as the limits allow);"
echo "     silent $((N_FIREWALLED * N_PORTS)) (firewalled); $((N_EMPTY * N_PORTS)) on empty addresses (no ARP answer: nmap finds the hosts down"
echo "     and skips them; a connected UDP socket hears nothing: host unreachable is a soft error without IP_RECVERR)"
echo "ICMP sysctls in the live hosts (headline runs, kernel defaults): $ICMP_DEFAULTS"
echo "the host's own (never changed): $HOST_ICMP"
echo "firewall drops (all runs): $(ip netns exec "$LAB_TAG-fw" nft list chain inet pscan_lab input | grep -o 'packets [0-9]*')"
echo "ports ($N_PORTS, perimeter's -sU --top-ports 100, given to nmap as -p U:<list>): $PORT_LIST"
echo "perimeter:       ${PERIMETER_DEFAULT[*]}"
echo "perimeter-fast:  ${PERIMETER_FAST[*]}"
echo "perimeter-wide:  ${PERIMETER_WIDE[*]}"
echo "open files in the scanner namespace: soft limit $(ip netns exec "$SCANNER" sh -c 'ulimit -Sn'), hard limit $(ip netns exec "$SCANNER" sh -c 'ulimit -Hn')"
HARD_NOFILE=$(ip netns exec "$SCANNER" sh -c 'ulimit -Hn')
if [ "$HARD_NOFILE" = unlimited ]; then
    echo "     (perimeter raises its soft limit to the hard one: unlimited; no cap on the concurrency)"
else
    FD_BUDGET=$((HARD_NOFILE - (HARD_NOFILE / 8 > 64 ? HARD_NOFILE / 8 : 64)))
    echo "     (perimeter raises its soft limit to the hard one and keeps 1/8 spare: at most $FD_BUDGET ports in flight;"
    echo "      the JSON does not record the concurrency used: normal 256, fast 2048, wide 8192, each capped at $FD_BUDGET)"
fi
echo "nmap:            ${NMAP_CMD[*]} -oX FILE"
echo
report "" "$RUNS"
if [ "$RELAXED_RUNS" -gt 0 ]; then
    echo
    echo "RELAXED ICMP limits in the live hosts ($ICMP_RELAXED), $RELAXED_RUNS runs each"
    echo "load after: $LOAD_AFTER_RELAXED"
    report "-relaxed" "$RELAXED_RUNS"
fi
[ -n "${BENCH_KEEP:-}" ] && echo "raw outputs kept in $LAB_WORK"
exit 0
