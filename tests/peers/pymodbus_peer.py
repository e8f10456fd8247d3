#!/usr/bin/env python3
"""A pymodbus server playing the PLC in edge-gateway's tests and benchmarks.

Values are encoded by pymodbus itself (``ModbusClientMixin.convert_to_registers``), so the
adapter's decoding is checked against an independent implementation. pymodbus encodes word
order big/little only; the byte-swapped orders (BADC, DCBA) are that encoding with the two
bytes of every register swapped, which is how pymodbus's documentation says to obtain them.

Usage:
  pymodbus_peer.py --spec SPEC.json (--port N | --serial /dev/pts/N) [--host 127.0.0.1]

SPEC.json:
  {
    "units": [1],                       # device ids served (default [1])
    "unit_specs": {"2": {...}},         # per-unit overrides of the keys below
    "silent_units": [3],                # RTU: units whose answers are never sent
    "holding_size": 100,                # holding registers mapped at 0..n (rest: exception 2)
    "input_size": 100,
    "coils": [true, false, ...],        # coils mapped at 0..len
    "discrete": [true, ...],
    "holding": [ {"address": 0, "type": "float32", "order": "CDAB", "value": 1.5}, ... ],
    "input":   [ ... ],                 # type: int16 uint16 int32 uint32 int64 uint64 float32
                                        #       float64 string raw (value = list of registers)
    "bench": {"n_u16": 500, "n_f32": 500, "devices": 10}   # optional: benchmark layout,
                                        # one server per device on consecutive ports from --port
  }

Prints "READY <port or path>" (one line per server) on stdout once listening, then serves
until killed.
"""

import argparse
import asyncio
import json
import math
import sys

from pymodbus import FramerType
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

DT = ModbusClientMixin.DATATYPE
TYPES = {
    "int16": DT.INT16,
    "uint16": DT.UINT16,
    "int32": DT.INT32,
    "uint32": DT.UINT32,
    "int64": DT.INT64,
    "uint64": DT.UINT64,
    "float32": DT.FLOAT32,
    "float64": DT.FLOAT64,
    "string": DT.STRING,
}


def swap_bytes(regs):
    return [((r & 0xFF) << 8) | (r >> 8) for r in regs]


def encode(entry):
    """Registers of one value, encoded by pymodbus in the requested order."""
    kind = entry["type"]
    if kind == "raw":
        return list(entry["value"])
    order = entry.get("order", "ABCD")
    word_order = "little" if order in ("CDAB", "DCBA") else "big"
    if kind == "string":
        # Text has no word order; only the byte swap applies.
        word_order = "big"
    regs = ModbusClientMixin.convert_to_registers(entry["value"], TYPES[kind], word_order=word_order)
    if "length" in entry:
        regs = (regs + [0] * entry["length"])[: entry["length"]]
    if order in ("BADC", "DCBA"):
        regs = swap_bytes(regs)
    return regs


def register_table(size, entries):
    regs = [0] * size
    for e in entries:
        r = encode(e)
        regs[e["address"] : e["address"] + len(r)] = r
    return regs


def device(unit, spec):
    hr = register_table(spec.get("holding_size", 100), spec.get("holding", []))
    ir = register_table(spec.get("input_size", 100), spec.get("input", []))
    co = spec.get("coils", [False])
    di = spec.get("discrete", [False])
    blocks = (
        [SimData(0, values=list(co), datatype=DataType.BITS)],
        [SimData(0, values=list(di), datatype=DataType.BITS)],
        [SimData(0, values=hr, datatype=DataType.REGISTERS)],
        [SimData(0, values=ir, datatype=DataType.REGISTERS)],
    )
    return SimDevice(unit, simdata=blocks)


def bench_spec(n_u16, n_f32, t):
    """Benchmark layout at time t: counters then f32 sines, as ModbusSim::bench_device."""
    entries = [{"address": i, "type": "uint16", "value": int(t * 10 + i) % 65536} for i in range(n_u16)]
    for i in range(n_f32):
        v = 100.0 * math.sin(t + i)
        entries.append({"address": n_u16 + 2 * i, "type": "float32", "value": v})
    return {"holding_size": n_u16 + 2 * n_f32, "holding": entries, "input_size": 1}


async def run_bench(args, bench):
    n_u16, n_f32, n_dev = bench["n_u16"], bench["n_f32"], bench["devices"]
    servers = []
    for d in range(n_dev):
        spec = bench_spec(n_u16, n_f32, 0.0)
        port = 0 if args.port == 0 else args.port + d
        srv = ModbusTcpServer([device(1, spec)], address=(args.host, port))
        servers.append(srv)
    for srv in servers:
        await srv.listen()
    for srv in servers:
        port = srv.transport.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
    await asyncio.Event().wait()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--serial", default=None)
    ap.add_argument("--baud", type=int, default=19200)
    args = ap.parse_args()
    with open(args.spec, encoding="utf-8") as f:
        spec = json.load(f)
    if "bench" in spec:
        await run_bench(args, spec["bench"])
        return
    overrides = spec.get("unit_specs", {})
    devices = [device(u, {**spec, **overrides.get(str(u), {})}) for u in spec.get("units", [1])]
    if args.serial:
        # Units listed in "silent_units" never answer, as an unpowered unit on a real RS-485
        # bus (pymodbus 3.16 answers exception 4 for unknown ids even with
        # ignore_missing_devices, so the answer frame is dropped on its way out instead).
        silent = set(spec.get("silent_units", []))

        def drop_silent(sending, data):
            if sending and data and data[0] in silent:
                return b""
            return data

        srv = ModbusSerialServer(
            devices, framer=FramerType.RTU, port=args.serial, baudrate=args.baud, trace_packet=drop_silent
        )
        await srv.listen()
        print(f"READY {args.serial}", flush=True)
    else:
        srv = ModbusTcpServer(devices, address=(args.host, args.port or 0))
        await srv.listen()
        port = srv.transport.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
