# Summarises bench/server-ingest.sh's results: one JSON document per run (the
# load generator's output with the run's load and the server's peak RSS) into
# a Markdown table of medians per (backend, agents), and the runs one by one.
#
# Usage: summarise.py DIR    (the *.json files server-ingest.sh keeps)
import glob
import json
import os
import statistics
import sys

REPORTS_PER_DAY = 1440  # one report a minute


def phase(doc, name):
    return next(p for p in doc["phases"] if p["phase"] == name)


def hook_values(p):
    values = {}
    for line in (p.get("hook") or "").splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            try:
                values[key] = int(value)
            except ValueError:
                pass
    return values


def run_row(doc):
    full, beat = phase(doc, "full"), phase(doc, "heartbeat")
    enrol = phase(doc, "enrol")
    lat = beat["latency_ms"]
    outcomes = beat["outcomes"]
    n_ok = outcomes.get("ok", 0)
    n_err = sum(v for k, v in outcomes.items() if k != "ok")
    cpu = None
    if full.get("server") and beat.get("server"):
        cpu = (beat["server"]["cpu_s"] - full["server"]["cpu_s"]) / max(beat["scheduled"], 1) * 1000
    size_full, size_beat = hook_values(full), hook_values(beat)
    key = "used_bytes" if doc["backend"] == "sqlite" else "database_bytes"
    growth = None
    if key in size_full and key in size_beat:
        growth = (size_beat[key] - size_full[key]) / max(beat["scheduled"], 1) * REPORTS_PER_DAY
    return {
        "backend": doc["backend"],
        "agents": doc["agents"],
        "run": doc["run"],
        "p50": lat["p50"],
        "p99": lat["p99"],
        "max": lat["max"],
        "lag_p99": beat.get("schedule_lag_ms", {}).get("p99"),
        "counted": lat["n"],
        "errors": n_err,
        "outcomes": outcomes,
        "server_ms_per_report": cpu,
        "server_hwm_mb": doc["server_hwm_kib"] / 1024,
        "enrol_per_s": enrol["per_s"],
        "full_per_s": full["per_s"],
        "full_p99": full["latency_ms"]["p99"],
        "full_body_kb": full.get("mean_body_bytes", 0) / 1024,
        "growth_per_host_day_kb": None if growth is None else growth / 1024,
        "db_after_full_mb": size_full.get(key, 0) / 1e6,
        "states_added": size_beat.get("states", 0) - size_full.get("states", 0),
        "loadgen_cpu_s": beat.get("loadgen", {}).get("cpu_s"),
        "load": f"{doc['load_before']} -> {doc['load_after']}",
    }


def med(rows, key):
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.median(values) if values else float("nan")


def main():
    docs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(sys.argv[1], "*-*-*.json")))]
    rows = [run_row(d) for d in docs if "phases" in d]
    groups = {}
    for r in rows:
        groups.setdefault((r["backend"], r["agents"]), []).append(r)
    print("| backend | agents | runs | p50 ms | p99 ms | max ms | errors | p99 < 100 ms in | server CPU ms/report | server peak RSS MB | full reports/s | growth KB/host/day |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for (backend, n), rs in sorted(groups.items()):
        ok = sum(1 for r in rs if r["p99"] < 100 and r["errors"] == 0)
        print(f"| {backend} | {n:,} | {len(rs)} | {med(rs, 'p50'):.1f} | {med(rs, 'p99'):.1f} | "
              f"{med(rs, 'max'):.0f} | {sum(r['errors'] for r in rs)} | {ok}/{len(rs)} runs | "
              f"{med(rs, 'server_ms_per_report'):.2f} | {med(rs, 'server_hwm_mb'):.1f} | "
              f"{med(rs, 'full_per_s'):.0f} | {med(rs, 'growth_per_host_day_kb'):.0f} |")
    print()
    print("Runs:")
    print()
    print("| backend | agents | run | p50 | p99 | max | sched. lag p99 | errors | CPU ms/report | RSS MB | enrol/s | full/s | full p99 ms | db after full MB | states added | growth KB/host/day | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in sorted(rows, key=lambda r: (r["backend"], r["agents"], r["run"])):
        errors = ", ".join(f"{k} {v}" for k, v in r["outcomes"].items() if k != "ok") or "0"
        g = r["growth_per_host_day_kb"]
        print(f"| {r['backend']} | {r['agents']:,} | {r['run']} | {r['p50']:.1f} | {r['p99']:.1f} | "
              f"{r['max']:.0f} | {r['lag_p99']} | {errors} | {r['server_ms_per_report'] or float('nan'):.2f} | "
              f"{r['server_hwm_mb']:.1f} | {r['enrol_per_s']:.0f} | {r['full_per_s']:.0f} | {r['full_p99']:.0f} | "
              f"{r['db_after_full_mb']:.1f} | {r['states_added']} | {'-' if g is None else f'{g:.0f}'} | {r['load']} |")


if __name__ == "__main__":
    main()
