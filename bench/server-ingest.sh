#!/usr/bin/env bash
# The server's ingest benchmark (issue 9): how many agents, each reporting
# once a minute, the real `perimeter server` sustains with p99 ingest latency
# under 100 ms, on SQLite (its default) and on PostgreSQL; its peak RSS; and
# how fast the database grows per host per day.
#
# The server runs as a user runs it: the release binary, default flags
# (`--dev-self-signed` for its certificate, an enrolment secret file), on
# 127.0.0.1 with an ephemeral port. The agents are simulated by
# crates/cli/examples/loadgen.rs (see its header: enrolment, one full report
# of 100 listeners, then one report per agent-minute, open-loop, each over a
# new TLS connection as the real agent makes it; 3 % of the heartbeats carry a
# change). PostgreSQL is a throwaway cluster this script makes (initdb, the
# server on a Unix socket in the work directory, no TCP), PostgreSQL's default
# settings (fsync and synchronous_commit on), a fresh database per run.
# Every packet stays on loopback.
#
# Per run: enrol N agents, their full reports (closed-loop, 32 in flight),
# then BENCH_MINUTES of heartbeats at N per minute; the first 20 s of
# heartbeats are not counted. The database's size is read after the full
# reports and at the end: its growth over the heartbeat phase, per host and
# per heartbeat, times 1,440 heartbeats, is the growth per host per day at one
# report a minute.
#
# BENCH_QUICKACK=1 is a diagnosis, not a configuration a user has: the whole
# run moves into a network namespace this script creates, whose loopback
# routes carry `quickack 1` (no delayed ACKs). It showed where the 40 ms
# stalls of the first measurement came from (the server did not set
# TCP_NODELAY then, so its answer waited behind the unacknowledged TLS session
# tickets until the client's delayed ACK; it sets it since, see
# bench/results/server-ingest.md).
#
# Usage: bench/server-ingest.sh [RUNS]      (as root: postgres runs as its
#                                            account; RUNS defaults to 3)
# Environment: BENCH_BACKENDS (default "sqlite postgres"), BENCH_AGENTS
# (default "1000 2500 5000 10000"), BENCH_MINUTES (heartbeat phase, default
# 1.5), BENCH_INTERVAL (seconds between one agent's reports, default 60; a
# shorter one compresses time, for the growth run), BENCH_OUT (keep the raw
# results there), PERIMETER_BIN and LOADGEN_BIN (already built binaries;
# otherwise `cargo build --release -p perimeter-cli --examples`).
set -euo pipefail

RUNS=${1:-3}
if ! [[ "$RUNS" =~ ^[0-9]+$ ]] || [ "$RUNS" -lt 1 ]; then
    echo "server-ingest.sh: RUNS must be a number, at least 1" >&2
    exit 2
fi
BACKENDS=${BENCH_BACKENDS:-sqlite postgres}
AGENTS=${BENCH_AGENTS:-1000 2500 5000 10000}
MINUTES=${BENCH_MINUTES:-1.5}
INTERVAL=${BENCH_INTERVAL:-60}

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)

if [ "${BENCH_QUICKACK:-0}" = 1 ] && [ -z "${BENCH_IN_NS:-}" ]; then
    NS="perimeter-bench-ingest-$$"
    CHILD=
    end_ns() {
        local status=$?
        trap - EXIT INT TERM HUP
        if [ -n "$CHILD" ]; then
            kill -TERM "$CHILD" 2>/dev/null || true
            wait "$CHILD" 2>/dev/null || true
        fi
        ip netns del "$NS" 2>/dev/null || true
        exit "$status"
    }
    trap end_ns EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    ip -n "$NS" route change local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1 quickack 1
    ip -n "$NS" route change local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1 quickack 1
    echo "== in namespace $NS, loopback routes with quickack 1" >&2
    BENCH_IN_NS=1 ip netns exec "$NS" "$0" "$@" &
    CHILD=$!
    wait "$CHILD"
    exit $?
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "server-ingest.sh: run as root (PostgreSQL runs under its own account)" >&2
    exit 2
fi
PG_BIN=
case " $BACKENDS " in
*" postgres "*)
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$PG_BIN" ] || ! id postgres >/dev/null 2>&1; then
        echo "server-ingest.sh: PostgreSQL's server programs are missing (apt-get install postgresql)" >&2
        exit 2
    fi
    ;;
esac
for tool in sqlite3 python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "server-ingest.sh: $tool is missing" >&2
        exit 2
    fi
done
PYTHON=/usr/bin/python3

if [ -n "${PERIMETER_BIN:-}" ] && [ -n "${LOADGEN_BIN:-}" ]; then
    PERIMETER=$PERIMETER_BIN
    LOADGEN=$LOADGEN_BIN
else
    echo "== building perimeter and the load generator (release)" >&2
    (cd "$REPO" && cargo build --release -p perimeter-cli --bin perimeter --examples >&2)
    TARGET=${CARGO_TARGET_DIR:-$REPO/target}
    PERIMETER=$TARGET/release/perimeter
    LOADGEN=$TARGET/release/examples/loadgen
fi

WORK=$(mktemp -d /tmp/perimeter-bench-ingest.XXXXXX)
chmod 755 "$WORK"
SERVER_PID=
LOADGEN_PID=
PG_STARTED=0

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP
    if [ -n "$LOADGEN_PID" ]; then
        kill -TERM "$LOADGEN_PID" 2>/dev/null || true
        wait "$LOADGEN_PID" 2>/dev/null || true
    fi
    stop_server
    if [ "$PG_STARTED" = 1 ]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ -n "${BENCH_OUT:-}" ]; then
        mkdir -p "$BENCH_OUT"
        cp -r "$WORK/results/." "$BENCH_OUT/" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

mkdir -p "$WORK/results"
SECRET="$WORK/enrol-secret"
head -c 24 /dev/urandom | base64 >"$SECRET"
chmod 600 "$SECRET"

if [ -n "$PG_BIN" ]; then
    echo "== PostgreSQL cluster ($PG_BIN) on a Unix socket in $WORK/pg" >&2
    mkdir -p "$WORK/pg"
    chown postgres: "$WORK/pg"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg/data" -A trust -U postgres -E UTF8 \
        --locale=C >"$WORK/pg/initdb.log" 2>&1
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/postgres.log" \
        -o "-k $WORK/pg -c listen_addresses= -p 5432" -w start >/dev/null
    PG_STARTED=1
    runuser -u postgres -- "$PG_BIN/postgres" --version >"$WORK/results/postgres-version.txt"
fi

# Prints the database's size, one `key=value` a line: the SQLite file and its
# WAL, and the bytes in use (pages less free pages); PostgreSQL's
# pg_database_size and the fleet tables with their indexes and TOAST.
SIZE_HOOK="$WORK/size-hook.sh"
cat >"$SIZE_HOOK" <<'EOF'
#!/usr/bin/env bash
# $1: the phase; BENCH_DB_KIND, BENCH_DB set by the caller.
if [ "$BENCH_DB_KIND" = sqlite ]; then
    db=$(stat -c %s "$BENCH_DB" 2>/dev/null || echo 0)
    wal=$(stat -c %s "$BENCH_DB-wal" 2>/dev/null || echo 0)
    echo "file_bytes=$db"
    echo "wal_bytes=$wal"
    sqlite3 -readonly "$BENCH_DB" "SELECT 'used_bytes=' || (((SELECT page_count FROM pragma_page_count) - (SELECT freelist_count FROM pragma_freelist_count)) * (SELECT page_size FROM pragma_page_size)); SELECT 'states=' || count(*) FROM fleet_states;"
else
    psql -X -A -t -h "$BENCH_PG_SOCKET" -U postgres -d "$BENCH_DB" -c \
        "SELECT 'database_bytes=' || pg_database_size(current_database()); SELECT 'fleet_bytes=' || sum(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.relname IN ('fleet_agents','fleet_states','fleet_events') ; SELECT 'states=' || count(*) FROM fleet_states;"
fi
EOF
chmod 755 "$SIZE_HOOK"

run_one() {
    local backend=$1 n=$2 run=$3
    local tag="$backend-$n-$run"
    local dir="$WORK/$tag"
    mkdir -p "$dir"
    local database
    if [ "$backend" = sqlite ]; then
        database="$dir/server.db"
        export BENCH_DB_KIND=sqlite BENCH_DB="$database"
    else
        local name="perimeter_${n}_${run}"
        runuser -u postgres -- "$PG_BIN/createdb" -h "$WORK/pg" -p 5432 "$name"
        database="postgresql://postgres@/$name?host=$WORK/pg&port=5432"
        export BENCH_DB_KIND=postgres BENCH_DB="$name" BENCH_PG_SOCKET="$WORK/pg"
    fi
    local load_before
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    "$PERIMETER" server --database "$database" --listen 127.0.0.1:0 --dev-self-signed \
        --enrol-secret-file "$SECRET" >"$dir/server.out" 2>"$dir/server.err" &
    SERVER_PID=$!
    local url= fingerprint=
    for _ in $(seq 1 300); do
        url=$(sed -n 's/^perimeter server: \(https:[^ ]*\) .*/\1/p' "$dir/server.out")
        fingerprint=$(sed -n 's/^certificate fingerprint //p' "$dir/server.out")
        [ -n "$url" ] && [ -n "$fingerprint" ] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "server-ingest.sh: the server did not start:" >&2
            cat "$dir/server.err" >&2
            exit 1
        fi
        sleep 0.1
    done
    if [ -z "$url" ]; then
        echo "server-ingest.sh: the server printed no address in 30 s" >&2
        exit 1
    fi
    echo "== $tag: server $SERVER_PID at $url, load $load_before" >&2
    "$LOADGEN" --server "$url" --fingerprint "$fingerprint" --secret-file "$SECRET" \
        --agents "$n" --minutes "$MINUTES" --interval-secs "$INTERVAL" \
        --server-pid "$SERVER_PID" --hook "$SIZE_HOOK" \
        >"$dir/loadgen.json" 2>"$dir/loadgen.err" &
    LOADGEN_PID=$!
    wait "$LOADGEN_PID" || {
        echo "server-ingest.sh: the load generator failed:" >&2
        tail -n 20 "$dir/loadgen.err" >&2
        exit 1
    }
    LOADGEN_PID=
    local load_after hwm
    load_after=$(cut -d' ' -f1-3 /proc/loadavg)
    hwm=$(sed -n 's/^VmHWM:\s*\([0-9]*\).*/\1/p' "/proc/$SERVER_PID/status")
    stop_server
    # After a clean stop SQLite has checkpointed its WAL into the file.
    local final_bytes=0
    if [ "$backend" = sqlite ]; then
        final_bytes=$(($(stat -c %s "$database") + $(stat -c %s "$database-wal" 2>/dev/null || echo 0)))
    fi
    "$PYTHON" - "$dir/loadgen.json" "$backend" "$n" "$run" "$load_before" "$load_after" \
        "$hwm" "$final_bytes" >"$WORK/results/$tag.json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
doc.update(backend=sys.argv[2], run=int(sys.argv[4]), load_before=sys.argv[5],
           load_after=sys.argv[6], server_hwm_kib=int(sys.argv[7] or 0),
           final_file_bytes=int(sys.argv[8]))
print(json.dumps(doc))
EOF
    if [ "$backend" = postgres ]; then
        runuser -u postgres -- "$PG_BIN/dropdb" -h "$WORK/pg" -p 5432 "$BENCH_DB"
    else
        rm -f "$database" "$database-wal" "$database-shm"
    fi
    echo "== $tag: load after $load_after; $(tail -c 600 "$dir/loadgen.err" | grep -o 'heartbeat done.*' | cut -c1-300)" >&2
    rm -rf "$dir"
}

echo "== machine: $(nproc) CPUs, $(uname -r); perimeter $("$PERIMETER" --version)" >&2
for n in $AGENTS; do
    for run in $(seq 1 "$RUNS"); do
        # Alternate the backends within a size, so a burst of other work on
        # the machine falls on both.
        for backend in $BACKENDS; do
            run_one "$backend" "$n" "$run"
        done
    done
done

"$PYTHON" "$BENCH_DIR/server/summarise.py" "$WORK/results"
