"""Autobahn-Python as the WAMP application of the CoAP end-to-end tests, driven line by line.

Usage: coap_wamp_app.py URL SER

Joins realm "brume" and prints {"ready": true}. Then each line on stdin is one JSON command:
  {"op": "subscribe", "topic": T, "match": "exact" | "prefix" | "wildcard"}
      prints {"subscribed": T} once the router has confirmed;
  {"op": "call", "id": ID, "procedure": P, "kwargs": {...}}
      calls P (without waiting for the answer before reading the next command) and prints
      {"id": ID, "result": value} or {"id": ID, "error": uri, "args": [...], "kwargs": {...}}.
Every event received is printed as {"event": topic, "args": [...], "kwargs": {...}}. Every line
printed is one JSON object, flushed at once. The script exits when stdin closes.
"""

import asyncio
import json
import sys

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import SubscribeOptions

from wamp_common import join, main


def out(obj):
    sys.stdout.write(json.dumps(obj, default=repr) + "\n")
    sys.stdout.flush()


async def run(url, ser):
    s = await join(url, ser)
    out({"ready": True})
    loop = asyncio.get_running_loop()
    pending = set()

    async def subscribe(topic, match):
        def on_event(*args, details=None, **kwargs):
            out({"event": details.topic or topic, "args": list(args), "kwargs": kwargs})

        await s.subscribe(on_event, topic, options=SubscribeOptions(match=match, details_arg="details"))
        out({"subscribed": topic})

    async def call(call_id, procedure, kwargs):
        try:
            result = await s.call(procedure, **kwargs)
            out({"id": call_id, "result": result})
        except ApplicationError as e:
            out({"id": call_id, "error": e.error, "args": list(e.args), "kwargs": e.kwargs or {}})

    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd = json.loads(line)
        if cmd["op"] == "subscribe":
            await subscribe(cmd["topic"], cmd.get("match", "exact"))
        elif cmd["op"] == "call":
            task = asyncio.ensure_future(call(cmd["id"], cmd["procedure"], cmd.get("kwargs", {})))
            pending.add(task)
            task.add_done_callback(pending.discard)
        else:
            raise SystemExit("unknown op %r" % cmd["op"])
    s.leave()


if __name__ == "__main__":
    main(run(sys.argv[1], sys.argv[2]))
