# Summarises bench/agent-cost.sh: the running agent's samples (CPU, RSS) split
# into audit+report cycles and idle time, and the --once runs.
#
# Usage: agent_summary.py DIR INTERVAL
import datetime
import re
import statistics
import sys

BEFORE_ACK = 10.0  # seconds of a cycle before its acknowledgement
AFTER_ACK = 2.0
SETTLE = 5.0  # seconds after start left out of the idle figure

d = sys.argv[1]
rows = [l.rstrip("\n").split("\t") for l in open(f"{d}/agent-samples.tsv")][1:]
samples = [(float(t), float(c), int(r), int(h), float(w)) for t, c, r, h, w in rows]
acks = []
for line in open(f"{d}/agent.log"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    found = re.search(r"\d{4}-\d\d-\d\dT[\d:.]+Z", line)
    if "report acknowledged" in line and found:
        stamp = found.group(0)
        stamp = stamp.replace("Z", "+00:00")
        # tracing prints microseconds or nanoseconds; keep six digits.
        stamp = re.sub(r"\.(\d{6})\d*", r".\1", stamp)
        acks.append(datetime.datetime.fromisoformat(stamp).timestamp())

windows = [(a - BEFORE_ACK, a + AFTER_ACK) for a in acks]


def in_window(w):
    return any(lo <= w <= hi for lo, hi in windows)


# Idle: consecutive sample pairs both outside every cycle window.
idle_cpu = idle_time = 0.0
for (t0, c0, _, _, w0), (t1, c1, _, _, w1) in zip(samples, samples[1:]):
    if t0 < SETTLE or in_window(w0) or in_window(w1):
        continue
    idle_cpu += c1 - c0
    idle_time += t1 - t0
idle_rate = idle_cpu / idle_time if idle_time else float("nan")

cycles = []
for i, (lo, hi) in enumerate(windows):
    inside = [s for s in samples if lo <= s[4] <= hi]
    before = [s for s in samples if s[4] < lo]
    if not inside:
        continue
    start = before[-1] if before else samples[0]
    end = inside[-1]
    cpu = end[1] - start[1] - idle_rate * (end[4] - start[4])
    cycles.append((i + 1, cpu, max(s[2] for s in inside)))

hwm = samples[-1][3] / 1024
print(f"running agent, --interval {sys.argv[2]}: {len(samples)} samples over {samples[-1][0]:.0f} s, {len(acks)} reports acknowledged")
print(f"idle CPU: {idle_cpu:.2f} s over {idle_time:.0f} s = {100 * idle_rate:.2f} % of one core")
for n, cpu, rss in cycles:
    kind = "enrol + full report" if n == 1 else "delta report"
    print(f"cycle {n} ({kind}): {cpu:.2f} s CPU beyond idle, RSS up to {rss / 1024:.1f} MB")
print(f"peak RSS (VmHWM): {hwm:.1f} MB; RSS at the end {samples[-1][2] / 1024:.1f} MB")
try:
    threads = [l.rstrip("\n").split("\t") for l in open(f"{d}/agent-threads.tsv")]
    print("CPU by thread over the run: " + ", ".join(f"{name} {cpu} s" for name, cpu in threads))
except OSError:
    pass
print()
once = [l.rstrip("\n").split("\t") for l in open(f"{d}/once.tsv")][1:]
for kind in ("full", "delta"):
    rs = [r for r in once if r[0] == kind]
    if not rs:
        continue
    cpu = [float(r[3]) + float(r[4]) for r in rs]
    wall = [float(r[2]) for r in rs]
    rss = [int(r[5]) / 1024 for r in rs]
    print(f"--once {kind}: {len(rs)} runs, CPU median {statistics.median(cpu):.2f} s "
          f"(min {min(cpu):.2f}, max {max(cpu):.2f}), wall median {statistics.median(wall):.2f} s, "
          f"peak RSS median {statistics.median(rss):.1f} MB (max {max(rss):.1f})")
