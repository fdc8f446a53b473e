// A store-only (no compression) ZIP writer: DICOM pixel data is mostly compressed or
// compresses poorly, and storing keeps the browser fast. Format: PKWARE APPNOTE 6.3
// (local file header, data, central directory, end of central directory).
// Limits: no ZIP64, so fewer than 65,535 files and under 4 GiB in total.

let crcTable = null;

function makeCrcTable() {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
}

/** CRC-32 (IEEE 802.3, as ZIP uses) of `bytes`. */
export function crc32(bytes) {
  crcTable ??= makeCrcTable();
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = crcTable[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function dosDateTime(date) {
  const time = (date.getHours() << 11) | (date.getMinutes() << 5) | Math.floor(date.getSeconds() / 2);
  const day = ((date.getFullYear() - 1980) << 9) | ((date.getMonth() + 1) << 5) | date.getDate();
  return { time, day };
}

const UTF8_NAMES = 0x0800; // general purpose bit 11: names are UTF-8

/**
 * Build a ZIP archive.
 * @param {{name: string, data: Uint8Array}[]} files names may contain "/" for folders
 * @param {Date} [date] modification time recorded for every entry
 * @returns {Blob} application/zip
 * @throws {Error} when the archive would need ZIP64
 */
export function buildZip(files, date = new Date()) {
  if (files.length >= 0xffff) throw new Error(`${files.length} files is more than a ZIP without ZIP64 can hold (65,534)`);
  const encoder = new TextEncoder();
  const { time, day } = dosDateTime(date);
  const chunks = [];
  const central = [];
  let offset = 0;
  for (const file of files) {
    const name = encoder.encode(file.name);
    const crc = crc32(file.data);
    const size = file.data.byteLength;
    if (offset + size > 0xfffffffe) throw new Error('the study is larger than 4 GiB, which a ZIP without ZIP64 cannot hold');
    const local = new DataView(new ArrayBuffer(30 + name.length));
    local.setUint32(0, 0x04034b50, true); // local file header signature
    local.setUint16(4, 20, true); // version needed: 2.0
    local.setUint16(6, UTF8_NAMES, true);
    local.setUint16(8, 0, true); // method: stored
    local.setUint16(10, time, true);
    local.setUint16(12, day, true);
    local.setUint32(14, crc, true);
    local.setUint32(18, size, true); // compressed size
    local.setUint32(22, size, true); // uncompressed size
    local.setUint16(26, name.length, true);
    local.setUint16(28, 0, true); // extra field length
    new Uint8Array(local.buffer).set(name, 30);
    chunks.push(local.buffer, file.data);

    const entry = new DataView(new ArrayBuffer(46 + name.length));
    entry.setUint32(0, 0x02014b50, true); // central directory header signature
    entry.setUint16(4, 20, true); // version made by
    entry.setUint16(6, 20, true); // version needed
    entry.setUint16(8, UTF8_NAMES, true);
    entry.setUint16(10, 0, true);
    entry.setUint16(12, time, true);
    entry.setUint16(14, day, true);
    entry.setUint32(16, crc, true);
    entry.setUint32(20, size, true);
    entry.setUint32(24, size, true);
    entry.setUint16(28, name.length, true);
    // extra length, comment length, disk number, internal attributes: 0
    entry.setUint32(38, 0, true); // external attributes
    entry.setUint32(42, offset, true); // offset of the local header
    new Uint8Array(entry.buffer).set(name, 46);
    central.push(entry.buffer);
    offset += 30 + name.length + size;
  }
  const centralSize = central.reduce((sum, buffer) => sum + buffer.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true); // end of central directory signature
  end.setUint16(8, files.length, true); // entries on this disk
  end.setUint16(10, files.length, true); // entries in total
  end.setUint32(12, centralSize, true);
  end.setUint32(16, offset, true); // central directory offset
  return new Blob([...chunks, ...central, end.buffer], { type: 'application/zip' });
}
