#!/usr/bin/env python3
"""Enter/quit events alone, closed loop (wrk, bench/events.lua), and what each writer round
costs: events per round, wall time per round, the CPU of each busy cphub thread per round,
bytes written per round, and on PostgreSQL the server's CPU and WAL per round.

bench/run.py's events figure is one number, events a second at 32 connections; this says
what bounds it. A closed-loop load of C connections keeps about C/2 events in each round
(half wait for the round being committed while the other half are answered), so a series
over C separates a round's fixed cost from its cost per event. A fresh database per run.

    python3 bench/write_rounds.py --backend sqlite --connections 8,32,128
    python3 bench/write_rounds.py --backend postgres CPHUB__DATABASE__WRITERS=1
    BENCH_SERVE_BIN=/tmp/cphub-other python3 bench/write_rounds.py --backend postgres
"""

import argparse
import glob
import os
import secrets
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/run.py: serve, wrk, metric, postgres_database

TICK = os.sysconf("SC_CLK_TCK")


def stat(path):
    """(name, CPU seconds: user + system) from a /proc stat file."""
    text = open(path).read()
    fields = text[text.rindex(")") + 2:].split()
    return text[text.index("(") + 1:text.rindex(")")], (int(fields[11]) + int(fields[12])) / TICK


def thread_cpu(pid):
    """{tid: (name, CPU seconds)} of every thread of `pid`."""
    return {task.rsplit("/", 1)[1]: stat(f"{task}/stat")
            for task in glob.glob(f"/proc/{pid}/task/*")}


def postgres_cpu():
    """CPU seconds of every process named postgres (the server shares this machine)."""
    total = 0.0
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            name, cpu = stat(path)
        except OSError:  # the process ended meanwhile
            continue
        total += cpu if name == "postgres" else 0.0
    return total


def wal_bytes(url):
    out = subprocess.run(["psql", url, "-XAtc", "SELECT wal_bytes FROM pg_stat_wal"],
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip())


def written(pid):
    io = dict(line.split(": ") for line in open(f"/proc/{pid}/io").read().splitlines())
    return int(io["write_bytes"])


def sample(pid, base, url):
    """The counters a run is the difference of; the database's own where it has them."""
    counters = {
        "threads": thread_cpu(pid),
        "events": run.metric(base, "cphub_events_total"),
        "rounds": run.metric(base, "cphub_write_rounds_total"),
    }
    if url.startswith("postgres"):
        counters.update(pg_cpu=postgres_cpu(), wal=wal_bytes(url))
    else:  # the database file and its log are cphub's own writes
        counters.update(written=written(pid))
    return counters


def one_run(args, url):
    wrk_args = argparse.Namespace(threads=2, connections=args.c, duration=args.duration)
    with open(run.OUT / "cphub-write-rounds.log", "w") as logfile:
        proc, base = run.serve(url, logfile)
        try:
            before = sample(proc.pid, base, url)
            result = run.wrk(wrk_args, "events.lua", f"{base}/cph/events",
                             {"BENCH_RUN": secrets.token_hex(3)})
            after = sample(proc.pid, base, url)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    rounds = after["rounds"] - before["rounds"]
    per = lambda key: (after[key] - before[key]) / rounds
    print(f"c{args.c}: {result['rps']:,.0f} events/s, p50 {result['p50_us'] / 1000:.2f} ms, "
          f"p99 {result['p99_us'] / 1000:.2f} ms; {per('events'):.1f} events a round, "
          f"{1000 * args.duration / rounds:.2f} ms a round (wall)")
    if "written" in after:
        print(f"  {per('written') / 1024:.0f} KiB written to disk a round")
    else:
        print(f"  postgres: {1000 * per('pg_cpu'):.2f} ms CPU a round, "
              f"WAL {per('wal') / 1024:.0f} KiB a round")
    threads = after["threads"]
    spent = {tid: cpu - before["threads"].get(tid, ("", 0.0))[1]
             for tid, (_, cpu) in threads.items()}
    for tid in sorted(spent, key=spent.get, reverse=True):
        if spent[tid] >= 0.01 * args.duration:  # 1 % of a core or more
            print(f"  {threads[tid][0]:<16} {spent[tid]:5.2f} s CPU, "
                  f"{1000 * spent[tid] / rounds:.3f} ms a round")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--connections", default="32", help="comma-separated wrk connections")
    p.add_argument("--duration", type=int, default=10, help="seconds of load per run")
    p.add_argument("settings", nargs="*", help="KEY=VALUE for cphub's environment")
    args = p.parse_args()
    os.environ.update(dict(s.split("=", 1) for s in args.settings))
    for c in (int(c) for c in args.connections.split(",")):
        args.c = c
        if args.backend == "sqlite":
            for f in run.OUT.glob("write-rounds.db*"):
                f.unlink()
            one_run(args, f"sqlite://{run.OUT / 'write-rounds.db'}")
            continue
        dbname, url = run.postgres_database()
        try:
            one_run(args, url)
        finally:
            run.postgres_admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
