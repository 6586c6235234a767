"""Helpers shared by the raw-device peer scripts: steps agreed with the Rust test over stdio, and
queues of state and lifecycle events.

The Rust test drives the simulated devices; the script is the WAMP app. At a step the script prints
`STEP <name>` and waits for a line on stdin before going on, so the test can start, unplug or plug a
device at that point.
"""

import asyncio
import sys

from autobahn.wamp.types import SubscribeOptions

from wamp_common import check, next_item


async def step(name):
    """Tells the test that `name` is reached and waits until it says to go on."""
    print("STEP", name, flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise AssertionError("the test closed stdin at step " + name)


class Follow:
    """Every thing's state events (wildcard `brume.thing..state`) and the lifecycle topics, queued by
    thing, so that one thing's events can be awaited while others arrive."""

    def __init__(self):
        self.states = {}
        self.online = {}
        self.offline = {}

    @staticmethod
    def _queue(queues, thing):
        return queues.setdefault(thing, asyncio.Queue())

    async def subscribe(self, session):
        def on_state(thing=None, values=None, at=None, details=None):
            check(details.topic == "brume.thing.%s.state" % thing,
                  "the state event's topic names its thing: %r" % details.topic)
            check(set(at) == set(values), "every value carries its timestamp: %r %r" % (values, at))
            self._queue(self.states, thing).put_nowait(values)

        def on_online(thing=None, **kwargs):
            self._queue(self.online, thing).put_nowait(kwargs)

        def on_offline(thing=None, **kwargs):
            self._queue(self.offline, thing).put_nowait(kwargs)

        await session.subscribe(on_state, "brume.thing..state",
                                options=SubscribeOptions(match="wildcard", details_arg="details"))
        await session.subscribe(on_online, "brume.things.on_online")
        await session.subscribe(on_offline, "brume.things.on_offline")

    async def state(self, thing, timeout=20):
        """The next state event of `thing`: the values that changed."""
        return await next_item(self._queue(self.states, thing), "a state event of " + thing, timeout)

    async def state_until(self, thing, wanted, what, timeout=20):
        """State events of `thing` until every value of `wanted` has been seen (in one or more)."""
        seen = {}
        deadline = asyncio.get_running_loop().time() + timeout
        while any(seen.get(k) != v for k, v in wanted.items()):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError("%s: saw %r, wanted %r" % (what, seen, wanted))
            seen.update(await self.state(thing, left))
        check(True, what)
        return seen

    async def came_online(self, thing, timeout=20):
        return await next_item(self._queue(self.online, thing), "on_online of " + thing, timeout)

    async def went_offline(self, thing, timeout=20):
        return await next_item(self._queue(self.offline, thing), "on_offline of " + thing, timeout)
