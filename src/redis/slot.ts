/**
 * The Redis Cluster hash slot of a key or sharded channel (CRC16-XMODEM of
 * its hash tag, or of the whole name when it has none, modulo 16384), as
 * the cluster specification defines it. It only computes: it asks no
 * server and knows no topology.
 *
 * @module
 */

/** How many hash slots a Redis Cluster has. */
export const SLOTS = 16384;

const TABLE = (() => {
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let bit = 0; bit < 8; bit++) {
      crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
    }
    table[i] = crc & 0xffff;
  }
  return table;
})();

/** CRC16-XMODEM of `bytes`. */
function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) {
    crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ byte) & 0xff]!;
  }
  return crc;
}

/**
 * The hash slot of `key`: only the part between the first `{` and the
 * next `}` counts, when that part is not empty.
 */
export function keySlot(key: string): number {
  let hashed = key;
  const open = key.indexOf("{");
  if (open !== -1) {
    const close = key.indexOf("}", open + 1);
    if (close > open + 1) hashed = key.slice(open + 1, close);
  }
  return crc16(new TextEncoder().encode(hashed)) % SLOTS;
}
