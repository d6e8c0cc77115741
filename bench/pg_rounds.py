#!/usr/bin/env python3
"""Where a PostgreSQL window's transactions spend their time, from the server's own log.

With `log_min_duration_statement = 0` PostgreSQL logs every statement it runs with its
duration, per backend. Grouping each backend's lines from `BEGIN` to `COMMIT` gives every
transaction cphub ran: its wall time (from its `BEGIN` to its `COMMIT`, as the server
logged them, to the millisecond), the server's own time in it (the sum of the logged
durations) and, by difference, the time the server waited for cphub's next statement.
Transactions are named by their first statement (a heartbeat flush by its
`SET LOCAL synchronous_commit`), and each kind is broken down by statement.

`bench/compare.py --pg-statements` switches the logging on for the bench role around each
window and prints this summary of the window's last `window` seconds; alone:

    python3 bench/pg_rounds.py /var/log/postgresql/postgresql-15-main.log --from-line N
"""

import argparse
import collections
import re
from datetime import datetime

LINE = re.compile(
    r"^(\S+ \S+) UTC \[(\d+)\] .*?duration: ([\d.]+) ms  (\w+)(?: [^:]+)?: (.*)$")


def transactions(lines):
    """Every complete transaction of the lines: start and end (ms), server time, commit
    time, and its statements (text head, duration)."""
    open_tx, done = {}, []
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        stamp, pid, duration, phase, sql = m.groups()
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp() * 1000
        duration = float(duration)
        if phase == "statement" and sql.startswith("BEGIN"):
            open_tx[pid] = {"start": at - duration, "server": duration, "statements": []}
            continue
        tx = open_tx.get(pid)
        if tx is None:
            continue
        tx["server"] += duration  # parse and bind phases count as the server's time too
        if phase in ("execute", "statement"):
            tx["statements"].append((sql[:50], duration))
        if phase == "statement" and sql.startswith(("COMMIT", "ROLLBACK")):
            tx.update(end=at, commit=duration)
            done.append(tx)
            del open_tx[pid]
    return done


def kind(tx):
    if any("synchronous_commit" in s for s, _ in tx["statements"]):
        return "heartbeat flush"
    return tx["statements"][0][0][:45] if tx["statements"] else "(empty)"


def quantile(values, q):
    return values[min(len(values) - 1, int(q * len(values)))]


def summarise(lines, window_secs):
    """Markdown tables of the transactions that began in the last `window_secs` seconds."""
    txs = transactions(lines)
    if not txs:
        return "no transactions in the log (is log_min_duration_statement on?)\n"
    since = max(tx["end"] for tx in txs) - window_secs * 1000
    groups = collections.defaultdict(list)
    for tx in txs:
        if tx["start"] >= since:
            groups[kind(tx)].append(tx)
    out = ["| transaction (first statement) | count | statements | wall p50 / p99 ms "
           "| server p50 / p99 ms | commit p50 / p99 ms |", "|---|---:|---:|---:|---:|---:|"]
    ordered = sorted(groups.items(), key=lambda g: -len(g[1]))
    for name, group in ordered:
        wall = sorted(tx["end"] - tx["start"] for tx in group)
        server = sorted(tx["server"] for tx in group)
        commit = sorted(tx["commit"] for tx in group)
        statements = sum(len(tx["statements"]) + 1 for tx in group) / len(group)
        out.append(f"| `{name}` | {len(group)} | {statements:.1f} "
                   f"| {quantile(wall, .5):.2f} / {quantile(wall, .99):.2f} "
                   f"| {quantile(server, .5):.2f} / {quantile(server, .99):.2f} "
                   f"| {quantile(commit, .5):.2f} / {quantile(commit, .99):.2f} |")
    out += ["", "| transaction | statement | count | p50 / p99 ms | total ms |",
            "|---|---|---:|---:|---:|"]
    for name, group in ordered:
        by_statement = collections.defaultdict(list)
        for tx in group:
            for sql, duration in tx["statements"]:
                by_statement[sql].append(duration)
        for sql, durations in sorted(by_statement.items(), key=lambda s: -sum(s[1])):
            durations.sort()
            out.append(f"| `{name[:20]}` | `{sql}` | {len(durations)} "
                       f"| {quantile(durations, .5):.2f} / {quantile(durations, .99):.2f} "
                       f"| {sum(durations):.0f} |")
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", help="the cluster's log file")
    p.add_argument("--from-line", type=int, default=0, help="lines of the log to skip")
    p.add_argument("--window", type=int, default=60, help="seconds at the end to summarise")
    args = p.parse_args()
    with open(args.log, errors="replace") as log:
        lines = log.readlines()[args.from_line:]
    print(summarise(lines, args.window), end="")


if __name__ == "__main__":
    main()
