"""Autobahn-Python as the WAMP application of the MQTT end-to-end tests, driven line by line.

Usage: mqtt_wamp_app.py URL SER
Joins realm "brume", prints READY, then reads one JSON command per line on stdin and answers on
stdout, one JSON document per line:

  {"id": 1, "op": "subscribe", "topic": "brume.thing..state", "match": "wildcard"}
      -> {"id": 1, "ok": true}; then every event: {"sub": <topic as subscribed>,
         "topic": <the event's topic>, "args": [...], "kwargs": {...}}
  {"id": 2, "op": "call", "procedure": "...", "args": [...], "kwargs": {...}}
      -> {"id": 2, "result": <value>} or {"id": 2, "error": <uri>, "args": [...], "kwargs": {...}}
  {"id": 3, "op": "publish", "topic": "...", "args": [...], "kwargs": {...}}
      -> {"id": 3, "ok": true} once the router acknowledged it
  {"op": "quit"}

Commands run concurrently, so a call can wait on a device while the test drives that device.
Bytes are written as {"$bytes": "<hex>"}.
"""

import asyncio
import json
import sys

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult, PublishOptions, SubscribeOptions

from wamp_common import join, main


def encode(value):
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": bytes(value).hex()}
    raise TypeError("cannot encode %r" % type(value))


def emit(doc):
    sys.stdout.write(json.dumps(doc, default=encode) + "\n")
    sys.stdout.flush()


async def handle(session, cmd):
    rid = cmd.get("id")
    op = cmd["op"]
    try:
        if op == "subscribe":
            topic = cmd["topic"]

            def on_event(*args, **kwargs):
                details = kwargs.pop("details")
                emit({"sub": topic, "topic": details.topic or topic, "args": list(args), "kwargs": kwargs})

            await session.subscribe(
                on_event, topic, options=SubscribeOptions(match=cmd.get("match", "exact"), details_arg="details")
            )
            emit({"id": rid, "ok": True})
        elif op == "call":
            result = await session.call(cmd["procedure"], *cmd.get("args", []), **cmd.get("kwargs", {}))
            if isinstance(result, CallResult):
                result = {"args": list(result.results), "kwargs": result.kwresults}
            emit({"id": rid, "result": result})
        elif op == "publish":
            await session.publish(
                cmd["topic"], *cmd.get("args", []), options=PublishOptions(acknowledge=True), **cmd.get("kwargs", {})
            )
            emit({"id": rid, "ok": True})
        else:
            emit({"id": rid, "error": "test.unknown_op", "args": [op], "kwargs": {}})
    except ApplicationError as e:
        emit({"id": rid, "error": e.error, "args": list(e.args), "kwargs": e.kwargs or {}})
    except Exception as e:  # reported to the test rather than lost in a task
        emit({"id": rid, "error": "test.exception", "args": [repr(e)], "kwargs": {}})


async def run(url, ser):
    session = await join(url, ser)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("READY", flush=True)
    tasks = set()
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        task = asyncio.ensure_future(handle(session, cmd))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    session.leave()


if __name__ == "__main__":
    main(run(sys.argv[1], sys.argv[2]))
