#!/usr/bin/env bash
# The audit benchmark (issues 2 and 13): `perimeter audit` on a busy host, side
# by side with `ss -tulpn` and with `ss -tulpn` plus `dpkg -S` per executable
# (what an operator would script for the same core answer).
#
# perimeter is timed as users run it: `perimeter audit`, which records the
# audit in its history database, once with a database that already holds
# earlier audits of this host (what a user's has) and once with a fresh
# database per run; and with `--no-store` beside them.
#
# The busy host is a network namespace this script creates: 200 processes
# holding 4,000 listening sockets (TCP and UDP, IPv4 and IPv6; three per
# process on lab addresses 198.18.0.1, 198.18.0.2 and fd00:198:18::1 put on
# `lo`, so the audit has exposed listeners to judge) and 7,000 established
# loopback connections. Every packet stays on that namespace's loopback. The
# namespace and the load are removed on exit, also when interrupted.
#
# Usage: bench/audit.sh [RUNS]      (as root; RUNS defaults to 20, at least 10)
# Environment: BENCH_VARIANT=unpackaged for the host of hand-built services:
# the load runs from a copy of the interpreter that no package owns, each of
# its TCP listeners accepts and never answers, and one renamed, unauthenticated
# Redis (a copy of redis-server called `cachesrv`) listens among them on
# 198.18.0.1:7379, started after the load, so its pid comes after all 200
# (the audit asks every such listener whether it is Redis; the Redis must be
# found). BENCH_HISTORY=N: audits recorded in each history database before
# timing (default 20). PERIMETER_BIN to time an already built binary instead of
# building; PERIMETER_COMPARE="LABEL=PATH ..." to time other perimeter builds
# side by side in the same run (say, before and after a change); BENCH_OUT to
# keep the raw results in that directory; BENCH_PHASES=1 to also time each
# step of the audit on its own (bench/audit/phases) in the same namespace;
# BENCH_WAIT_QUIET=SECONDS to wait up to that long, before timing, for the
# machine to be idle (other builds would skew the figures).
set -euo pipefail

RUNS=${1:-20}
if ! [[ "$RUNS" =~ ^[0-9]+$ ]] || [ "$RUNS" -lt 10 ]; then
    echo "audit.sh: RUNS must be a number, at least 10" >&2
    exit 2
fi
RSS_RUNS=10
N_PROCS=200
N_TCP_LOOPBACK=16 # plus 4 more per process: 20 per process, 4,000 in all
N_CONNS=35        # per process: 7,000 established connections in all
LAB_V4_TCP=198.18.0.1
LAB_V4_UDP=198.18.0.2
LAB_V6_TCP=fd00:198:18::1
NS="perimeter-bench-audit-$$"
VARIANT=${BENCH_VARIANT:-packaged}
N_HISTORY=${BENCH_HISTORY:-20}
REDIS_PORT=7379
case "$VARIANT" in
packaged | unpackaged) ;;
*)
    echo "audit.sh: BENCH_VARIANT is packaged or unpackaged, not '$VARIANT'" >&2
    exit 2
    ;;
esac
if ! [[ "$N_HISTORY" =~ ^[0-9]+$ ]]; then
    echo "audit.sh: BENCH_HISTORY must be a number" >&2
    exit 2
fi

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)

if [ "$(id -u)" -ne 0 ]; then
    echo "audit.sh: run as root (it creates a network namespace)" >&2
    exit 2
fi
for tool in ip ss dpkg hyperfine; do
    if ! command -v "$tool" >/dev/null; then
        echo "audit.sh: $tool is missing (apt-get install iproute2 dpkg hyperfine)" >&2
        exit 2
    fi
done
# GNU time reports peak RSS; bash's `time` keyword does not.
if [ ! -x /usr/bin/time ]; then
    echo "audit.sh: /usr/bin/time is missing; installing the Debian package 'time'" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
# The pyenv shim some machines put first on PATH cannot run as `nobody`, which
# half the load processes become; Debian's interpreter can.
PYTHON=/usr/bin/python3
if [ ! -x "$PYTHON" ]; then
    echo "audit.sh: $PYTHON is missing (apt-get install python3)" >&2
    exit 2
fi

if [ -n "${PERIMETER_BIN:-}" ]; then
    PERIMETER=$PERIMETER_BIN
else
    echo "== building perimeter (release)" >&2
    (cd "$REPO" && cargo build --release --locked --bin perimeter >&2)
    PERIMETER="$REPO/target/release/perimeter"
fi

# The per-step timer, built now (with the same sources as the binary, and
# before any timing). It is optional: if it does not build, say so and go on.
PHASES=
if [ "${BENCH_PHASES:-0}" = 1 ]; then
    echo "== building bench/audit/phases (release)" >&2
    # Built into the workspace's target directory: it shares the crates.
    if (cd "$BENCH_DIR/audit/phases" && CARGO_TARGET_DIR="$REPO/target" \
        cargo build --release >&2); then
        PHASES="$REPO/target/release/perimeter-audit-phases"
    else
        echo "audit.sh: bench/audit/phases did not build; the per-step timings are skipped" >&2
    fi
fi

# Every perimeter build timed, the main one first.
PERIMETER_LABELS=("perimeter audit")
PERIMETER_PATHS=("$PERIMETER")
for pair in ${PERIMETER_COMPARE:-}; do
    label=${pair%%=*}
    path=${pair#*=}
    if [ "$label" = "$pair" ] || [ ! -x "$path" ]; then
        echo "audit.sh: PERIMETER_COMPARE entries are LABEL=PATH to an executable, not '$pair'" >&2
        exit 2
    fi
    PERIMETER_LABELS+=("perimeter audit [$label]")
    PERIMETER_PATHS+=("$path")
done

WORK=$(mktemp -d /tmp/perimeter-bench-audit.XXXXXX)
chmod 755 "$WORK"
LOAD_PID=
REDIS_PID=
# The unpackaged variant's executables live in a root-owned 0755 directory:
# under /tmp every listener would also be judged world-writable.
OPT_DIR=

cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP
    if [ -n "$LOAD_PID" ]; then
        # The load's driver ends its children on SIGTERM; they also die with it
        # (PR_SET_PDEATHSIG).
        kill -TERM "$LOAD_PID" 2>/dev/null || true
    fi
    if [ -n "$REDIS_PID" ]; then
        kill -TERM "$REDIS_PID" 2>/dev/null || true
    fi
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
        mkdir -p "$BENCH_OUT" && cp -r "$WORK"/. "$BENCH_OUT"/
    fi
    rm -rf "$WORK"
    if [ -n "$OPT_DIR" ]; then
        rm -rf "$OPT_DIR"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Runs a command inside the namespace, in the background and waited for: bash
# runs a trap only between commands, and `wait` is where a signal lands at
# once. The EXIT trap then ends whatever still runs in the namespace (a
# background command ignores SIGINT, so it never outlives the cleanup).
in_ns() {
    ip netns exec "$NS" "$@" &
    wait "$!"
}

echo "== namespace $NS" >&2
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" addr add "$LAB_V4_TCP/32" dev lo
ip -n "$NS" addr add "$LAB_V4_UDP/32" dev lo
ip -n "$NS" addr add "$LAB_V6_TCP/128" dev lo nodad

LOAD_PYTHON=$PYTHON
LOAD_MODE=()
if [ "$VARIANT" = unpackaged ]; then
    OPT_DIR=$(mktemp -d /opt/perimeter-bench-audit.XXXXXX)
    chmod 755 "$OPT_DIR"
    cp "$(readlink -f "$PYTHON")" "$OPT_DIR/appd"
    cp "$(readlink -f /usr/bin/redis-server)" "$OPT_DIR/cachesrv"
    LOAD_PYTHON="$OPT_DIR/appd"
    LOAD_MODE=(accept)
fi

echo "== load: $N_PROCS processes ($VARIANT)" >&2
ip netns exec "$NS" "$LOAD_PYTHON" "$BENCH_DIR/audit/load.py" "$N_PROCS" "$N_TCP_LOOPBACK" "$N_CONNS" \
    "$LAB_V4_TCP" "$LAB_V4_UDP" "$LAB_V6_TCP" "${LOAD_MODE[@]}" >"$WORK/load.out" 2>"$WORK/load.err" &
LOAD_PID=$!
for _ in $(seq 1 600); do
    grep -q '^ready' "$WORK/load.out" 2>/dev/null && break
    if ! kill -0 "$LOAD_PID" 2>/dev/null; then
        echo "audit.sh: the load generator failed:" >&2
        cat "$WORK/load.err" >&2
        exit 1
    fi
    sleep 0.2
done
if ! grep -q '^ready' "$WORK/load.out"; then
    echo "audit.sh: the load generator did not get ready in 120 s" >&2
    exit 1
fi

if [ "$VARIANT" = unpackaged ]; then
    echo "== a renamed Redis on $LAB_V4_TCP:$REDIS_PORT, after the load" >&2
    ip netns exec "$NS" "$OPT_DIR/cachesrv" --port "$REDIS_PORT" --bind "$LAB_V4_TCP" \
        --protected-mode no --save "" --appendonly no --daemonize no \
        >"$WORK/redis.out" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 1 100); do
        in_ns ss -Htln "sport = :$REDIS_PORT" | grep -q . && break
        sleep 0.1
    done
fi

# Check the namespace holds what the benchmark claims before timing anything.
n_listen=$(in_ns ss -Htuln | wc -l)
n_estab=$(in_ns ss -Htn state established | wc -l)
echo "== namespace holds $n_listen listening sockets, $n_estab established TCP sockets ($((n_estab / 2)) connections)" >&2

cd "$WORK" # no perimeter-approvals.toml from the caller's directory
in_ns "$PERIMETER" audit --format json --no-store >"$WORK/audit.json"
"$PYTHON" - "$WORK/audit.json" "$n_listen" "$VARIANT" "$LAB_V4_TCP:$REDIS_PORT" <<'EOF' >&2
import json, sys
doc = json.load(open(sys.argv[1]))
if sys.argv[3] == "unpackaged":
    redis = sorted((f["rule"], f["subject"]) for f in doc["findings"] if f["rule"].startswith("redis."))
    print(f"== Redis findings: {redis}")
    if not any(r == "redis.no-auth" and sys.argv[4] in s for r, s in redis):
        sys.exit(f"audit.sh: the renamed Redis on {sys.argv[4]} was not found")
listeners = doc["listeners"]
n_attributed = sum(1 for l in listeners if l["pids"])
n_exposed = sum(1 for l in listeners if l["scope"] != "loopback")
n_packaged = sum(1 for l in listeners if l["package"])
print(f"== perimeter saw {len(listeners)} listeners ({n_attributed} traced to a process, "
      f"{n_packaged} to a package, {n_exposed} exposed), {len(doc['findings'])} findings, "
      f"{len(doc['problems'])} problems")
if len(listeners) != int(sys.argv[2]):
    sys.exit(f"audit.sh: perimeter saw {len(listeners)} listeners, ss {sys.argv[2]}")
if n_attributed != len(listeners):
    sys.exit("audit.sh: some listeners were not traced to a process")
EOF

# Each perimeter build gets its own history (an older build may refuse a
# newer schema), filled with N_HISTORY audits of this host before timing; the
# fresh database is removed before every run.
echo "== recording $N_HISTORY audits into each history database" >&2
for idx in "${!PERIMETER_PATHS[@]}"; do
    for _ in $(seq 1 "$N_HISTORY"); do
        in_ns "${PERIMETER_PATHS[$idx]}" audit --format json --db "$WORK/history-$idx.db" >/dev/null
    done
done

# The fraction of CPU time idle over the next two seconds, in percent.
idle_percent() {
    local a b
    read -r -a a < <(head -n1 /proc/stat)
    sleep 2
    read -r -a b < <(head -n1 /proc/stat)
    local total=0 idx
    for idx in 1 2 3 4 5 6 7 8; do
        total=$((total + b[idx] - a[idx]))
    done
    local idle=$((b[4] - a[4] + b[5] - a[5]))
    echo $((total > 0 ? 100 * idle / total : 0))
}
if [ -n "${BENCH_WAIT_QUIET:-}" ]; then
    deadline=$((SECONDS + BENCH_WAIT_QUIET))
    n_quiet=0
    while [ "$n_quiet" -lt 3 ] && [ "$SECONDS" -lt "$deadline" ]; do
        if [ "$(idle_percent)" -ge 90 ]; then
            n_quiet=$((n_quiet + 1))
        else
            n_quiet=0
        fi
    done
    if [ "$n_quiet" -ge 3 ]; then
        echo "== the machine has been idle for 6 s" >&2
    else
        echo "== the machine did not become idle within ${BENCH_WAIT_QUIET} s; timing anyway" >&2
    fi
fi
idle_before=$(idle_percent)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
n_builds=$(pgrep -c 'cargo|rustc' || true)
echo "== timing: $RUNS runs each (load average $load_before, $n_builds cargo/rustc processes)" >&2

# hyperfine runs inside the namespace, so each timed command is only itself
# (no `ip netns exec` in the measurement). -N: no intermediate shell.
# hyperfine takes one --prepare for all commands or one for each, in order:
# the fresh-database runs remove it first, the others do nothing.
commands=()
prepares=()
for idx in "${!PERIMETER_PATHS[@]}"; do
    label=${PERIMETER_LABELS[$idx]}
    path=${PERIMETER_PATHS[$idx]}
    fresh="$WORK/fresh-$idx.db"
    commands+=(-n "$label (history)" "$path audit --format json --db $WORK/history-$idx.db")
    prepares+=(--prepare true)
    commands+=(-n "$label (fresh db)" "$path audit --format json --db $fresh")
    prepares+=(--prepare "rm -f $fresh $fresh-wal $fresh-shm")
    commands+=(-n "$label --no-store" "$path audit --format json --no-store")
    prepares+=(--prepare true)
done
in_ns hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$WORK/hyperfine.json" \
    "${prepares[@]}" --prepare true --prepare true \
    "${commands[@]}" \
    -n "ss -tulpn" "ss -tulpn" \
    -n "ss -tulpn + dpkg -S" "bash $BENCH_DIR/audit/ss_dpkg.sh" >&2

# Peak RSS, GNU time's "Maximum resident set size" (ru_maxrss; for the
# pipeline, the largest single process in it, not their sum).
rss_once() {
    local name=$1
    shift
    in_ns /usr/bin/time -f '%M' -o "$WORK/rss.one" "$@" >/dev/null 2>"$WORK/rss.err" || {
        cat "$WORK/rss.err" >&2
        exit 1
    }
    printf '%s\t%s\n' "$name" "$(tail -n1 "$WORK/rss.one")" >>"$WORK/rss.tsv"
}
rss() {
    for _ in $(seq 1 "$RSS_RUNS"); do
        rss_once "$@"
    done
}
for idx in "${!PERIMETER_PATHS[@]}"; do
    label=${PERIMETER_LABELS[$idx]}
    path=${PERIMETER_PATHS[$idx]}
    fresh="$WORK/fresh-$idx.db"
    rss "$label (history)" "$path" audit --format json --db "$WORK/history-$idx.db"
    for _ in $(seq 1 "$RSS_RUNS"); do
        rm -f "$fresh" "$fresh-wal" "$fresh-shm"
        rss_once "$label (fresh db)" "$path" audit --format json --db "$fresh"
    done
    rss "$label --no-store" "$path" audit --format json --no-store
done
rss "ss -tulpn" ss -tulpn
rss "ss -tulpn + dpkg -S" bash "$BENCH_DIR/audit/ss_dpkg.sh"

if [ -n "$PHASES" ]; then
    echo "== each step of the audit on its own ($RUNS runs each)" >&2
    in_ns "$PHASES" "$RUNS" >"$WORK/phases.md"
fi

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
n_builds_after=$(pgrep -c 'cargo|rustc' || true)

"$PYTHON" - "$WORK/hyperfine.json" "$WORK/rss.tsv" <<EOF
import json, statistics, sys
results = json.load(open(sys.argv[1]))["results"]
rss = {}
for line in open(sys.argv[2]):
    name, kib = line.rstrip("\n").split("\t")
    rss.setdefault(name, []).append(int(kib))
ss = next(r for r in results if r["command"] == "ss -tulpn")
ss_median = statistics.median(ss["times"])
print()
print("machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), Linux $(uname -r)")
print("load average before $load_before, after $load_after; CPU idle $idle_before% in the 2 s before timing; cargo/rustc processes: $n_builds at start, $n_builds_after at end")
print("namespace ($VARIANT): $n_listen listening sockets, $((n_estab / 2)) established loopback connections, $N_PROCS processes")
print("history databases: $N_HISTORY audits recorded before timing (then one more per run)")
print()
width = max(len(r["command"]) for r in results)
print(f"| {'command':<{width}} | median ms | mean ± sd ms | min ms | vs ss | peak RSS MB, median (max) |")
print(f"|{'-' * (width + 2)}|----------:|-------------:|-------:|------:|--------------------------:|")
for r in results:
    name = r["command"]
    times = r["times"]
    median = statistics.median(times)
    kib = rss.get(name, [0])
    spread = f"{r['mean'] * 1e3:.1f} ± {r['stddev'] * 1e3:.1f}"
    memory = f"{statistics.median(kib) / 1024:.1f} ({max(kib) / 1024:.1f})"
    print(f"| {name:<{width}} | {median * 1e3:>9.1f} | {spread:>12} | {min(times) * 1e3:>6.1f}"
          f" | {median / ss_median:>4.2f}x | {memory:>25} |")
print()
print(f"runs: {len(ss['times'])} timed runs each (after 3 warm-up runs), $RSS_RUNS runs each for RSS")
EOF
if [ -f "$WORK/phases.md" ]; then
    echo
    echo "where the time goes (bench/audit/phases, each step alone):"
    cat "$WORK/phases.md"
fi
