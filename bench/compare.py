#!/usr/bin/env python3
"""Two or more settings of one cphub binary, in alternated open-loop windows.

One capacity window decides badly (a 20 s window holds ~200 mints, so its p99.9 is its
slowest mint) and the machine drifts over minutes, so a before/after of a setting is only
worth something when its windows alternate: round 1 runs every setting once, in the order
given, then round 2, and so on. Each window is `bench/run.py`'s `load_run`: a fresh cphub
on a fresh database, the fleet ramped to its busy share, then measured by
`cphub simulate --load`, with billing on (one webhook endpoint for every fact, answered
204 at once by a sink) unless --no-billing. A setting is a space-separated list of `NAME=VALUE` environment
assignments (cphub reads `CPHUB__SECTION__KEY`), or `-` for the defaults. Two builds compare
the same way: `BENCH_SERVE_BIN=/path/to/other/cphub` has that binary serve the window (the
load generator stays this tree's `target/release/cphub`).

    cargo build --release --locked --bin cphub
    python3 bench/compare.py --backend sqlite --phones 60000 --rounds 3 \\
        CPHUB__HEARTBEATS__FLUSH_CHUNK=1000 CPHUB__HEARTBEATS__FLUSH_CHUNK=250

Prints one Markdown row per window (p99 / p99.9 ms of each session request kind, the
heartbeat p99, and whether the window carries the fleet by the capacity criteria) and,
at the end, how many windows of each setting carried it. Each window's whole report (every
kind's p50 to max, the schedule's lag) is appended to target/bench/compare.jsonl.

With `--flash`, each window is bench/run.py's flash crowd instead (10 % of --phones start
sessions within 10 s), and its row is the crowd's sessions: p99 / p99.9 / max, errors, the
heartbeats' p99 and how far behind billing was.

With `--pg-statements` (PostgreSQL), the server logs every statement of the bench role for
the window, and each window is followed by `bench/pg_rounds.py`'s summary of its
transactions: wall, server and commit time by kind, and by statement. The logging costs
the window some latency, so those windows measure where time goes, not capacity.
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pg_rounds  # bench/pg_rounds.py: the server log's transactions
import run  # bench/run.py: load_run, carried

SESSION_KINDS = ("mint", "sign_check", "enter", "quit")


def parse_setting(text):
    """`A=1 B=2` → {"A": "1", "B": "2"}; `-` → {} (the defaults)."""
    if text == "-":
        return {}
    pairs = {}
    for word in text.split():
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise SystemExit(f"compare: {word!r} is not NAME=VALUE")
        pairs[name] = value
    return pairs


def window(args, setting):
    """One load_run with `setting` in cphub's environment (and only in that run's)."""
    saved = {k: os.environ.get(k) for k in setting}
    os.environ.update(setting)
    try:
        if args.pg_statements:
            return logged_window(args)
        return measured(args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def measured(args):
    """One window: the capacity's, or with --flash bench/run.py's flash crowd."""
    if args.flash:
        return run.flash_crowd(args, args.backend)
    return run.load_run(args, args.backend, args.phones)


def logged_window(args):
    """A window with PostgreSQL logging every statement of the bench role (set on the role,
    so every connection of the window's fresh database has it), then its summary."""
    log = run.newest_cluster()[6]
    with open(log, errors="replace") as f:
        skip = sum(1 for _ in f)
    run.postgres_admin("ALTER ROLE cphub_bench SET log_min_duration_statement = 0")
    try:
        report = measured(args)
    finally:
        run.postgres_admin("ALTER ROLE cphub_bench RESET log_min_duration_statement")
    with open(log, errors="replace") as f:
        lines = f.readlines()[skip:]
    print("\n" + pg_rounds.summarise(lines, args.window), flush=True)
    return report


def flash_row(label, round_no, report):
    """The flash crowd's sessions (every request of theirs together), as bench/run.py's
    flash table judges them."""
    f, hb = report["flash"], dict(report["kinds"])["heartbeat"]
    errors = f["non_2xx"] + f["transport_errors"]
    behind, ok = run.billing_kept_up(report)[1], run.flash_met(report)
    return (f"| {label} | {round_no} | {f['p99_ms']:.1f} / {f['p999_ms']:.1f} / "
            f"{f['max_ms']:.1f} | {errors} | {hb['p99_ms']:.1f} | {behind} "
            f"| {'yes' if ok else 'no'} |"), ok


def row(label, round_no, report):
    kinds = dict(report["kinds"])
    cells = []
    for kind in SESSION_KINDS:
        f = kinds.get(kind)
        cells.append(f"{f['p99_ms']:.1f} / {f['p999_ms']:.1f}" if f else "—")
    ok, why = run.carried(report)
    hb = kinds.get("heartbeat")
    behind = run.billing_kept_up(report)[1]
    return (f"| {label} | {round_no} | {' | '.join(cells)} | "
            f"{hb['p99_ms']:.1f} | {behind} | {'yes' if ok else 'no: ' + why} |"), ok


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("settings", nargs="+", help="`NAME=VALUE ...` per setting, or `-`")
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--phones", type=int, default=40_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=int, default=20, help="seconds measured per window")
    p.add_argument("--busy-share", type=float, default=0.5)
    p.add_argument("--ramp-rate", type=int, default=500)
    p.add_argument("--no-billing", dest="billing", action="store_false",
                   help="no webhook endpoint (by default one billing endpoint, a sink "
                        "answering 204, takes every fact, as bench/run.py's capacity runs)")
    p.add_argument("--flash", action="store_true",
                   help="flash-crowd windows: 10 %% of --phones start sessions within 10 s")
    p.add_argument("--pg-statements", action="store_true",
                   help="log PostgreSQL's statements and summarise each window's transactions")
    args = p.parse_args()
    if args.pg_statements and args.backend != "postgres":
        p.error("--pg-statements needs --backend postgres")
    # load_run and flash_crowd read these under bench/run.py's option names.
    args.capacity_window, args.flash_phones = args.window, args.phones
    settings = [(s, parse_setting(s)) for s in args.settings]
    run.OUT.mkdir(parents=True, exist_ok=True)

    print(f"{args.backend}, {args.phones:,} phones, {args.busy_share:.0%} busy, "
          f"{args.window} s windows, billing {'on' if args.billing else 'off'}, alternated\n")
    if args.flash:
        print("| setting | round | flash p99 / p99.9 / max ms | errors | heartbeat p99 ms "
              "| billing behind | met |")
        print("|---|---:|---:|---:|---:|---:|---|")
    else:
        print("| setting | round | mint p99 / p99.9 ms | sign check | enter | quit "
              "| heartbeat p99 ms | billing behind | carried |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    tally = {label: 0 for label, _ in settings}
    for round_no in range(1, args.rounds + 1):
        for label, setting in settings:
            run.log(f"round {round_no}: {label}")
            report = window(args, setting)
            with open(run.OUT / "compare.jsonl", "a") as out:
                out.write(json.dumps({"setting": label, "round": round_no,
                                      "backend": args.backend, "phones": args.phones,
                                      "report": report}) + "\n")
            line, ok = (flash_row if args.flash else row)(label, round_no, report)
            tally[label] += ok
            print(line, flush=True)
    print()
    for label, n in tally.items():
        print(f"- `{label}`: {n} of {args.rounds} windows {'met' if args.flash else 'carried'}")


if __name__ == "__main__":
    main()
