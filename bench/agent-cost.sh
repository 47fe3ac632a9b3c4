#!/usr/bin/env bash
# The agent's own cost (issue 9): `perimeter agent` on the 4,000-listener host
# of bench/audit.sh (the same load: 200 processes, 4,000 listening sockets,
# 7,000 established loopback connections, in a network namespace this script
# creates), reporting to a `perimeter server` in the same namespace (SQLite,
# 127.0.0.1 of the namespace). Every packet stays on that namespace's
# loopback.
#
# 1. The agent as it runs (watch on, the default), with --interval
#    BENCH_INTERVAL (default 90s, shorter than the 5m default so the run sees
#    several audits) for BENCH_MINUTES (default 5): its utime+stime and VmRSS
#    sampled every 0.5 s; each audit+report cycle found by the agent's own
#    log line (RUST_LOG=perimeter_agent=debug, "report acknowledged"), its
#    CPU the CPU from the cycle's start to 10 s later less the idle rate;
#    the idle CPU the rate outside those windows; the peak RSS VmHWM, with
#    /proc/PID/smaps_rollup at the end, and the CPU of each of its threads.
# 2. `perimeter agent --once` under GNU time, RUNS times with a fresh state
#    directory (enrolment and the full report) and RUNS times with an
#    enrolled one (a delta): user+sys CPU and peak RSS of a whole cycle,
#    process start included.
#
# Usage: bench/agent-cost.sh [RUNS]     (as root; RUNS defaults to 3)
# Environment: BENCH_MINUTES, BENCH_INTERVAL, BENCH_OUT (keep the raw
# results there), PERIMETER_BIN (an already built binary), BENCH_MASSIF=1 to
# also profile the heap with valgrind's massif: one --once delta cycle, and
# the running agent for 100 s (slow: minutes). Any other variable reaches the
# agent too (MALLOC_ARENA_MAX=1, say, to see what glibc's per-thread arenas
# keep).
set -euo pipefail

RUNS=${1:-3}
if ! [[ "$RUNS" =~ ^[0-9]+$ ]] || [ "$RUNS" -lt 1 ]; then
    echo "agent-cost.sh: RUNS must be a number, at least 1" >&2
    exit 2
fi
MINUTES=${BENCH_MINUTES:-5}
INTERVAL=${BENCH_INTERVAL:-90s}
N_PROCS=200
N_TCP_LOOPBACK=16 # plus 4 more per process: 20 per process, 4,000 in all
N_CONNS=35        # per process: 7,000 established connections in all
LAB_V4_TCP=198.18.0.1
LAB_V4_UDP=198.18.0.2
LAB_V6_TCP=fd00:198:18::1
NS="perimeter-bench-agent-$$"

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
PYTHON=/usr/bin/python3

if [ "$(id -u)" -ne 0 ]; then
    echo "agent-cost.sh: run as root (it creates a network namespace)" >&2
    exit 2
fi
for tool in ip ss "$PYTHON"; do
    if ! command -v "$tool" >/dev/null; then
        echo "agent-cost.sh: $tool is missing" >&2
        exit 2
    fi
done
if [ ! -x /usr/bin/time ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
if [ -n "${PERIMETER_BIN:-}" ]; then
    PERIMETER=$PERIMETER_BIN
else
    echo "== building perimeter (release)" >&2
    (cd "$REPO" && cargo build --release --bin perimeter >&2)
    PERIMETER=${CARGO_TARGET_DIR:-$REPO/target}/release/perimeter
fi

WORK=$(mktemp -d /tmp/perimeter-bench-agent.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/results"
LOAD_PID=
SERVER_PID=
AGENT_PID=
SAMPLER_PID=

cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP
    for pid in "$SAMPLER_PID" "$AGENT_PID" "$SERVER_PID" "$LOAD_PID"; do
        if [ -n "$pid" ]; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    # Anything still living in our namespace is ours: end it by pid.
    if ip netns list | grep -qw "^$NS"; then
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            pids=$(ip netns pids "$NS" 2>/dev/null || true)
            [ -z "$pids" ] && break
            # shellcheck disable=SC2086 # one pid per word
            kill -TERM $pids 2>/dev/null || true
            sleep 0.5
        done
        pids=$(ip netns pids "$NS" 2>/dev/null || true)
        # shellcheck disable=SC2086
        [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
        ip netns del "$NS" 2>/dev/null || true
    fi
    if [ -n "${BENCH_OUT:-}" ]; then
        mkdir -p "$BENCH_OUT" && cp -r "$WORK/results/." "$BENCH_OUT/"
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

in_ns() {
    ip netns exec "$NS" "$@" &
    wait "$!"
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

echo "== namespace $NS, load before: $(loadavg)" >&2
echo "load_start=$(loadavg)" >"$WORK/results/load.txt"
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" addr add "$LAB_V4_TCP/32" dev lo
ip -n "$NS" addr add "$LAB_V4_UDP/32" dev lo
ip -n "$NS" addr add "$LAB_V6_TCP/128" dev lo nodad

echo "== load: $N_PROCS processes" >&2
ip netns exec "$NS" "$PYTHON" "$BENCH_DIR/audit/load.py" "$N_PROCS" "$N_TCP_LOOPBACK" "$N_CONNS" \
    "$LAB_V4_TCP" "$LAB_V4_UDP" "$LAB_V6_TCP" >"$WORK/load.out" 2>"$WORK/load.err" &
LOAD_PID=$!
for _ in $(seq 1 600); do
    grep -q '^ready' "$WORK/load.out" 2>/dev/null && break
    if ! kill -0 "$LOAD_PID" 2>/dev/null; then
        echo "agent-cost.sh: the load generator failed:" >&2
        cat "$WORK/load.err" >&2
        exit 1
    fi
    sleep 0.2
done
grep -q '^ready' "$WORK/load.out" || {
    echo "agent-cost.sh: the load did not get ready in 120 s" >&2
    exit 1
}
n_listen=$(in_ns ss -Htuln | wc -l)
echo "== namespace holds $n_listen listening sockets" >&2
echo "listening_sockets_before_server=$n_listen" >>"$WORK/results/load.txt"

SECRET="$WORK/enrol-secret"
head -c 24 /dev/urandom | base64 >"$SECRET"
chmod 600 "$SECRET"
ip netns exec "$NS" "$PERIMETER" server --database "$WORK/server.db" --listen 127.0.0.1:0 \
    --dev-self-signed --enrol-secret-file "$SECRET" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
URL=
FINGERPRINT=
for _ in $(seq 1 300); do
    URL=$(sed -n 's/^perimeter server: \(https:[^ ]*\) .*/\1/p' "$WORK/server.out")
    FINGERPRINT=$(sed -n 's/^certificate fingerprint //p' "$WORK/server.out")
    [ -n "$URL" ] && [ -n "$FINGERPRINT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || {
        cat "$WORK/server.err" >&2
        exit 1
    }
    sleep 0.1
done
[ -n "$URL" ] || {
    echo "agent-cost.sh: the server printed no address" >&2
    exit 1
}
echo "== server $URL in the namespace" >&2

cd "$WORK"
agent_args=(agent --server "$URL" --fingerprint "$FINGERPRINT" --enrol-secret-file "$SECRET")

# 1. The running agent.
echo "== the agent, --interval $INTERVAL, for $MINUTES minutes" >&2
NO_COLOR=1 RUST_LOG=warn,perimeter_agent=debug ip netns exec "$NS" "$PERIMETER" "${agent_args[@]}" \
    --state-dir "$WORK/agent-run" --interval "$INTERVAL" >"$WORK/agent.out" 2>"$WORK/results/agent.log" &
AGENT_PID=$!
"$PYTHON" - "$AGENT_PID" "$MINUTES" >"$WORK/results/agent-samples.tsv" <<'EOF' &
# Samples the agent every 0.5 s: seconds since start, CPU seconds
# (utime+stime, USER_HZ 100), VmRSS and VmHWM in KiB.
import sys, time
pid, minutes = sys.argv[1], float(sys.argv[2])
start = time.monotonic()
print("t\tcpu_s\trss_kib\thwm_kib\twall_clock")
while time.monotonic() - start < minutes * 60:
    try:
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        break
    kib = {l.split(":")[0]: int(l.split()[1]) for l in status.splitlines() if l.startswith(("VmRSS", "VmHWM"))}
    cpu = (int(stat[11]) + int(stat[12])) / 100
    print(f"{time.monotonic() - start:.2f}\t{cpu:.2f}\t{kib['VmRSS']}\t{kib['VmHWM']}\t{time.time():.2f}", flush=True)
    time.sleep(0.5)
EOF
SAMPLER_PID=$!
wait "$SAMPLER_PID"
SAMPLER_PID=
cp "/proc/$AGENT_PID/smaps_rollup" "$WORK/results/agent-smaps_rollup.txt"
# CPU seconds per thread over the whole run (main: the protocol and the
# audits; agent-watch: the listener ticks and the handling of exec events;
# watch-execs: reading each exec from /proc as its event comes).
for task in /proc/"$AGENT_PID"/task/*; do
    stat=$(cut -d')' -f2- "$task/stat")
    printf '%s\t%s\n' "$(cat "$task/comm")" "$(echo "$stat" | awk '{printf "%.2f", ($12 + $13) / 100}')"
done >"$WORK/results/agent-threads.tsv"
grep -E '^(VmPeak|VmSize|VmHWM|VmRSS|RssAnon|RssFile|RssShmem|Threads)' "/proc/$AGENT_PID/status" \
    >"$WORK/results/agent-status.txt"
kill -TERM "$AGENT_PID"
wait "$AGENT_PID" || true
AGENT_PID=
echo "load_after_running_agent=$(loadavg)" >>"$WORK/results/load.txt"

# 2. One cycle at a time, process start included.
echo "== --once: $RUNS full (fresh state directory), $RUNS delta" >&2
printf 'kind\trun\twall_s\tuser_s\tsys_s\tmax_rss_kib\tload\n' >"$WORK/results/once.tsv"
for run in $(seq 1 "$RUNS"); do
    rm -rf "$WORK/agent-once"
    for kind in full delta; do
        # full: a fresh state directory (enrolment, the full report);
        # delta: the directory the full run left (enrolled, a delta).
        in_ns /usr/bin/time -f '%e\t%U\t%S\t%M' -o "$WORK/time.one" "$PERIMETER" "${agent_args[@]}" \
            --state-dir "$WORK/agent-once" --once >/dev/null 2>"$WORK/once.err" || {
            echo "agent-cost.sh: agent --once failed:" >&2
            cat "$WORK/once.err" >&2
            exit 1
        }
        printf '%s\t%s\t%s\t%s\n' "$kind" "$run" "$(tail -n 1 "$WORK/time.one")" "$(loadavg)" >>"$WORK/results/once.tsv"
    done
    # Two more deltas per run, so the delta figure has 3 x RUNS samples.
    for extra in 2 3; do
        in_ns /usr/bin/time -f '%e\t%U\t%S\t%M' -o "$WORK/time.one" "$PERIMETER" "${agent_args[@]}" \
            --state-dir "$WORK/agent-once" --once >/dev/null 2>"$WORK/once.err"
        printf '%s\t%s\t%s\t%s\n' delta "$run.$extra" "$(tail -n 1 "$WORK/time.one")" "$(loadavg)" >>"$WORK/results/once.tsv"
    done
done

if [ "${BENCH_MASSIF:-0}" = 1 ] && command -v valgrind >/dev/null; then
    # The heap (malloc) of one --once delta cycle, then of the running agent
    # (watch on, --interval 30s) for 100 s, stopped with SIGINT as a user
    # stops it so massif writes its profile.
    echo "== massif: one --once delta cycle" >&2
    in_ns valgrind --tool=massif --massif-out-file="$WORK/results/massif-once.out" \
        "$PERIMETER" "${agent_args[@]}" --state-dir "$WORK/agent-once" --once >/dev/null 2>"$WORK/massif.err" || true
    ms_print "$WORK/results/massif-once.out" >"$WORK/results/massif-once.txt" 2>/dev/null || true
    echo "== massif: the running agent, 100 s" >&2
    in_ns timeout -s INT 100 valgrind --tool=massif --massif-out-file="$WORK/results/massif-running.out" \
        "$PERIMETER" "${agent_args[@]}" --state-dir "$WORK/agent-once" --interval 30s \
        >/dev/null 2>"$WORK/massif.err" || true
    ms_print "$WORK/results/massif-running.out" >"$WORK/results/massif-running.txt" 2>/dev/null || true
fi
echo "load_end=$(loadavg)" >>"$WORK/results/load.txt"
echo "listening_sockets_at_end=$(in_ns ss -Htuln | wc -l)" >>"$WORK/results/load.txt"

"$PYTHON" "$BENCH_DIR/server/agent_summary.py" "$WORK/results" "$INTERVAL"
