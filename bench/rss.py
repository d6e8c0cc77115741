#!/usr/bin/env python3
"""What cphub's resident memory is made of, under a heartbeat flood and at the design rate.

Starts the release cphub on a fresh SQLite file with the defaults (what the README's run
command starts: no allocator settings), then
  1. idle, after start-up;
  2. under a flood: wrk sends heartbeats of --phones phones as fast as it can for
     --duration seconds (what `bench/run` measures);
  3. at the design rate: `cphub simulate --load` plays the same fleet, one heartbeat per
     phone every 5 s, open loop, for --duration seconds (heartbeats only);
and prints VmRSS and its peak after each, split by where the pages are (`/proc/PID/smaps`):
the binary's file pages, the main heap, the anonymous mappings (malloc's per-thread arenas
and large allocations) and the thread stacks, with the thread count. `--env K=V` repeats the
run with an extra environment variable (e.g. MALLOC_ARENA_MAX=2) for comparison.

    python3 bench/rss.py [--phones 100000] [--duration 10] [--env MALLOC_ARENA_MAX=2]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/run.py: its helpers (serve, wrk, metric, …)


def smaps(pid):
    """Resident kB by kind of mapping."""
    kinds = {"binary": 0, "heap": 0, "anon": 0, "stack": 0, "other files": 0}
    kind = None
    binary = os.path.realpath(f"/proc/{pid}/exe")
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                path = fields[5] if len(fields) > 5 else ""
                if path == binary:
                    kind = "binary"
                elif path == "[heap]":
                    kind = "heap"
                elif path.startswith("[stack"):
                    kind = "stack"
                elif path.startswith("/"):
                    kind = "other files"
                else:
                    kind = "anon"  # arenas, thread stacks (unnamed), mmap'd allocations
            elif fields[0] == "Rss:":
                kinds[kind] += int(fields[1])
    return {k: v / 1024 for k, v in kinds.items()}


def status(pid):
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            values[key] = rest.split()[0] if rest.split() else ""
    return {"rss": int(values["VmRSS"]) / 1024, "hwm": int(values["VmHWM"]) / 1024,
            "threads": int(values["Threads"])}


def snapshot(name, pid):
    s, m = status(pid), smaps(pid)
    parts = ", ".join(f"{k} {v:.1f}" for k, v in m.items())
    print(f"| {name} | {s['rss']:.1f} | {s['hwm']:.1f} | {s['threads']} | {parts} |", flush=True)


def design_rate(args, base):
    subprocess.run(
        [run.RELEASE / "cphub", "simulate", "--load", "--cphub", base,
         "--phones", str(args.phones), "--warmup-secs", "0",
         "--window-secs", str(args.duration), "--json"],
        check=True, stdout=subprocess.DEVNULL)


def measure(args, extra_env):
    os.environ.pop("MALLOC_ARENA_MAX", None)
    os.environ.update(extra_env)
    label = " ".join(f"{k}={v}" for k, v in extra_env.items()) or "defaults"
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "cphub.log", "w") as log:
        proc, base = run.serve(f"sqlite://{tmp}/rss.db", log)
        try:
            print(f"\n{label}, {args.phones:,} phones\n")
            print("| after | VmRSS MB | peak MB | threads | resident MB by mapping |")
            print("|---|---:|---:|---:|---|")
            time.sleep(1)
            snapshot("start-up", proc.pid)
            if not args.skip_design_rate:
                design_rate(args, base)
                time.sleep(2.5)
                snapshot(f"{args.duration} s at the design rate "
                         f"({args.phones // 5:,} heartbeats/s)", proc.pid)
            flood = run.wrk(args, "heartbeat.lua", f"{base}{run.HEARTBEAT_PATH}",
                            {"BENCH_PHONES": str(args.phones)})
            time.sleep(2.5)  # two flush intervals
            snapshot(f"{args.duration} s of flood ({flood['rps']:,.0f} heartbeats/s)",
                     proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phones", type=int, default=100_000)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--connections", type=int, default=32, help="wrk connections")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="also measure with this environment variable set")
    p.add_argument("--skip-design-rate", action="store_true")
    args = p.parse_args()
    measure(args, {})
    for pair in args.env:
        key, _, value = pair.partition("=")
        measure(args, {key: value})


if __name__ == "__main__":
    main()
