#!/usr/bin/env python3
"""Walks cphub's web console in headless Chromium (Debian's, through Playwright), as an
operator would, and checks what the issue asks of it (docs/console.md, "Tests").

Run by tests/api/console_browser.rs against cphub and the simulator's fleet:

    console.py --base http://127.0.0.1:PORT --admin TOKEN --reader TOKEN --api TOKEN \
               --silent PHONE_ID --phones N [--smoke] [--screenshots DIR]

--admin may do everything, --reader only read phones and sessions, --api is used for the
API calls the console's figures are compared with. --silent is a phone the test silences
(through the simulator) once this script has made the file --ready names. --smoke only signs in and compares the fleet counts (the PostgreSQL run).
Exits 0 when every check held, otherwise 1 with the failed check on stderr. Prints a JSON
summary of what it saw on stdout.
"""

import argparse
import collections
import datetime
import json
import os
import sys
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

    def other_pages(self, context):
        page = context.new_page()
        for name in ["sessions", "queue", "rollouts", "webhooks"]:
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
        self.other_pages(context)
        return self.done()

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
