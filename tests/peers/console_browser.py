"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright.

Opens <base>/console/ and checks, as a user would see it, that
- (with --login authid:ticket) the console asks for credentials, refuses a wrong ticket with the
  hub's message, and works once given the right one;
- the thing's row appears at once, offline: the script then prints {"listed": <thing>} and the
  test starts the device;
- the row turns online, and its reported temperature changes on screen with no request to the
  API (the values are pushed over the event stream, not polled);
- on the thing's page, setting a writable property through its input and button shows the value
  pending, then the device's confirmation: reported equals the value, nothing pending;
- the page raised no JavaScript error.

Then prints {"thing", "property", "value"} and exits 0; on failure, says which step failed on
stderr, saves a screenshot and exits 1.
"""

import argparse
import json
import sys

from playwright.sync_api import sync_playwright

TIMEOUT_MS = 20_000
# The list is read when the page opens, before any device has said anything.
LIST_TIMEOUT_MS = 10_000


class Failed(Exception):
    pass


def testid(name):
    return f'[data-testid="{name}"]'


def text_of(page, name):
    return page.locator(testid(name)).text_content(timeout=TIMEOUT_MS)


def step(what, fn):
    print(f"console_browser: {what}", file=sys.stderr, flush=True)
    try:
        return fn()
    except Failed:
        raise
    except Exception as e:  # Playwright's timeouts and errors, named after the step
        raise Failed(f"{what}: {e}") from e


def wait_text(page, name, predicate_js, arg):
    """Waits until the text of the element with data-testid `name` passes `predicate_js`
    (a JavaScript function of the text and `arg`)."""
    page.wait_for_function(
        f"""([sel, arg]) => {{
            const el = document.querySelector(sel);
            return !!el && ({predicate_js})(el.textContent, arg);
        }}""",
        arg=[testid(name), arg],
        timeout=TIMEOUT_MS,
    )


def log_in(page, login):
    authid, ticket = login.split(":", 1)
    step("the console asks for credentials", lambda: page.locator(testid("login")).wait_for(state="visible"))

    def refused():
        page.fill(testid("login-authid"), authid)
        page.fill(testid("login-ticket"), ticket + "-wrong")
        page.click(testid("login-submit"))
        page.locator(testid("login")).wait_for(state="visible")
        wait_text(page, "login-message", "(t) => t.startsWith('Not accepted')", None)

    step("a wrong ticket is refused", refused)

    def accepted():
        page.fill(testid("login-authid"), authid)
        page.fill(testid("login-ticket"), ticket)
        page.click(testid("login-submit"))
        page.locator(testid("login")).wait_for(state="hidden")
        wait_text(page, "whoami", "(t, id) => t.startsWith(id)", authid)

    step("the right ticket is accepted", accepted)


def run(page, args):
    api_requests = []
    page.on("request", lambda r: api_requests.append(r.url) if "/api/things" in r.url else None)
    step("open the console", lambda: page.goto(f"{args.base}/console/"))
    if args.login:
        log_in(page, args.login)

    thing = args.thing
    step(f"the row of {thing} appears", lambda: page.locator(testid(f"thing-row-{thing}")).wait_for(
        timeout=LIST_TIMEOUT_MS))
    step(f"{thing} shows offline", lambda: wait_text(page, f"online-{thing}", "(t) => t === 'offline'", None))
    print(json.dumps({"listed": thing}), flush=True)
    step(f"{thing} comes online", lambda: wait_text(page, f"online-{thing}", "(t) => t === 'online'", None))
    step("the hub panel shows readiness", lambda: page.locator(testid("hub-ready")).wait_for())

    cell = f"list-reported-{thing}-temperature"
    first = step("a reported temperature is shown", lambda: (
        page.locator(testid(cell)).wait_for(), text_of(page, cell))[1])
    page.wait_for_timeout(300)  # let the initial reads finish before counting requests
    before = len(api_requests)
    seen = [first]
    for n in range(2):
        def changed():
            wait_text(page, cell, "(t, old) => t !== '' && t !== old", seen[-1])
            seen.append(text_of(page, cell))
        step(f"the temperature changes on screen ({n + 1}/2, from {seen[-1]})", changed)
    pushed = api_requests[before:]
    if pushed:
        raise Failed(f"the list was refreshed by requests instead of the event stream: {pushed}")

    step(f"open the page of {thing}", lambda: (
        page.click(testid(f"thing-link-{thing}")),
        page.locator(testid(f"thing-page-{thing}")).wait_for()))
    prop = args.prop
    wait_text(page, f"reported-{prop}", "(t) => t !== '—' && t !== ''", None)
    current = float(text_of(page, f"reported-{prop}"))
    value = args.value if current != args.value else args.value - 1
    shown = json.dumps(value)
    step("the temperature moves on the thing page too", lambda: wait_text(
        page, "reported-temperature", "(t, old) => t !== old", text_of(page, "reported-temperature")))

    def set_value():
        page.fill(testid(f"set-input-{prop}"), str(value))
        page.click(testid(f"set-button-{prop}"))
        # Pending at once (the device has not answered yet), or already confirmed by a fast one.
        wait_text(page, f"desired-{prop}", "(t, v) => t === v || t === ''", shown)

    step(f"set {prop} to {shown} through the input and button", set_value)

    def confirmed():
        wait_text(page, f"reported-{prop}", "(t, v) => t === v", shown)
        page.wait_for_function(
            "(sel) => document.querySelector(sel).dataset.pending === 'false'",
            arg=testid(f"desired-{prop}"),
            timeout=TIMEOUT_MS,
        )
        wait_text(page, f"set-status-{prop}", "(t) => t === 'confirmed'", None)

    step(f"the device confirms {prop} = {shown}", confirmed)

    def out_of_range():
        page.fill(testid(f"set-input-{prop}"), "1000")
        page.click(testid(f"set-button-{prop}"))
        wait_text(page, f"set-status-{prop}", "(t) => t.startsWith('wamp.error.invalid_argument')", None)

    step("an out-of-range value is refused with the hub's error", out_of_range)
    wait_text(page, f"reported-{prop}", "(t, v) => t === v", shown)
    events = page.locator(f'{testid("events")} li').count()
    if events == 0:
        raise Failed("the thing page lists no recent events")
    return {"thing": thing, "property": prop, "value": value}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="http://host:port of the hub's HTTP listener")
    ap.add_argument("--thing", required=True)
    ap.add_argument("--prop", default="setpoint", help="a writable number property")
    ap.add_argument("--value", type=float, default=27.5)
    ap.add_argument("--login", help="authid:ticket; the console must ask for them")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--screenshot", required=True, help="where to save a screenshot on failure")
    args = ap.parse_args()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        js_errors = []
        page.on("pageerror", lambda e: js_errors.append(str(e)))
        try:
            result = run(page, args)
            if js_errors:
                raise Failed(f"the page raised JavaScript errors: {js_errors}")
        except Failed as e:
            try:
                page.screenshot(path=args.screenshot, full_page=True)
            except Exception as shot:  # the failure matters more than the screenshot
                print(f"console_browser: no screenshot: {shot}", file=sys.stderr)
            print(f"console_browser: FAILED at {e}\nscreenshot: {args.screenshot}", file=sys.stderr)
            if js_errors:
                print(f"JavaScript errors: {js_errors}", file=sys.stderr)
            sys.exit(1)
        finally:
            browser.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
