"""A pymodbus Modbus TCP server serving Brume's energy meter map (thing type `modbus_meter`) on
unit 1 with fixed, known values, to test the hub's Modbus gateway against a third-party server.

Usage: pymodbus_server.py PORT   (0 picks a free port)

Prints "ready <port>" on stdout once listening, then serves until killed. Register map (PDU
addresses, big-endian registers, big word order):

  input     0-1   voltage   f32  231.5 V
  input     2-3   current   f32  4.25 A
  input     4-5   power     f32  983.875 W (voltage * current)
  input     6-7   energy    u32  123456 Wh
  input     8     frequency u16  4998 (0.01 Hz)
  holding   100   ct_ratio  u16  1 (writable)
  holding   200-207 serial  string "PYM-1"
  holding   208-211 firmware string "3.11"
  coil      10    reset_energy: writing it on zeroes the energy, then it reads off again

Holding registers are writable (FC 6, 16, 22); addresses outside the map answer exception 2.
Other units get no answer.
"""

import asyncio
import logging
import struct
import sys

from pymodbus.constants import ExcCodes
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusServerContext,
    ModbusSparseDataBlock,
)
from pymodbus.server import ModbusTcpServer

VOLTAGE = 231.5
CURRENT = 4.25
ENERGY_WH = 123456
FREQUENCY = 4998
SERIAL = "PYM-1"
FIRMWARE = "3.11"


def f32(value):
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return [high, low]


def u32(value):
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


def text(value, count):
    raw = value.encode("ascii").ljust(count * 2, b"\0")
    return list(struct.unpack(f">{count}H", raw))


class MapBlock(ModbusSparseDataBlock):
    """Only the addresses given at creation exist: reading or writing any other is an address
    error (exception 2), as on a device, rather than a new register."""

    def setValues(self, address, values, use_as_default=False):
        count = len(values) if isinstance(values, list) else 1
        if any(address + i not in self.values for i in range(count)):
            return ExcCodes.ILLEGAL_ADDRESS
        return super().setValues(address, values, use_as_default)


class ResetEnergyCoils(MapBlock):
    """Coil 10 zeroes the energy registers, then falls back to off once the answer (which echoes
    the write, as devices do) has been built."""

    def __init__(self, values, inputs):
        super().__init__(values)
        self.inputs = inputs

    def setValues(self, address, values, use_as_default=False):
        result = super().setValues(address, values, use_as_default)
        written = values if isinstance(values, list) else [values]
        if result is None and not use_as_default and RESET_ENERGY in range(
            address, address + len(written)
        ):
            if written[RESET_ENERGY - address]:
                self.inputs.setValues(ENERGY, u32(0))
                asyncio.get_running_loop().call_soon(
                    super().setValues, RESET_ENERGY, [False]
                )
        return result


# Data blocks are addressed one above the PDU address (ModbusDeviceContext adds one).
ENERGY = 6 + 1
RESET_ENERGY = 10 + 1


def context():
    inputs = MapBlock(
        {1: f32(VOLTAGE) + f32(CURRENT) + f32(VOLTAGE * CURRENT) + u32(ENERGY_WH) + [FREQUENCY]}
    )
    holding = MapBlock({100 + 1: [1], 200 + 1: text(SERIAL, 8) + text(FIRMWARE, 4)})
    coils = ResetEnergyCoils({RESET_ENERGY: [False]}, inputs)
    device = ModbusDeviceContext(di=MapBlock({}), co=coils, ir=inputs, hr=holding)
    return ModbusServerContext(devices={1: device}, single=False)


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    server = ModbusTcpServer(
        context(), address=("127.0.0.1", port), ignore_missing_devices=True
    )
    await server.serve_forever(background=True)
    bound = server.transport.sockets[0].getsockname()[1]
    print(f"ready {bound}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
