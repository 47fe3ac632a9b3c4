#!/usr/bin/env bash
# Leased shards (issue 11): the throughput of 1, 2 and 4 `perimeter scanner`
# nodes scanning one job from a `perimeter server` on PostgreSQL, each node
# rate-capped (so the comparison measures the coordination, not this
# machine's CPUs), and what the coordination costs per part.
#
#   perimeter scans submit --shards PARTS -- --top-ports 100 --no-identify \
#       --rate RATE 198.18.16.0/20
#   N x perimeter scanner --once        (N = 1, 2, 4)
#
# The lab: a switch namespace with a bridge; the server's namespace
# (198.18.0.10) with a throwaway PostgreSQL cluster on a Unix socket; four
# node namespaces (198.18.0.11-14); one sink namespace (198.18.0.20) to
# which 198.18.16.0/20 is local (`ip route add local`, the AnyIP of the
# kernel), listening on ports 22 and 80 of every one of its 4,096
# addresses: every other port of the top 100 answers RST. The nodes route
# the /20 through the sink's one address, so no neighbour table fills. No
# default route anywhere; everything is removed on exit.
#
# Per N: the wall time from the job's submission until the N nodes have
# exited (--once: nothing left to scan), probes per second over it, and the
# per-part overhead: the gaps in each node between finishing one part and
# starting its next (the server's lease and finish round trips, the node's
# setup of a scan), from the parts' own timestamps. The merged job must hold
# every (address, port) once and 2 x 4,096 open ports, or the run is refused.
#
# Usage: bench/scan-nodes.sh [RUNS]   (as root; RUNS defaults to 1)
# Environment: PERIMETER_BIN (an already built binary), BENCH_RATE (per-node
# rate, default 3000), BENCH_PARTS (default 16), BENCH_NODES (default
# "1 2 4"), BENCH_DEFAULT=1 (the job a user submits: `--top-ports 100` and
# the target, the default profile with identification and its own rate, no
# cap), BENCH_KEEP=1 keeps the work directory.
set -euo pipefail
source "$(dirname "$0")/scan/lib.sh"

RUNS=${1:-1}
[[ "$RUNS" =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] || die "RUNS must be a positive number"
RATE=${BENCH_RATE:-3000}
PARTS=${BENCH_PARTS:-16}
NODE_COUNTS=${BENCH_NODES:-"1 2 4"}
RANGE=198.18.16.0/20
if [ -n "${BENCH_DEFAULT:-}" ]; then
    SCAN_OPTIONS=(--top-ports 100 "$RANGE")
else
    SCAN_OPTIONS=(--top-ports 100 --no-identify --rate "$RATE" "$RANGE")
fi
N_ADDRESSES=4096
SERVER_ADDR=198.18.0.10
SINK_ADDR=198.18.0.20
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$PG_BIN/initdb" ] || die "PostgreSQL is missing (apt-get install postgresql)"

require_tools
find_perimeter
lab_begin 9

PG_STARTED=0
stop_pg() {
    if [ "$PG_STARTED" = 1 ]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$LAB_WORK/pg/data" -m immediate -w stop \
            >/dev/null 2>&1 || true
    fi
}
trap 'stop_pg; lab_cleanup' EXIT

log "PostgreSQL ($PG_BIN) on a Unix socket in $LAB_WORK/pg"
mkdir -p "$LAB_WORK/pg"
chown postgres: "$LAB_WORK/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$LAB_WORK/pg/data" -A trust -U postgres -E UTF8 \
    --locale=C >"$LAB_WORK/pg/initdb.log" 2>&1
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$LAB_WORK/pg/data" -l "$LAB_WORK/pg/postgres.log" \
    -o "-k $LAB_WORK/pg -c listen_addresses= -p 5432" -w start >/dev/null
PG_STARTED=1
DATABASE="host=$LAB_WORK/pg port=5432 user=postgres dbname=postgres"

lab_host srv "$SERVER_ADDR/15"
lab_host sink "$SINK_ADDR/15"
SINK="$LAB_TAG-sink"
ip -n "$SINK" route add local "$RANGE" dev lo
printf '0.0.0.0 22\n0.0.0.0 80\n' >"$LAB_WORK/listen"
lab_spawn "$SINK" "$LAB_WORK/sink.log" "$PYTHON" "$HELPER" listen "$LAB_WORK/listen"
for i in 1 2 3 4; do
    lab_host "n$i" "198.18.0.1$i/15"
    ip -n "$LAB_TAG-n$i" route add "$RANGE" via "$SINK_ADDR"
done
wait_tcp "$LAB_TAG-n1" 198.18.16.1 80

admin() { "$PERIMETER" server --database "$DATABASE" "$@"; }
printf 'a long enough password\n' >"$LAB_WORK/pw"
admin user add bench --role approver --password-file "$LAB_WORK/pw" >/dev/null
admin token add bench >"$LAB_WORK/person.token" 2>/dev/null
admin token add bench --scanner >"$LAB_WORK/node.token" 2>/dev/null
lab_spawn "$LAB_TAG-srv" "$LAB_WORK/server.log" "$PERIMETER" server --database "$DATABASE" \
    --listen "$SERVER_ADDR:8443" --dev-self-signed
for _ in $(seq 1 100); do
    grep -q '^certificate fingerprint' "$LAB_WORK/server.log" && break
    sleep 0.1
done
FINGERPRINT=$(awk '/^certificate fingerprint/ {print $3}' "$LAB_WORK/server.log")
[ -n "$FINGERPRINT" ] || die "the server did not start: $(cat "$LAB_WORK/server.log")"
wait_tcp "$LAB_TAG-n1" "$SERVER_ADDR" 8443
URL="https://$SERVER_ADDR:8443"
as_person() {
    local action=$1
    shift
    ip netns exec "$LAB_TAG-srv" "$PERIMETER" scans "$action" --server "$URL" \
        --fingerprint "$FINGERPRINT" --token-file "$LAB_WORK/person.token" "$@"
}

echo "machine: $(machine_note)"
echo "job: ${SCAN_OPTIONS[*]}; $PARTS parts, $RANGE x top 100 = $((N_ADDRESSES * 100)) probes"
printf '%-6s %-4s %10s %12s %14s %12s\n' nodes run seconds probes/s "overhead/part" "load"
for run in $(seq 1 "$RUNS"); do
    for n in $NODE_COUNTS; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        start=$(date +%s.%N)
        job=$(as_person submit --shards "$PARTS" --lease 60s --format json -- \
            "${SCAN_OPTIONS[@]}" |
            "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
        pids=()
        for i in $(seq 1 "$n"); do
            ip netns exec "$LAB_TAG-n$i" "$PERIMETER" scanner --server "$URL" \
                --fingerprint "$FINGERPRINT" --token-file "$LAB_WORK/node.token" \
                --node "n$i" --once --poll 1s --allow-targets "$RANGE" \
                2>"$LAB_WORK/node.$n.$run.$i.log" &
            pids+=($!)
            LAB_PIDS+=($!)
        done
        for pid in "${pids[@]}"; do
            wait "$pid" || die "a node failed: $(tail -n 3 "$LAB_WORK"/node."$n"."$run".*.log)"
        done
        end=$(date +%s.%N)
        as_person jobs "$job" --format json >"$LAB_WORK/job.$n.$run.json"
        merged="$LAB_WORK/merged.$n.$run.db"
        as_person merge --job "$job" --db "$merged" >"$LAB_WORK/merge.$n.$run.out" 2>&1 ||
            die "merge failed: $(cat "$LAB_WORK/merge.$n.$run.out")"
        "$PYTHON" - "$LAB_WORK/job.$n.$run.json" "$merged" "$start" "$end" "$n" "$run" "$load" \
            "$N_ADDRESSES" <<'PY'
import json, sqlite3, sys
from datetime import datetime
job_file, db, start, end, n, run, load, n_addresses = sys.argv[1:]
job = json.load(open(job_file))
assert job["complete"], "the job is not complete"
def at(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
gaps, by_node = [], {}
for part in job["parts"]:
    by_node.setdefault(part["node"], []).append((at(part["leased_at"]), at(part["finished_at"])))
for spans in by_node.values():
    spans.sort()
    gaps += [b[0] - a[1] for a, b in zip(spans, spans[1:])]
conn = sqlite3.connect(db)
scan_id = conn.execute("SELECT id FROM scans WHERE options LIKE '%merged_shards%' ORDER BY id DESC LIMIT 1").fetchone()[0]
n_open, n_pairs = conn.execute(
    "SELECT sum(state = 'open'), count(DISTINCT address || ':' || port) FROM port_results WHERE scan_id = ?", (scan_id,)).fetchone()
n_rows = conn.execute("SELECT count(*) FROM port_results WHERE scan_id = ?", (scan_id,)).fetchone()[0]
assert n_rows == n_pairs, f"{n_rows} rows for {n_pairs} pairs: a pair twice"
assert n_open == 2 * int(n_addresses), f"{n_open} open ports, expected {2 * int(n_addresses)}"
seconds = float(end) - float(start)
overhead = sum(gaps) / len(gaps) if gaps else float("nan")
print(f"{n:<6} {run:<4} {seconds:10.1f} {int(n_addresses) * 100 / seconds:12.0f} {overhead * 1000:11.0f} ms {load:>12}")
PY
    done
done
