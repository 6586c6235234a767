"""Autobahn on both ends, through Brume: pub/sub and RPC with every match policy, exclude_me,
exclude/eligible, binary payloads and the standard errors. (Autobahn no longer sends disclose_me;
disclosure is covered by the Rust-client tests.)

Usage: autobahn_interop.py URL_A SER_A URL_B SER_B
Session A publishes and calls; session B subscribes and serves. Exits non-zero on any mismatch.
"""

import asyncio
import sys

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, RegisterOptions, SubscribeOptions

from wamp_common import check, join, main, next_item, nothing_arrives

BLOB = bytes(range(256)) + b"\x00\xff"


async def run(url_a, ser_a, url_b, ser_b):
    a = await join(url_a, ser_a)
    b = await join(url_b, ser_b)
    check(a.welcome.realm == "brume", "welcome names the realm")
    roles = a.welcome.authextra  # noqa: F841 (present or not, harmless)

    # --- pub/sub, exact, with binary values in args and kwargs
    got = asyncio.Queue()

    def on_exact(*args, **kwargs):
        details = kwargs.pop("details", None)
        got.put_nowait((args, kwargs, details))

    await b.subscribe(on_exact, "com.test.exact", options=SubscribeOptions(details_arg="details"))
    pub = await a.publish(
        "com.test.exact", 1, "two", BLOB, k="v", blob=BLOB, nested={"x": [1.5, None, True]},
        options=PublishOptions(acknowledge=True),
    )
    check(pub.id > 0, "acknowledged publish returns a publication id")
    args, kwargs, details = await next_item(got, "exact event")
    check(list(args) == [1, "two", BLOB], "exact event args intact (binary included): %r" % (args,))
    check(kwargs == {"k": "v", "blob": BLOB, "nested": {"x": [1.5, None, True]}}, "exact event kwargs intact: %r" % (kwargs,))
    check(details.topic is None or details.topic == "com.test.exact", "exact event details")

    # --- exclude_me: default true, false delivers to the publisher too
    mine = asyncio.Queue()
    await a.subscribe(lambda *x: mine.put_nowait(x), "com.test.exact")
    await a.publish("com.test.exact", "again", options=PublishOptions(acknowledge=True))
    await next_item(got, "event for B")
    await nothing_arrives(mine, "event to the publisher with exclude_me default")
    check(True, "exclude_me defaults to true")
    await a.publish("com.test.exact", "self", options=PublishOptions(acknowledge=True, exclude_me=False))
    check((await next_item(mine, "self event"))[0] == "self", "exclude_me=false delivers to the publisher")
    await next_item(got, "event for B")

    # --- exclude / eligible by session id
    await a.publish("com.test.exact", "excluded", options=PublishOptions(acknowledge=True, exclude=[b._session_id]))
    await nothing_arrives(got, "event to an excluded session")
    await a.publish("com.test.exact", "eligible", options=PublishOptions(acknowledge=True, eligible=[b._session_id]))
    check((await next_item(got, "eligible event"))[0] == ("eligible",), "eligible admits the listed session")
    check(True, "exclude keeps the listed session out")

    # --- prefix and wildcard subscriptions carry the concrete topic
    pre = asyncio.Queue()
    await b.subscribe(lambda *args, details=None: pre.put_nowait((args, details.topic)),
                      "com.test.pre", options=SubscribeOptions(match="prefix", details_arg="details"))
    wild = asyncio.Queue()
    await b.subscribe(lambda *args, details=None: wild.put_nowait((args, details.topic)),
                      "com.test..wild", options=SubscribeOptions(match="wildcard", details_arg="details"))
    await a.publish("com.test.pre.x.y", "p", options=PublishOptions(acknowledge=True))
    check(await next_item(pre, "prefix event") == (("p",), "com.test.pre.x.y"), "prefix subscription with details.topic")
    await a.publish("com.test.abc.wild", "w", options=PublishOptions(acknowledge=True))
    check(await next_item(wild, "wildcard event") == (("w",), "com.test.abc.wild"), "wildcard subscription with details.topic")
    await a.publish("com.test.abc.other", "nope", options=PublishOptions(acknowledge=True))
    await nothing_arrives(wild, "wildcard event for a non-matching topic")

    # --- RPC, exact, with caller disclosure and binary
    def add(x, y, details=None):
        return x + y

    def echo(*args, **kwargs):
        details = kwargs.pop("details")
        from autobahn.wamp.types import CallResult
        return CallResult(*args, caller=details.caller, procedure=details.procedure, **kwargs)

    def oops(*args, **kwargs):
        raise ApplicationError("com.test.oops", "it went wrong", code=7)

    await b.register(add, "com.test.add", options=RegisterOptions(details_arg="details"))
    await b.register(echo, "com.test.echo", options=RegisterOptions(details_arg="details"))
    await b.register(oops, "com.test.oops")
    check(await a.call("com.test.add", 2, 3) == 5, "call returns the callee's result")
    r = await a.call("com.test.echo", BLOB, "s", k=BLOB)
    check(list(r.results) == [BLOB, "s"] and r.kwresults["k"] == BLOB, "call args and kwargs round trip, binary included")
    check(r.kwresults["caller"] is None, "the caller is not disclosed unless asked")

    # --- pattern registrations: exact beats prefix beats wildcard
    async def tagged(tag):
        def f(*args, details=None):
            return [tag, details.procedure]
        return f

    await b.register(await tagged("prefix"), "com.test.rpc", options=RegisterOptions(match="prefix", details_arg="details"))
    await b.register(await tagged("wildcard"), "com.test.rpc..end", options=RegisterOptions(match="wildcard", details_arg="details"))
    await b.register(await tagged("wild2"), "com.other..end", options=RegisterOptions(match="wildcard", details_arg="details"))
    await b.register(await tagged("exact"), "com.test.rpc.x.end", options=RegisterOptions(details_arg="details"))
    r = await a.call("com.test.rpc.x.end")
    check(r[0] == "exact", "exact registration wins: %r" % (r,))
    r = await a.call("com.test.rpc.y.end")
    check(r == ["prefix", "com.test.rpc.y.end"], "prefix beats wildcard, procedure disclosed: %r" % (r,))
    r = await a.call("com.other.q.end")
    check(r == ["wild2", "com.other.q.end"], "wildcard registration: %r" % (r,))

    # --- errors
    async def expect_error(coro, uri, what):
        try:
            await coro
        except ApplicationError as e:
            check(e.error == uri, "%s: got %s" % (what, e.error))
            return e
        raise AssertionError(what + ": no error")

    await expect_error(a.call("com.test.nothing"), "wamp.error.no_such_procedure", "unknown procedure")
    e = await expect_error(a.call("com.test.oops"), "com.test.oops", "callee error is passed through")
    check(e.args == ("it went wrong",) and e.kwargs == {"code": 7}, "callee error payload intact")
    await expect_error(a.register(add, "com.test.add"), "wamp.error.procedure_already_exists", "second registration")
    # (Autobahn refuses malformed URIs itself; the router's invalid_uri is tested with raw frames.)

    # --- a callee that leaves fails its pending call with canceled
    c = await join(url_b, ser_b)
    never = asyncio.get_running_loop().create_future()
    started = asyncio.Event()

    async def hang():
        started.set()
        await never

    await c.register(hang, "com.test.hang")
    pending = asyncio.ensure_future(a.call("com.test.hang"))
    # The callee leaves while it is running the call.
    await asyncio.wait_for(started.wait(), 20)
    c.leave()
    try:
        await asyncio.wait_for(pending, 20)
        raise AssertionError("call to a departed callee succeeded")
    except ApplicationError as e:
        check(e.error in ("wamp.error.canceled", "wamp.error.cancelled"), "callee leaving cancels its pending call: " + e.error)

    a.leave()
    b.leave()
    await asyncio.sleep(0.1)
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main(run(*sys.argv[1:5]))
