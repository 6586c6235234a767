"""Autobahn-Python as a Brume things app: read things and state, follow every thing's state with
the wildcard pattern brume.thing..state, set a desired value, call an action, and check the errors.

Usage: things_autobahn.py URL SER
The hub must hold a thermostat "th1" and a relay "r1", both online, served by simulated devices.
Exits non-zero on any mismatch.
"""

import asyncio
import sys

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import SubscribeOptions

from wamp_common import check, join, main, next_item


async def expect_error(coro, uri, what):
    try:
        await coro
    except ApplicationError as e:
        check(e.error == uri, "%s: got %s %r" % (what, e.error, e.args))
        return e
    raise AssertionError(what + ": no error")


async def next_state(queue, thing):
    """The next state event of `thing`, skipping other things' (sensors may report meanwhile)."""
    while True:
        topic, kwargs = await next_item(queue, "state event of " + thing)
        if topic == "brume.thing.%s.state" % thing:
            return kwargs


async def run(url, ser):
    s = await join(url, ser)

    things = await s.call("brume.things.list")
    ids = sorted(t["thing"] for t in things)
    check("th1" in ids and "r1" in ids, "brume.things.list returns the things: %r" % ids)
    online = await s.call("brume.things.list", online=True, type="relay")
    check([t["thing"] for t in online] == ["r1"], "list filters by type and online: %r" % online)

    th1 = await s.call("brume.things.get", thing="th1")
    check(th1["type"] == "thermostat" and th1["online"] is True, "get returns type and online: %r" % th1)
    temp = th1["reported"]["temperature"]
    check(isinstance(temp["value"], (int, float)) and temp["at"] > 0, "reported values carry timestamps: %r" % temp)
    setpoint = await s.call("brume.things.get", thing="th1", property="setpoint")
    check(setpoint["value"] == 20 and "at" in setpoint, "get one property: %r" % setpoint)

    states = asyncio.Queue()

    def on_state(thing=None, values=None, at=None, details=None):
        states.put_nowait((details.topic, {"thing": thing, "values": values, "at": at}))

    await s.subscribe(on_state, "brume.thing..state",
                      options=SubscribeOptions(match="wildcard", details_arg="details"))

    r = await s.call("brume.things.set", thing="th1", property="setpoint", value=24.5)
    check(r["settled"]["setpoint"]["value"] == 24.5, "set resolves once the device confirms: %r" % r)
    ev = await next_state(states, "th1")
    check(ev["values"] == {"setpoint": 24.5}, "the state event holds only what changed: %r" % ev)
    check(ev["at"]["setpoint"] > 0, "the state event carries the timestamp")

    r = await s.call("brume.things.set", thing="th1", values={"mode": "heat", "setpoint": 19})
    check(r["settled"]["mode"]["value"] == "heat" and r["settled"]["setpoint"]["value"] == 19,
          "set with several values: %r" % r)

    on = await s.call("brume.thing.r1.action.toggle")
    check(on is True, "an action returns the device's reply: %r" % on)
    ev = await next_state(states, "r1")
    check(ev["values"] == {"on": True}, "the action's effect is published: %r" % ev)

    e = await expect_error(s.call("brume.things.set", thing="th1", property="setpoint", value=99),
                           "wamp.error.invalid_argument", "out-of-range value refused")
    check("setpoint" in e.args[0] and "maximum" in e.args[0], "the error names property and rule: %r" % e.args[0])
    await expect_error(s.call("brume.thing.nobody.action.toggle"), "brume.error.no_such_thing", "unknown thing")
    await expect_error(s.call("brume.thing.r1.action.fly"), "brume.error.no_such_action", "unknown action")

    # Every procedure takes the same arguments positionally, thing first.
    r = await s.call("brume.things.set", "th1", "setpoint", 21)
    check(r["settled"]["setpoint"]["value"] == 21, "set(thing, property, value): %r" % r)
    r = await s.call("brume.things.set", "th1", {"mode": "off"})
    check(r["settled"]["mode"]["value"] == "off", "set(thing, values): %r" % r)
    p = await s.call("brume.things.get", "th1", "setpoint")
    check(p["value"] == 21, "get(thing, property): %r" % p)
    relays = await s.call("brume.things.list", "relay", True)
    check([t["thing"] for t in relays] == ["r1"], "list(type, online): %r" % relays)
    await s.call("brume.things.update_info", "r1", "location", "hall")
    info = await s.call("brume.things.get", "r1", "location")
    check(info["value"] == "hall", "update_info(thing, property, value): %r" % info)
    td = await s.call("brume.things.describe", "r1")
    check(td["id"].endswith(":r1"), "describe(thing)")
    relay = await s.call("brume.types.get", "relay")
    check(relay["id"] == "relay", "types.get(type)")

    td = await s.call("brume.things.describe", thing="r1")
    check(td["id"].endswith(":r1") and "toggle" in td["actions"], "describe returns a Thing Description")
    types = await s.call("brume.types.list")
    check("relay" in [t["id"] for t in types], "brume.types.list")

    s.leave()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main(run(sys.argv[1], sys.argv[2]))
