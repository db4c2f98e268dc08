"""The web console in a real headless Chromium (tests/tests/dashboard.rs).

Driven by the Rust test through a line protocol on stdin/stdout, so that the
installation (processes, signals, the command API) stays in Rust and only
the browser is here:

    script -> test:  STEP <name>        the script waits for the test
    test -> script:  GO [<json>]        the test has done its part
    script -> test:  PASS <what>        an assertion held (shown in the log)

Any failed expectation raises: the script exits non-zero with the traceback
on stderr, and the test fails with it. Nothing sleeps to synchronise: every
wait is for a selector or a condition, with a deadline.

Arguments: --alice URL (a console with an approver's credentials),
--carol URL (a console with a non-approver's), --trigger ID (the rollout
the test started, held in `applying`), --chromium PATH, --shots DIR.
"""

import argparse
import json
import os
import sys

from playwright.sync_api import expect, sync_playwright

# How long one expectation may take: a loaded 2-core machine, a 200 ms poll.
PATIENCE_MS = 10_000


def step(name):
    """Tells the test `name` is reached; returns what it answers."""
    print(f"STEP {name}", flush=True)
    line = sys.stdin.readline()
    if not line.startswith("GO"):
        raise RuntimeError(f"the test answered {line!r} to step {name}")
    rest = line[2:].strip()
    return json.loads(rest) if rest else None


def passed(what):
    print(f"PASS {what}", flush=True)


class Tab:
    """A page with its console errors and uncaught exceptions recorded."""

    def __init__(self, context, name):
        self.name = name
        self.page = context.new_page()
        self.page.set_default_timeout(PATIENCE_MS)
        self.errors = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def _console(self, msg):
        if msg.type == "error":
            self.errors.append(f"console: {msg.text}")

    def assert_no_errors(self, expected=()):
        """No console error but those containing one of `expected`."""
        unexpected = [e for e in self.errors if not any(x in e for x in expected)]
        assert not unexpected, f"{self.name}: console errors: {unexpected}"


def shot(tab, shots, name):
    tab.page.screenshot(path=os.path.join(shots, f"{name}.png"), full_page=True)


def state_of(page):
    return page.locator("h1 [data-state]")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--alice", required=True)
    ap.add_argument("--carol", required=True)
    ap.add_argument("--trigger", required=True)
    ap.add_argument("--chromium", required=True)
    ap.add_argument("--shots", required=True)
    args = ap.parse_args()
    os.makedirs(args.shots, exist_ok=True)
    trigger_path = f"/#/trigger/{args.trigger}"

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=args.chromium,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        laptop = {"viewport": {"width": 1280, "height": 760}}
        alice_ctx = browser.new_context(**laptop)
        alice = Tab(alice_ctx, "alice")
        page = alice.page

        # 1. The rollouts list shows the running rollout, live.
        page.goto(args.alice + "/#/")
        row = page.locator(f'#active tr[data-trigger="{args.trigger}"]')
        expect(row).to_be_visible()
        expect(row.locator("[data-state]")).to_have_attribute("data-state", "applying")
        expect(row.locator(".steps li.current")).to_have_text("dev")
        expect(page.locator("#live")).to_have_text("live")
        shot(alice, args.shots, "rollouts")
        passed("the list shows the running rollout, applying in dev")

        # 2. Its page follows it from applying to baking without a reload.
        row.get_by_role("link").click()
        expect(state_of(page)).to_have_attribute("data-state", "applying")
        page.evaluate("window.__notReloaded = true")
        step("applying")  # the test lets the dev agent apply
        expect(state_of(page)).to_have_attribute("data-state", "baking")
        expect(page.locator(".countdown").first).to_be_visible()
        assert page.evaluate("window.__notReloaded === true"), "the page reloaded"
        shot(alice, args.shots, "trigger-baking")
        passed("the page went from applying to baking live")

        # The bake ends; the staging phase waits for approval.
        expect(state_of(page)).to_have_attribute("data-state", "awaiting_approval")
        expect(page.locator('[data-action="approve"]')).to_be_visible()
        expect(page.locator(".approvals")).to_have_text("0 / 1")
        # The dev phase's analysis, as the agent last reported it.
        analysis = page.locator('tr[data-segment="dev"] [data-analysis="error-rate"]')
        expect(analysis).to_have_attribute("data-result", "inconclusive")
        passed("the segment shows its analysis' latest result")

        # 3. A non-approver's console: approve is refused, clearly.
        carol_ctx = browser.new_context(**laptop)
        carol = Tab(carol_ctx, "carol")
        carol.page.goto(args.carol + trigger_path)
        carol.page.locator('[data-action="approve"]').click()
        msg = carol.page.locator("#action-message")
        expect(msg).to_have_attribute("data-kind", "bad")
        expect(msg).to_contain_text("Refused")
        expect(msg).to_contain_text("may not approve")
        expect(state_of(carol.page)).to_have_attribute("data-state", "awaiting_approval")
        shot(carol, args.shots, "refused")
        passed("a non-approver's approve is shown refused")

        # 4. A stale page: its live feed is cut, so it keeps showing the
        #    phase awaiting approval after the rollout moved on.
        stale = Tab(alice_ctx, "stale")
        stale.page.route("**/api/events", lambda route: route.abort())
        stale.page.goto(args.alice + trigger_path)
        expect(stale.page.locator('[data-action="approve"]')).to_be_visible()

        # 5. The approver approves, with the keyboard: the rollout moves on.
        approve = page.locator('[data-action="approve"]')
        approve.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#action-message")).to_have_text("Approved.")
        expect(page.locator('#history li[data-type="approved"]')).to_have_count(1)
        expect(page.locator("h1 [data-state]")).to_have_attribute("data-state", "completed")
        passed("approve as an approver moved the rollout on to completed")

        # 6. The stale page's approve names a phase that is over: conflict.
        stale.page.locator('[data-action="approve"]').click()
        stale_msg = stale.page.locator("#action-message")
        expect(stale_msg).to_contain_text("This rollout moved on, reload.")
        shot(stale, args.shots, "conflict")
        stale.page.get_by_role("button", name="Reload").click()
        expect(state_of(stale.page)).to_have_attribute("data-state", "completed")
        passed("a stale page's approve shows the conflict message")

        # 7. Abort asks first; cancelling keeps it running; confirming
        #    rolls every segment back.
        second = step("approved")
        page.goto(args.alice + f"/#/trigger/{second['trigger']}")
        abort = page.locator('[data-action="abort"]')
        expect(abort).to_be_visible()
        # Pause and resume first: the paused badge comes and goes.
        page.locator('[data-action="pause"]').click()
        expect(page.locator("#action-message")).to_have_text("Paused.")
        expect(state_of(page)).to_have_attribute("data-paused", "true")
        page.locator('[data-action="resume"]').click()
        expect(page.locator("#action-message")).to_have_text("Resumed.")
        expect(state_of(page)).not_to_have_attribute("data-paused", "true")
        passed("pause and resume")
        abort.click()
        dialog = page.locator("#abort-dialog")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text(f"returns to v{second['from_version']}")
        shot(alice, args.shots, "abort-confirm")
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(abort).to_be_focused()
        expect(state_of(page)).not_to_have_attribute("data-state", "aborted")
        abort.click()
        page.locator("#abort-comment").fill("wrong rules, rolling back")
        page.locator("#abort-confirm").click()
        expect(state_of(page)).to_have_attribute("data-state", "aborted")
        entry = page.locator('#history li[data-type="aborted"]')
        expect(entry).to_contain_text("wrong rules, rolling back")
        shot(alice, args.shots, "trigger-aborted")
        passed("abort asked for confirmation, then aborted with the comment")
        # The test checks every agent serves the old version, then stops
        # the staging agent.
        step("aborted")

        # 8. The other views: lists with search, agents by segment.
        page.goto(args.alice + "/#/gates")
        expect(page.locator('tr[data-name="checkout"]')).to_be_visible()
        page.locator("#search").fill("zzz-nothing")
        expect(page.locator("main")).to_contain_text("No gates match")
        page.locator("#search").fill("check")
        expect(page.locator('tr[data-name="checkout"]')).to_be_visible()
        shot(alice, args.shots, "gates")
        page.goto(args.alice + "/#/pipelines")
        expect(page.locator('tr[data-name="standard"]')).to_be_visible()
        shot(alice, args.shots, "pipelines")
        page.goto(args.alice + "/#/agents")
        expect(page.locator('section[data-segment="dev"]')).to_contain_text("1 live")
        staging = page.locator('section[data-segment="staging"]')
        expect(staging).to_contain_text("1 unreachable")
        expect(staging.locator('tr[data-agent="staging-1"]')).to_contain_text("unreachable")
        shot(alice, args.shots, "agents")
        page.goto(args.alice + "/#/")
        finished = page.locator(f'#finished tr[data-trigger="{args.trigger}"]')
        expect(finished).to_contain_text("completed")
        expect(page.locator("#active")).to_contain_text("No rollout is running")
        passed("gates, pipelines, agents (one unreachable) and finished rollouts are listed")

        # 9. Keyboard: the skip link comes first and lands on the content,
        #    and the next stop is in it.
        keys = Tab(alice_ctx, "keyboard")
        keys.page.goto(args.alice + "/#/")
        expect(keys.page.locator(f'#finished tr[data-trigger="{args.trigger}"]')).to_be_visible()
        keys.page.keyboard.press("Tab")
        expect(keys.page.locator("#skip")).to_be_focused()
        keys.page.keyboard.press("Enter")
        expect(keys.page.locator("main")).to_be_focused()
        keys.page.keyboard.press("Tab")
        focused = keys.page.evaluate("document.activeElement.closest('main') !== null")
        assert focused, "Tab after the skip link should stay in the content"
        passed("keyboard: the skip link leads into the content")

        # No console errors but the refusals the tests asked for (the
        # browser logs a 403 or 409 answer) and the stale page's cut feed.
        alice.assert_no_errors()
        keys.assert_no_errors()
        carol.assert_no_errors(expected=("403",))
        stale.assert_no_errors(expected=("409", "ERR_FAILED", "/api/events"))
        passed("no console errors")
        browser.close()


if __name__ == "__main__":
    main()
