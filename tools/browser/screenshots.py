#!/usr/bin/env python3
"""Takes the screenshots of docs/console.md from `cphub demo`: starts the demo with a fleet
of --phones, lets players play a while, puts two players in the queue of a game no phone
has, rolls out the version the demo uploaded, points the demo's webhooks at a local
endpoint that answers 500 (so the webhooks page has a backlog), then photographs every
console page in headless Chromium (Debian's, through Playwright) and optimises the PNGs
with optipng when it is installed.

    .venv/bin/python tools/browser/screenshots.py --cphub target/release/cphub --out docs/console

Exits 0 with one line per file written; 1 with the reason otherwise.
"""

import argparse
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

from playwright.sync_api import sync_playwright

from console import CHROMIUM, CHROMIUM_ARGS

# A laptop's width; the full page's height up to MAX_HEIGHT (a long page's top says what it
# is; the files stay small). The fleet page again at a phone's width.
LAPTOP = {"width": 1280, "height": 800}
MAX_HEIGHT = 1280
PHONE = {"width": 390, "height": 844}
WAITING_GAME = "sim.upcoming"


class Refusing(http.server.BaseHTTPRequestHandler):
    """A webhook receiver that is down: every delivery stays pending."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


def refusing_endpoint():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/hook"


class Demo:
    """`cphub demo`, and what it printed: the address, the token, the version to roll out."""

    def __init__(self, cphub, phones, webhook_url):
        args = [cphub, "demo", "--phones", str(phones), "--webhook-url", webhook_url]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.version = None
        for line in self.process.stdout:
            found = re.search(r"a new version (\S+) of (\S+) is uploaded", line)
            if found:
                self.version, self.app = found.groups()
            found = re.search(r"open (http://\S+)/console and sign in with the token (\S+)", line)
            if found:
                self.base, self.token = found.groups()
                break
        else:
            raise SystemExit(f"cphub demo ended before it printed its address ({self.process.wait()})")
        # Keep reading its summary lines, so the pipe never fills.
        threading.Thread(target=lambda: [None for _ in self.process.stdout], daemon=True).start()

    def api(self, path, body=None):
        headers = {"Authorization": "Bearer " + self.token, "Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as res:
            return json.loads(res.read())

    def wait_for(self, what, condition, seconds=120):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(1)
        raise SystemExit(f"the demo never got to: {what}")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def set_up(demo):
    """What the pages show: sessions played, two players waiting, a rollout under way."""

    def played():
        return len(demo.api("/api/v1/sessions?state=ended&limit=100")["sessions"]) >= 15

    demo.wait_for("15 sessions played", played)
    for user, priority in [("player-waiting", 0), ("player-vip", 5)]:
        demo.api("/api/v1/queue", {"app_id": WAITING_GAME, "user_id": user, "priority": priority})
    body = {"app_id": demo.app, "app_version_ids": [demo.version], "push_first": True, "canary": 2, "batch_size": 4}
    rollout_id = demo.api("/api/v1/rollouts", body)["id"]

    def under_way():
        steps = {p["state"] for p in demo.api(f"/api/v1/rollouts/{rollout_id}")["phones"]}
        return {"done", "pending"} <= steps

    demo.wait_for("a rollout with phones updated and others to go", under_way)
    return rollout_id


def updated_phone(demo, rollout_id):
    """A phone the rollout updated that has played: its history has both."""
    phones = demo.api(f"/api/v1/rollouts/{rollout_id}")["phones"]
    done = [p["phone_id"] for p in phones if p["state"] == "done"]

    def has_played(phone):
        return demo.api(f"/api/v1/sessions?phone_id={phone}&state=ended&limit=1")["sessions"]

    return next((p for p in done if has_played(p)), done[0])


def shoot(demo, rollout_id, out):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=LAPTOP)
        page = context.new_page()
        page.goto(demo.base + "/console/fleet")
        page.screenshot(path=os.path.join(out, "login.png"))
        page.get_by_label("Operator token").fill(demo.token)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(demo.base + "/console/fleet")
        shots = {
            "fleet": "/console/fleet",
            "phone": f"/console/phones/{updated_phone(demo, rollout_id)}",
            "sessions": "/console/sessions",
            "usage": "/console/usage",
            "queue": "/console/queue",
            "rollouts": f"/console/rollouts/{rollout_id}",
            "webhooks": "/console/webhooks",
        }
        for name, path in shots.items():
            page.goto(demo.base + path)
            height = min(page.evaluate("document.documentElement.scrollHeight"), MAX_HEIGHT)
            clip = {"x": 0, "y": 0, "width": LAPTOP["width"], "height": height}
            page.screenshot(path=os.path.join(out, name + ".png"), full_page=True, clip=clip)
        small = browser.new_context(viewport=PHONE)
        small.add_cookies(context.cookies())
        phone = small.new_page()
        phone.goto(demo.base + "/console/fleet")
        phone.screenshot(path=os.path.join(out, "fleet-phone.png"))
        browser.close()
    return ["login"] + list(shots) + ["fleet-phone"]


def optimise(paths):
    if shutil.which("optipng"):
        subprocess.run(["optipng", "-quiet", "-o2", *paths], check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cphub", default="target/release/cphub", help="the cphub binary")
    parser.add_argument("--out", default="docs/console", help="where the PNGs go")
    parser.add_argument("--phones", type=int, default=24, help="the demo fleet's size")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    receiver, url = refusing_endpoint()
    demo = Demo(args.cphub, args.phones, url)
    try:
        rollout_id = set_up(demo)
        names = shoot(demo, rollout_id, args.out)
    finally:
        demo.stop()
        receiver.shutdown()
    paths = [os.path.join(args.out, n + ".png") for n in names]
    optimise(paths)
    for path in paths:
        print(f"{path}\t{os.path.getsize(path)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
