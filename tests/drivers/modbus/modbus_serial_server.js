// A Modbus TCP server written in JavaScript (npm modbus-serial's ServerTCP): the non-Python peer
// of tests/drivers/modbus/test_node_peer.py. Usage: node modbus_serial_server.js PORT
// Prints "ready" once listening; serves until killed.
"use strict";
const ModbusRTU = require("modbus-serial");

const port = Number(process.argv[2]);
const holding = new Uint16Array(65536);
const input = new Uint16Array(65536);
const coils = new Uint8Array(65536);

// float32 123456.0 = 0x47F12000 in the four word orders, from address 0, two registers each
holding.set([0x47f1, 0x2000, 0x2000, 0x47f1, 0xf147, 0x0020, 0x0020, 0xf147], 0);
// int32 -2 in the four word orders, from address 10
holding.set([0xffff, 0xfffe, 0xfffe, 0xffff, 0xffff, 0xfeff, 0xfeff, 0xffff], 10);
// float64 1234.5678 big-endian and word-swapped (DCBA of the 16-bit words' order), from 20
holding.set([0x4093, 0x4a45, 0x84fc, 0xd3c1], 20);
holding.set([0xd3c1, 0x84fc, 0x4a45, 0x4093], 24);
// "NODE-PEER" as a 10-character string, first character in the high byte, from 30
Buffer.from("NODE-PEER\0", "ascii").forEach((byte, i) => {
  holding[30 + (i >> 1)] |= (i % 2 === 0) ? byte << 8 : byte;
});
holding[40] = 4242;
input[3] = 0xff9c; // int16 -100
coils[5] = 1;

// addresses that answer Modbus exceptions: 100 illegal data address, 110 device failure,
// 120 device busy
const FAULTS = new Map([[100, 2], [110, 4], [120, 6]]);

function check(address, length) {
  for (let a = address; a < address + length; a++) {
    if (FAULTS.has(a)) {
      throw { modbusErrorCode: FAULTS.get(a), msg: `address ${a}` };
    }
  }
}

const vector = {
  getHoldingRegister(address) { check(address, 1); return holding[address]; },
  getMultipleHoldingRegisters(address, length) {
    check(address, length);
    return Array.from(holding.subarray(address, address + length));
  },
  getInputRegister(address) { return input[address]; },
  getMultipleInputRegisters(address, length) {
    return Array.from(input.subarray(address, address + length));
  },
  getCoil(address) { return coils[address] === 1; },
  getDiscreteInput(address) { return coils[address] === 1; },
  setRegister(address, value) { check(address, 1); holding[address] = value; },
  setCoil(address, value) { coils[address] = value ? 1 : 0; },
};

const server = new ModbusRTU.ServerTCP(vector, { host: "127.0.0.1", port, unitID: 1 });
server.on("initialized", () => console.log("ready"));
server.on("serverError", (error) => { console.error(String(error)); process.exit(1); });
process.on("SIGTERM", () => server.close(() => process.exit(0)));
