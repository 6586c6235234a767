"""pymodbus as a client of Brume's simulated Modbus bus (firmware-sim `SimBus`), with an energy
meter on unit 1 and a motor drive on unit 2.

Usage: pymodbus_client.py tcp PORT | rtu PATH

Reads the meter, writes the drive and reads it back, provokes exceptions, then prints one JSON
object with what it saw on stdout; the Rust test asserts on it and on the bus's own state.
"""

import json
import sys

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType


def client(kind, where):
    if kind == "tcp":
        return ModbusTcpClient("127.0.0.1", port=int(where), timeout=1, retries=0)
    return ModbusSerialClient(
        port=where, framer=FramerType.RTU, baudrate=19200, timeout=1, retries=0
    )


def exception_code(response):
    return response.exception_code if response.isError() else None


def ok(response, what):
    if response.isError():
        raise SystemExit(f"{what} failed: {response}")
    return response


def main():
    kind, where = sys.argv[1], sys.argv[2]
    c = client(kind, where)
    if not c.connect():
        raise SystemExit(f"cannot connect to {kind} {where}")
    out = {}
    dt = c.DATATYPE

    # The meter, unit 1: one read of the whole input block.
    regs = ok(c.read_input_registers(0, count=9, device_id=1), "read inputs").registers
    out["voltage"] = c.convert_from_registers(regs[0:2], dt.FLOAT32)
    out["current"] = c.convert_from_registers(regs[2:4], dt.FLOAT32)
    out["power"] = c.convert_from_registers(regs[4:6], dt.FLOAT32)
    out["energy"] = c.convert_from_registers(regs[6:8], dt.UINT32)
    out["frequency"] = regs[8]
    serial = ok(c.read_holding_registers(200, count=8, device_id=1), "read serial").registers
    out["serial"] = c.convert_from_registers(serial, dt.STRING).rstrip("\0 ")
    out["ct_ratio"] = ok(c.read_holding_registers(100, count=1, device_id=1), "ct").registers[0]

    # The drive, unit 2: FC 6, read back; FC 16, read back; FC 22; FC 5, read back.
    ok(c.write_register(10, 1234, device_id=2), "write setpoint")
    out["setpoint_after_fc6"] = ok(
        c.read_holding_registers(10, count=1, device_id=2), "read setpoint"
    ).registers[0]
    ok(c.write_registers(10, [1500, 30], device_id=2), "write setpoint and acceleration")
    out["setpoint_and_accel"] = ok(
        c.read_holding_registers(10, count=2, device_id=2), "read back"
    ).registers
    ok(c.mask_write_register(address=10, and_mask=0xFFFF, or_mask=0x0000, device_id=2), "mask")
    ok(c.write_coil(0, True, device_id=2), "run")
    out["run"] = ok(c.read_coils(0, count=1, device_id=2), "read run").bits[0]
    status = ok(c.read_holding_registers(50, count=1, device_id=2), "status").registers[0]
    out["status_ready"] = bool(status & (1 << 3))

    # Exceptions.
    out["exc_unmapped"] = exception_code(c.read_input_registers(9, count=1, device_id=1))
    out["exc_past_end"] = exception_code(c.read_input_registers(8, count=2, device_id=1))
    out["exc_range"] = exception_code(c.write_register(10, 3001, device_id=2))
    out["exc_read_only"] = exception_code(c.write_register(50, 0, device_id=2))
    out["exc_function"] = exception_code(c.read_device_information(device_id=1))

    # A unit nobody has: the TCP gateway's exception, or silence on a serial line.
    try:
        out["unknown_unit"] = exception_code(c.read_input_registers(0, count=1, device_id=9))
    except ModbusIOException:
        out["unknown_unit"] = "no answer"
    c.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
