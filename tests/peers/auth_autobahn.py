"""Autobahn-Python authenticating to Brume: ticket, WAMP-CRA (plain and salted, with Autobahn's
own derive_key/compute_wcs) and cryptosign (with Autobahn's CryptosignKey), over WebSocket and
RawSocket, plain and TLS (trusting a test CA through an ssl.SSLContext).

Usage: auth_autobahn.py CASES.json

Each case is a dict:
  name, url, serializer ("json"|"msgpack"), realm, method, authid (or null), secret (ticket,
  password, or the cryptosign private key as hex), channel_binding (optional), ca (PEM file for
  wss/rss), tls_version (optional, "1.2" or "1.3": the only TLS version the client offers; the
  version negotiated must be that one), and what to expect:
    expect = "welcome" with authid, authrole, authmethod: WELCOME with exactly that identity;
    expect = "abort" with reason and optional message / message_contains: ABORT;
    expect = "closed" with at_least_seconds and within_seconds: the client never answers the
      CHALLENGE and the router closes the connection at its deadline, in that window.
Prints "ok: NAME" per case and "ALL OK" at the end; exits non-zero on the first mismatch.
"""

import asyncio
import json
import ssl
import sys
import time
from urllib.parse import urlparse

from autobahn.asyncio.rawsocket import WampRawSocketClientFactory
from autobahn.asyncio.wamp import ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp import auth
from autobahn.wamp.cryptosign import CryptosignKey
from autobahn.wamp.types import ComponentConfig

from wamp_common import check, main, serializer


def make_on_challenge(case):
    method, secret = case["method"], case.get("secret")
    if case["expect"] == "closed":
        # Never answer: the router's HELLO deadline must close the connection.
        return lambda c: asyncio.get_running_loop().create_future()
    if method == "anonymous":

        def unexpected(c):
            raise RuntimeError("anonymous got a challenge: " + c.method)

        return unexpected
    if method == "ticket":
        return lambda c: secret
    if method == "wampcra":

        def sign(c):
            if "salt" in c.extra:
                key = auth.derive_key(secret, c.extra["salt"], c.extra["iterations"], c.extra["keylen"])
            else:
                key = secret
            return auth.compute_wcs(key, c.extra["challenge"]).decode("ascii")

        return sign
    if method == "cryptosign":
        key = CryptosignKey.from_bytes(bytes.fromhex(secret))
        return lambda c: key.sign_challenge(c)
    raise ValueError("unknown method " + method)


async def attempt(case):
    loop = asyncio.get_running_loop()
    outcome = loop.create_future()
    on_challenge = make_on_challenge(case)
    authextra = None
    if case["method"] == "cryptosign":
        authextra = {"pubkey": CryptosignKey.from_bytes(bytes.fromhex(case["secret"])).public_key()}
        if case.get("channel_binding"):
            authextra["channel_binding"] = case["channel_binding"]

    class Session(ApplicationSession):
        def onConnect(self):
            self.join(
                self.config.realm,
                authmethods=[case["method"]],
                authid=case.get("authid"),
                authextra=authextra,
            )

        def onChallenge(self, challenge):
            return on_challenge(challenge)

        def onJoin(self, details):
            if not outcome.done():
                outcome.set_result(("welcome", details))
            self.leave()

        def onLeave(self, details):
            if not outcome.done():
                outcome.set_result(("abort", details))
            self.disconnect()

        def onDisconnect(self):
            if not outcome.done():
                outcome.set_result(("closed", None))

    def make():
        return Session(ComponentConfig(case["realm"]))

    u = urlparse(case["url"])
    context = None
    if u.scheme in ("wss", "rss"):
        context = ssl.create_default_context(cafile=case["ca"])
        version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}.get(case.get("tls_version"))
        if version is not None:
            context.minimum_version = version
            context.maximum_version = version
    if u.scheme in ("ws", "wss"):
        factory = WampWebSocketClientFactory(make, url=case["url"], serializers=[serializer(case["serializer"])])
    else:
        factory = WampRawSocketClientFactory(make, serializer=serializer(case["serializer"]))
    started = time.monotonic()
    transport, _ = await loop.create_connection(
        factory, u.hostname, u.port, ssl=context, server_hostname=u.hostname if context else None
    )
    tls = transport.get_extra_info("ssl_object")
    negotiated = tls.version() if tls is not None else None
    kind, details = await asyncio.wait_for(outcome, 20)
    if case.get("tls_version"):
        check(negotiated == "TLSv" + case["tls_version"], "%s: negotiated %s" % (case["name"], negotiated))
    return kind, details, time.monotonic() - started


async def run(path):
    with open(path) as f:
        cases = json.load(f)
    for case in cases:
        name = case["name"]
        kind, details, took = await attempt(case)
        expect = case["expect"]
        if expect == "welcome":
            check(kind == "welcome", "%s: welcomed (got %s %s)" % (name, kind, details))
            got = (details.authid, details.authrole, details.authmethod, details.authprovider)
            want = (case["authid_expected"], case["authrole"], case["authmethod"], "static")
            check(got == want, "%s: identity %r, expected %r" % (name, got, want))
        elif expect == "abort":
            check(kind == "abort", "%s: aborted (got %s %s)" % (name, kind, details))
            check(details.reason == case["reason"], "%s: reason %s" % (name, details.reason))
            if "message" in case:
                check(details.message == case["message"], "%s: message %r" % (name, details.message))
            if "message_contains" in case:
                for part in case["message_contains"]:
                    check(part in (details.message or ""), "%s: message %r has %r" % (name, details.message, part))
        elif expect == "closed":
            check(kind == "closed", "%s: closed without WELCOME (got %s %s)" % (name, kind, details))
            check(
                case["at_least_seconds"] <= took <= case["within_seconds"],
                "%s: closed after %.2f s" % (name, took),
            )
        else:
            raise ValueError("unknown expectation " + expect)
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main(run(sys.argv[1]))
