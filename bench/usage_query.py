#!/usr/bin/env python3
"""The usage query over 10 million sessions, on SQLite and PostgreSQL.

Generates a year of sessions (2026, spread evenly: about 27k a day, 20 apps, 100k phones,
500k users, 20 min on average, 2.5 % abandoned, 2 % with a run_time mismatch) straight into
a fresh database migrated by `cphub migrate`, starts `cphub serve` on it and times
`GET /api/v1/usage` over 127.0.0.1 (the target: any window <= 1 s): a month by app, the
same month by app and day, a quarter by app and day, the whole year (all 10M sessions) by
app and by app and day in Asia/Kolkata, and a year between two odd instants (ragged edges).
Each is also computed from the sessions alone (`cphub usage --from-sessions`: the figures
before the rollups, once, cold), and the two answers must be equal. The generation fills
the rollups through their triggers, as sessions ending would. Prints the plan of the month
query (`cphub usage --explain`) and a Markdown table.

`bench/run` calls it for its usage figure (in databases of its own). Alone:
  bench/usage_query.py --cphub target/release/cphub [--sessions N] [--backends sqlite,postgres]
PostgreSQL alone: BENCH_PG_ADMIN_URL (default: the test cluster's cphub_test role, as
scripts/postgres-for-tests prints it); the database cphub_bench_usage is recreated.
"""

import argparse
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

TOKEN = "bench-usage-token-0123456789abcdef0123"
YEAR_START_MS = 1767225600000  # 2026-01-01T00:00:00Z
YEAR_MS = 365 * 86400 * 1000

QUERIES = [
    ("one month, by app", "from=2026-06-01&to=2026-07-01&group_by=app"),
    ("one month, by app and day", "from=2026-06-01&to=2026-07-01&group_by=app,day"),
    ("one quarter, by app and day", "from=2026-04-01&to=2026-07-01&group_by=app,day"),
    ("whole year (every session), by app", "from=2026-01-01&to=2027-01-01&group_by=app"),
    ("whole year, by app and day, Asia/Kolkata",
     "from=2026-01-01&to=2027-01-01&group_by=app,day&time_zone=Asia/Kolkata"),
    ("a year between odd instants, by app",
     "from=2026-01-01T03:07:11Z&to=2026-12-31T20:52:49Z&group_by=app"),
]


def columns(n):
    """The generated sessions, as SQL over a row number `i` (0..n-1), in start order."""
    step = YEAR_MS // n
    return {
        "start_ms": f"({YEAR_START_MS} + i * {step})",
        "dur": "(60 + (i * 7919) % 2400)",
        "app": "'com.bench.app' || (i % 20)",
        "phone": "'phone-' || (i % 100000)",
        "user": "'user-' || (i % 500000)",
        "abandoned": "(i % 40 = 0)",
        "mismatch": "(i % 50 = 0)",
    }


def generate_sqlite(path, n):
    c = columns(n)
    db = sqlite3.connect(path)
    db.executescript("PRAGMA synchronous = OFF; PRAGMA cache_size = -1000000;")
    db.execute(
        f"""
        WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {n - 1})
        INSERT INTO sessions (session_id, phone_id, app_id, user_id, issued, state,
            started_at, ended_at, duration_seconds, run_time_mismatch, reported_run_time,
            end_reason, created_at, updated_at)
        SELECT 'bench-' || i, {c['phone']}, {c['app']}, {c['user']}, 1,
            CASE WHEN {c['abandoned']} THEN 'abandoned' ELSE 'ended' END,
            {c['start_ms']}, {c['start_ms']} + {c['dur']} * 1000, {c['dur']}, {c['mismatch']},
            {c['dur']}, CASE WHEN {c['abandoned']} THEN 'abandoned' ELSE 'quit' END,
            {c['start_ms']}, {c['start_ms']}
        FROM seq"""
    )
    db.commit()
    db.execute("ANALYZE")
    db.close()


def generate_postgres(url, n):
    """In twelve statements: each statement's sessions reach the rollups' trigger as one
    array, which for 10M rows at once would not fit the memory comfortably."""
    for chunk in range(12):
        generate_postgres_chunk(url, n, range(n * chunk // 12, n * (chunk + 1) // 12))
    subprocess.run(["psql", "-X", "-q", url, "-c", "VACUUM ANALYZE"], check=True,
                   stdout=subprocess.DEVNULL)


def generate_postgres_chunk(url, n, rows):
    c = columns(n)
    ts = lambda ms: f"to_timestamp(({ms})::double precision / 1000)"  # noqa: E731
    sql = f"""
        SET synchronous_commit = off;
        INSERT INTO sessions (session_id, phone_id, app_id, user_id, issued, state,
            started_at, ended_at, duration_seconds, run_time_mismatch, reported_run_time,
            end_reason, created_at, updated_at)
        SELECT 'bench-' || i, {c['phone']}, {c['app']}, {c['user']}, true,
            CASE WHEN {c['abandoned']} THEN 'abandoned' ELSE 'ended' END,
            {ts(c['start_ms'])}, {ts(c['start_ms'] + ' + ' + c['dur'] + ' * 1000')},
            {c['dur']}, {c['mismatch']}, {c['dur']},
            CASE WHEN {c['abandoned']} THEN 'abandoned' ELSE 'quit' END,
            {ts(c['start_ms'])}, {ts(c['start_ms'])}
        FROM generate_series({rows.start}::bigint, {rows.stop - 1}) AS i;
    """
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url], input=sql,
                   text=True, check=True, stdout=subprocess.DEVNULL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cphub_env(url, port=None):
    env = dict(os.environ, DATABASE_URL=url, CPHUB_CONFIG_DIR="/nonexistent",
               CPHUB__API__TOKENS=TOKEN, CPHUB__LOG__LEVEL="warn",
               # The benchmark measures queries, not the per-token rate limit.
               CPHUB__API__RATE_LIMIT_PER_SECOND="0",
               CPHUB__WATCHDOG__ENABLED="false")
    if port:
        env["CPHUB__SERVER__LISTEN"] = f"127.0.0.1:{port}"
    return env


def get(port, query):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/usage?{query}",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as res:
        body = json.load(res)
    return time.perf_counter() - started, body


def from_sessions(cphub, url, query):
    """The same report computed from the sessions alone, by the CLI: (seconds, body)."""
    args = ["usage", "--format", "json", "--from-sessions"]
    for pair in query.split("&"):
        key, value = pair.split("=", 1)
        args += [f"--{key.replace('_', '-')}", value]
    started = time.perf_counter()
    out = subprocess.run([cphub, *args], env=cphub_env(url), capture_output=True, text=True,
                         check=True)
    return time.perf_counter() - started, json.loads(out.stdout)


def measure(cphub, url, runs):
    port = free_port()
    server = subprocess.Popen([cphub, "serve"], env=cphub_env(url, port),
                              stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        results = []
        for name, query in QUERIES:
            cold, body = get(port, query)
            warm = [get(port, query)[0] for _ in range(runs)]
            raw_s, raw = from_sessions(cphub, url, query)
            if (raw["rows"], raw["totals"]) != (body["rows"], body["totals"]):
                sys.exit(f"{name}: the rollups and the sessions disagree")
            results.append({"query": name, "params": query, "cold_s": cold,
                            "median_s": statistics.median(warm), "max_s": max(warm),
                            "sessions": body["totals"]["sessions"],
                            "rows": len(body["rows"]), "from_sessions_s": raw_s})
        return results
    finally:
        server.terminate()
        server.wait(timeout=30)


def explain(cphub, url):
    out = subprocess.run([cphub, "usage", "--from", "2026-06-01", "--to", "2026-07-01",
                          "--group-by", "app", "--explain"], env=cphub_env(url),
                         capture_output=True, text=True, check=True)
    return out.stdout


def run_backend(backend, cphub, n, runs, url):
    """Fills the empty database at `url` with `n` sessions and measures the queries."""
    subprocess.run([cphub, "migrate"], env=cphub_env(url), check=True)
    started = time.perf_counter()
    if backend == "sqlite":
        generate_sqlite(url.removeprefix("sqlite://"), n)
    else:
        generate_postgres(url, n)
    generated_s = time.perf_counter() - started
    print(f"[{backend}] {n} sessions generated in {generated_s:.0f} s", file=sys.stderr)
    return {"backend": backend, "generated_s": generated_s, "plan": explain(cphub, url),
            "results": measure(cphub, url, runs)}


def standalone(backend, cphub, n, runs, workdir):
    if backend == "sqlite":
        return run_backend(backend, cphub, n, runs, f"sqlite://{workdir}/usage-bench.db")
    admin = os.environ.get("BENCH_PG_ADMIN_URL",
                           "postgres://cphub_test:cphub_test@127.0.0.1:5432/postgres")
    psql = lambda sql: subprocess.run(["psql", "-X", "-q", admin, "-c", sql], check=True)  # noqa: E731
    psql("DROP DATABASE IF EXISTS cphub_bench_usage")
    psql("CREATE DATABASE cphub_bench_usage")
    try:
        return run_backend(backend, cphub, n, runs,
                           f"{admin.rsplit('/', 1)[0]}/cphub_bench_usage")
    finally:
        psql("DROP DATABASE cphub_bench_usage")


def markdown(report, n):
    lines = []
    for r in report:
        lines.append(f"\n### Plan of the one-month query, {r['backend']}\n\n```text\n"
                     f"{r['plan'].rstrip()}\n```")
    lines.append(f"\n| backend | query ({n:,} sessions in the book) | sessions counted "
                 "| rows | first run | median of warm runs | slowest warm run "
                 "| from the sessions alone (before) |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in report:
        for q in r["results"]:
            lines.append(f"| {r['backend']} | {q['query']} | {q['sessions']:,} | {q['rows']} "
                         f"| {q['cold_s'] * 1000:.0f} ms | {q['median_s'] * 1000:.0f} ms "
                         f"| {q['max_s'] * 1000:.0f} ms | {q['from_sessions_s'] * 1000:.0f} ms |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cphub", default="target/release/cphub")
    ap.add_argument("--sessions", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="cphub-usage-bench-") as workdir:
        report = [standalone(b, args.cphub, args.sessions, args.runs, workdir)
                  for b in args.backends.split(",")]
    print(markdown(report, args.sessions))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
