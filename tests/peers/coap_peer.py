"""aiocoap (the library: its command-line client buffers its output) as a peer of Brume's CoAP
gateway. Every line this prints is one JSON object, flushed at once.

Usage:
  coap_peer.py post URI CONTENT_FORMAT JSON_BODY
      One confirmable POST (CONTENT_FORMAT json or cbor); prints {"code", "payload"}.
  coap_peer.py put URI CONTENT_FORMAT JSON_BODY
      The same as post, with PUT.
  coap_peer.py get URI
      One confirmable GET; prints {"code", "content_format", "payload"} with a JSON payload parsed,
      and a link-format one (/.well-known/core) parsed by aiocoap into [{"href", attrs...}].
  coap_peer.py duplicate HOST PORT PATH QUERY JSON_BODY
      Encodes one confirmable POST with aiocoap and sends the same datagram twice on a plain
      UDP socket; prints {"answers": [hex, hex]}.
  coap_peer.py device URI_BASE COUNT
      A device behind NAT: observes URI_BASE/commands, prints each notification as
      {"commands": [...]}, applies desired values (POST state, then a reply) and answers actions
      (output {"echo": input}), and exits after settling COUNT commands.
  coap_peer.py server
      A CoAP server device on 127.0.0.1, on a UDP port the system picks: observable /sensors/temperature (JSON number), a
      writable, observable /config/setpoint, and /sensors/humidity without Observe (clients must
      poll it), and /actions/boost, whose POST answers {"echo": input}. Prints
      {"ready": true, "port": PORT} once bound, then {"put": value} for each setpoint written and {"post": input} for each boost. Each line
      on stdin is a JSON object of new values ({"temperature": 23.5}, {"humidity": 55}).
"""

import asyncio
import json
import socket
import sys

import aiocoap
import aiocoap.resource as resource
from aiocoap import Code, Message


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def encode(fmt, value):
    if fmt == "cbor":
        import cbor2

        return cbor2.dumps(value), 60
    return json.dumps(value).encode(), 50


async def post(uri, fmt, body, code=Code.POST):
    ctx = await aiocoap.Context.create_client_context()
    payload, cf = encode(fmt, json.loads(body))
    req = Message(code=code, uri=uri, payload=payload, content_format=cf)
    resp = await ctx.request(req).response
    out({"code": str(resp.code), "payload": resp.payload.decode("utf-8", "replace")})
    await ctx.shutdown()


async def get(uri):
    ctx = await aiocoap.Context.create_client_context()
    resp = await ctx.request(Message(code=Code.GET, uri=uri)).response
    cf = resp.opt.content_format
    text = resp.payload.decode("utf-8", "replace")
    if cf == 50:
        payload = json.loads(text)
    elif cf == 40:
        from aiocoap.util.linkformat import parse

        payload = [dict(link.attr_pairs, href=link.href) for link in parse(text).links]
    else:
        payload = text
    out({"code": str(resp.code), "content_format": cf, "payload": payload})
    await ctx.shutdown()


async def duplicate(host, port, path, query, body):
    msg = Message(code=Code.POST, mtype=aiocoap.CON, payload=body.encode(), content_format=50)
    msg.opt.uri_path = [p for p in path.split("/") if p]
    msg.opt.uri_query = [query]
    msg.mid = 0x1234
    msg.token = b"\x42\x43"
    data = msg.encode()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(20)
    answers = []
    for _ in range(2):
        sock.sendto(data, (host, int(port)))
        answers.append(sock.recvfrom(2048)[0].hex())
    out({"answers": answers})


async def device(base, count):
    ctx = await aiocoap.Context.create_client_context()
    seen = set()
    settled = 0

    def uri_of(resource_name):
        path, _, query = base.partition("?")
        return f"{path}/{resource_name}" + (f"?{query}" if query else "")

    async def send(resource_name, value):
        uri = uri_of(resource_name)
        req = Message(code=Code.POST, uri=uri, payload=json.dumps(value).encode(), content_format=50)
        resp = await ctx.request(req).response
        if not resp.code.is_successful():
            raise SystemExit(f"{resource_name} refused: {resp.code}")

    req = Message(code=Code.GET, uri=uri_of("commands"), observe=0)
    pr = ctx.request(req)
    first = await pr.response

    async def handle(msg):
        nonlocal settled
        commands = json.loads(msg.payload)["commands"]
        out({"commands": commands})
        for c in commands:
            if c["id"] in seen:
                continue
            seen.add(c["id"])
            if c["kind"] == "desired":
                await send("state", c["values"])
                await send("replies", {"id": c["id"]})
            elif c["kind"] == "action":
                await send("replies", {"id": c["id"], "output": {"echo": c["input"]}})
            settled += 1

    await handle(first)
    async for notification in pr.observation:
        await handle(notification)
        if settled >= count:
            break
    out({"done": settled})
    pr.observation.cancel()
    await ctx.shutdown()


class Plain(resource.Resource):
    """A resource that does not do Observe."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    async def render_get(self, request):
        return Message(payload=json.dumps(self.value).encode(), content_format=50)


class Echo(resource.Resource):
    """An action: POST with a JSON input, answered with {"echo": input}."""

    async def render_post(self, request):
        value = json.loads(request.payload) if request.payload else None
        out({"post": value})
        return Message(code=Code.CHANGED, payload=json.dumps({"echo": value}).encode(), content_format=50)


class Value(resource.ObservableResource):
    def __init__(self, value, writable):
        super().__init__()
        self.value = value
        self.writable = writable

    async def render_get(self, request):
        return Message(payload=json.dumps(self.value).encode(), content_format=50)

    async def render_put(self, request):
        if not self.writable:
            return Message(code=Code.METHOD_NOT_ALLOWED)
        self.value = json.loads(request.payload)
        out({"put": self.value})
        self.updated_state()
        return Message(code=Code.CHANGED)

    def set(self, value):
        self.value = value
        self.updated_state()


def udp_port(ctx):
    """The UDP port a server context bound (aiocoap has no public accessor for it)."""
    for tman in ctx.request_interfaces:
        mman = getattr(tman, "token_interface", None)
        sock = getattr(getattr(getattr(mman, "message_interface", None), "transport", None), "get_extra_info", None)
        if sock is not None:
            return sock("socket").getsockname()[1]
    raise SystemExit("no UDP transport in the server context")


async def server():
    temperature = Value(20.0, False)
    setpoint = Value(21, True)
    humidity = Plain(40)
    root = resource.Site()
    root.add_resource(["sensors", "temperature"], temperature)
    root.add_resource(["config", "setpoint"], setpoint)
    root.add_resource(["sensors", "humidity"], humidity)
    root.add_resource(["actions", "boost"], Echo())
    ctx = await aiocoap.Context.create_server_context(root, bind=("127.0.0.1", 0), transports=["udp6"])
    out({"ready": True, "port": udp_port(ctx)})
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        values = json.loads(line)
        if "temperature" in values:
            temperature.set(values["temperature"])
        if "humidity" in values:
            humidity.value = values["humidity"]
    await ctx.shutdown()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "post":
        coro = post(*args)
    elif cmd == "put":
        coro = post(*args, code=Code.PUT)
    elif cmd == "get":
        coro = get(*args)
    elif cmd == "duplicate":
        coro = duplicate(*args)
    elif cmd == "device":
        coro = device(args[0], int(args[1]))
    elif cmd == "server":
        coro = server()
    else:
        raise SystemExit(f"unknown command {cmd}")
    asyncio.run(coro)


if __name__ == "__main__":
    main()
