#!/usr/bin/env python3
"""Measures cphub's hot paths against the ceiling, in one run, on this machine.

Called by `bench/run` after the release build. Everything listens on 127.0.0.1; each load
is bounded by --duration. Figures are ratios to the ceiling measured in the same run, so
they stay comparable on a machine shared with other work (docs/benchmarks.md).
Prints a Markdown table and writes it, with the raw numbers, under target/bench/.
"""

import argparse
import atexit
import base64
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import usage_query  # bench/usage_query.py

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RELEASE = ROOT / "target" / "release"
OUT = ROOT / "target" / "bench"
# The heartbeat route under cphub's default `callbacks.base_path`.
HEARTBEAT_PATH = "/cph/heartbeat"
TOKEN = "bench-operator-token-" + secrets.token_hex(8)


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers: listening
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bench: nothing answers at {url}")


def wrk(args, script, url, extra_env=None):
    """One bounded wrk run; returns report.lua's BENCH_RESULT plus requests/s."""
    env = dict(os.environ, BENCH_DIR=str(BENCH), BENCH_THREADS=str(args.threads))
    env.update(extra_env or {})
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s",
           "--timeout", "10s", "--latency", "-s", str(BENCH / script), url]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("BENCH_RESULT "))
    result = json.loads(line.removeprefix("BENCH_RESULT "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def metric(base, name, labels=""):
    """Sum of one Prometheus series family from /metrics (optionally label-filtered)."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def rss_mb(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    kb = lambda key: int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1))
    return kb("VmRSS") / 1024, kb("VmHWM") / 1024


# ---------------------------------------------------------------- PostgreSQL, throwaway db

def postgres_admin(sql):
    """psql as the cluster's superuser (root uses runuser, like scripts/postgres-for-tests)."""
    port = postgres_cluster()
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-p", port, "-d", "postgres", "-c", sql]
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return port


def newest_cluster():
    """The newest Debian cluster's `pg_lsclusters` row: version, cluster, port, status,
    owner, data directory, log file."""
    if not shutil.which("pg_lsclusters"):
        raise SystemExit("bench: no Debian PostgreSQL (pg_lsclusters); use --backends sqlite")
    rows = subprocess.run(["pg_lsclusters", "-h"], check=True, capture_output=True,
                          text=True).stdout.split("\n")
    return sorted(
        (r.split() for r in rows if r.strip()), key=lambda r: [int(x) for x in r[0].split(".")]
    )[-1]


def postgres_cluster():
    """Starts the newest Debian cluster if it is down; returns its port."""
    version, cluster, port, status = newest_cluster()[:4]
    if status != "online":
        subprocess.run(["pg_ctlcluster", version, cluster, "start"], check=True)
    return port


def postgres_database():
    """A new cphub_bench_* database owned by the role cphub_bench. Never touches the
    cphub_test_* databases of concurrent test runs."""
    name = f"cphub_bench_{secrets.token_hex(6)}"
    postgres_admin(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cphub_bench') THEN "
        "CREATE ROLE cphub_bench LOGIN PASSWORD 'cphub_bench'; END IF; END $$")
    port = postgres_admin(f'CREATE DATABASE "{name}" OWNER cphub_bench')
    return name, f"postgres://cphub_bench:cphub_bench@127.0.0.1:{port}/{name}"


# ---------------------------------------------------------------- the measurements

def ceiling(args):
    port = free_port()
    proc = subprocess.Popen([RELEASE / "examples" / "bench_ceiling", f"127.0.0.1:{port}"])
    try:
        wait_for(f"http://127.0.0.1:{port}/")
        return wrk(args, "heartbeat.lua", f"http://127.0.0.1:{port}{HEARTBEAT_PATH}")
    finally:
        proc.terminate()
        proc.wait()


def serve(database_url, logfile, binary=None, extra_env=None):
    port = free_port()
    env = dict(
        os.environ,
        **(extra_env or {}),
        CPHUB_CONFIG_DIR="/nonexistent",  # defaults only: what a fresh install runs
        DATABASE_URL=database_url,
        CPHUB__SERVER__LISTEN=f"127.0.0.1:{port}",
        CPHUB__API__TOKENS=TOKEN,
        # The load is one token: its rate limit would measure itself, not cphub.
        CPHUB__API__RATE_LIMIT_PER_SECOND="0",
        # Tickets and phones must outlive the minting pre-step, which takes longer than the
        # default 2-minute ticket and 15-second staleness.
        CPHUB__ACCESS__TICKET_TTL_SECS="3600",
        CPHUB__FLEET__MISS_THRESHOLD="100000",
    )
    env.pop("RUST_LOG", None)
    # `binary`, or BENCH_SERVE_BIN: another build serves (bench/compare.py and
    # bench/heartbeat_ab.py compare two builds with it); the generator stays this tree's.
    binary = binary or os.environ.get("BENCH_SERVE_BIN") or RELEASE / "cphub"
    proc = subprocess.Popen([binary, "serve"], env=env,
                            stdout=logfile, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_for(f"{base}/healthz")
    return proc, base


def open_loop_sign_checks(name, ceiling_rps):
    """Sign checks at their target rate, open loop, on a fresh cphub and book as wrk's sign
    checks get (only the phones the tickets were minted on): the flood's phones and the
    events would otherwise make it a different book."""
    url, drop = fresh_database(name)
    rate = OPEN_LOOP_RATES[("sign checks", name)](ceiling_rps)
    tickets = open_loop_requests(rate, OPEN_LOOP_SIGN_CHECK_SECS)
    try:
        with open(OUT / f"cphub-open-loop-{name}.log", "w") as logfile:
            proc, base = serve(url, logfile)
            try:
                log(f"{name}: minting {tickets:,} sessions for sign checks at {rate:,.0f} a "
                    "second, open loop")
                bodies = OUT / f"sign-check-open-{name}.jsonl"
                mint_tickets(base, tickets, bodies)
                log(f"{name}: sign checks, open loop")
                return open_loop(base, "sign-checks", rate, OPEN_LOOP_SIGN_CHECK_SECS, bodies)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    finally:
        drop()


def backend(args, name, database_url, ceiling_rps):
    log(f"{name}: starting cphub")
    rows, notes = {}, {}
    with open(OUT / f"cphub-{name}.log", "w") as logfile:
        proc, base = serve(database_url, logfile)
        try:
            # Sign checks first: minting picks a phone by scanning the phones table, so
            # it is quickest while only the phones it needs exist.
            log(f"{name}: minting {args.sessions} sessions for sign checks")
            bodies = OUT / f"sign-check-{name}.jsonl"
            mint_tickets(base, args.sessions, bodies)
            log(f"{name}: sign checks")
            rows["sign checks"] = first_uses(args, base, bodies)

            log(f"{name}: heartbeats")
            rows["heartbeats"] = wrk(args, "heartbeat.lua", f"{base}{HEARTBEAT_PATH}")
            time.sleep(2.5)  # two flush intervals: every phone is in the store
            rss, hwm = rss_mb(proc.pid)
            stored = metric(base, "cphub_phones{")
            notes["rss"] = {"rss_mb": rss, "hwm_mb": hwm, "phones_stored": stored}

            log(f"{name}: enter/quit events")
            rows["events"] = wrk(args, "events.lua", f"{base}/cph/events",
                                 {"BENCH_RUN": secrets.token_hex(3)})
            notes["events_accepted"] = metric(base, "cphub_events_total", 'outcome="accepted"')
            rate = OPEN_LOOP_RATES[("events", name)](ceiling_rps)
            log(f"{name}: enter/quit events at {rate:,.0f} a second, open loop")
            rows["events, open loop"] = open_loop(base, "events", rate, args.duration)

            notes["rss_end_mb"] = rss_mb(proc.pid)[0]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    return rows, notes


# The durable paths' targets are a rate *and* a p99 (enter and quit ≥ 0.1× the ceiling and
# ≥ 10k/s with p99 ≤ 25 ms on SQLite, ≥ 5k/s on PostgreSQL; sign checks ≥ 0.2×). wrk's rows
# are a closed loop of --connections: each waits for its commit before sending again, so
# they measure connections ÷ latency. These rows offer the target rate itself, open loop
# (`cphub simulate --load --path`), and report what cphub answered and how fast.
# Whole requests a second, rounded up, so the rate offered is never below the target.
OPEN_LOOP_RATES = {
    ("events", "sqlite"): lambda c: math.ceil(max(0.1 * c, 10_000)),
    ("events", "postgres"): lambda c: 5_000,
    ("sign checks", "sqlite"): lambda c: math.ceil(0.2 * c),
    ("sign checks", "postgres"): lambda c: math.ceil(0.2 * c),
}
OPEN_LOOP_WARMUP_SECS = 2
# Each sign check needs a ticket minted before (a ticket is single-use): at 0.2× a ceiling
# of 120k, 5 s of sign checks are 120,000 mints.
OPEN_LOOP_SIGN_CHECK_SECS = 3


def open_loop_requests(rate, window):
    """How many requests an open-loop run at `rate` sends, warm-up included (and a few to
    spare for the pacer's rounding)."""
    return math.ceil(rate * (OPEN_LOOP_WARMUP_SECS + window)) + 100


def open_loop(base, path, rate, window, bodies=None):
    """One path alone at `rate` a second (`cphub simulate --load --path`), as a row shaped
    like wrk's: the requests due in the window and answered 200, per second of it (however
    late: the p99 says how late); the slowest kind's latencies from the intended send
    times; the requests not answered 200."""
    cmd = [RELEASE / "cphub", "simulate", "--load", "--json", "--cphub", base,
           "--path", path, "--rate", f"{rate:.0f}",
           "--warmup-secs", str(OPEN_LOOP_WARMUP_SECS), "--window-secs", str(window)]
    if bodies:
        cmd += ["--bodies", str(bodies)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env=dict(os.environ, RUST_LOG="warn")).stdout
    report = json.loads(out.strip().splitlines()[-1])
    kinds = [f for _, f in report["kinds"] if f["ok"] or f["non_2xx"] or f["transport_errors"]]
    if not kinds:
        raise SystemExit(f"bench: the open-loop {path} run sent nothing in its window")
    worst = max(kinds, key=lambda f: f["p99_ms"])
    return {
        "open_loop": True,
        "offered": rate,
        "rps": sum(f["rate"] for f in kinds),
        "p50_us": worst["p50_ms"] * 1000,
        "p99_us": worst["p99_ms"] * 1000,
        "p999_us": worst["p999_ms"] * 1000,
        "non_2xx": sum(f["non_2xx"] + f["transport_errors"] for f in kinds),
        "schedule_kept": report["schedule_kept"],
        "report": report,
    }


SAMPLE_SECS = 0.5


def mint_tickets(base, sessions, bodies):
    """Mints `sessions` sessions through cphub's API (examples/bench_prep) and writes one
    sign-check body per ticket to the file `bodies`, for bench/sign_check.lua or `cphub
    simulate --load --path sign-checks`."""
    subprocess.run([RELEASE / "examples" / "bench_prep", base, TOKEN, str(sessions), bodies],
                   check=True)


def first_uses(args, base, bodies):
    """Sign checks until every minted ticket was used once. wrk's threads stop when their
    bodies run out but wrk's clock runs the full --duration, so the rate comes from cphub's
    own count of first uses (cphub_sign_checks_total{result="ok"}), sampled every 500 ms:
    the slope of its rising part.

    Not more often: each scrape of /metrics counts the phones by state over the whole
    phones table (12 ms of a reader's CPU over 30,000 phones), and sampled every 100 ms the
    scrapes took 15 % off the rate they measured (15.2-15.8k against 17.6-18.3k first uses a
    second, 60,000 tickets, alternated). --sessions is sized so the rising part spans
    several samples."""
    ok = lambda: metric(base, "cphub_sign_checks_total", 'result="ok"')
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append((time.monotonic(), ok()))
            time.sleep(SAMPLE_SECS)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = wrk(args, "sign_check.lua", f"{base}/cph/sign-check",
                     {"BENCH_SIGN_BODIES": str(bodies)})
    finally:
        done.set()
        sampler.join()
    first, last = samples[0][1], samples[-1][1]
    rising = [(t, c) for t, c in samples if first < c < last]
    if len(rising) < 2:
        raise SystemExit("bench: sign checks ran out too fast to time; raise --sessions")
    (t1, c1), (t2, c2) = rising[0], rising[-1]
    result["first_use"] = last - first
    result["first_use_rps"] = (c2 - c1) / (t2 - t1)
    result["first_use_secs"] = result["first_use"] / result["first_use_rps"]
    return result


def usage_figure(args, name, database_url):
    """The one-month usage query by app over 10M generated sessions (bench/usage_query.py),
    in a database of its own. Returns {"seconds", "sessions"} and keeps the full detail
    (plans, other queries) for the report."""
    log(f"{name}: usage query over {args.usage_sessions:,} generated sessions")
    detail = usage_query.run_backend(name, str(RELEASE / "cphub"), args.usage_sessions,
                                     5, database_url)
    month = detail["results"][0]
    return {"seconds": month["median_s"], "sessions": month["sessions"], "detail": detail}


# ---------------------------------------------------------------- capacity (open loop)

# A fleet is carried when, over the window, every request kind meets these (issue #17),
# and, with billing on, its webhooks are not behind by more than BILLING_BEHIND_SECS at the
# window's end. That one is cphub's own: billing that falls further behind every minute is
# not carried, however fast the callbacks are answered. A fact waits for the dispatcher's
# next pass (500 ms), so a dispatcher keeping up is a second or two behind.
CAPACITY_P99_MS = 25
CAPACITY_P999_MS = 100
BILLING_BEHIND_SECS = 10
ENDPOINTS_VAR = "CPHUB__WEBHOOKS__ENDPOINTS"


def fresh_database(name):
    """A new empty database of the backend: (url, drop). SQLite: a new file."""
    if name == "sqlite":
        for f in OUT.glob("cphub-load.db*"):
            f.unlink()
        return f"sqlite://{OUT / 'cphub-load.db'}", lambda: None
    dbname, url = postgres_database()
    return url, lambda: postgres_admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def generator(args, base, phones, busy_share, extra=()):
    """One open-loop run of `cphub simulate --load --json` against `base`; its JSON report."""
    ramp = ramp_secs(args, phones, busy_share)
    cmd = [RELEASE / "cphub", "simulate", "--load", "--json",
           "--phones", str(phones), "--cphub", base, "--token", TOKEN,
           "--busy-share", str(busy_share),
           "--ramp-secs", str(ramp), "--warmup-secs", str(ramp + 12),
           "--window-secs", str(args.capacity_window), *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env=dict(os.environ, RUST_LOG="warn")).stdout
    return json.loads(out.strip().splitlines()[-1])


def ramp_secs(args, phones, busy_share):
    """How long the fleet takes to reach its busy share: its sessions are minted at
    --ramp-rate a second, over 10 s at least, and the window opens 12 s after. The ramp is
    warm-up, not measured (a steady fleet mints only phones × busy share / 20 min a second),
    so it must not ask more than what is measured: before 2026-12-03 it minted at 2,500 a
    second for up to 20 s (4,000 a second at 160,000 phones), more than twice the flash
    crowd's own 1,000 a second, and on PostgreSQL the fleet collapsed before the flash
    began (docs/benchmarks.md)."""
    return max(10, math.ceil(phones * busy_share / args.ramp_rate))


def bare_run(args, phones):
    """The generator's own limit on this machine: `phones` phones heartbeating, nobody
    playing, against the bare ceiling server (which answers heartbeats only). The fleet the
    rig itself can play, with the generator sharing the CPUs: no cphub can be measured
    carrying more here."""
    port = free_port()
    proc = subprocess.Popen([RELEASE / "examples" / "bench_ceiling", f"127.0.0.1:{port}"])
    try:
        wait_for(f"http://127.0.0.1:{port}/")
        # No session in the run: the mean idle time is far beyond it (and the bare server
        # answers nothing but heartbeats).
        return generator(args, f"http://127.0.0.1:{port}", phones, 0.0,
                         ["--idle-mean-secs", "1e12"])
    finally:
        proc.terminate()
        proc.wait()


def load_run(args, name, phones, extra=()):
    """One open-loop run (`cphub simulate --load --json`) of `phones` phones against a
    fresh cphub on a fresh database; returns the generator's JSON report, with how billing
    kept up under `billing` unless args.billing is off."""
    url, drop = fresh_database(name)
    billing = args.billing and {ENDPOINTS_VAR: os.environ.get(ENDPOINTS_VAR) or billing_sink()}
    try:
        with open(OUT / f"cphub-load-{name}.log", "w") as logfile:
            proc, base = serve(url, logfile, extra_env=billing or None)
            try:
                report = generator(args, base, phones, args.busy_share, extra)
                if billing:
                    report["billing"] = billing_figures(base)
                return report
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    finally:
        drop()


_sink = {}


def billing_sink():
    """The billing endpoint of every load run, as `webhooks.endpoints` TOML: one endpoint for
    every event type, examples/bench_ceiling's `POST /webhook` answering 204 at once, with
    a fresh secret. Started at the first call, stopped when the bench exits."""
    if not _sink:
        port = free_port()
        proc = subprocess.Popen([RELEASE / "examples" / "bench_ceiling", f"127.0.0.1:{port}"])
        atexit.register(lambda: (proc.terminate(), proc.wait()))
        url = f"http://127.0.0.1:{port}/webhook"
        wait_for(url)
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        _sink["toml"] = f'[{{name="billing",url="{url}",secrets=["{secret}"]}}]'
    return _sink["toml"]


def billing_figures(base):
    """How billing stood at the end of a load run: deliveries made, retried (the sink answers
    at once, so a retry is an attempt that outlived `webhooks.timeout_ms` inside cphub) and
    given up (every kind of event, the whole run), and the age of the oldest fact not yet
    delivered."""
    def deliveries(result):
        return metric(base, "cphub_webhook_deliveries_total", f'result="{result}"')
    return {"delivered": deliveries("delivered"), "retried": deliveries("retried"),
            "failed": deliveries("failed"),
            "behind_secs": metric(base, "cphub_webhook_oldest_undelivered_seconds")}


def carried(report):
    """Whether the run meets the capacity criteria; with the reason when it does not."""
    if not report["schedule_kept"]:
        return False, f"generator behind its schedule (lag p99.9 {report['lag']['p999_ms']:.0f} ms)"
    for kind, f in report["kinds"]:
        if f["non_2xx"] or f["transport_errors"]:
            return False, f"{kind}: {f['non_2xx']} non-2xx {f['statuses']}, {f['transport_errors']} transport"
        if f["p99_ms"] > CAPACITY_P99_MS or f["p999_ms"] > CAPACITY_P999_MS:
            return False, f"{kind}: p99 {f['p99_ms']:.1f} ms, p99.9 {f['p999_ms']:.1f} ms"
    kept_up, billing = billing_kept_up(report)
    if not kept_up:
        return False, f"billing {billing}"
    return True, f"all kinds within p99 ≤ 25 ms, p99.9 ≤ 100 ms, no errors; billing {billing}"


def billing_kept_up(report):
    """Whether billing kept up over a load run (at most BILLING_BEHIND_SECS behind at its
    end, no delivery given up; always, with billing off), and how it stood, for a table."""
    billing = report.get("billing")
    if not billing:
        return True, "off"
    kept_up = billing["behind_secs"] <= BILLING_BEHIND_SECS and not billing["failed"]
    return kept_up, f"{billing['behind_secs']:.0f} s behind, {billing['failed']:.0f} given up"


def flash_met(report):
    """Whether a flash crowd meets its target: its sessions' p99 ≤ 100 ms, no errors, the
    generator on schedule and billing kept up."""
    f = report["flash"]
    errors = f["non_2xx"] + f["transport_errors"]
    return (f["p99_ms"] <= 100 and errors == 0 and report["schedule_kept"]
            and billing_kept_up(report)[0])


def judged(args, name, phones, run=None):
    """Whether `phones` phones are carried, by the majority of up to --capacity-windows
    windows, each a fresh cphub and database; stops as soon as the majority is reached.
    One window decides badly: a 20 s window holds ~200 mints, so its p99.9 is its slowest
    mint, and single windows of one build at one size went either way (docs/benchmarks.md).
    Returns the verdict, why (the first failing window's reason when not carried) and each
    window's verdict and report."""
    majority = args.capacity_windows // 2 + 1
    windows = []
    while True:
        log(f"{name}: capacity window {len(windows) + 1} with {phones:,} phones")
        report = run(phones) if run else load_run(args, name, phones)
        ok, why = carried(report)
        log(f"{name}: window {'carried' if ok else 'not carried'}: {why}")
        windows.append({"carried": ok, "why": why, "report": report})
        passed = sum(w["carried"] for w in windows)
        if passed >= majority or len(windows) - passed >= majority:
            break
    ok = passed >= majority
    tally = f"{passed} of {len(windows)} windows carried"
    if ok:
        return ok, tally, windows
    return ok, f"{tally}; {next(w['why'] for w in windows if not w['carried'])}", windows


def capacity(args, name, ceiling_phones, run=None):
    """A rising ladder, then bisection: from --capacity-start phones, doubling while the fleet
    is carried (up to the ceiling in phones), then halving the gap between the largest fleet
    carried and the smallest not; --capacity-steps sizes in all, each judged by `judged`
    (a window is a fresh cphub and database, about warm-up + window + 15 s)."""
    lo, hi, runs = 0, int(ceiling_phones), []
    phones = min(args.capacity_start, hi)
    for _ in range(args.capacity_steps):
        ok, why, windows = judged(args, name, phones, run)
        log(f"{name}: {phones:,} phones {'carried' if ok else 'not carried'}: {why}")
        runs.append({"phones": phones, "carried": ok, "why": why, "windows": windows})
        lo, hi = (phones, hi) if ok else (lo, phones)
        if all(r["carried"] for r in runs):
            nxt = min(2 * phones, hi)  # still rising, up to the ceiling
            if nxt == phones:
                break
        else:
            nxt = round((lo + hi) / 2 / 1000) * 1000
            if not lo < nxt < hi:
                break
        phones = nxt
    return {"phones": lo, "not_carried": hi, "runs": runs}


def flash_crowd(args, name):
    """10 % of a fleet of --flash-phones start sessions within 10 s, inside the window."""
    log(f"{name}: flash crowd, 10 % of {args.flash_phones:,} phones within 10 s")
    ramp = ramp_secs(args, args.flash_phones, args.busy_share)
    report = load_run(args, name, args.flash_phones, [
        "--flash-share", "0.1", "--flash-within-secs", "10",
        "--flash-at-secs", str(ramp + 12 + 5)])
    return report


# ---------------------------------------------------------------- report

TARGETS = {
    # (figure, backend): (minimum ratio to ceiling, minimum req/s, maximum p99 in ms)
    ("heartbeats", "sqlite"): (0.6, None, 5),
    ("events", "sqlite"): (0.1, 10_000, 25),
    ("events", "postgres"): (None, 5_000, None),
    ("sign checks", "sqlite"): (0.2, None, None),
    ("sign checks", "postgres"): (0.2, None, None),
    ("events, open loop", "sqlite"): (0.1, 10_000, 25),
    ("events, open loop", "postgres"): (None, 5_000, 25),
    # The design states no p99 for sign checks; without one, an open-loop row whose every
    # request is answered 200 at last (seconds late) would pass. The bound every callback
    # kind is held to in the capacity search, 25 ms, is the bench's own.
    ("sign checks, open loop", "sqlite"): (0.2, None, 25),
    ("sign checks, open loop", "postgres"): (0.2, None, 25),
}


def verdict(figure, name, r, ceiling_rps):
    target = TARGETS.get((figure, name))
    if not target:
        return "—", "—"
    ratio, rps, p99 = target
    rate = r.get("first_use_rps", r["rps"])
    if r.get("open_loop") and r["non_2xx"] == 0:
        # Every request answered 200: the rate answered is the rate offered (the count over
        # the window can be one short of it where a due time falls on the window's edge).
        rate = r["offered"]
    text, ok = [], True
    if ratio is not None:
        text.append(f"≥ {ratio}×")
        ok &= rate / ceiling_rps >= ratio
    if rps is not None:
        text.append(f"≥ {rps // 1000}k/s")
        ok &= rate >= rps
    if p99 is not None:
        text.append(f"p99 ≤ {p99} ms")
        ok &= r["p99_us"] / 1000 <= p99
    if r.get("open_loop"):
        # Offered at the target rate: met only if every request was answered 200 in time,
        # with the generator on its schedule.
        text.append("no errors")
        ok &= r["non_2xx"] == 0 and r["schedule_kept"]
        if not r["schedule_kept"]:
            return ", ".join(text), "**invalid: the generator fell behind**"
    return ", ".join(text), "met" if ok else "**missed**"


def ms(us):
    return f"{us / 1000:.2f}"


def machine():
    cpu = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    mem = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip()
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu.group(1) if cpu else platform.processor(),
        "ram_gib": round(int(mem.group(1)) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "rustc": rustc,
        "wrk": wrk_v.strip(),
    }


def report(args, info, ceil, results):
    c = ceil["rps"]
    lines = [
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gib']} GiB RAM, "
        f"Linux {info['kernel']}, {info['rustc']}, {info['wrk']}.",
        f"Load: wrk -t{args.threads} -c{args.connections} -d{args.duration}s on 127.0.0.1; "
        f"load average before/after: {info['load_before']} / {info['load_after']}.",
        "",
        "| figure | backend | req/s | × ceiling | p50 ms | p99 ms | p99.9 ms | non-2xx | target | |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
        f"| ceiling (bare actix-web, heartbeat JSON) | — | {c:,.0f} | 1.00 | {ms(ceil['p50_us'])} "
        f"| {ms(ceil['p99_us'])} | {ms(ceil['p999_us'])} | {ceil['non_2xx']} | | |",
    ]
    for name, (rows, notes) in results.items():
        for figure, r in rows.items():
            rate = r.get("first_use_rps", r["rps"])
            target, met = verdict(figure, name, r, c)
            label = figure
            if figure == "sign checks":
                label = (f"sign checks ({r['first_use']:,.0f} tickets used, each once, "
                         f"in {r['first_use_secs']:.1f} s)")
            if r.get("open_loop"):
                label = (f"{figure} ({r['offered']:,.0f} a second offered; the worst kind's "
                         "latencies from the intended send time)")
            lines.append(
                f"| {label} | {name} | {rate:,.0f} | {rate / c:.2f} | {ms(r['p50_us'])} "
                f"| {ms(r['p99_us'])} | {ms(r['p999_us'])} | {r['non_2xx']} | {target} | {met} |")
    if any("rss" in notes for _, notes in results.values()):  # not with --only-capacity
        lines += ["", "| memory / query | backend | value | target | |", "|---|---|---:|---|---|"]
    for name, (rows, notes) in results.items():
        if "rss" not in notes:
            continue
        m = notes["rss"]
        lines.append(
            f"| RSS after {args.phones:,} phones heartbeated (VmRSS; peak VmHWM "
            f"{m['hwm_mb']:.0f} MB; {m['phones_stored']:,.0f} phones in the store) | {name} "
            f"| {m['rss_mb']:.0f} MB | ≤ 150 MB | {'met' if m['rss_mb'] <= 150 else '**missed**'} |")
        u = notes["usage"]
        value = "not measured yet" if u is None else f"{u['seconds']:.2f} s ({u['sessions']:,})"
        met = "—" if u is None else ("met" if u["seconds"] <= 1 else "**missed**")
        lines.append(f"| one-month usage query by app, 10M sessions | {name} | {value} "
                     f"| ≤ 1 s | {met} |")
    return "\n".join(lines)


def capacity_row(label, cap, c_phones, target):
    """A capacity table row: the largest fleet carried, the smallest not and why."""
    ratio = cap["phones"] / c_phones
    why = next((r["why"] for r in cap["runs"] if r["phones"] == cap["not_carried"]),
               "the ceiling")
    verdict = ("—", "") if target is None else (
        f"≥ {target}×", "met" if ratio >= target else "**missed**")
    return (f"| {label} | {cap['phones']:,} | {cap['not_carried']:,} ({why}) "
            f"| {c_phones:,.0f} | {ratio:.2f} | {verdict[0]} | {verdict[1]} |")


def capacity_report(args, ceil, rig, results):
    """The capacity table: the largest fleet carried on each backend beside the ceiling in
    phones and the rig's own limit (the generator against the bare server), and the flash
    crowd."""
    c_phones = ceil["rps"] * args.heartbeat_interval
    lines = [
        "", f"Capacity: open-loop fleet (`cphub simulate --load`, on this machine), "
        f"{args.busy_share:.0%} of the phones busy, sessions of 20 min on average; "
        f"window {args.capacity_window} s, the majority of up to {args.capacity_windows} windows "
        f"per size decides; carried = every kind p99 ≤ {CAPACITY_P99_MS} ms, "
        f"p99.9 ≤ {CAPACITY_P999_MS} ms, no errors, generator on schedule"
        + (f"; billing on (one webhook endpoint for every fact, a sink answering 204), "
           f"at most {BILLING_BEHIND_SECS} s behind and no delivery given up at the window's end."
           if args.billing else "; billing off (no webhook endpoint)."),
        "",
        "| backend | phones carried | not carried at | ceiling in phones | × ceiling | target | |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    if rig:
        lines.append(capacity_row("the rig: bare server, heartbeats only", rig, c_phones, None))
    targets = {"sqlite": 0.5, "postgres": 0.3}
    for name, (rows, notes) in results.items():
        if notes.get("capacity"):
            lines.append(capacity_row(name, notes["capacity"], c_phones, targets.get(name)))
    lines += ["", f"Flash crowd: 10 % of {args.flash_phones:,} phones start sessions within 10 s "
              "(their mints, sign checks and enters together; heartbeats beside).", "",
              "| backend | sessions | p99 ms | p99.9 ms | max ms | errors | heartbeat p99 ms "
              "| schedule kept | billing behind | target | |",
              "|---|---:|---:|---:|---:|---:|---:|---|---:|---|---|"]
    for name, (rows, notes) in results.items():
        r = notes.get("flash")
        if not r:
            continue
        f = r["flash"]
        hb = dict(r["kinds"])["heartbeat"]
        errors = f["non_2xx"] + f["transport_errors"]
        behind = billing_kept_up(r)[1]
        met = flash_met(r)
        lines.append(
            f"| {name} | {r['flash_phones']:,} | {f['p99_ms']:.1f} | {f['p999_ms']:.1f} "
            f"| {f['max_ms']:.1f} | {errors} {f['statuses'] or ''} | {hb['p99_ms']:.1f} "
            f"| {'yes' if r['schedule_kept'] else '**no: invalid**'} | {behind} "
            f"| p99 ≤ 100 ms, no errors{', billing kept up' if r.get('billing') else ''} "
            f"| {'met' if met else '**missed**'} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=int, default=10, help="seconds of load per figure")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--connections", type=int, default=32, help="wrk connections")
    p.add_argument("--sessions", type=int, default=90_000,
                   help="sessions minted for the sign-check figure (one per request)")
    p.add_argument("--phones", type=int, default=100_000, help="distinct heartbeating phones")
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--usage-sessions", type=int, default=10_000_000,
                   help="sessions generated for the usage-query figure (0: skip it)")
    p.add_argument("--capacity-window", type=int, default=60,
                   help="seconds measured per capacity run (after its warm-up)")
    p.add_argument("--capacity-steps", type=int, default=6,
                   help="bisection runs per backend (0: no capacity search)")
    p.add_argument("--capacity-windows", type=int, default=3,
                   help="windows per capacity size at most; the majority decides")
    p.add_argument("--capacity-start", type=int, default=20_000,
                   help="first fleet of the capacity ladder")
    p.add_argument("--flash-phones", type=int, default=100_000,
                   help="fleet of the flash-crowd run (0: skip it)")
    p.add_argument("--busy-share", type=float, default=0.5,
                   help="share of the fleet playing in the load runs")
    p.add_argument("--ramp-rate", type=int, default=500,
                   help="mints a second while a capacity or flash fleet reaches its busy "
                        "share (warm-up, not measured)")
    p.add_argument("--heartbeat-interval", type=int, default=5,
                   help="cphub's fleet.heartbeat_interval_secs, for the ceiling in phones")
    p.add_argument("--no-billing", dest="billing", action="store_false",
                   help="no webhook endpoint in the capacity and flash runs (by default one "
                        "billing endpoint takes every fact, as at an operator)")
    p.add_argument("--only-capacity", action="store_true",
                   help="the ceiling, the capacity search and the flash crowd only")
    p.add_argument("--quick", action="store_true",
                   help="a few minutes: 3 s figures, 20 s capacity windows, 4 steps, "
                        "no usage query")
    args = p.parse_args()
    if args.quick:
        args.duration, args.sessions, args.usage_sessions = 3, 30_000, 0
        args.capacity_window, args.capacity_steps = 20, 4
    if shutil.which("wrk") is None:
        sys.exit("bench/run.py: wrk is not installed; bench/run installs it (Debian `wrk`)")
    os.environ["BENCH_PHONES"] = str(args.phones)
    OUT.mkdir(parents=True, exist_ok=True)

    info = machine()
    info["load_before"] = open("/proc/loadavg").read().split()[0]
    log("ceiling")
    ceil = ceiling(args)
    rig = None
    if args.capacity_steps:
        log("the rig's own limit: the generator against the bare server, heartbeats only")
        # One window a size: heartbeats only, thousands a second, so no single request
        # decides a window's tail here.
        rig_args = argparse.Namespace(**{**vars(args), "capacity_windows": 1})
        rig = capacity(rig_args, "bare server", ceil["rps"] * args.heartbeat_interval,
                       run=lambda phones: bare_run(args, phones))
    results = {}
    for name in args.backends.split(","):
        if args.only_capacity:
            results[name] = ({}, {"usage": None})
        elif name == "sqlite":
            db = OUT / "cphub-bench.db"
            for f in OUT.glob("cphub-bench.db*"):
                f.unlink()
            results[name] = backend(args, name, f"sqlite://{db}", ceil["rps"])
        elif name == "postgres":
            dbname, url = postgres_database()
            try:
                results[name] = backend(args, name, url, ceil["rps"])
            finally:
                postgres_admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        else:
            raise SystemExit(f"bench: unknown backend {name}")
        if not args.only_capacity:
            results[name][0]["sign checks, open loop"] = open_loop_sign_checks(name, ceil["rps"])
        notes = results[name][1]
        if args.capacity_steps:
            notes["capacity"] = capacity(args, name, ceil["rps"] * args.heartbeat_interval)
        if args.flash_phones:
            notes["flash"] = flash_crowd(args, name)
        notes.setdefault("usage", None)
        if args.usage_sessions and not args.only_capacity:
            if name == "sqlite":
                for f in OUT.glob("usage-bench.db*"):
                    f.unlink()
                results[name][1]["usage"] = usage_figure(
                    args, name, f"sqlite://{OUT / 'usage-bench.db'}")
                for f in OUT.glob("usage-bench.db*"):
                    f.unlink()
            else:
                dbname, url = postgres_database()
                try:
                    results[name][1]["usage"] = usage_figure(args, name, url)
                finally:
                    postgres_admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    info["load_after"] = open("/proc/loadavg").read().split()[0]

    table = report(args, info, ceil, results) + capacity_report(args, ceil, rig, results)
    details = [n["usage"]["detail"] for _, n in results.values() if n.get("usage")]
    if details:
        table += "\n" + usage_query.markdown(details, args.usage_sessions)
    (OUT / "results.md").write_text(table + "\n")
    (OUT / "results.json").write_text(json.dumps(
        {"machine": info, "ceiling": ceil, "rig": rig, "results": results}, indent=2,
        default=str))
    print(table)
    log(f"written to {OUT / 'results.md'} and results.json")


if __name__ == "__main__":
    main()
