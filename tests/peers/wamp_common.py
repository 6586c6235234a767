"""Helpers shared by the Autobahn peer scripts: join a realm over any transport and serializer."""

import asyncio
import sys
from urllib.parse import urlparse

from autobahn.asyncio.rawsocket import WampRawSocketClientFactory
from autobahn.asyncio.wamp import ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import ComponentConfig

try:  # colour formatting of log text costs CPU even with logging off
    import autobahn.util

    autobahn.util._HAS_CLICK = False
except Exception:  # pragma: no cover
    pass


def serializer(name):
    return JsonSerializer() if name == "json" else MsgPackSerializer()


async def join(url, ser, realm="brume", authmethods=None, authid=None, on_challenge=None):
    """Connects and joins; returns the joined session or raises with the ABORT reason."""
    loop = asyncio.get_running_loop()
    joined = loop.create_future()

    class Session(ApplicationSession):
        def __init__(self, config):
            super().__init__(config)
            # Set once the router ended the session (GOODBYE or ABORT heard), for tests that
            # wait on that instead of on time.
            self.left = asyncio.Event()

        def onConnect(self):
            self.join(self.config.realm, authmethods=authmethods, authid=authid)

        def onChallenge(self, challenge):
            if on_challenge is None:
                raise RuntimeError("unexpected challenge " + challenge.method)
            return on_challenge(challenge)

        def onJoin(self, details):
            self.welcome = details
            if not joined.done():
                joined.set_result(self)

        def onLeave(self, details):
            self.leave_details = details
            self.left.set()
            if not joined.done():
                joined.set_exception(RuntimeError("ABORT %s %s" % (details.reason, details.message)))
            self.disconnect()

    def make():
        return Session(ComponentConfig(realm))

    u = urlparse(url)
    if u.scheme == "ws":
        factory = WampWebSocketClientFactory(make, url=url, serializers=[serializer(ser)])
    else:
        factory = WampRawSocketClientFactory(make, serializer=serializer(ser))
    await loop.create_connection(factory, u.hostname, u.port)
    return await asyncio.wait_for(joined, 20)


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what.split(":")[0] if ":" in what else what, flush=True)


async def next_item(queue, what, timeout=20):
    try:
        return await asyncio.wait_for(queue.get(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError("timed out waiting for " + what)


async def nothing_arrives(queue, what, timeout=0.3):
    try:
        item = await asyncio.wait_for(queue.get(), timeout)
    except asyncio.TimeoutError:
        return
    raise AssertionError("unexpected %s: %r" % (what, item))


def main(coro):
    try:
        asyncio.run(coro)
    except Exception as e:  # report and fail
        import traceback

        traceback.print_exc()
        print("FAILED:", e, file=sys.stderr, flush=True)
        sys.exit(1)
