"""Small tools for the monitor benchmark (bench/monitor.sh).

Subcommands:
  receiver RECORD KEY_FILE
                            the notify tests' webhook receiver
                            (crates/notify/tests/receivers/http_receiver.py,
                            mode ok, on 127.0.0.1), each record also carrying
                            "received_at": the wall-clock time the POST was read
  open-port ADDRESS PORT    an http.server on ADDRESS:PORT; prints
                            "OPEN <unix time>" once it listens, then serves
  told RECORD ADDRESS PORT SINCE
                            exit 0 when the record holds a POST, read at or
                            after SINCE (unix time), whose alert says
                            ADDRESS:PORT opened; 1 otherwise
  latencies OPENS RECORD ADDRESS
                            from "PORT UNIX_TIME" lines (when each port was
                            opened) and the receiver's record: per change, the
                            first POST whose alert says that port opened, and
                            the latency; then count, median, mean and worst
  count-probes NS_TABLE COUNTER OUT SECONDS
                            every second for SECONDS, the nftables named
                            counter's packets, "MONOTONIC PACKETS" a line
  sample-proc PID INTERVAL OUT
                            every INTERVAL seconds until PID exits, from
                            /proc/PID: "MONOTONIC VmRSS_kB VmHWM_kB
                            UTIME_STIME_TICKS" a line
  rate-summary OUT LIMIT    from count-probes' output: probes, the seconds
                            they were sent in, the mean rate over those, the busiest sampled second and how many
                            seconds went over LIMIT
  proc-summary OUT          from sample-proc's output: peak VmRSS and VmHWM,
                            the RSS at the start and the end, and mean CPU %

Only Debian's /usr/bin/python3 and its standard library.
"""

import functools
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECEIVERS = os.path.join(REPO, "crates", "notify", "tests", "receivers")


def receiver(record_path, key_file):
    # The tests' receiver as it is (its signature check included), with the
    # arrival time added to each record: its `record` function is looked up
    # by name when a request is handled, so replacing it here is enough.
    sys.path.insert(0, RECEIVERS)
    import http_receiver

    original = http_receiver.record

    def record_with_time(path, entry):
        entry = dict(entry, received_at=time.time())
        original(path, entry)

    http_receiver.record = record_with_time
    sys.argv = ["http_receiver.py", "--mode", "ok", "--record", record_path, "--key-file", key_file]
    return http_receiver.main()


def open_port(address, port):
    directory = tempfile.mkdtemp(prefix="pmon-www.")
    handler = functools.partial(QuietHandler, directory=directory)
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    # The constructor binds and listens: from here on a SYN is answered.
    server = http.server.ThreadingHTTPServer((address, int(port)), handler)
    print(f"OPEN {time.time():.6f}", flush=True)
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_):
        pass


def opened_subjects(entry):
    """The subjects of the "port-opened" changes of one recorded POST."""
    try:
        alert = json.loads(entry.get("body", ""))
    except ValueError:
        return set()
    return {
        change.get("subject")
        for change in alert.get("changes", [])
        if change.get("kind") == "port-opened" and change.get("state", "new") == "new"
    }


def read_posts(record_path):
    posts = []
    try:
        with open(record_path, encoding="utf-8") as record:
            for line in record:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("method") == "POST" and "received_at" in entry:
                    posts.append(entry)
    except FileNotFoundError:
        pass
    posts.sort(key=lambda e: e["received_at"])
    return posts


def told(record_path, address, port, since):
    subject = f"{address}:{port}"
    since = float(since)
    found = any(e["received_at"] >= since and subject in opened_subjects(e) for e in read_posts(record_path))
    return 0 if found else 1


def latencies(opens_path, record_path, address):
    posts = read_posts(record_path)
    bad_signatures = sum(1 for e in posts if not e.get("signature_valid"))
    values = []
    missed = 0
    with open(opens_path) as opens:
        for n, line in enumerate(opens, 1):
            fields = line.split()
            if len(fields) != 2:
                continue
            port, opened = fields[0], float(fields[1])
            subject = f"{address}:{port}"
            told = next(
                (e["received_at"] for e in posts if e["received_at"] >= opened and subject in opened_subjects(e)),
                None,
            )
            if told is None:
                missed += 1
                print(f"change {n}: port {port} opened at {opened:.3f}, never told")
            else:
                values.append(told - opened)
                print(f"change {n}: port {port} opened at {opened:.3f}, told after {told - opened:.2f} s")
    if values:
        print(
            f"SUMMARY changes {len(values) + missed} told {len(values)} missed {missed} "
            f"median {statistics.median(values):.2f} mean {statistics.mean(values):.2f} "
            f"min {min(values):.2f} worst {max(values):.2f} posts {len(posts)} bad_signatures {bad_signatures}"
        )
    else:
        print(f"SUMMARY changes {missed} told 0 missed {missed} posts {len(posts)} bad_signatures {bad_signatures}")
    return 0


def nft_packets(table, counter):
    family, name = table.split(":", 1)
    out = subprocess.run(
        ["nft", "-j", "list", "counter", family, name, counter],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for item in json.loads(out).get("nftables", []):
        if "counter" in item:
            return int(item["counter"]["packets"])
    raise RuntimeError("no counter in nft's answer")


def count_probes(table, counter, out_path, seconds):
    start = time.monotonic()
    with open(out_path, "w") as out:
        for tick in range(int(seconds) + 1):
            delay = start + tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            packets = nft_packets(table, counter)
            out.write(f"{time.monotonic():.6f} {packets}\n")
            out.flush()
    return 0


def read_proc(pid):
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    rss = int(fields["VmRSS"].split()[0])
    hwm = int(fields["VmHWM"].split()[0])
    with open(f"/proc/{pid}/stat") as stat:
        # The command name is in parentheses and may hold spaces: split after it.
        rest = stat.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5) (utime, stime), counted from field 3 here.
    ticks = int(rest[11]) + int(rest[12])
    return rss, hwm, ticks


def sample_proc(pid, interval, out_path):
    interval = float(interval)
    start = time.monotonic()
    tick = 0
    with open(out_path, "w") as out:
        while True:
            try:
                rss, hwm, ticks = read_proc(pid)
            except (FileNotFoundError, ProcessLookupError, KeyError):
                break
            out.write(f"{time.monotonic():.6f} {rss} {hwm} {ticks}\n")
            out.flush()
            tick += 1
            delay = start + tick * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    return 0


def read_rows(path):
    rows = []
    with open(path) as lines:
        for line in lines:
            fields = line.split()
            if fields:
                rows.append([float(fields[0])] + [int(f) for f in fields[1:]])
    return rows


def rate_summary(path, limit):
    limit = float(limit)
    rows = read_rows(path)
    if len(rows) < 2:
        print("SUMMARY samples 0")
        return 1
    deltas = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(rows, rows[1:])]
    # The first and last seconds hold the scan's start and stop: counted in
    # the total, and checked against the ceiling like every other second.
    busiest_count = max(d[1] for d in deltas)
    busiest_rate = max(d[1] / d[0] for d in deltas if d[0] > 0)
    over = sum(1 for d in deltas if d[1] > limit)
    total = rows[-1][1] - rows[0][1]
    # The mean over the seconds the scan sent in: from the sample before the
    # first probe to the one after the last.
    active = [i for i, d in enumerate(deltas) if d[1] > 0]
    span = rows[active[-1] + 1][0] - rows[active[0]][0] if active else 0.0
    intervals = [d[0] for d in deltas]
    print(
        f"SUMMARY probes {total} active_span {span:.1f} mean_rate {total / span if span else 0:.2f} "
        f"busiest_second {busiest_count} busiest_rate {busiest_rate:.2f} seconds_over_limit {over} "
        f"samples {len(deltas)} interval_min {min(intervals):.3f} interval_max {max(intervals):.3f}"
    )
    return 0


def proc_summary(path):
    rows = read_rows(path)
    if len(rows) < 2:
        print("SUMMARY samples 0")
        return 1
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    span = rows[-1][0] - rows[0][0]
    cpu_seconds = (rows[-1][3] - rows[0][3]) / ticks_per_second
    # CPU % per sampling interval, for the busiest one.
    busiest = max(
        (b[3] - a[3]) / ticks_per_second / (b[0] - a[0]) * 100 for a, b in zip(rows, rows[1:]) if b[0] > a[0]
    )
    print(
        f"SUMMARY samples {len(rows)} span {span:.1f} rss_start_kb {rows[0][1]} rss_end_kb {rows[-1][1]} "
        f"rss_peak_kb {max(r[1] for r in rows)} hwm_kb {max(r[2] for r in rows)} "
        f"cpu_seconds {cpu_seconds:.2f} cpu_mean_pct {cpu_seconds / span * 100:.2f} cpu_busiest_interval_pct {busiest:.1f}"
    )
    return 0


def main():
    commands = {
        "receiver": receiver,
        "open-port": open_port,
        "told": told,
        "latencies": latencies,
        "count-probes": count_probes,
        "sample-proc": sample_proc,
        "rate-summary": rate_summary,
        "proc-summary": proc_summary,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
