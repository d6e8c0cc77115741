#!/usr/bin/env python3
"""Two cphub builds on the heartbeat route alone, closed loop, alternated.

A change that saves CPU on every request (the allocator, the log span) moves the capacity
windows only through noise of its own size, so it is first compared where nothing else
runs: each round serves a fresh SQLite file with one build, then with the other, and wrk
sends `bench/heartbeat.lua` for --duration seconds (bench/run.py's `serve` and `wrk`, the
same settings as its heartbeat figure). Alternating cancels the machine's drift; the
medians are what docs/benchmarks.md quotes.

    python3 bench/heartbeat_ab.py --before /tmp/cphub-old --after target/release/cphub \\
        [--rounds 4] [--duration 15]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/run.py: serve, wrk


def one_run(binary, args):
    """Requests a second of one wrk run against `binary` on a fresh database."""
    with tempfile.TemporaryDirectory() as d:
        with open(f"{d}/log", "w") as log:
            proc, base = run.serve(f"sqlite://{d}/db.sqlite?mode=rwc", log, binary)
            try:
                result = run.wrk(args, "heartbeat.lua", f"{base}{run.HEARTBEAT_PATH}")
            finally:
                proc.terminate()
                proc.wait()
    return round(result["rps"])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, type=Path, help="the baseline build")
    p.add_argument("--after", required=True, type=Path, help="the build compared to it")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--connections", type=int, default=32, help="wrk connections")
    args = p.parse_args()
    for binary in (args.before, args.after):
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"heartbeat_ab: {binary} is not an executable")

    rates = {"before": [], "after": []}
    for r in range(1, args.rounds + 1):
        for name in rates:
            rps = one_run(getattr(args, name), args)
            rates[name].append(rps)
            print(f"round {r}: {name} {rps:,} heartbeats/s", flush=True)
    before, after = (statistics.median(rates[k]) for k in ("before", "after"))
    ahead = sum(a > b for a, b in zip(rates["after"], rates["before"]))
    print(f"median before {before:,.0f}, after {after:,.0f}: {after / before:.2f}x, "
          f"after ahead in {ahead} of {args.rounds} rounds")
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
