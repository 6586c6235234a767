"""A cloud application on Crossbar: subscribes to every hub's things, calls an action behind each
hub (a simulated relay), and checks what comes back. Prints READY once subscribed, then waits for the hubs' events.

Usage: cloud_app.py URL HUB [HUB ...]
"""

import asyncio
import sys

from autobahn.wamp.types import SubscribeOptions

from wamp_common import check, join, main, next_item


async def run(url, hubs):
    s = await join(url, "json", realm="cloud")
    events = asyncio.Queue()
    await s.subscribe(lambda *a, details=None, **kw: events.put_nowait((details.topic, kw)),
                      "brume.hub.", options=SubscribeOptions(match="prefix", details_arg="details"))
    print("READY", flush=True)
    seen = {}
    while len(seen) < len(hubs):
        topic, kw = await next_item(events, "hub state", timeout=20)
        if not topic.endswith(".thing.t1.state"):
            continue  # the relays' own reports
        hub = kw["_brume"]["hub"]
        check(topic == "brume.hub.%s.thing.t1.state" % hub, "state of %s arrives under its prefix: %s" % (hub, topic))
        check(kw["values"]["temperature"] == 21.5, "state payload intact")
        check(isinstance(kw["_brume"]["seq"], int), "each event carries (hub, seq)")
        seen[hub] = kw
    for hub in hubs:
        relay = await s.call("brume.hub.%s.things.get" % hub, thing="r1")
        check(relay["info"]["location"] == hub, "things.get reaches the registry of %s: %r" % (hub, relay))
        r = await s.call("brume.hub.%s.thing.r1.action.toggle" % hub)
        check(r is True, "the relay behind %s answers its toggle: %r" % (hub, r))
    s.leave()
    await asyncio.sleep(0.1)
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main(run(sys.argv[1], sys.argv[2:]))
