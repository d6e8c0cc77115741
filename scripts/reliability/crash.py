#!/usr/bin/env python3
"""kill -9 under load, many times: no acknowledged event may be lost or counted twice.

For each backend: `cphub serve` (release) on a fresh database; 16 player threads play
sessions (enter, then quit) as fast as cphub answers, each on its own phone, and redeliver
an event until it gets a 200, as the phones' engine does; meanwhile the process is
SIGKILLed at a random moment (0.3-1.5 s apart) and restarted on the same database and
port, --kills times. Every 200 a player saw is remembered. At the end cphub is restarted
once more and every remembered event is looked up through the operator API:

- lost: an acknowledged enter whose session has no start, or an acknowledged quit whose
  session has no end (or other times than the ones sent);
- double counted: a session whose event log holds more than one accepted enter or quit.

Both must be 0. Requests that failed (connection reset by the kill, refused while
restarting) are not acknowledged: they may or may not have been committed, and the
redelivery must then be recognised as a duplicate, not counted again.

Heartbeats are only buffered before the 200 and written every heartbeats.flush_interval_ms
(default 1000): a kill may lose the acknowledged heartbeats of the last interval. A
heartbeat thread measures it: between two kills it beats for its own set of 32 phones
(phone time counting up), so after the last restart each set shows what its kill lost.
"loss window" is, over all kills, the longest time between a lost heartbeat's 200 and the
kill; it must stay within the flush interval (plus the flush itself).

Usage: scripts/reliability/crash.py [--cphub target/release/cphub] [--kills 20]
                                     [--backends sqlite,postgres]
PostgreSQL: BENCH_PG_ADMIN_URL (default: the test role of scripts/postgres-for-tests);
the database cphub_crash is recreated and dropped.
"""

import argparse
import datetime
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

TOKEN = "crash-test-token-0123456789abcdef0123456"
PLAYERS = 16
HEARTBEAT_PHONES = 32
FLUSH_INTERVAL_MS = 1000  # heartbeats.flush_interval_ms, the default, left unchanged
PHONE_EPOCH = datetime.datetime(2026, 11, 28, tzinfo=datetime.timezone.utc)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cphub:
    def __init__(self, binary, url, port, log):
        self.binary, self.port, self.log = binary, port, log
        self.env = dict(os.environ, DATABASE_URL=url, CPHUB_CONFIG_DIR="/nonexistent",
                        CPHUB__API__TOKENS=TOKEN, CPHUB__SERVER__LISTEN=f"127.0.0.1:{port}",
                        CPHUB__LOG__LEVEL="warn",
                        # The final check looks every acknowledged session up through the
                        # operator API, tens of thousands of requests: no rate limit.
                        CPHUB__API__RATE_LIMIT_PER_SECOND="0")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([self.binary, "serve"], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("cphub did not become ready")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def event(session, phone, status, time_, run_time=None):
    ev = {"phone_id": phone, "status": status, "session_id": session, "time": time_,
          "app_id": "com.crash.game", "error_msg": None}
    if status == 1:
        ev["run_time"] = run_time
    return {"event_type": "app", "event": ev}


def deliver(port, body, stop, errors):
    """Sends until a 200 (True), as the phones' engine does, or until told to stop."""
    while not stop.is_set():
        answer = post(port, "/cph/events", body)
        if answer == 200:
            return True
        errors[answer] = errors.get(answer, 0) + 1  # a 4xx is a bug: counted, fails the run
        time.sleep(0.02)  # the process is being killed or restarted
    return False


def player(n, port, tag, stop, acked, errors):
    """Plays sessions of 60 + k seconds (phone time), k counting up."""
    phone = f"crash-phone-{n}"
    k = 0
    while not stop.is_set():
        session = f"crash-{tag}-{n}-{k}"
        enter_t, quit_t = f"2026-11-28T10:00:{k % 60:02d}Z", f"2026-11-28T10:{1 + k % 58:02d}:{k % 60:02d}Z"
        for status, t in ((0, enter_t), (1, quit_t)):
            if deliver(port, event(session, phone, status, t, 60), stop, errors):
                acked.append((session, status, t))
        k += 1


class Heartbeats:
    """Beats for phones hb-{epoch}-{i}; `epoch` moves on at each kill, so the phones of an
    epoch keep, after the last restart, exactly what the kill that ended it left."""

    def __init__(self, port):
        self.port, self.epoch, self.kills = port, 0, []
        self.acked = {}  # (epoch, i) -> [(phone time, wall time of the 200)]

    def run(self, stop):
        n = 0
        while not stop.is_set():
            epoch, i = self.epoch, n % HEARTBEAT_PHONES
            phone_time = PHONE_EPOCH + datetime.timedelta(seconds=n)
            body = {"event_type": "heartbeat",
                    "event": {"phone_id": f"hb-{epoch}-{i}", "app_id": "", "session_id": "",
                              "time": phone_time.strftime("%Y-%m-%dT%H:%M:%SZ")}}
            if post(self.port, "/cph/heartbeat", body) == 200:
                self.acked.setdefault((epoch, i), []).append((phone_time, time.monotonic()))
            else:
                time.sleep(0.02)
            n += 1

    def killed(self):
        self.kills.append(time.monotonic())
        self.epoch += 1

    def verify(self, port):
        """(acknowledged heartbeats lost, longest time from a lost one's 200 to its kill)."""
        lost, window = 0, 0.0
        for (epoch, i), beats in self.acked.items():
            if epoch >= len(self.kills):
                continue  # beat until the final SIGTERM, which flushes
            phone = get_json(port, f"/api/v1/phones/hb-{epoch}-{i}")
            stored = phone and phone["last_heartbeat_at"]
            stored = datetime.datetime.fromisoformat(stored) if stored else None
            for phone_time, acked_at in beats:
                if stored is None or phone_time > stored:
                    lost += 1
                    window = max(window, self.kills[epoch] - acked_at)
        return lost, window


def get_json(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return json.load(res)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def verify(port, acked):
    lost, double = [], []
    by_session = {}
    for session, status, t in acked:
        by_session.setdefault(session, []).append((status, t))
    for session, events in by_session.items():
        s = get_json(port, f"/api/v1/sessions/{session}")
        if s is None:
            lost.extend((session, st) for st, _ in events)
            continue
        accepted = [e for e in s["events"] if e["outcome"] == "accepted"]
        for kind in ("enter", "quit"):
            if sum(1 for e in accepted if e["kind"] == kind) > 1:
                double.append((session, kind))
        for status, t in events:
            field = "started_at" if status == 0 else "ended_at"
            if s[field] != t:
                lost.append((session, status))
    return by_session, lost, double


def run(backend, args, workdir):
    if backend == "sqlite":
        url = f"sqlite://{workdir}/crash.db"
        drop = lambda: None  # noqa: E731
    else:
        admin = os.environ.get("BENCH_PG_ADMIN_URL",
                               "postgres://cphub_test:cphub_test@127.0.0.1:5432/postgres")
        psql = lambda sql: subprocess.run(["psql", "-X", "-q", admin, "-c", sql], check=True,  # noqa: E731
                                          stderr=subprocess.DEVNULL)
        psql("DROP DATABASE IF EXISTS cphub_crash WITH (FORCE)")
        psql("CREATE DATABASE cphub_crash")
        url = f"{admin.rsplit('/', 1)[0]}/cphub_crash"
        drop = lambda: psql("DROP DATABASE IF EXISTS cphub_crash WITH (FORCE)")  # noqa: E731
    port = free_port()
    with open(f"{workdir}/cphub-{backend}.log", "w") as log:
        cphub = Cphub(args.cphub, url, port, log)
        cphub.start()
        stop, acked, errors = threading.Event(), [], {}
        players = [threading.Thread(target=player, args=(n, port, backend, stop, acked, errors))
                   for n in range(PLAYERS)]
        heartbeats = Heartbeats(port)
        players.append(threading.Thread(target=heartbeats.run, args=(stop,)))
        for p in players:
            p.start()
        started = time.monotonic()
        for kill in range(args.kills):
            time.sleep(random.uniform(0.3, 1.5))
            cphub.kill9()
            heartbeats.killed()
            print(f"[{backend}] kill -9 #{kill + 1}: {len(acked)} events acknowledged so far",
                  file=sys.stderr)
            cphub.start()
        time.sleep(1)
        stop.set()
        for p in players:
            p.join()
        elapsed = time.monotonic() - started
        exit_code = cphub.stop()
        cphub.start()  # a clean start on what the kills left
        try:
            sessions, lost, double = verify(port, acked)
            hb_lost, hb_window = heartbeats.verify(port)
        finally:
            cphub.stop()
    drop()
    return {"backend": backend, "kills": args.kills, "seconds": round(elapsed, 1),
            "acked_events": len(acked), "sessions": len(sessions),
            "failed_requests": sum(errors.values()),
            "refused_4xx": sum(n for a, n in errors.items() if a is not None and a < 500), "lost": len(lost),
            "double_counted": len(double), "sigterm_exit": exit_code,
            "heartbeats_acked": sum(len(b) for b in heartbeats.acked.values()),
            "heartbeats_lost": hb_lost, "heartbeat_loss_window_ms": round(hb_window * 1000),
            "examples": {"lost": lost[:5], "double": double[:5]}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cphub", default="target/release/cphub")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--backends", default="sqlite,postgres")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cphub-crash-") as workdir:
        results = [run(b, args, workdir) for b in args.backends.split(",")]
    print("| backend | kill -9 | seconds under load | events acknowledged | sessions "
          "| deliveries failed by the kills (redelivered) | acknowledged lost "
          "| double counted | heartbeats acknowledged | of them lost "
          "| loss window (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['backend']} | {r['kills']} | {r['seconds']} | {r['acked_events']:,} "
              f"| {r['sessions']:,} | {r['failed_requests']:,} | {r['lost']} "
              f"| {r['double_counted']} | {r['heartbeats_acked']:,} | {r['heartbeats_lost']} "
              f"| {r['heartbeat_loss_window_ms']} |")
    # The flush takes some time of its own after the interval: 500 ms of slack.
    bad = [r for r in results if r["lost"] or r["double_counted"]
           or r["heartbeat_loss_window_ms"] > FLUSH_INTERVAL_MS + 500 or r["sigterm_exit"] or r["refused_4xx"]]
    for r in bad:
        print(f"{r['backend']}: {r['examples']}", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
