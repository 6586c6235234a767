"""Autobahn-Python as the app of a hub serving raw devices: a UDP beacon, a TCP thermostat and a
serial meter (firmware-sim), each on its own raw listener.

Usage: raw_devices.py URL SER
1. Provisions beacon-258 (udp_beacon), th-12 (tcp_thermostat) and meter-3 (serial_meter) with
   brume.things.provision, follows brume.thing..state and the lifecycle topics, then stops at step
   `provisioned` while the test starts the devices.
2. Checks each device's first report as a WAMP state event with the decoded and scaled values (the
   beacon's i16 x 0.01 temperature, its 7-bit battery and 1-bit charging flag).
3. Calls an action on each device and sets desired values on the thermostat and the meter, checking
   that the result is the device's answer and that the change is published.
Exits non-zero on any mismatch.
"""

import sys

from autobahn.wamp.exception import ApplicationError

from raw_common import Follow, step
from wamp_common import check, join, main

THINGS = {"beacon-258": "udp_beacon", "th-12": "tcp_thermostat", "meter-3": "serial_meter"}


async def run(url, ser):
    s = await join(url, ser)
    follow = Follow()
    await follow.subscribe(s)
    for thing, ty in THINGS.items():
        r = await s.call("brume.things.provision", thing=thing, type=ty)
        check(r["thing"]["type"] == ty and r["thing"]["online"] is False, "provisioned %s: %r" % (thing, r))

    await step("provisioned")

    for thing, ty in THINGS.items():
        online = await follow.came_online(thing)
        check(online["type"] == ty, "on_online of %s names its type: %r" % (thing, online))

    # Reports, decoded by each type's [bindings.frame] and published as WAMP events.
    beacon = await follow.state("beacon-258")
    check(beacon == {"temperature": -12.34, "humidity": 61, "battery": 87, "charging": 1},
          "the beacon's binary datagram arrives scaled: %r" % beacon)
    thermostat = await follow.state("th-12")
    check(thermostat == {"temperature": 20.5, "setpoint": 21.0, "mode": "eco"},
          "the thermostat's JSON report arrives: %r" % thermostat)
    meter = await follow.state("meter-3")
    check(meter == {"voltage": 230.1, "current": 1.25, "relay": True},
          "the meter's key=value line arrives: %r" % meter)
    listed = await s.call("brume.things.list", online=True)
    check(sorted(t["thing"] for t in listed) == sorted(THINGS), "all three are online: %r" % listed)
    got = await s.call("brume.things.get", thing="beacon-258", property="temperature")
    check(got["value"] == -12.34 and got["at"] > 0, "brume.things.get reads the reported value: %r" % got)

    # UDP: an action with no output; the beacon acknowledges it (echoing the sequence number).
    r = await s.call("brume.thing.beacon-258.action.identify", seconds=3)
    check(r is None, "identify returns the beacon's (empty) answer: %r" % r)

    # TCP: an action whose output is the device's `ok`, then a desired value.
    r = await s.call("brume.thing.th-12.action.calibrate", offset=-0.5)
    check(r is True, "calibrate returns the thermostat's answer: %r" % r)
    await follow.state_until("th-12", {"temperature": 20.0}, "the calibrated reading is published")
    r = await s.call("brume.things.set", thing="th-12", values={"setpoint": 22.5, "mode": "comfort"})
    settled = r["settled"]
    check(settled["setpoint"]["value"] == 22.5 and settled["mode"]["value"] == "comfort",
          "set resolves once the thermostat reports the values: %r" % r)
    await follow.state_until("th-12", {"setpoint": 22.5, "mode": "comfort"}, "the thermostat's new setpoint is published")

    # Serial: an action whose output is the meter's reading, then a desired value.
    r = await s.call("brume.thing.meter-3.action.poll")
    check(r == {"voltage": 230.1, "current": 1.25, "relay": True}, "poll returns the meter's reading: %r" % r)
    r = await s.call("brume.things.set", thing="meter-3", property="relay", value=False)
    check(r["settled"]["relay"]["value"] is False, "set relay resolves once the meter reports it: %r" % r)
    await follow.state_until("meter-3", {"relay": False}, "the open relay is published")

    # What the hub checks before a device sees anything.
    try:
        await s.call("brume.thing.beacon-258.action.identify", seconds=0)
        raise AssertionError("identify with seconds=0 was accepted")
    except ApplicationError as e:
        check(e.error == "wamp.error.invalid_argument", "input outside the action's schema refused: %s" % e.error)

    s.leave()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main(run(sys.argv[1], sys.argv[2]))
