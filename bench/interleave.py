#!/usr/bin/env python3
"""Do enter/quit events wait behind the heartbeat flush? Before/after in one run.

Starts the release cphub on a fresh SQLite file twice: once with the heartbeat flush written
as one transaction per flush (`heartbeats.flush_chunk` larger than the fleet: how every
flush was written before chunking), once with the default chunk. Each time wrk floods
heartbeats of --phones phones (so every flush writes up to the whole fleet) while a second
wrk plays enter/quit events on a few connections, and the events' latency is printed.
Closed loop on purpose for the events: a request stalled behind a flush shows its whole
wait. Same binary, same machine, back to back.

    python3 bench/interleave.py [--phones 100000] [--duration 10]
"""

import argparse
import os
import secrets
import sys
import tempfile
import threading
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/run.py: its helpers (serve, wrk)


def mixed(args, chunk):
    os.environ["CPHUB__HEARTBEATS__FLUSH_CHUNK"] = str(chunk)
    flood = argparse.Namespace(threads=2, connections=32, duration=args.duration)
    events = argparse.Namespace(threads=1, connections=args.event_connections,
                                duration=args.duration)
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "cphub.log", "w") as log:
        proc, base = run.serve(f"sqlite://{tmp}/mix.db", log)
        try:
            beats = {}
            flooding = threading.Thread(target=lambda: beats.update(run.wrk(
                flood, "heartbeat.lua", f"{base}{run.HEARTBEAT_PATH}",
                {"BENCH_PHONES": str(args.phones)})))
            flooding.start()
            result = run.wrk(events, "events.lua", f"{base}/cph/events",
                             {"BENCH_RUN": secrets.token_hex(3)})
            flooding.join()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    ms = lambda us: f"{us / 1000:.1f}"
    print(f"| {chunk:,} | {beats['rps']:,.0f} | {result['rps']:,.0f} | {ms(result['p50_us'])} "
          f"| {ms(result['p99_us'])} | {ms(result['p999_us'])} | {ms(result['max_us'])} "
          f"| {result['non_2xx'] + result['socket_errors']} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phones", type=int, default=100_000)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--event-connections", type=int, default=4)
    args = p.parse_args()
    print("| flush_chunk (phones) | heartbeats/s | events/s | p50 ms | p99 ms | p99.9 ms "
          "| max ms | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    mixed(args, 10 * args.phones)  # one transaction per flush: before
    with open(run.ROOT / "config" / "default.toml", "rb") as f:
        default_chunk = tomllib.load(f)["heartbeats"]["flush_chunk"]
    mixed(args, default_chunk)  # the default: after


if __name__ == "__main__":
    main()
