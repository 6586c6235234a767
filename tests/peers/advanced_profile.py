"""Autobahn against Brume's Advanced Profile: progressive results, cancel, timeout, shared and
force-reregistered registrations, concurrency, retained events, the meta API and testaments.

Usage: advanced_profile.py URL SER
"""

import asyncio
import sys

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, PublishOptions, RegisterOptions, SubscribeOptions

from wamp_common import check, join, main, next_item


async def expect_error(coro, uris, what):
    try:
        await coro
    except ApplicationError as e:
        check(e.error in uris, "%s: %s" % (what, e.error))
        return e
    raise AssertionError(what + ": no error")


async def run(url, ser):
    a = await join(url, ser)
    b = await join(url, ser)

    # --- progressive call results
    async def countdown(n, details=None):
        for i in range(n):
            details.progress(i)
            await asyncio.sleep(0.01)
        return "done"

    await b.register(countdown, "com.adv.countdown", options=RegisterOptions(details_arg="details"))
    parts = []
    r = await a.call("com.adv.countdown", 3, options=CallOptions(on_progress=lambda i: parts.append(i)))
    check(parts == [0, 1, 2] and r == "done", "progressive results arrive before the final one: %r %r" % (parts, r))

    # --- cancel: the callee is interrupted
    started, interrupted = asyncio.Event(), asyncio.Event()

    async def hang():
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            interrupted.set()
            raise

    await b.register(hang, "com.adv.hang")
    pending = asyncio.ensure_future(a.call("com.adv.hang"))
    # Cancel once the callee is running the call, so the cancel has an invocation to interrupt.
    await asyncio.wait_for(started.wait(), 20)
    pending.cancel()
    await asyncio.wait_for(interrupted.wait(), 20)
    check(True, "a canceled call interrupts the callee")

    # --- timeout: the caller gets wamp.error.timeout and the callee is interrupted
    started.clear()
    interrupted.clear()
    await b.register(hang, "com.adv.slow")
    t0 = asyncio.get_running_loop().time()
    await expect_error(a.call("com.adv.slow", options=CallOptions(timeout=300)), ["wamp.error.timeout"], "call timeout")
    took = asyncio.get_running_loop().time() - t0
    check(0.25 <= took < 3, "the timeout fired after about 300 ms: %.2f s" % took)
    await asyncio.wait_for(interrupted.wait(), 20)
    check(True, "a timed-out call interrupts the callee")

    # --- shared registration, concurrency cap, force_reregister
    c = await join(url, ser)
    await b.register(lambda: "b", "com.adv.shared", options=RegisterOptions(invoke="roundrobin"))
    await c.register(lambda: "c", "com.adv.shared", options=RegisterOptions(invoke="roundrobin"))
    got = [await a.call("com.adv.shared") for _ in range(4)]
    check(got == ["b", "c", "b", "c"], "roundrobin alternates: %r" % got)
    await expect_error(
        c.register(lambda: "x", "com.adv.shared", options=RegisterOptions(invoke="random")),
        ["wamp.error.procedure_already_exists"], "a different policy is refused")

    gate, running = asyncio.Event(), asyncio.Event()

    async def gated():
        running.set()
        await gate.wait()
        return "ok"

    await b.register(gated, "com.adv.capped", options=RegisterOptions(concurrency=1))
    first = asyncio.ensure_future(a.call("com.adv.capped"))
    # The second call is made while the first one holds the only slot.
    await asyncio.wait_for(running.wait(), 20)
    await expect_error(a.call("com.adv.capped"), ["wamp.error.no_available_callee"], "concurrency cap")
    gate.set()
    check(await first == "ok", "the capped call still completes")

    await b.register(lambda: "stale", "com.adv.takeover")
    await c.register(lambda: "fresh", "com.adv.takeover", options=RegisterOptions(force_reregister=True))
    check(await a.call("com.adv.takeover") == "fresh", "force_reregister takes over the registration")

    # --- retained events
    await a.publish("com.adv.retained", "kept", options=PublishOptions(acknowledge=True, retain=True))
    got = asyncio.Queue()
    await c.subscribe(lambda *args, details=None: got.put_nowait((args, details.retained)), "com.adv.retained",
                      options=SubscribeOptions(get_retained=True, details_arg="details"))
    args, retained = await next_item(got, "retained event")
    check(args == ("kept",) and retained, "a late subscriber gets the retained event, marked retained")

    # --- meta API
    n = await a.call("wamp.session.count")
    check(n >= 3, "wamp.session.count: %r" % n)
    ids = await a.call("wamp.session.list")
    check(b._session_id in ids and c._session_id in ids, "wamp.session.list")
    info = await a.call("wamp.session.get", b._session_id)
    check(info["session"] == b._session_id and info["authrole"] == "anonymous", "wamp.session.get")
    await expect_error(a.call("wamp.session.get", 1), ["wamp.error.no_such_session"], "unknown session")
    reg = await a.call("wamp.registration.lookup", "com.adv.countdown")
    check(isinstance(reg, int), "wamp.registration.lookup")
    check(await a.call("wamp.registration.match", "com.adv.countdown") == reg, "wamp.registration.match")
    got_reg = await a.call("wamp.registration.get", reg)
    check(got_reg["uri"] == "com.adv.countdown" and got_reg["match"] == "exact", "wamp.registration.get")
    check(await a.call("wamp.registration.list_callees", reg) == [b._session_id], "list_callees")
    check(await a.call("wamp.registration.count_callees", reg) == 1, "count_callees")
    lists = await a.call("wamp.registration.list")
    check(reg in lists["exact"], "wamp.registration.list")
    sub = await a.call("wamp.subscription.lookup", "com.adv.retained")
    check(await a.call("wamp.subscription.list_subscribers", sub) == [c._session_id], "list_subscribers")
    check(await a.call("wamp.subscription.match", "com.adv.retained") == [sub], "wamp.subscription.match")

    # on_join / on_leave and subscription meta events
    joins, leaves, creates = asyncio.Queue(), asyncio.Queue(), asyncio.Queue()
    await a.subscribe(lambda d: joins.put_nowait(d), "wamp.session.on_join")
    await a.subscribe(lambda *x: leaves.put_nowait(x), "wamp.session.on_leave")
    await a.subscribe(lambda sess, d: creates.put_nowait((sess, d)), "wamp.subscription.on_create")
    d = await join(url, ser)
    joined = await next_item(joins, "on_join")
    check(joined["session"] == d._session_id, "wamp.session.on_join carries the new session")
    await d.subscribe(lambda: None, "com.adv.fresh.topic")
    # The watcher's own on_create subscription was announced too; look for the fresh one.
    while True:
        sess, details = await next_item(creates, "on_create")
        if details["uri"] == "com.adv.fresh.topic":
            break
    check(sess == d._session_id and details["match"] == "exact", "wamp.subscription.on_create")

    # --- testament published when the session is killed
    wills = asyncio.Queue()
    await a.subscribe(lambda *args: wills.put_nowait(args), "com.adv.will")
    d_id = d._session_id
    await d.call("wamp.session.add_testament", "com.adv.will", ["gone", d_id], {})
    await a.call("wamp.session.kill", d_id, reason="wamp.close.killed", message="bye")
    will = await next_item(wills, "testament")
    check(will == ("gone", d_id), "a killed session's testament is published: %r" % (will,))
    left = await next_item(leaves, "on_leave")
    check(left[0] == d_id, "wamp.session.on_leave")
    await asyncio.wait_for(d.left.wait(), 20)
    check(getattr(d, "leave_details", None) is not None and d.leave_details.reason == "wamp.close.killed",
          "the killed session heard wamp.close.killed")
    await expect_error(a.call("wamp.session.kill", a._session_id), ["wamp.error.invalid_argument"], "no killing oneself")

    for s in (a, b, c):
        s.leave()
    await asyncio.sleep(0.1)
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main(run(sys.argv[1], sys.argv[2]))
