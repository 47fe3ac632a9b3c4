"""Prints the inventory benchmark's figures as Markdown tables."""

import json
import os
import statistics
import sys

work, perimeter, machine, load_before, load_after, n_builds = sys.argv[1:7]
runs, sweep_runs, rss_runs = sys.argv[7:10]


def load(name):
    path = os.path.join(work, name)
    return json.load(open(path))["results"] if os.path.exists(path) else []


rss = {}
for line in open(os.path.join(work, "rss.tsv")):
    name, kib = line.rstrip("\n").split("\t")
    if kib.strip().isdigit():
        rss.setdefault(name, []).append(int(kib))


def table(results, baseline=None):
    base = None
    if baseline:
        base = next((statistics.median(r["times"]) for r in results if r["command"] == baseline), None)
    print(f"| {'command':<38} | {'median s':>8} | {'mean ± sd s':>13} | {'min s':>6} | {'speed-up':>8} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 40}|{'-' * 9}:|{'-' * 14}:|{'-' * 7}:|{'-' * 9}:|{'-' * 12}:|")
    for r in results:
        median = statistics.median(r["times"])
        kib = rss.get(r["command"], [])
        speedup = f"{base / median:>7.1f}x" if base else f"{'':>8}"
        peak = f"{statistics.median(kib) / 1024:>11.1f}" if kib else f"{'-':>11}"
        print(f"| {r['command']:<38} | {median:>8.2f} | {r['mean']:>6.2f} ± {r['stddev']:<4.2f} | "
              f"{min(r['times']):>6.2f} | {speedup} | {peak} |")


print()
print(f"machine: {machine}")
print(f"load average before {load_before}, after {load_after}; {n_builds} cargo/rustc processes at start")
print(f"perimeter: {perimeter}")
default = os.path.join(work, "perimeter-auto.json")
if os.path.exists(default):
    stats = json.load(open(default))["stats"]
    measured = ", ".join(f"{name} {mb_s / 1000:.1f} GB/s" for name, mb_s in stats.get("checksum_calibration", []))
    print(f"default hashing path: {stats['checksum_backend']}"
          + (f" (measured at start, one core: {measured})" if measured else ""))
print()
print("Checksums of every package file, warm page cache (speed-up = dpkg --verify median / median):")
print()
table(load("warm.json"), "dpkg --verify")
cold = load("cold.json")
if cold:
    print()
    print("Cold page cache (caches dropped before each run):")
    print()
    table(cold, "dpkg --verify (cold)")
print()
print("perimeter inventory --verify by worker count:")
print()
table(load("workers.json"))
print()
print("Without --verify (package list, index, sweep of PATH, /usr/local, /opt, /srv, units, conffiles):")
print()
table(load("sweep.json"))
phases = [json.loads(line) for line in open(os.path.join(work, "sweep-phases.jsonl"))]
print()
print("Phases of that command, median ms over", len(phases), "runs:",
      ", ".join(f"{k} {statistics.median(p.get(k, 0) for p in phases):.0f}" for k in phases[0]))
print()
print(f"runs: {runs} timed runs each for the checksums (after 1 warm-up), {sweep_runs} for the sweep, "
      f"{rss_runs} each for RSS")
