# Shared by the scan benchmarks (bench/scan-*.sh): the lab (network
# namespaces, a bridge, veth pairs, 198.18.0.0/15 addresses, no route beyond
# the lab), processes started inside it, cleanup on exit, and the arithmetic
# (medians, ratios, peak RSS, open-set comparison).
#
# Source it, then call `lab_begin TAG`. Everything the lab creates is removed
# by the EXIT/INT/TERM trap: processes by the pids we recorded, namespaces by
# the names we recorded. Namespace names start with `pscan` (not `perimeter-`,
# which scripts/test sweeps away as leftovers) so a test run on the same
# machine cannot pull a lab from under a running benchmark.
#
# shellcheck shell=bash

SCAN_BENCH_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCAN_BENCH_LIB/../.." && pwd)
PYTHON=/usr/bin/python3
HELPER="$SCAN_BENCH_LIB/helper.py"

LAB_NAMESPACES=()
LAB_PIDS=()
LAB_TAG=
LAB_WORK=
LAB_N_LINKS=0

die() {
    echo "$(basename "$0"): $*" >&2
    exit 2
}

log() {
    echo "== $*" >&2
}

# Checks root and the tools every benchmark needs; installs GNU time if
# missing (bash's `time` keyword cannot report peak RSS).
require_tools() {
    [ "$(id -u)" -eq 0 ] || die "run as root (it creates network namespaces)"
    local tool
    for tool in ip nft "$@"; do
        command -v "$tool" >/dev/null || die "$tool is missing"
    done
    if [ ! -x /usr/bin/time ]; then
        log "installing the Debian package 'time' for /usr/bin/time"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
    fi
    [ -x "$PYTHON" ] || die "$PYTHON is missing (apt-get install python3)"
}

# Sets PERIMETER: $PERIMETER_BIN when given, else a fresh release build.
find_perimeter() {
    if [ -n "${PERIMETER_BIN:-}" ]; then
        PERIMETER=$PERIMETER_BIN
    else
        log "building perimeter (release)"
        (cd "$REPO" && cargo build --release --locked --bin perimeter >&2)
        PERIMETER="$REPO/target/release/perimeter"
    fi
    [ -x "$PERIMETER" ] || die "no perimeter binary at $PERIMETER"
}

lab_cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP
    local pid ns
    for pid in "${LAB_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${LAB_PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    # Whatever else still runs inside our namespaces was started by us (a
    # measured tool cut short by the trap): end it by pid.
    for ns in "${LAB_NAMESPACES[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
    done
    for ns in "${LAB_NAMESPACES[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    if [ -n "$LAB_WORK" ] && [ -z "${BENCH_KEEP:-}" ]; then
        rm -rf "$LAB_WORK"
    fi
    exit "$status"
}

# lab_begin TAG: the trap, a work directory, and the switch namespace with
# its bridge.
lab_begin() {
    LAB_TAG="pscan$1-$$"
    trap lab_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM HUP
    LAB_WORK=$(mktemp -d "/tmp/$LAB_TAG.XXXXXX")
    chmod 755 "$LAB_WORK"
    lab_ns sw
    SWITCH="$LAB_TAG-sw"
    ip -n "$SWITCH" link add br0 type bridge
    ip -n "$SWITCH" link set br0 up
}

# lab_ns NAME: the namespace $LAB_TAG-NAME, loopback up, recorded for
# cleanup. (No command substitution: a subshell could not record it.)
lab_ns() {
    local ns="$LAB_TAG-$1"
    ip netns add "$ns"
    LAB_NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up
}

# lab_host NAME ADDRESS...: the namespace $LAB_TAG-NAME joined to the bridge
# by a veth pair, its end named eth0 carrying ADDRESS... (CIDR form). No
# default route: the lab's connected /15 is all it can reach.
lab_host() {
    local name=$1
    shift
    local ns="$LAB_TAG-$name"
    lab_ns "$name"
    LAB_N_LINKS=$((LAB_N_LINKS + 1))
    local peer="v$$x$LAB_N_LINKS"
    ip -n "$SWITCH" link add "$peer" type veth peer name eth0 netns "$ns"
    ip -n "$SWITCH" link set "$peer" master br0 up
    local address
    for address in "$@"; do
        ip -n "$ns" addr add "$address" dev eth0 nodad 2>/dev/null ||
            ip -n "$ns" addr add "$address" dev eth0
    done
    ip -n "$ns" link set eth0 up
}

# lab_spawn NS LOG COMMAND...: start COMMAND inside NS in the background,
# output to LOG; the pid is recorded for cleanup and left in SPAWNED_PID.
lab_spawn() {
    local ns=$1 out=$2
    shift 2
    ip netns exec "$ns" "$@" >"$out" 2>&1 &
    SPAWNED_PID=$!
    LAB_PIDS+=("$SPAWNED_PID")
}

# wait_tcp NS ADDRESS PORT: wait up to 10 s until ADDRESS:PORT accepts from
# inside NS.
wait_tcp() {
    local ns=$1 address=$2 port=$3
    ip netns exec "$ns" "$PYTHON" "$HELPER" wait-tcp "$address" "$port" 10 ||
        die "nothing accepts on $address:$port in $ns"
}

# The load right now: load average and running compilers, for the record.
load_note() {
    local n_cargo n_rustc
    n_cargo=$(pgrep -c -x cargo || true)
    n_rustc=$(pgrep -c -x rustc || true)
    echo "loadavg $(cut -d' ' -f1-3 /proc/loadavg), cargo processes ${n_cargo:-0}, rustc processes ${n_rustc:-0}"
}

machine_note() {
    echo "nproc $(nproc), kernel $(uname -r), CPU $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
}

# timed NAME RUN NS COMMAND...: run COMMAND inside NS under GNU time, stdout
# to $LAB_WORK/NAME.RUN.out, and append "NAME RUN SECONDS PEAK_RSS_KB" to
# $LAB_WORK/times. Wall time is taken with a monotonic clock around the
# command (GNU time's own is rounded to 10 ms).
timed() {
    local name=$1 run=$2 ns=$3
    shift 3
    local out="$LAB_WORK/$name.$run.out" tv="$LAB_WORK/$name.$run.time"
    local start end status=0
    start=$(date +%s.%N)
    # In the background and waited for: bash runs a trap only between
    # commands, and `wait` is the one it interrupts, so Ctrl-C or a TERM
    # cleans up now rather than after a long nmap run.
    ip netns exec "$ns" /usr/bin/time -v -o "$tv" "$@" >"$out" 2>"$LAB_WORK/$name.$run.err" &
    wait $! || status=$?
    end=$(date +%s.%N)
    local rss
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")
    echo "$name $run $(awk -v s="$start" -v e="$end" 'BEGIN {printf "%.3f", e - s}') ${rss:-0} $status" >>"$LAB_WORK/times"
    # `timeout` ending a run on purpose exits 124: not worth a word.
    if [ "$status" -ne 0 ] && ! { [ "$1" = timeout ] && [ "$status" -eq 124 ]; }; then
        echo "  $name run $run exited $status: $(tail -n 3 "$LAB_WORK/$name.$run.err" | tr '\n' ' ')" >&2
    fi
    return 0
}

# Median of the wall times (seconds) and of peak RSS (kB) of NAME.
median_seconds() {
    awk -v n="$1" '$1 == n {print $3}' "$LAB_WORK/times" | sort -g | "$PYTHON" "$HELPER" median
}
median_rss_kb() {
    awk -v n="$1" '$1 == n {print $4}' "$LAB_WORK/times" | sort -g | "$PYTHON" "$HELPER" median
}
max_rss_kb() {
    awk -v n="$1" '$1 == n {print $4}' "$LAB_WORK/times" | sort -g | tail -n 1
}
all_seconds() {
    awk -v n="$1" '$1 == n {printf "%.2f ", $3}' "$LAB_WORK/times"
}
ratio() {
    "$PYTHON" -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{a / b:.1f}' if b > 0 else 'n/a')" "$1" "$2"
}
