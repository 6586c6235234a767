"""Autobahn against an in-process Rust session on the hub (see tests/tests/autobahn_interop.rs).

The Rust side registers com.rust.echo, com.rust.publish_now and com.rust.call_python, and
subscribes com.py.events. Usage: autobahn_with_rust.py URL SER
"""

import asyncio
import sys

from autobahn.wamp.types import PublishOptions

from wamp_common import check, join, main, next_item

BLOB = bytes(range(256))


async def run(url, ser):
    s = await join(url, ser)
    r = await s.call("com.rust.echo", 1, BLOB, "x", k=BLOB, f=2.5)
    check(list(r.results) == [1, BLOB, "x"] and r.kwresults == {"k": BLOB, "f": 2.5}, "Rust callee echoes args and kwargs intact")

    events = asyncio.Queue()
    await s.subscribe(lambda *a, **kw: events.put_nowait((a, kw)), "com.rust.events")
    check(await s.call("com.rust.publish_now") == "published", "Rust procedure publishes")
    args, kwargs = await next_item(events, "event from Rust")
    check(args == (BLOB,) and kwargs == {"n": 1}, "event published in-process arrives intact")

    await s.register(lambda x: x * 2, "com.py.double")
    check(await s.call("com.rust.call_python", 21) == 42, "Rust caller reaches an Autobahn callee")

    await s.publish("com.py.events", "hello", BLOB, options=PublishOptions(acknowledge=True))
    s.leave()
    await asyncio.sleep(0.1)
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main(run(sys.argv[1], sys.argv[2]))
