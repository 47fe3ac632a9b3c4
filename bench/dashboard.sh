#!/usr/bin/env bash
# The dashboard's benchmark (issue 10): how long the real `perimeter server`
# takes to render its overview (`GET /`) of a fleet of N hosts, on PostgreSQL
# and on SQLite, beside the host page, the approvals page and /changes; the
# size of each page; the server's RSS.
#
# The server runs as a user runs it: the release binary, `--dev-self-signed`,
# an enrolment secret file, on 127.0.0.1 with an ephemeral port. The fleet is
# made by crates/cli/examples/loadgen.rs with `--minutes 0`: N agents enrol
# and send one full report each (100 listeners, 75 of them beyond loopback and
# none approved, and 5 findings; see its header), and nothing more. The hosts
# are then spread over three environments by their id's last digit
# (production, staging, development, a sixteenth in none), written straight
# into the agents table as an administrator's `server agents` would set them
# one by one (BENCH_ENVIRONMENTS=0 leaves them all in none). PostgreSQL is a
# throwaway cluster this script makes (initdb, the server on a Unix socket in
# the work directory, no TCP), its default settings, a fresh database per run.
#
# A viewer account is added with `perimeter server user add` and signed in
# with curl as a browser signs in (GET /login for the form's token and its
# cookie, POST /login for the session cookie). Then each page is fetched
# RUNS times one after the other, each over a new connection, and curl's
# `time_total` is kept: the overview's first view (the server's first since
# it started) is reported on its own, as `overview-first`, then RUNS more.
# The pages are timed on a server restarted once the fleet is stored, as a
# server of a big fleet starts, and only once it has warmed its caches (the
# overview's judgements, then /trends' counts, in batches at start: the
# log's "overview warmed" and "trends warmed" lines, whose times are
# reported as `warm-up`). Median, p90 and p99 of the views.
# curl skips the certificate's verification (-k): the server is the one this
# script started on 127.0.0.1, and nothing leaves loopback (--noproxy '*'
# so no proxy setting can send a request elsewhere).
#
# Usage: bench/dashboard.sh [RUNS]          (as root: postgres runs as its
#                                            account; RUNS defaults to 10)
# Environment: BENCH_BACKENDS (default "postgres sqlite"), BENCH_AGENTS
# (default 10000), BENCH_PAGES (default "overview host approvals changes
# trends"),
# BENCH_ENVIRONMENTS (default 1), BENCH_MAX_TIME (curl's limit per request,
# seconds, default 300), BENCH_OUT (keep the raw results there),
# PERIMETER_BIN and LOADGEN_BIN (already built binaries; otherwise
# `cargo build --release -p perimeter-cli --bin perimeter --examples`).
set -euo pipefail

RUNS=${1:-10}
if ! [[ "$RUNS" =~ ^[0-9]+$ ]] || [ "$RUNS" -lt 1 ]; then
    echo "dashboard.sh: RUNS must be a number, at least 1" >&2
    exit 2
fi
BACKENDS=${BENCH_BACKENDS:-postgres sqlite}
AGENTS=${BENCH_AGENTS:-10000}
PAGES=${BENCH_PAGES:-overview host approvals changes trends}
ENVIRONMENTS=${BENCH_ENVIRONMENTS:-1}
MAX_TIME=${BENCH_MAX_TIME:-300}
if ! [[ "$AGENTS" =~ ^[0-9]+$ ]] || [ "$AGENTS" -lt 1 ]; then
    echo "dashboard.sh: BENCH_AGENTS must be a number, at least 1" >&2
    exit 2
fi

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)

if [ "$(id -u)" -ne 0 ]; then
    echo "dashboard.sh: run as root (PostgreSQL runs under its own account)" >&2
    exit 2
fi
PG_BIN=
case " $BACKENDS " in
*" postgres "*)
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$PG_BIN" ] || ! id postgres >/dev/null 2>&1; then
        echo "dashboard.sh: PostgreSQL's server programs are missing (apt-get install postgresql)" >&2
        exit 2
    fi
    ;;
esac
for tool in sqlite3 psql python3 curl; do
    if ! command -v "$tool" >/dev/null; then
        echo "dashboard.sh: $tool is missing" >&2
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

WORK=$(mktemp -d /tmp/perimeter-bench-dashboard.XXXXXX)
chmod 755 "$WORK"
SERVER_PID=
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
PASSWORD_FILE="$WORK/password"
# No newline: curl sends the file as it is.
printf '%s' "bench-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')" >"$PASSWORD_FILE"
chmod 600 "$PASSWORD_FILE"

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

# The spread over environments, by the id's last character (hex).
ENV_SQL="UPDATE fleet_agents SET environment = CASE \
WHEN substr(id, length(id), 1) IN ('0','1','2','3','4','5','6','7') THEN 'production' \
WHEN substr(id, length(id), 1) IN ('8','9','a','b') THEN 'staging' \
WHEN substr(id, length(id), 1) IN ('c','d','e') THEN 'development' \
ELSE NULL END"

# Runs SQL on the run's database; prints the rows, one a line.
sql() {
    if [ "$BENCH_DB_KIND" = sqlite ]; then
        sqlite3 -cmd ".timeout 10000" "$BENCH_DB" "$1"
    else
        psql -X -A -t -q -v ON_ERROR_STOP=1 -h "$WORK/pg" -p 5432 -U postgres -d "$BENCH_DB" -c "$1"
    fi
}

# curl as this benchmark uses it: loopback only, the server's own
# self-signed certificate.
fetch() {
    curl --noproxy '*' -k -s --max-time "$MAX_TIME" "$@"
}

# Starts the server on the run's database (in the background, SERVER_PID),
# its log at info level in DIR/server.err; sets URL and FINGERPRINT.
start_server() {
    local dir=$1 database=$2
    NO_COLOR=1 RUST_LOG=info "$PERIMETER" server --database "$database" --listen 127.0.0.1:0 --dev-self-signed \
        --enrol-secret-file "$SECRET" >"$dir/server.out" 2>"$dir/server.err" &
    SERVER_PID=$!
    URL= FINGERPRINT=
    for _ in $(seq 1 300); do
        URL=$(sed -n 's/^perimeter server: \(https:[^ ]*\) .*/\1/p' "$dir/server.out")
        FINGERPRINT=$(sed -n 's/^certificate fingerprint //p' "$dir/server.out")
        [ -n "$URL" ] && [ -n "$FINGERPRINT" ] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "dashboard.sh: the server did not start:" >&2
            cat "$dir/server.err" >&2
            exit 1
        fi
        sleep 0.1
    done
    if [ -z "$URL" ]; then
        echo "dashboard.sh: the server printed no address in 30 s" >&2
        exit 1
    fi
    case "$URL" in
    https://127.0.0.1:*) ;;
    *)
        echo "dashboard.sh: the server is not on 127.0.0.1 ($URL)" >&2
        exit 1
        ;;
    esac
}

run_one() {
    local backend=$1 n=$2
    local tag="$backend-$n"
    local dir="$WORK/$tag"
    mkdir -p "$dir"
    local database
    if [ "$backend" = sqlite ]; then
        database="$dir/server.db"
        export BENCH_DB_KIND=sqlite BENCH_DB="$database"
    else
        local name="perimeter_dashboard_$n"
        runuser -u postgres -- "$PG_BIN/createdb" -h "$WORK/pg" -p 5432 "$name"
        database="postgresql://postgres@/$name?host=$WORK/pg&port=5432"
        export BENCH_DB_KIND=postgres BENCH_DB="$name"
    fi
    start_server "$dir" "$database"
    echo "== $tag: server $SERVER_PID at $URL; enrolling $n agents, one full report each" >&2
    local started=$SECONDS
    if ! "$LOADGEN" --server "$URL" --fingerprint "$FINGERPRINT" --secret-file "$SECRET" \
        --agents "$n" --minutes 0 >"$dir/loadgen.json" 2>"$dir/loadgen.err"; then
        echo "dashboard.sh: the load generator failed:" >&2
        tail -n 20 "$dir/loadgen.err" >&2
        exit 1
    fi
    local n_states
    n_states=$(sql "SELECT count(DISTINCT agent_id) FROM fleet_states")
    echo "== $tag: $n_states hosts with a state after $((SECONDS - started)) s" >&2
    if [ "$n_states" -ne "$n" ]; then
        echo "dashboard.sh: $n_states of $n agents stored a state (see $dir/loadgen.err)" >&2
        exit 1
    fi
    if [ "$ENVIRONMENTS" = 1 ]; then
        sql "$ENV_SQL" >/dev/null
    fi
    local host_id
    host_id=$(sql "SELECT id FROM fleet_agents ORDER BY id LIMIT 1")

    # The server as it runs for a fleet this size: started on the stored
    # fleet, which it judges for the overview (and counts for /trends) in
    # batches at start. The views are timed once both are warm; how long
    # that took is in the log.
    stop_server
    local restarted=$SECONDS
    start_server "$dir" "$database"
    local url=$URL
    for _ in $(seq 1 18000); do
        grep -q 'trends warmed' "$dir/server.err" && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "dashboard.sh: the server stopped while warming:" >&2
            tail -n 20 "$dir/server.err" >&2
            exit 1
        fi
        sleep 0.1
    done
    if ! grep -q 'trends warmed' "$dir/server.err"; then
        echo "dashboard.sh: the server did not warm up in 30 minutes" >&2
        exit 1
    fi
    local warmed
    warmed=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/server.err" |
        sed -n 's/.*\(overview warmed\|trends warmed\) \(hosts=[0-9]*\) elapsed=\([^ ]*\).*/\1: \2 in \3/p' |
        paste -sd ';' -)
    echo "== $tag: restarted; warm after $((SECONDS - restarted)) s ($warmed)" >&2

    USER=${USER:-root} "$PERIMETER" server --database "$database" user add bench --role viewer \
        --password-file "$PASSWORD_FILE" >/dev/null
    local jar="$dir/cookies"
    local token
    token=$(fetch -c "$jar" "$url/login" | sed -n 's/.*name="login_token" value="\([^"]*\)".*/\1/p')
    if [ -z "$token" ]; then
        echo "dashboard.sh: no login_token on /login" >&2
        exit 1
    fi
    local code
    code=$(fetch -b "$jar" -c "$jar" -o /dev/null -w '%{http_code}' \
        --data-urlencode "login_token=$token" --data-urlencode "user=bench" \
        --data-urlencode "password@$PASSWORD_FILE" "$url/login")
    if [ "$code" != 303 ] || ! grep -q perimeter_session "$jar"; then
        echo "dashboard.sh: signing in answered $code, no session" >&2
        exit 1
    fi

    local load_before
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "== $tag: timing $PAGES, $RUNS views each, load $load_before" >&2
    local page path runs out
    for page in $PAGES; do
        case "$page" in
        overview) path=/ ;;
        host) path="/hosts/$host_id" ;;
        approvals) path=/approvals ;;
        changes) path=/changes ;;
        trends) path=/trends ;;
        *)
            echo "dashboard.sh: no page $page (overview host approvals changes trends)" >&2
            exit 2
            ;;
        esac
        runs=$RUNS
        if [ "$page" = overview ]; then
            # The server's first view, apart.
            fetch -b "$jar" -o /dev/null -w '%{http_code} %{time_total} %{size_download}\n' \
                "$url$path" >"$WORK/results/$tag-overview-first.txt"
        fi
        out="$WORK/results/$tag-$page.txt"
        : >"$out"
        for _ in $(seq 1 "$runs"); do
            fetch -b "$jar" -o /dev/null -w '%{http_code} %{time_total} %{size_download}\n' \
                "$url$path" >>"$out" || echo "000 $MAX_TIME 0" >>"$out"
        done
    done
    local load_after rss hwm
    load_after=$(cut -d' ' -f1-3 /proc/loadavg)
    rss=$(sed -n 's/^VmRSS:\s*\([0-9]*\).*/\1/p' "/proc/$SERVER_PID/status")
    hwm=$(sed -n 's/^VmHWM:\s*\([0-9]*\).*/\1/p' "/proc/$SERVER_PID/status")
    printf 'backend=%s\nagents=%s\nload_before=%s\nload_after=%s\nrss_kib=%s\nhwm_kib=%s\nwarmed=%s\n' \
        "$backend" "$n" "$load_before" "$load_after" "$rss" "$hwm" "$warmed" >"$WORK/results/$tag.meta"
    echo "== $tag: load after $load_after, server RSS $((rss / 1024)) MiB (peak $((hwm / 1024)) MiB)" >&2
    stop_server
    if [ "$backend" = postgres ]; then
        runuser -u postgres -- "$PG_BIN/dropdb" -h "$WORK/pg" -p 5432 "$BENCH_DB"
    fi
    rm -rf "$dir"
}

echo "== machine: $(nproc) CPUs, $(uname -r); perimeter $("$PERIMETER" --version)" >&2
for backend in $BACKENDS; do
    run_one "$backend" "$AGENTS"
done

"$PYTHON" - "$WORK/results" <<'EOF'
import glob, math, os, statistics, sys

results = sys.argv[1]
print("| backend | hosts | page | views | HTTP | median s | p90 s | p99 s | max s | page KiB | server RSS MiB (peak) | load avg before → after |")
print("|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
for meta_path in sorted(glob.glob(os.path.join(results, "*.meta"))):
    meta = dict(line.split("=", 1) for line in open(meta_path).read().splitlines())
    tag = os.path.basename(meta_path)[: -len(".meta")]
    rss = f"{int(meta['rss_kib'] or 0) // 1024} ({int(meta['hwm_kib'] or 0) // 1024})"
    load = f"{meta['load_before']} → {meta['load_after']}"
    print(f"| {meta['backend']} | {meta['agents']} | warm-up | | | {meta.get('warmed', '')} | | | | | | |")
    for page in ["overview-first", "overview", "host", "approvals", "changes", "trends"]:
        path = os.path.join(results, f"{tag}-{page}.txt")
        if not os.path.exists(path):
            continue
        rows = [line.split() for line in open(path) if line.strip()]
        times = sorted(float(r[1]) for r in rows)
        codes = ",".join(sorted({r[0] for r in rows}))
        size = max(int(r[2]) for r in rows) / 1024
        p90 = times[max(math.ceil(0.9 * len(times)) - 1, 0)]
        p99 = times[max(math.ceil(0.99 * len(times)) - 1, 0)]
        print(f"| {meta['backend']} | {meta['agents']} | {page} | {len(times)} | {codes} | "
              f"{statistics.median(times):.3f} | {p90:.3f} | {p99:.3f} | {times[-1]:.3f} | {size:.0f} | {rss} | {load} |")
EOF
