#!/usr/bin/env bash
# The monitor benchmark: how long `perimeter monitor` takes to tell a change,
# what one of its cycles costs beside nmap + ndiff from cron, and what the
# service holds (RSS, CPU) over a long stealth scan with the rate ceiling
# held on the wire.
#
# Part "latency", for each EVERY in BENCH_EVERY (default "60s 10s"): a
# namespace with nothing but its loopback, 198.18.41.1/32 on it; the notify
# tests' webhook receiver on its 127.0.0.1 (bench/monitor/helper.py adds the
# time each POST was read); `perimeter monitor` as the service, one scan job
#
#   targets = ["env:lab"] (198.18.41.1/32), ports 8081-8085, profile "fast",
#   every = EVERY, close_after = 1, the webhook as its one channel
#
# The script waits a random time in [0, EVERY) after the previous alert (a
# uniform phase against the schedule), opens one of the five ports (a Python
# http.server; the time it listens is recorded), waits for the POST whose
# alert says that port opened, then closes it; BENCH_CHANGES times (default
# 20), the ports in turn. Latency: the POST's arrival minus the port's
# opening. Expected about EVERY/2 plus a run and a delivery.
#
# Part "cycle": what one cycle of each practice costs, in a namespace like
# the first with port 8081 open and nothing changing: `perimeter monitor
# --once edge` (scan, store, judge; the same job), beside the peer practice,
# nmap and ndiff from cron:
#
#   nmap -n -Pn -sT -p 8081-8085 198.18.41.1 -oX new.xml; ndiff old.xml new.xml
#
# and the same with -sV (perimeter's fast profile identifies services too);
# beside them, the job's scan alone (`perimeter scan ... --profile fast
# --no-store`), with and without --no-identify, to show where a cycle goes.
# BENCH_CYCLES (default 10) runs of each after one warm-up, in rotating order;
# wall time and peak RSS under GNU time.
#
# Part "stealth": the service running one scan job over 198.18.0.0/16 x the
# top 100 ports, profile stealth, rate 100, for BENCH_SECONDS (default 3600),
# then SIGTERM (the run is stored incomplete). The lab: a scanner namespace
# whose only interface (besides lo) is a veth to a sink namespace; the
# scanner has 198.19.0.1/30, a route to 198.18.0.0/16 via the sink
# (198.19.0.2) and nothing else: no default route, IPv6 off. The sink holds
# the whole /16 as local addresses and answers every SYN with a RST. In the
# scanner's output path an nftables named counter counts the SYNs to the /16,
# and anything bound elsewhere than the lab is dropped (and counted: it must
# stay 0). The counter is read every second: the busiest second is checked
# against the ceiling. The monitor's VmRSS/VmHWM (/proc/PID/status) and
# utime+stime (/proc/PID/stat) are sampled every BENCH_SAMPLE seconds
# (default 2): peak RSS, mean CPU %.
#
# Every packet stays on a loopback or on the veth between the two stealth
# namespaces; everything is removed on exit, also when interrupted.
#
# Usage: bench/monitor.sh     (as root)
# Environment: PERIMETER_BIN to use an already built binary (else a release
# build, in CARGO_TARGET_DIR when set); BENCH_PARTS (default "latency cycle
# stealth"); BENCH_CHANGES, BENCH_EVERY, BENCH_CYCLES, BENCH_SECONDS,
# BENCH_SAMPLE as above; BENCH_SEED for the random waits (default the pid);
# BENCH_KEEP=1 keeps the raw outputs.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
source "$BENCH_DIR/scan/lib.sh"
MON_HELPER="$BENCH_DIR/monitor/helper.py"

BENCH_PARTS=${BENCH_PARTS:-latency cycle stealth}
BENCH_CHANGES=${BENCH_CHANGES:-20}
BENCH_EVERY=${BENCH_EVERY:-60s 10s}
BENCH_CYCLES=${BENCH_CYCLES:-10}
BENCH_SECONDS=${BENCH_SECONDS:-3600}
BENCH_SAMPLE=${BENCH_SAMPLE:-2}
BENCH_SEED=${BENCH_SEED:-$$}
RANDOM=$BENCH_SEED

for number in "$BENCH_CHANGES" "$BENCH_CYCLES" "$BENCH_SECONDS" "$BENCH_SAMPLE"; do
    [[ "$number" =~ ^[0-9]+$ ]] && [ "$number" -ge 1 ] || die "BENCH_CHANGES, BENCH_CYCLES, BENCH_SECONDS and BENCH_SAMPLE take positive numbers"
done
for every in $BENCH_EVERY; do
    [[ "$every" =~ ^[0-9]+s$ ]] || die "BENCH_EVERY takes seconds like \"60s 10s\", not $every"
done

TARGET=198.18.41.1
PORTS=(8081 8082 8083 8084 8085)
PORT_SPEC=8081-8085
STEALTH_RANGE=198.18.0.0/16
STEALTH_RATE=100
SCANNER_ADDRESS=198.19.0.1
SINK_ADDRESS=198.19.0.2

require_tools nmap ndiff curl

# Like scan/lib.sh's find_perimeter, but building where CARGO_TARGET_DIR says.
if [ -n "${PERIMETER_BIN:-}" ]; then
    PERIMETER=$PERIMETER_BIN
else
    log "building perimeter (release)"
    (cd "$REPO" && cargo build --release --locked -p perimeter-cli >&2)
    PERIMETER="${CARGO_TARGET_DIR:-$REPO/target}/release/perimeter"
fi
[ -x "$PERIMETER" ] || die "no perimeter binary at $PERIMETER"

# scan/lib.sh's lab_begin without the bridge: this lab needs none.
LAB_TAG="pscanmon-$$"
trap lab_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
LAB_WORK=$(mktemp -d "/tmp/$LAB_TAG.XXXXXX")
chmod 755 "$LAB_WORK"

# pause SECONDS: a sleep the traps can interrupt.
pause() {
    sleep "$1" &
    wait $! || true
}

# stop_spawned PID: TERM a process lab_spawn started, reap it, and forget its
# pid, so the cleanup never signals a pid the system has since reused.
stop_spawned() {
    local pid=$1 p keep=()
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 600); do
        alive "$pid" || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${LAB_PIDS[@]}"; do
        [ "$p" = "$pid" ] || keep+=("$p")
    done
    LAB_PIDS=("${keep[@]}")
}

# alive PID: the process runs (a child that exited stays a zombie until
# reaped, and `kill -0` still finds it).
alive() {
    local state
    state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null || true)
    [ -n "$state" ] && [ "$state" != Z ]
}

# wait_line FILE WORD SECONDS: print what follows "WORD " on FILE's first
# line starting so, waiting up to SECONDS for it.
wait_line() {
    local file=$1 word=$2 n=$(($3 * 20)) line
    for _ in $(seq 1 "$n"); do
        line=$(grep -m1 "^$word " "$file" 2>/dev/null || true)
        if [ -n "$line" ]; then
            echo "${line#"$word "}"
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# The namespace must have its loopback alone and no route off it.
check_loopback_only() {
    local ns=$1
    [ "$(ip -n "$ns" -o link show | awk -F': ' '{print $2}')" = lo ] ||
        die "$ns has an interface besides lo"
    [ -z "$(ip -n "$ns" route show)" ] || die "$ns has routes in its main table"
}

# lab_monitor_config FILE EVERY HOOK_PORT KEY_FILE METRICS: the latency and cycle
# labs' perimeter.toml (mode 0600: the webhook URL is written inline).
lab_monitor_config() {
    local file=$1 every=$2 hook_port=$3 key=$4 metrics=$5
    cat >"$file" <<EOF
[[environment]]
name = "lab"
kind = "prod"
ranges = ["$TARGET/32"]

[monitor]
close_after = 1
metrics = "$metrics"

[[monitor.scan]]
name = "edge"
targets = ["env:lab"]
ports = "$PORT_SPEC"
profile = "fast"
every = "$every"

[[monitor.channel]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:$hook_port/perimeter"
signing_key = { file = "$key" }
EOF
    chmod 600 "$file"
}

# start_receiver NS DIR: the webhook receiver in NS; sets HOOK_PORT.
start_receiver() {
    local ns=$1 dir=$2
    printf 'a-signing-key-for-the-bench' >"$dir/hook.key"
    chmod 600 "$dir/hook.key"
    lab_spawn "$ns" "$dir/receiver.log" "$PYTHON" "$MON_HELPER" receiver "$dir/hook.jsonl" "$dir/hook.key"
    HOOK_PORT=$(wait_line "$dir/receiver.log" PORT 20) || die "the webhook receiver did not start: $(cat "$dir/receiver.log")"
}

# metric_value NS ADDRESS NAME_AND_LABELS: one sample from the monitor's
# /metrics, or nothing.
metric_value() {
    { ip netns exec "$1" curl -s --max-time 2 "http://$2/metrics" 2>/dev/null || true; } |
        awk -v name="$3" '$1 == name {print $2; exit}'
}

SUMMARY="$LAB_WORK/summary"
: >"$SUMMARY"
note() {
    echo "$*" | tee -a "$SUMMARY" >&2
}

note "perimeter: $PERIMETER ($("$PERIMETER" --version 2>/dev/null || echo unknown version))"
note "machine: $(machine_note)"
note "load before: $(load_note)"
note "seed for the random waits: $BENCH_SEED"

# ---------------------------------------------------------------------------
# latency

latency_run() {
    local every=$1 seconds=${1%s}
    local name="lat$seconds"
    local ns="$LAB_TAG-$name" dir="$LAB_WORK/$name"
    mkdir -p "$dir"
    lab_ns "$name"
    ip -n "$ns" addr add "$TARGET/32" dev lo
    check_loopback_only "$ns"
    start_receiver "$ns" "$dir"
    local metrics=127.0.0.1:19464
    lab_monitor_config "$dir/perimeter.toml" "$every" "$HOOK_PORT" "$dir/hook.key" "$metrics"
    local mon=("$PERIMETER" monitor --inventory "$dir/perimeter.toml" --db "$dir/history.db")
    ip netns exec "$ns" "${mon[@]}" --check >"$dir/check.out" 2>&1 || die "monitor --check failed: $(cat "$dir/check.out")"
    log "latency, every $every: $BENCH_CHANGES changes, about $((BENCH_CHANGES * seconds)) s"
    lab_spawn "$ns" "$dir/monitor.log" env NO_COLOR=1 "${mon[@]}" --retry-initial 1s --retry-max 2s
    local monitor_pid=$SPAWNED_PID
    # The job never ran: it runs at once, with nothing open (nothing to tell).
    local runs=
    for _ in $(seq 1 300); do
        runs=$(metric_value "$ns" "$metrics" 'perimeter_job_runs_total{job="edge"}')
        [ -n "$runs" ] && [ "${runs%.*}" -ge 1 ] && break
        sleep 0.1
    done
    [ -n "$runs" ] && [ "${runs%.*}" -ge 1 ] || die "the monitor's first run did not end: $(tail -n 5 "$dir/monitor.log")"

    : >"$dir/opens"
    local change port delay_ms opened deadline server_pid n_missed=0
    for change in $(seq 1 "$BENCH_CHANGES"); do
        # A uniform phase against the schedule: the previous alert came just
        # after a run.
        delay_ms=$((RANDOM * seconds * 1000 / 32768))
        pause "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
        port=${PORTS[$(((change - 1) % ${#PORTS[@]}))]}
        lab_spawn "$ns" "$dir/open.$change.log" "$PYTHON" "$MON_HELPER" open-port "$TARGET" "$port"
        server_pid=$SPAWNED_PID
        opened=$(wait_line "$dir/open.$change.log" OPEN 10) || die "port $port did not open: $(cat "$dir/open.$change.log")"
        echo "$port $opened" >>"$dir/opens"
        deadline=$(($(date +%s) + 3 * seconds + 30))
        until "$PYTHON" "$MON_HELPER" told "$dir/hook.jsonl" "$TARGET" "$port" "$opened"; do
            alive "$monitor_pid" || die "the monitor exited: $(tail -n 5 "$dir/monitor.log")"
            if [ "$(date +%s)" -ge "$deadline" ]; then
                n_missed=$((n_missed + 1))
                log "change $change: port $port not told within $((3 * seconds + 30)) s"
                break
            fi
            sleep 0.2
        done
        stop_spawned "$server_pid"
        log "change $change/$BENCH_CHANGES: port $port"
    done
    ip netns exec "$ns" curl -s --max-time 2 "http://$metrics/metrics" >"$dir/metrics.txt" || true
    stop_spawned "$monitor_pid"
    "$PYTHON" "$MON_HELPER" latencies "$dir/opens" "$dir/hook.jsonl" "$TARGET" >"$dir/latencies.txt"
    note ""
    note "latency, every = \"$every\" (ports $PORT_SPEC of $TARGET, profile fast, close_after 1):"
    sed 's/^/  /' "$dir/latencies.txt" | tee -a "$SUMMARY" >&2
    note "  monitor's last run of the job: $(awk '/^perimeter_job_last_run_duration_seconds\{job="edge"\}/ {print $2 " s"}' "$dir/metrics.txt"), runs $(awk '/^perimeter_job_runs_total\{job="edge"\}/ {print $2}' "$dir/metrics.txt"), alerts sent $(awk '/^perimeter_alerts_sent_total\{channel="hook"\}/ {print $2}' "$dir/metrics.txt")"
}

# ---------------------------------------------------------------------------
# cycle

cycle_run() {
    local ns="$LAB_TAG-cyc" dir="$LAB_WORK/cyc"
    mkdir -p "$dir"
    lab_ns cyc
    ip -n "$ns" addr add "$TARGET/32" dev lo
    check_loopback_only "$ns"
    start_receiver "$ns" "$dir"
    lab_monitor_config "$dir/perimeter.toml" 1h "$HOOK_PORT" "$dir/hook.key" 127.0.0.1:19466
    lab_spawn "$ns" "$dir/open.log" "$PYTHON" "$MON_HELPER" open-port "$TARGET" "${PORTS[0]}"
    wait_line "$dir/open.log" OPEN 10 >/dev/null || die "port ${PORTS[0]} did not open"
    local once=("$PERIMETER" monitor --once edge --inventory "$dir/perimeter.toml" --db "$dir/history.db")
    local scan=("$PERIMETER" scan "$TARGET" -p "$PORT_SPEC" --profile fast --no-store --quiet --format json)
    local nmap_sh="cd $dir && nmap -n -Pn -sT -p $PORT_SPEC $TARGET -oX new.xml >/dev/null && { ndiff old.xml new.xml >ndiff.out; s=\$?; mv new.xml old.xml; [ \$s -le 1 ]; }"
    local nmap_sv_sh="cd $dir && nmap -n -Pn -sT -sV -p $PORT_SPEC $TARGET -oX new-sv.xml >/dev/null && { ndiff old-sv.xml new-sv.xml >ndiff-sv.out; s=\$?; mv new-sv.xml old-sv.xml; [ \$s -le 1 ]; }"
    # Warm-ups: the first cycle of each finds the open port (perimeter tells
    # it; nmap's first report is what ndiff compares with next).
    ip netns exec "$ns" "${once[@]}" >"$dir/warmup.out" 2>&1 || true
    ip netns exec "$ns" sh -c "cd $dir && nmap -n -Pn -sT -p $PORT_SPEC $TARGET -oX old.xml >/dev/null"
    ip netns exec "$ns" sh -c "cd $dir && nmap -n -Pn -sT -sV -p $PORT_SPEC $TARGET -oX old-sv.xml >/dev/null"
    log "cycle: $BENCH_CYCLES runs of each"
    local run order
    for run in $(seq 1 "$BENCH_CYCLES"); do
        case $((run % 3)) in
        0) order="once nmap nmap-sv" ;;
        1) order="nmap nmap-sv once" ;;
        2) order="nmap-sv once nmap" ;;
        esac
        for tool in $order; do
            case $tool in
            once) timed monitor-once "$run" "$ns" "${once[@]}" ;;
            nmap) timed nmap-ndiff "$run" "$ns" sh -c "$nmap_sh" ;;
            nmap-sv) timed nmap-sv-ndiff "$run" "$ns" sh -c "$nmap_sv_sh" ;;
            esac
        done
        # Where a cycle's time goes: the job's scan alone, with and without
        # identification.
        timed scan "$run" "$ns" "${scan[@]}"
        timed scan-no-identify "$run" "$ns" "${scan[@]}" --no-identify
    done
    local n_posts
    n_posts=$(grep -c '"method": "POST"' "$dir/hook.jsonl" 2>/dev/null || true)
    note ""
    note "cycle, port ${PORTS[0]} open and nothing changing, $BENCH_CYCLES runs each (wall s; peak RSS MB):"
    local name what
    for name in monitor-once nmap-ndiff nmap-sv-ndiff scan scan-no-identify; do
        case $name in
        scan) what="perimeter scan $TARGET -p $PORT_SPEC --profile fast --no-store --quiet --format json" ;;
        scan-no-identify) what="the same with --no-identify" ;;
        monitor-once) what="perimeter monitor --once edge --inventory perimeter.toml --db history.db" ;;
        nmap-ndiff) what="nmap -n -Pn -sT -p $PORT_SPEC $TARGET -oX new.xml; ndiff old.xml new.xml" ;;
        nmap-sv-ndiff) what="nmap -n -Pn -sT -sV -p $PORT_SPEC $TARGET -oX new.xml; ndiff old.xml new.xml" ;;
        esac
        note "  $name: median $(median_seconds "$name") s (all: $(all_seconds "$name")); median peak RSS $(echo "$(median_rss_kb "$name") / 1024" | bc -l | xargs printf '%.1f') MB; exit codes: $(awk -v n="$name" '$1 == n {printf "%s ", $5}' "$LAB_WORK/times")"
        note "    $what"
    done
    note "  webhook POSTs during the cycles (the warm-up's alert only, expected 1): ${n_posts:-0}"
    note "  ndiff's last report: $(grep -v 'scan initiated' "$dir/ndiff.out" | grep -c . || true) line(s) of differences besides its header"
}

# ---------------------------------------------------------------------------
# stealth

stealth_run() {
    lab_ns scan
    lab_ns sink
    local scanner="$LAB_TAG-scan" sink="$LAB_TAG-sink" dir="$LAB_WORK/stealth"
    mkdir -p "$dir"
    local ns
    for ns in "$scanner" "$sink"; do
        ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
    ip -n "$scanner" link add eth0 type veth peer name eth0 netns "$sink"
    ip -n "$scanner" addr add "$SCANNER_ADDRESS/30" dev eth0
    ip -n "$sink" addr add "$SINK_ADDRESS/30" dev eth0
    ip -n "$scanner" link set eth0 up
    ip -n "$sink" link set eth0 up
    ip -n "$scanner" route add "$STEALTH_RANGE" via "$SINK_ADDRESS"
    ip -n "$sink" route add local "$STEALTH_RANGE" dev lo
    ip netns exec "$scanner" nft -f - <<EOF
table inet pmon {
    counter probes {}
    counter stray {}
    chain output {
        type filter hook output priority filter; policy accept;
        oifname "lo" accept
        ip daddr $STEALTH_RANGE tcp flags & (syn | ack) == syn counter name "probes" accept
        ip daddr { $STEALTH_RANGE, $SINK_ADDRESS } accept
        counter name "stray" drop
    }
}
EOF
    # Check what was built before a single probe: the scanner's interfaces
    # are lo and the veth, its routes the /30 and the /16 via the sink,
    # nothing else; an address outside the lab has no route.
    {
        echo "scanner links:"
        ip -n "$scanner" -o link show | awk -F': ' '{print "  " $2}'
        echo "scanner routes (all tables, IPv4):"
        ip -n "$scanner" -4 route show table all | sed 's/^/  /'
        echo "scanner routes (IPv6):"
        ip -n "$scanner" -6 route show table all | sed 's/^/  /'
    } >"$dir/lab.txt"
    local links routes
    links=$(ip -n "$scanner" -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | sort | tr '\n' ' ')
    [ "$links" = "eth0 lo " ] || die "the scanner namespace has unexpected interfaces: $links"
    routes=$(ip -n "$scanner" -4 route show | sed 's/ *$//')
    [ "$routes" = "$(printf '%s via %s dev eth0\n198.19.0.0/30 dev eth0 proto kernel scope link src %s' "$STEALTH_RANGE" "$SINK_ADDRESS" "$SCANNER_ADDRESS")" ] ||
        die "the scanner's routes are not the lab's: $routes"
    ip -n "$scanner" -4 route show | grep -q default && die "the scanner has a default route"
    [ -z "$(ip -n "$scanner" -6 route show table all 2>/dev/null)" ] || die "the scanner has IPv6 routes"
    if ip -n "$scanner" route get 192.0.2.1 >/dev/null 2>&1; then
        die "the scanner has a route to 192.0.2.1"
    fi
    ip -n "$scanner" route get 198.18.77.1 | grep -q "via $SINK_ADDRESS dev eth0" || die "198.18.77.1 is not routed to the sink"
    cat >"$dir/perimeter.toml" <<EOF
[monitor]
metrics = "127.0.0.1:19465"

[[monitor.scan]]
name = "stealth"
targets = ["$STEALTH_RANGE"]
ports = "top:100"
profile = "stealth"
rate = $STEALTH_RATE.0
every = "1d"
EOF
    chmod 600 "$dir/perimeter.toml"
    local mon=("$PERIMETER" monitor --inventory "$dir/perimeter.toml" --db "$dir/history.db")
    ip netns exec "$scanner" "${mon[@]}" --check >"$dir/check.out" 2>&1 || die "monitor --check failed: $(cat "$dir/check.out")"

    log "stealth: $STEALTH_RANGE x top 100 ports at $STEALTH_RATE/s for $BENCH_SECONDS s"
    lab_spawn "$scanner" "$dir/count.log" "$PYTHON" "$MON_HELPER" count-probes inet:pmon probes "$dir/probes" $((BENCH_SECONDS + 120))
    local counter_pid=$SPAWNED_PID
    pause 2
    local load_start
    load_start=$(load_note)
    lab_spawn "$scanner" "$dir/monitor.log" env NO_COLOR=1 "${mon[@]}"
    local monitor_pid=$SPAWNED_PID
    pause 0.3
    [ "$(cat "/proc/$monitor_pid/comm" 2>/dev/null)" = perimeter ] || die "pid $monitor_pid is not the monitor"
    "$PYTHON" "$MON_HELPER" sample-proc "$monitor_pid" "$BENCH_SAMPLE" "$dir/proc" &
    local sampler_pid=$!
    LAB_PIDS+=("$sampler_pid")
    local started elapsed=0
    started=$(date +%s)
    local loads=()
    while [ "$elapsed" -lt "$BENCH_SECONDS" ]; do
        alive "$monitor_pid" || die "the monitor exited: $(tail -n 5 "$dir/monitor.log")"
        pause "$((BENCH_SECONDS - elapsed < 60 ? BENCH_SECONDS - elapsed : 60))"
        loads+=("$(cut -d' ' -f1 /proc/loadavg)")
        elapsed=$(($(date +%s) - started))
    done
    local stop_at
    stop_at=$(date +%s.%N)
    stop_spawned "$monitor_pid"
    local stopped_in
    stopped_in=$(awk -v s="$stop_at" -v e="$(date +%s.%N)" 'BEGIN {printf "%.2f", e - s}')
    wait "$sampler_pid" 2>/dev/null || true
    pause 2
    stop_spawned "$counter_pid"
    local stray
    stray=$(ip netns exec "$scanner" nft -j list counter inet pmon stray |
        "$PYTHON" -c 'import json, sys; print(next(i["counter"]["packets"] for i in json.load(sys.stdin)["nftables"] if "counter" in i))')
    ip netns exec "$scanner" "$PERIMETER" scans --db "$dir/history.db" >"$dir/scans.txt" 2>&1 || true
    note ""
    note "stealth: $STEALTH_RANGE x top 100 ports, profile stealth, rate $STEALTH_RATE/s, for $BENCH_SECONDS s, then SIGTERM (stopped in $stopped_in s)"
    note "  load at the start: $load_start; 1-minute load each minute: ${loads[*]}"
    note "  probes (nftables, SYNs leaving the scanner): $("$PYTHON" "$MON_HELPER" rate-summary "$dir/probes" "$STEALTH_RATE")"
    note "  packets bound outside the lab (dropped, counted): $stray"
    note "  monitor process: $("$PYTHON" "$MON_HELPER" proc-summary "$dir/proc")"
    note "  the run as stored:"
    sed 's/^/    /' "$dir/scans.txt" | tee -a "$SUMMARY" >&2
    note "  monitor log (last lines):"
    tail -n 4 "$dir/monitor.log" | sed 's/^/    /' | tee -a "$SUMMARY" >&2
}

for part in $BENCH_PARTS; do
    case $part in
    latency)
        for every in $BENCH_EVERY; do
            latency_run "$every"
        done
        ;;
    cycle) cycle_run ;;
    stealth) stealth_run ;;
    *) die "unknown part $part (latency, cycle, stealth)" ;;
    esac
done
note ""
note "load after: $(load_note)"

echo
cat "$SUMMARY"
[ -n "${BENCH_KEEP:-}" ] && echo "raw outputs kept in $LAB_WORK"
exit 0
