#!/usr/bin/env bash
# The inventory benchmark (issue 4, package part): verifying every package
# file's checksum with `perimeter inventory --verify`, side by side with
# `dpkg --verify` on this machine's own packages, and the unowned-file sweep
# of the PATH directories, /usr/local, /opt and /srv.
#
# Before timing anything the script checks that both tools reach the same
# verdicts (the same missing and modified files and conffiles); then it times
# each with hyperfine (medians), with a warm page cache (every file read once
# before), and measures peak RSS with GNU time. `perimeter inventory --verify`
# is timed as a whole: package list, origins, package index, sweep, units,
# processes and the checksums, which is more work than `dpkg --verify` does.
#
# Every MD5 path this CPU runs is timed on its own too (PERIMETER_MD5=avx512,
# avx2, portable, beside the default, which measures them at start and picks
# the fastest), and each one's verdicts are checked against dpkg's first.
#
# Usage: bench/inventory.sh [RUNS] [--cold]   (as root; RUNS defaults to 5)
#   --cold  also time both with an empty page cache (drops the caches before
#           every run: it slows everything else on the machine for a while)
# Environment: PERIMETER_BIN to time an already built binary; BENCH_OUT to
# keep the raw results in that directory.
set -euo pipefail

RUNS=5
COLD=0
for arg in "$@"; do
    case "$arg" in
    --cold) COLD=1 ;;
    *)
        if ! [[ "$arg" =~ ^[0-9]+$ ]] || [ "$arg" -lt 3 ]; then
            echo "inventory.sh: RUNS must be a number, at least 3" >&2
            exit 2
        fi
        RUNS=$arg
        ;;
    esac
done
SWEEP_RUNS=20
RSS_RUNS=3

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
PYTHON=/usr/bin/python3

if [ "$(id -u)" -ne 0 ]; then
    echo "inventory.sh: run as root (both tools must read every package file)" >&2
    exit 2
fi
for tool in dpkg hyperfine "$PYTHON"; do
    if ! command -v "$tool" >/dev/null; then
        echo "inventory.sh: $tool is missing (apt-get install dpkg hyperfine python3)" >&2
        exit 2
    fi
done
if [ ! -x /usr/bin/time ]; then
    echo "inventory.sh: /usr/bin/time is missing; installing the Debian package 'time'" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi

if [ -n "${PERIMETER_BIN:-}" ]; then
    PERIMETER=$PERIMETER_BIN
else
    echo "== building perimeter (release)" >&2
    (cd "$REPO" && cargo build --release --locked --bin perimeter >&2)
    PERIMETER="$REPO/target/release/perimeter"
fi

WORK=$(mktemp -d /tmp/perimeter-bench-inventory.XXXXXX)
cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP
    if [ -n "${BENCH_OUT:-}" ]; then
        mkdir -p "$BENCH_OUT" && cp -r "$WORK"/. "$BENCH_OUT"/
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
cd "$WORK"

# The default rows time the default: a PERIMETER_MD5 from the caller would
# force one path into all of them.
unset PERIMETER_MD5
VERIFY_CMD="$PERIMETER inventory --verify --format json"
SWEEP_CMD="$PERIMETER inventory --no-origins --no-processes --format json"

# Same verdicts first, for the default and for every MD5 path this CPU runs
# (a path it cannot run is refused, and left out). These runs also warm the
# page cache for both tools.
echo "== checking that perimeter and dpkg --verify agree (and warming the page cache)" >&2
dpkg --verify >"$WORK/dpkg-verify.txt" || true
PATHS=()
for md5 in auto avx512 avx2 portable; do
    if PERIMETER_MD5=$md5 $VERIFY_CMD >"$WORK/perimeter-$md5.json" 2>"$WORK/perimeter-$md5.err"; then
        echo -n "   PERIMETER_MD5=$md5: " >&2
        "$PYTHON" "$BENCH_DIR/inventory/compare.py" "$WORK/perimeter-$md5.json" "$WORK/dpkg-verify.txt" "$md5" >&2
        PATHS+=("$md5")
    elif grep -q "does not run" "$WORK/perimeter-$md5.err"; then
        echo "   PERIMETER_MD5=$md5: not on this CPU, left out" >&2
    else
        cat "$WORK/perimeter-$md5.err" >&2
        exit 1
    fi
done

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
n_builds=$(pgrep -c 'cargo|rustc' || true)
echo "== timing, warm cache: $RUNS runs each (load average $load_before, $n_builds cargo/rustc processes)" >&2
WARM=(-n "perimeter inventory --verify" "$VERIFY_CMD")
for md5 in "${PATHS[@]}"; do
    if [ "$md5" != auto ]; then
        WARM+=(-n "  PERIMETER_MD5=$md5" "env PERIMETER_MD5=$md5 $VERIFY_CMD")
    fi
done
hyperfine -N --warmup 1 --runs "$RUNS" --ignore-failure --export-json "$WORK/warm.json" \
    "${WARM[@]}" -n "dpkg --verify" "dpkg --verify" >&2

echo "== workers: perimeter inventory --verify --workers 1, 2, 4" >&2
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$WORK/workers.json" \
    -n "workers 1" "$VERIFY_CMD --workers 1" \
    -n "workers 2" "$VERIFY_CMD --workers 2" \
    -n "workers 4" "$VERIFY_CMD --workers 4" >&2

if [ "$COLD" -eq 1 ]; then
    echo "== timing, cold cache (caches dropped before every run): $RUNS runs each" >&2
    hyperfine -N --runs "$RUNS" --ignore-failure --export-json "$WORK/cold.json" \
        --prepare "sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'" \
        -n "perimeter inventory --verify (cold)" "$VERIFY_CMD" \
        -n "dpkg --verify (cold)" "dpkg --verify" >&2
fi

# The sweep without checksums: the whole command, and the phases it reports.
echo "== sweep: $SWEEP_RUNS runs of $SWEEP_CMD" >&2
hyperfine -N --warmup 2 --runs "$SWEEP_RUNS" --export-json "$WORK/sweep.json" \
    -n "perimeter inventory (no --verify)" "$SWEEP_CMD" >&2
for _ in $(seq 1 "$SWEEP_RUNS"); do
    $SWEEP_CMD >"$WORK/sweep-one.json"
    "$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(dict(d["stats"]["phases_ms"])))' \
        "$WORK/sweep-one.json" >>"$WORK/sweep-phases.jsonl"
done

rss() {
    local name=$1
    shift
    for _ in $(seq 1 "$RSS_RUNS"); do
        /usr/bin/time -f '%M' -o "$WORK/rss.one" "$@" >/dev/null 2>"$WORK/rss.err" || true
        echo "$name	$(tail -n1 "$WORK/rss.one")" >>"$WORK/rss.tsv"
    done
}
rss "perimeter inventory --verify" $VERIFY_CMD
for md5 in "${PATHS[@]}"; do
    if [ "$md5" != auto ]; then
        rss "  PERIMETER_MD5=$md5" env PERIMETER_MD5=$md5 $VERIFY_CMD
    fi
done
rss "dpkg --verify" dpkg --verify
rss "perimeter inventory (no --verify)" $SWEEP_CMD

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
"$PYTHON" "$BENCH_DIR/inventory/report.py" "$WORK" "$PERIMETER" \
    "$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), Linux $(uname -r), $(free -g | awk '/^Mem:/ {print $2}') GB RAM" \
    "$load_before" "$load_after" "$n_builds" "$RUNS" "$SWEEP_RUNS" "$RSS_RUNS"
