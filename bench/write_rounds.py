#!/usr/bin/env python3
"""Enter/quit events or sign checks alone, closed loop (wrk, bench/events.lua or
bench/sign_check.lua), and what each writer round and each request costs: requests per
round, wall time per round, the CPU of each busy cphub thread per round and per request,
how often each thread went to sleep per round (voluntary context switches: a hand-off
between the async writer and sqlx's SQLite thread is one), how busy the whole machine was,
bytes written per round, and on PostgreSQL the server's CPU and WAL per round.

bench/run.py's events and sign-check figures are one number each, requests a second at 32
connections; this says what bounds them. A closed-loop load of C connections keeps about
C/2 requests in each round (half wait for the round being committed while the other half
are answered), so a series over C separates a round's fixed cost from its cost per request.
--webhook turns billing on, as an operator would: one webhook endpoint for every event
type, answered 204 at once by examples/bench_ceiling's sink, and the report adds the
deliveries a second and what was still pending at the end. A fresh database per run. Sign checks use tickets minted beforehand (examples/bench_prep,
--tickets of them), each presented once; --duration is then 3 s unless given, so the
tickets outlast the load.

    python3 bench/write_rounds.py --backend sqlite --connections 8,32,128
    python3 bench/write_rounds.py --backend sqlite --path sign-checks
    python3 bench/write_rounds.py --backend postgres CPHUB__DATABASE__WRITERS=1
    python3 bench/write_rounds.py --backend sqlite --webhook
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
    """{tid: (name, CPU seconds, voluntary context switches)} of every thread of `pid`."""
    return {task.rsplit("/", 1)[1]: (*stat(f"{task}/stat"), sleeps(f"{task}/status"))
            for task in glob.glob(f"/proc/{pid}/task/*")}


def sleeps(path):
    """A thread's voluntary context switches: each time it waited for something."""
    line = next(line for line in open(path) if line.startswith("voluntary_ctxt_switches"))
    return int(line.split()[1])


def machine_ticks():
    """(idle, total) clock ticks of all CPUs since boot (/proc/stat; iowait counts as idle)."""
    fields = [int(f) for f in open("/proc/stat").readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)


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


# What each path sends and which of cphub's counters counts its requests.
PATHS = {
    "events": {"one": "event", "many": "events", "counter": ("cphub_events_total",)},
    "sign-checks": {"one": "check", "many": "checks",
                    "counter": ("cphub_sign_checks_total", 'result="ok"')},
}


def sample(pid, base, url, path):
    """The counters a run is the difference of; the database's own where it has them."""
    counters = {
        "threads": thread_cpu(pid),
        "machine": machine_ticks(),
        "requests": run.metric(base, *PATHS[path]["counter"]),
        "rounds": run.metric(base, "cphub_write_rounds_total"),
        "delivered": run.metric(base, "cphub_webhook_deliveries_total", 'result="delivered"'),
        "undelivered_s": run.metric(base, "cphub_webhook_oldest_undelivered_seconds"),
    }
    if url.startswith("postgres"):
        counters.update(pg_cpu=postgres_cpu(), wal=wal_bytes(url))
    else:  # the database file and its log are cphub's own writes
        counters.update(written=written(pid))
    return counters


def load(args, base):
    """Sends the path's requests for --duration seconds; wrk's result."""
    wrk_args = argparse.Namespace(threads=2, connections=args.c, duration=args.duration)
    if args.path == "events":
        return run.wrk(wrk_args, "events.lua", f"{base}/cph/events",
                       {"BENCH_RUN": secrets.token_hex(3)})
    return run.wrk(wrk_args, "sign_check.lua", f"{base}/cph/sign-check",
                   {"BENCH_SIGN_BODIES": str(args.bodies)})


def one_run(args, url):
    with open(run.OUT / "cphub-write-rounds.log", "w") as logfile:
        proc, base = run.serve(url, logfile)
        try:
            if args.path == "sign-checks":
                args.bodies = run.OUT / "write-rounds-bodies.jsonl"
                run.mint_tickets(base, args.tickets, args.bodies)
            if args.event_days and url.startswith("postgres"):
                event_days(url, args.event_days)
            before = sample(proc.pid, base, url, args.path)
            result = load(args, base)
            after = sample(proc.pid, base, url, args.path)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    report(args, result, before, after)


def event_days(url, days):
    """Gives the event log the day partitions a book kept `days` days has (retention off
    keeps every day's). Made ahead of today, as the new book has no past days to make:
    what a round pays for them is the same, they are empty either way."""
    subprocess.run(["psql", url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c",
                    f"SELECT session_events_maintain(now(), {days}, '-infinity'); "
                    "ANALYZE session_events"],
                   check=True, stdout=subprocess.DEVNULL)


def report(args, result, before, after):
    one, many = PATHS[args.path]["one"], PATHS[args.path]["many"]
    rounds = after["rounds"] - before["rounds"]
    requests = after["requests"] - before["requests"]
    per = lambda key: (after[key] - before[key]) / rounds
    idle, total = (a - b for a, b in zip(after["machine"], before["machine"]))
    # From cphub's count: wrk's includes the identical retries past the last ticket.
    rate = requests / args.duration
    print(f"c{args.c}: {rate:,.0f} {many}/s, p50 {result['p50_us'] / 1000:.2f} ms, "
          f"p99 {result['p99_us'] / 1000:.2f} ms; {requests / rounds:.1f} {many} a round, "
          f"{1000 * args.duration / rounds:.2f} ms a round (wall); "
          f"the machine {100 * (1 - idle / total):.0f} % busy")
    if args.path == "sign-checks" and requests >= args.tickets:
        print("  every ticket was used before the end: raise --tickets")
    if args.webhook:
        delivered = after["delivered"] - before["delivered"]
        print(f"  webhooks: {delivered / args.duration:,.0f} deliveries/s; the oldest "
              f"undelivered event {after['undelivered_s']:.1f} s old at the end")
    if "written" in after:
        print(f"  {per('written') / 1024:.0f} KiB written to disk a round")
    else:
        print(f"  postgres: {1000 * per('pg_cpu'):.2f} ms CPU a round, "
              f"WAL {per('wal') / 1024:.0f} KiB a round")
    # {tid: (name, CPU seconds, sleeps)} over the run; a thread started meanwhile from 0.
    threads = {tid: (name, cpu - before["threads"].get(tid, ("", 0.0, 0))[1],
                     slept - before["threads"].get(tid, ("", 0.0, 0))[2])
               for tid, (name, cpu, slept) in after["threads"].items()}
    total = sum(cpu for _, cpu, _ in threads.values())
    print(f"  cphub: {1e6 * total / requests:.1f} µs CPU per {one}")
    for name, cpu, slept in sorted(threads.values(), key=lambda t: t[1], reverse=True):
        if cpu >= 0.01 * args.duration:  # 1 % of a core or more
            print(f"  {name:<16} {cpu:5.2f} s CPU, {1000 * cpu / rounds:.3f} ms a round, "
                  f"{1e6 * cpu / requests:.1f} µs per {one}, "
                  f"slept {slept / rounds:.2f} times a round")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--connections", default="32", help="comma-separated wrk connections")
    p.add_argument("--path", choices=list(PATHS), default="events")
    p.add_argument("--duration", type=int,
                   help="seconds of load per run (10; 3 for sign checks)")
    p.add_argument("--tickets", type=int, default=90_000,
                   help="tickets minted before a sign-check run")
    p.add_argument("--webhook", action="store_true",
                   help="billing on: one webhook endpoint, a sink answering 204")
    p.add_argument("--event-days", type=int, default=0,
                   help="PostgreSQL: day partitions of the event log made before the run")
    p.add_argument("settings", nargs="*", help="KEY=VALUE for cphub's environment")
    args = p.parse_args()
    args.duration = args.duration or (3 if args.path == "sign-checks" else 10)
    os.environ.update(dict(s.split("=", 1) for s in args.settings))
    if args.webhook:  # bench/run.py's sink, stopped when this exits
        os.environ[run.ENDPOINTS_VAR] = run.billing_sink()
    runs(args)


def runs(args):
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
