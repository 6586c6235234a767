"""Autobahn-Python follows a serial meter (firmware-sim, on a pseudo-terminal) that is unplugged and
plugged back.

Usage: raw_replug.py URL SER
1. Provisions meter-3 (serial_meter), waits for it online and polls it; step `unplug`.
2. The test closes the pty: brume.things.on_offline, the thing reads offline, an action fails with
   brume.error.thing_offline and so does a set, whose desired value stays pending; step `plug`.
3. The test makes a new pty behind the same path: brume.things.on_online, the hub sends the pending
   desired value and the meter applies it, and a poll and a set work again.
Exits non-zero on any mismatch.
"""

import sys

from autobahn.wamp.exception import ApplicationError

from raw_common import Follow, step
from wamp_common import check, join, main

READING = {"voltage": 230.1, "current": 1.25, "relay": True}


async def run(url, ser):
    s = await join(url, ser)
    follow = Follow()
    await follow.subscribe(s)
    await s.call("brume.things.provision", thing="meter-3", type="serial_meter")
    await step("provisioned")

    await follow.came_online("meter-3")
    r = await s.call("brume.thing.meter-3.action.poll")
    check(r == READING, "poll before the unplug: %r" % r)

    await step("unplug")
    off = await follow.went_offline("meter-3")
    check(off == {}, "on_offline carries the thing: %r" % off)
    t = await s.call("brume.things.get", thing="meter-3")
    check(t["online"] is False, "the meter reads offline")
    try:
        await s.call("brume.thing.meter-3.action.poll")
        raise AssertionError("poll of an unplugged meter succeeded")
    except ApplicationError as e:
        check(e.error == "brume.error.thing_offline", "poll while unplugged: %s" % e.error)
    try:
        await s.call("brume.things.set", thing="meter-3", property="relay", value=False)
        raise AssertionError("set of an unplugged meter succeeded")
    except ApplicationError as e:
        check(e.error == "brume.error.thing_offline" and e.kwargs.get("pending") == ["relay"],
              "set while unplugged stays pending: %s %r" % (e.error, e.kwargs))

    await step("plug")
    on = await follow.came_online("meter-3", timeout=10)
    check(on["type"] == "serial_meter", "on_online after the replug: %r" % on)
    await follow.state_until("meter-3", {"relay": False}, "the pending relay value reaches the meter once it is back")
    t = await s.call("brume.things.get", thing="meter-3")
    check(t["desired"] == {} and t["reported"]["relay"]["value"] is False, "the desired value is settled: %r" % t)
    r = await s.call("brume.thing.meter-3.action.poll")
    check(r == dict(READING, relay=False), "poll after the replug: %r" % r)
    r = await s.call("brume.things.set", thing="meter-3", property="relay", value=True)
    check(r["settled"]["relay"]["value"] is True, "set after the replug: %r" % r)

    s.leave()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main(run(sys.argv[1], sys.argv[2]))
