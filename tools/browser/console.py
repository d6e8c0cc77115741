#!/usr/bin/env python3
"""Walks cphub's web console in headless Chromium (Debian's, through Playwright), as an
operator would, and checks what the issue asks of it (docs/console.md, "Tests").

Run by tests/api/console_browser.rs against cphub and the simulator's fleet:

    console.py --base http://127.0.0.1:PORT --admin TOKEN --reader TOKEN --api TOKEN \
               --silent PHONE_ID --phones N --app APP --version VERSION --webhook NAME \
               [--smoke] [--screenshots DIR]

--admin may do everything, --reader only read phones and sessions, --api is used for the
API calls the console's figures are compared with. --silent is a phone the test silences
(through the simulator) once this script has made the file --ready names. --smoke only signs in and compares the fleet counts (the PostgreSQL run).
Through the API the walk then puts two players in the queue of a game no phone has, starts
a rollout of --version, and reads the backlog of --webhook (an endpoint answering 500),
each compared with what the page shows.
Exits 0 when every check held, otherwise 1 with the failed check on stderr. Prints a JSON
summary of what it saw on stdout.
"""

import argparse
import collections
import datetime
import json
import re
import os
import sys
import time
import urllib.parse
import urllib.request

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

# Chromium must not reach out (Google's services, updates): the network here is closed,
# and the test asserts the console itself fetches nothing from outside.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHROMIUM = os.environ.get("CPHUB_TEST_CHROMIUM", "/usr/bin/chromium")
# Every wait is for a condition; these only bound how long a broken run hangs.
WAIT_MS = 60_000


class Walk:
    def __init__(self, args, browser):
        self.args = args
        self.browser = browser
        self.requests = []
        self.navigations = 0
        self.summary = {}

    def context(self, width=1280, height=860):
        context = self.browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True
        )
        context.on("request", lambda r: self.requests.append(r.url))
        context.set_default_timeout(WAIT_MS)
        return context

    def api(self, path):
        req = urllib.request.Request(
            self.args.base + path, headers={"Authorization": "Bearer " + self.args.api}
        )
        with urllib.request.urlopen(req, timeout=30) as res:
            body = res.read()
        return body if path.endswith("format=csv") else json.loads(body)

    def api_post(self, path, body):
        req = urllib.request.Request(
            self.args.base + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": "Bearer " + self.args.api, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as res:
            return json.loads(res.read())

    def read_when_still(self, read_api, read_page, what, ready=lambda api: True):
        """What the page shows, with the API's answer, read while the API's answer stood
        still around the page's load (the fleet plays on as the browser reads)."""
        for _ in range(60):
            before = read_api()
            shown = read_page()
            after = read_api()
            if before == after and ready(after):
                return shown, after
            time.sleep(0.25)
        fail(f"{what} never stood still long enough to compare")

    def shot(self, page, name):
        if self.args.screenshots:
            os.makedirs(self.args.screenshots, exist_ok=True)
            page.screenshot(path=os.path.join(self.args.screenshots, name + ".png"), full_page=True)

    def sign_in(self, context, token, then="/console/fleet"):
        page = context.new_page()
        page.goto(self.args.base + then)
        check(page.url.startswith(self.args.base + "/console/login"), "redirected to sign in: " + page.url)
        self.shot(page, "login")
        page.get_by_label("Operator token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(self.args.base + then)
        return page

    def api_counts(self):
        counts = collections.Counter()
        cursor = ""
        while True:
            page = self.api("/api/v1/phones?limit=1000" + cursor)
            counts.update(p["state"] for p in page["phones"])
            if not page["next_cursor"]:
                return counts
            cursor = "&cursor=" + page["next_cursor"]

    def page_counts(self, page):
        counts = page.eval_on_selector_all(
            "[data-count]", "els => els.map(e => [e.dataset.count, Number(e.textContent)])"
        )
        return dict(counts)

    def fleet_counts_match(self, page):
        """The fleet page's counts equal the API's (retried: phones change state live)."""
        for _ in range(60):
            api = self.api_counts()
            shown = self.page_counts(page)
            if sum(api.values()) == self.args.phones and shown.get("total") == self.args.phones and all(
                shown.get(state, 0) == n for state, n in api.items()
            ):
                self.summary["fleet_counts"] = shown
                return
            page.wait_for_timeout(500)
        fail(f"fleet counts {self.page_counts(page)} never matched the API's {dict(self.api_counts())}")

    def watch_silent_phone(self, page):
        """The silenced phone's cell turns stale, then recovering, with no reload."""
        phone = self.args.silent
        page.evaluate("window.__cphubNoReload = true")
        # The cell's states are recorded from before the phone is silenced.
        # Records each state the phone's cell shows as htmx swaps the grid in.
        page.evaluate(
            """phone => {
                window.__seen = [];
                const note = () => {
                    const cell = document.querySelector(`[data-phone="${phone}"]`);
                    const state = cell && cell.dataset.state;
                    if (state && window.__seen[window.__seen.length - 1] !== state) window.__seen.push(state);
                };
                note();
                new MutationObserver(note).observe(document.body, {subtree: true, childList: true, attributes: true});
            }""",
            phone,
        )
        # Now the test silences the phone (it waits for this file).
        open(self.args.ready, "w").close()
        try:
            page.wait_for_function(
                """() => { const s = window.__seen, i = s.indexOf('stale');
                           return i >= 0 && s.indexOf('recovering', i) > i; }""",
                timeout=WAIT_MS,
            )
        except PlaywrightTimeout:
            polls = sum("/console/fleet/live" in u for u in self.requests)
            api = self.api(f"/api/v1/phones/{phone}")
            fail(f"the cell showed {page.evaluate('window.__seen')} after {polls} refreshes; "
                 f"the API says {api['state']}, last recovery {api.get('last_recovery')}")
        check(page.evaluate("window.__cphubNoReload === true"), "the fleet page was reloaded")
        check(self.navigations == 0, f"{self.navigations} navigations while watching")
        self.summary["silent_phone_states"] = page.evaluate("window.__seen")
        self.shot(page, "fleet")

    def phone_page(self, page):
        phone = self.args.silent
        page.click(f'[data-phone="{phone}"]')
        page.wait_for_url(f"{self.args.base}/console/phones/{phone}")
        # The recovery is logged when the watchdog acts, before the cell shows it.
        row = page.locator('tr[data-action="restart"]').first
        row.wait_for()
        check("stale" in row.inner_text(), "the recovery's reason is stale: " + row.inner_text())
        check(page.locator('a[href$="/restart"]').count() == 1, "an admin sees the restart button")
        self.shot(page, "phone")
        return page

    def usage(self, context):
        """The chart's and table's totals are the API's, and the CSV download is its CSV."""
        page = context.new_page()
        today = datetime.datetime.now(datetime.timezone.utc).date()
        day = datetime.timedelta(days=1)
        window = f"from={today - day}&to={today + 2 * day}"
        api_path = "/api/v1/usage?" + window + "&group_by=day,app"
        for _ in range(30):
            before = self.api(api_path)
            page.goto(self.args.base + "/console/usage?" + window)
            seconds = page.eval_on_selector_all(
                "svg.chart rect[data-seconds]", "rs => rs.map(r => Number(r.dataset.seconds))"
            )
            total = int(page.get_attribute("#total-hours", "data-seconds"))
            billable = int(page.get_attribute("#total-billable", "data-minutes"))
            after = self.api(api_path)
            if before != after or after["totals"]["open_sessions"] > 0:
                page.wait_for_timeout(500)
                continue
            totals = after["totals"]
            check(sum(seconds) == totals["seconds"], f"chart bars {sum(seconds)} s, API {totals['seconds']} s")
            check(total == totals["seconds"], f"chart total {total}, API {totals['seconds']}")
            check(billable == totals["billable_minutes"], f"billable {billable}, API {totals['billable_minutes']}")
            check(totals["sessions"] > 0, "some sessions were played: " + json.dumps(totals))
            with page.expect_download() as download:
                page.click("#csv")
            csv = open(download.value.path(), "rb").read()
            check(csv == self.api(api_path + "&format=csv"), "the CSV is the API's")
            self.summary["usage_totals"] = totals
            self.shot(page, "usage")
            return
        fail("usage never stood still long enough to compare")

    def forged_post(self, page):
        status = page.evaluate(
            "url => fetch(url, {method: 'POST'}).then(r => r.status)",
            f"/console/phones/{self.args.silent}/restart",
        )
        check(status == 403, f"a POST without the CSRF token: {status}")
        self.summary["forged_post"] = status

    def reader(self):
        context = self.context()
        page = self.sign_in(context, self.args.reader, f"/console/phones/{self.args.silent}")
        check(page.locator("h1").inner_text().startswith("Phone"), "the reader sees the phone")
        check(page.locator('a[href$="/restart"]').count() == 0, "no restart button without phones:operate")
        check(page.locator('a[href$="/reset"]').count() == 0, "no reset button without phones:operate")
        check(page.get_by_role("link", name="Usage").count() == 0, "no Usage link without usage:read")
        context.close()

    def queue(self, page):
        """Two players wait for a game no phone has (access.match_app keeps them waiting):
        the page lists each where its poll (GET /api/v1/queue/{id}) places it, the higher
        priority first."""
        app = self.args.waiting_app
        players = [("walker-low", 0), ("walker-high", 5)]
        joined = {
            user: self.api_post("/api/v1/queue", {"app_id": app, "user_id": user, "priority": prio})
            for user, prio in players
        }
        page.goto(self.args.base + "/console/queue")
        rows = page.eval_on_selector_all(
            "tr[data-queue]",
            "rs => rs.map(r => [r.dataset.queue, [r.dataset.app, Number(r.dataset.position), r.cells[1].textContent]])",
        )
        shown = dict(rows)
        for user, entry in joined.items():
            polled = self.api(f"/api/v1/queue/{entry['queue_id']}")
            check(polled["status"] == "waiting", f"{user} waits: {polled}")
            row = shown.get(entry["queue_id"])
            check(row == [app, polled["position"], user], f"{user}: the page shows {row}, the API {polled}")
        positions = {user: shown[e["queue_id"]][1] for user, e in joined.items()}
        check(positions == {"walker-high": 1, "walker-low": 2}, f"served by priority: {positions}")
        self.summary["queue_positions"] = positions
        self.shot(page, "queue")

    def rollout(self, page):
        """A rollout of a new version (5.3.7): each phone's step, attempts and batch on the
        page are those of GET /api/v1/rollouts/{id}, as are the rollout's state and batch."""
        body = {"app_id": self.args.app, "app_version_ids": [self.args.version], "canary": 1}
        rollout_id = self.api_post("/api/v1/rollouts", body)["id"]

        def read_page():
            page.goto(f"{self.args.base}/console/rollouts/{rollout_id}")
            steps = page.eval_on_selector_all(
                "tr[data-step]",
                """rs => rs.map(r => [r.dataset.phone, [r.dataset.step, Number(r.dataset.attempts),
                                      r.dataset.batch === '' ? null : Number(r.dataset.batch)]])""",
            )
            head = page.locator("#rollout-state")
            return dict(steps), [head.get_attribute("data-state"), int(head.get_attribute("data-batch"))]

        # Compared once a batch has taken a phone, so the page shows progress, not only a plan.
        (steps, head), api = self.read_when_still(
            lambda: self.api(f"/api/v1/rollouts/{rollout_id}"),
            read_page,
            "the rollout",
            ready=lambda api: any(p["state"] != "pending" for p in api["phones"]),
        )
        expected = {p["phone_id"]: [p["state"], p["attempts"], p["batch"]] for p in api["phones"]}
        check(steps == expected, f"rollout steps: the page shows {steps}, the API {expected}")
        check(head == [api["state"], api["batch"]], f"rollout: the page shows {head}, the API {api['state']}, {api['batch']}")
        check(len(steps) == self.args.phones, f"every phone is a target: {steps}")
        self.summary["rollout_steps"] = dict(collections.Counter(s[0] for s in steps.values()))
        self.shot(page, "rollout")

    def pending_deliveries(self, endpoint):
        pending, cursor = 0, ""
        while True:
            page = self.api(f"/api/v1/webhooks/deliveries?endpoint={endpoint}&state=pending&limit=1000{cursor}")
            pending += len(page["deliveries"])
            if not page["next_cursor"]:
                return pending
            cursor = "&cursor=" + urllib.parse.quote(page["next_cursor"])

    def webhooks(self, page):
        """An endpoint that answers 500: its deliveries pile up pending, and the page counts
        as many as GET /api/v1/webhooks/deliveries lists."""
        name = self.args.webhook

        def read_page():
            page.goto(self.args.base + "/console/webhooks")
            row = page.locator(f'tr[data-endpoint="{name}"]')
            return int(row.get_attribute("data-pending")), row.locator("td").nth(3).inner_text()

        (shown, oldest), after = self.read_when_still(
            lambda: self.pending_deliveries(name), read_page, f"the backlog of {name}", ready=lambda n: n > 0
        )
        check(shown == after, f"pending deliveries: the page shows {shown}, the API lists {after}")
        check(oldest != "—", f"the oldest undelivered of a backlog is shown: {oldest}")
        self.summary["webhook_pending"] = shown
        self.shot(page, "webhooks")

    def lists(self, context):
        page = context.new_page()
        self.queue(page)
        self.rollout(page)
        self.webhooks(page)
        page.close()

    def other_pages(self, context):
        page = context.new_page()
        for name in ["rollouts", "sessions"]:
            res = page.goto(f"{self.args.base}/console/{name}")
            check(res.status == 200, f"{name}: {res.status}")
            self.shot(page, name)
        first = page.locator("tr[data-session] a").first
        if first.count():
            first.click()
            page.wait_for_url("**/console/sessions/*")
            self.shot(page, "session")
        mobile = self.context(390, 844)
        small = mobile.new_page()
        small.context.add_cookies(context.cookies())
        small.goto(self.args.base + "/console/fleet")
        self.shot(small, "fleet-phone")
        mobile.close()

    def run(self):
        context = self.context()
        page = self.sign_in(context, self.args.admin)
        page.on("framenavigated", lambda f: f == page.main_frame and self.count_navigation())
        self.fleet_counts_match(page)
        if self.args.smoke:
            return self.done()
        self.watch_silent_phone(page)
        self.phone_page(page)
        self.forged_post(page)
        self.usage(context)
        self.reader()
        self.lists(context)
        self.other_pages(context)
        self.keyboard_on_a_phone_screen()
        return self.done()

    def keyboard_on_a_phone_screen(self):
        """On a phone-sized screen, sign in and move between pages with the keyboard alone
        (Tab to a control, Enter), each focused control showing a focus ring, and no page
        wider than the screen."""
        context = self.context(width=390, height=844)
        page = context.new_page()
        page.goto(self.args.base + "/console/fleet")
        self.tab_to(page, "[name=token]", "the token field")
        page.keyboard.type(self.args.admin)
        page.keyboard.press("Enter")
        page.wait_for_url(self.args.base + "/console/fleet")
        self.fits_the_screen(page)
        for name in ("Sessions", "Usage", "Queue"):
            self.tab_to(page, f'nav a:text-is("{name}")', f"the {name} link")
            page.keyboard.press("Enter")
            page.wait_for_url(re.compile(".*/console/" + name.lower() + r"(\?.*)?$"))
            self.fits_the_screen(page)
        self.summary["keyboard_pages"] = 4
        context.close()

    def tab_to(self, page, selector, what):
        target = page.locator(selector).first
        for _ in range(40):
            page.keyboard.press("Tab")
            if target.evaluate("el => el === document.activeElement"):
                ring = target.evaluate(
                    "el => { const s = getComputedStyle(el); return s.outlineStyle !== 'none' && s.outlineWidth !== '0px' || s.boxShadow !== 'none'; }"
                )
                check(ring, f"{what} shows no focus ring")
                return
        fail(f"{what} is never reached with Tab")

    def fits_the_screen(self, page):
        wide = page.evaluate("document.documentElement.scrollWidth")
        check(wide <= 390, f"{page.url} is {wide} px wide on a 390 px screen")

    def count_navigation(self):
        self.navigations += 1

    def done(self):
        foreign = [u for u in self.requests if not same_host(u, self.args.base)]
        check(not foreign, f"requests outside {self.args.base}: {foreign}")
        self.summary["requests"] = len(self.requests)
        return self.summary


def same_host(url, base):
    if url.startswith(("data:", "blob:", "about:")):
        return True
    u, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(base)
    return (u.scheme, u.hostname, u.port) == (b.scheme, b.hostname, b.port)


class CheckFailed(Exception):
    pass


def check(condition, what):
    if not condition:
        fail(what)


def fail(what):
    raise CheckFailed(what)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--admin", required=True)
    parser.add_argument("--reader", required=True)
    parser.add_argument("--api", required=True)
    parser.add_argument("--silent", required=True)
    parser.add_argument("--phones", type=int, required=True, help="the fleet's size")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--ready", help="a file made once the fleet page watches --silent")
    parser.add_argument("--app", help="the fleet's game, which --version updates")
    parser.add_argument("--version", help="a version of --app pushed to every server (5.3.4)")
    parser.add_argument("--waiting-app", default="walk.absent", help="a game no phone has")
    parser.add_argument("--webhook", help="a webhook endpoint that refuses every delivery")
    parser.add_argument("--screenshots")
    args = parser.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            walk = Walk(args, browser)
            summary = walk.run()
        except CheckFailed as failed:
            print(f"console check failed: {failed}", file=sys.stderr)
            return 1
        finally:
            browser.close()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
