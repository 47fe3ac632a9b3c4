#!/usr/bin/env bash
# Config parsing at scale (issue 15): the approvals file and perimeter.toml
# are parsed in linear time. Generates an approvals file of N entries and an
# environments file of M environments, and times `perimeter check` (which
# parses both, then audits) inside an empty network namespace, against the
# same command with an empty approvals file and no environments, so the
# difference is the parsing. hyperfine if installed, else a loop.
#
# Usage: bench/config-parse.sh [N_APPROVALS] [N_ENVIRONMENTS]   (as root;
# defaults 100000 and 10000). Environment: PERIMETER_BIN.
set -euo pipefail
N=${1:-100000}
M=${2:-10000}
BIN=${PERIMETER_BIN:-$(dirname "$0")/../target/release/perimeter}
[ -x "$BIN" ] || { echo "build first: cargo build --release (or set PERIMETER_BIN)" >&2; exit 2; }
WORK=$(mktemp -d)
NS=perimeter-bench-parse-$$
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ip netns add "$NS"

python3 - "$WORK" "$N" "$M" <<'PY'
import sys
work, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(f"{work}/approvals.toml", "w") as f:
    f.write("version = 1\n")
    for i in range(n):
        f.write(f'''
[[listener]]
protocol = "tcp"
address = "198.18.{i // 250 % 250}.{i % 250 + 1}"
port = {1 + i % 65000}
exe = "/usr/sbin/app{i}"
user = "app"
approved_by = "bench"
approved_at = 2026-12-01
reason = "generated entry {i}"
''')
with open(f"{work}/perimeter.toml", "w") as f:
    f.write("version = 1\n")
    for i in range(m):
        a, b = divmod(i, 256)
        f.write(f'''
[[environment]]
name = "env{i}"
kind = "dev"
ranges = ["10.{a}.{b}.0/24"]
allow_from = ["198.51.100.0/24"]
''')
open(f"{work}/empty.toml", "w").write("version = 1\n")
open(f"{work}/no-envs.toml", "w").write("version = 1\n")
PY
ls -l "$WORK"/*.toml | awk '{print $5, $9}'

run() { ip netns exec "$NS" "$BIN" check --approvals "$1" --inventory "$2" --no-service-probes >/dev/null 2>&1 || true; }
export -f run
export BIN NS
if command -v hyperfine >/dev/null; then
    hyperfine -N --warmup 1 --runs 5 \
        "ip netns exec $NS $BIN check --approvals $WORK/empty.toml --inventory $WORK/no-envs.toml --no-service-probes" \
        "ip netns exec $NS $BIN check --approvals $WORK/approvals.toml --inventory $WORK/no-envs.toml --no-service-probes" \
        "ip netns exec $NS $BIN check --approvals $WORK/empty.toml --inventory $WORK/perimeter.toml --no-service-probes" -i
else
    for pair in "empty.toml no-envs.toml" "approvals.toml no-envs.toml" "empty.toml perimeter.toml"; do
        set -- $pair
        start=$(date +%s.%N); for _ in 1 2 3 4 5; do run "$WORK/$1" "$WORK/$2"; done; end=$(date +%s.%N)
        echo "$pair: $(echo "($end - $start) / 5" | bc -l | cut -c1-6) s per run"
    done
fi
