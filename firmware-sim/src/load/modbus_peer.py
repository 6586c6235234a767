"""pymodbus as the peer of the Modbus benchmark (`brume-sim bench --only modbus`): an asyncio
client per bus reading blocks of holding registers from the simulated bench devices, one request
in flight per connection, as fast as it can or each block at a fixed interval.

Usage: modbus_peer.py CONFIG_JSON, with CONFIG_JSON an object:
  {"buses": [{"port": 5020, "units": [1, 2]}], "blocks": 1, "block": 100, "stamp": 4,
   "interval_ms": 0, "warmup_s": 1.0, "measure_s": 3.0}

Each block starts with a u64 stamp (big word order): the simulated device's wall clock in
microseconds when it answered. Prints "measuring" when the warm-up ends, then one JSON object:
{"reads": N, "registers": N, "seconds": S, "errors": N, "latency_us": [...]} where latency_us
holds, for every read of the measured window, the time from the stamp to the decoded answer.
"""

import asyncio
import json
import sys
import time

from pymodbus.client import AsyncModbusTcpClient


def now_us():
    return time.time_ns() // 1000


async def bus(cfg, spec, state):
    client = AsyncModbusTcpClient("127.0.0.1", port=spec["port"], timeout=2, retries=0)
    if not await client.connect():
        raise SystemExit(f"cannot connect to port {spec['port']}")
    jobs = [(u, b * cfg["block"]) for u in spec["units"] for b in range(cfg["blocks"])]
    interval = cfg["interval_ms"] / 1000.0
    period_start = time.perf_counter()
    while not state["done"]:
        for unit, address in jobs:
            if state["done"]:
                break
            rr = await client.read_holding_registers(address, count=cfg["block"], device_id=unit)
            got = now_us()
            if rr.isError() or len(rr.registers) != cfg["block"]:
                state["errors"] += 1
                continue
            if not state["measuring"]:
                continue
            r = rr.registers
            stamp = (r[0] << 48) | (r[1] << 32) | (r[2] << 16) | r[3]
            state["reads"] += 1
            state["registers"] += len(r)
            state["latency_us"].append(max(0, got - stamp))
        if interval > 0:
            period_start += interval
            delay = period_start - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                period_start = time.perf_counter()
    client.close()


async def main():
    cfg = json.loads(sys.argv[1])
    state = {"done": False, "measuring": False, "reads": 0, "registers": 0, "errors": 0,
             "latency_us": []}
    tasks = [asyncio.create_task(bus(cfg, spec, state)) for spec in cfg["buses"]]
    await asyncio.sleep(cfg["warmup_s"])
    state["measuring"] = True
    print("measuring", flush=True)
    t0 = time.perf_counter()
    await asyncio.sleep(cfg["measure_s"])
    state["measuring"] = False
    seconds = time.perf_counter() - t0
    state["done"] = True
    await asyncio.gather(*tasks)
    print(json.dumps({"reads": state["reads"], "registers": state["registers"],
                      "seconds": seconds, "errors": state["errors"],
                      "latency_us": state["latency_us"]}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
