// Raw uncompressed frame bytes (Explicit VR Little Endian, as WADO-RS returns them for
// transfer-syntax=1.2.840.10008.1.2.1) → typed arrays, following the Image Pixel module
// (PS3.3 §C.7.6.3) attributes of the instance metadata.

import { TAG, number, text } from './dicomjson.js';

// Transfer syntaxes whose pixel data is stored as is (PS3.5 §A.1–A.5): implicit/explicit
// little endian, explicit big endian (the server swaps bytes), deflated (inflated whole).
const NATIVE_TRANSFER_SYNTAXES = new Set(['1.2.840.10008.1.2', '1.2.840.10008.1.2.1', '1.2.840.10008.1.2.2', '1.2.840.10008.1.2.1.99']);

/**
 * The Image Pixel module attributes of one instance's metadata.
 * @returns {{rows:number, columns:number, samplesPerPixel:number, bitsAllocated:number,
 *   bitsStored:number, pixelRepresentation:number, photometric:string,
 *   planarConfiguration:number, numberOfFrames:number, slope:number, intercept:number}}
 */
export function pixelFormat(meta) {
  const bitsAllocated = number(meta, TAG.BitsAllocated, 16);
  // Metadata may carry the stored Transfer Syntax UID (0002,0010); a compressed one means
  // the server decompressed the frames for us.
  const storedTransferSyntax = text(meta, TAG.TransferSyntaxUID).trim();
  return {
    rows: number(meta, TAG.Rows, 0),
    columns: number(meta, TAG.Columns, 0),
    samplesPerPixel: number(meta, TAG.SamplesPerPixel, 1),
    bitsAllocated,
    bitsStored: number(meta, TAG.BitsStored, bitsAllocated),
    pixelRepresentation: number(meta, TAG.PixelRepresentation, 0),
    photometric: text(meta, TAG.PhotometricInterpretation, 'MONOCHROME2').trim().toUpperCase(),
    planarConfiguration: number(meta, TAG.PlanarConfiguration, 0),
    numberOfFrames: Math.max(1, number(meta, TAG.NumberOfFrames, 1)),
    // Modality LUT (PS3.3 §C.11.1): output = stored × slope + intercept.
    slope: number(meta, TAG.RescaleSlope, 1) || 1,
    intercept: number(meta, TAG.RescaleIntercept, 0),
    serverDecompressed: Boolean(storedTransferSyntax) && !NATIVE_TRANSFER_SYNTAXES.has(storedTransferSyntax),
  };
}

export function isColor(format) {
  return format.samplesPerPixel === 3;
}

/**
 * Decode one frame.
 * @param {Uint8Array} bytes the frame's pixel bytes
 * @param {ReturnType<typeof pixelFormat>} format
 * @returns {{rows:number, columns:number, color:boolean, data:ArrayLike<number>,
 *   minStored:number, maxStored:number, format:object}}
 *   `data` holds stored values (grayscale) or interleaved RGB bytes (color).
 * @throws {Error} for layouts the browser-side decoder does not handle (the caller then
 *   falls back to the server-rendered image)
 */
export function decodeFrame(bytes, format) {
  const { rows, columns } = format;
  if (!rows || !columns) throw new Error('Rows/Columns (0028,0010/0011) missing from the metadata');
  if (format.samplesPerPixel === 1) return decodeGray(bytes, format);
  if (format.samplesPerPixel === 3) return decodeColor(bytes, format);
  throw new Error(`SamplesPerPixel ${format.samplesPerPixel} is not 1 or 3`);
}

function aligned(bytes, BYTES_PER_ELEMENT, count) {
  const needed = count * BYTES_PER_ELEMENT;
  if (bytes.byteLength < needed) {
    throw new Error(`frame has ${bytes.byteLength} bytes, expected ${needed}`);
  }
  // Typed arrays need an offset that is a multiple of the element size: copy.
  return bytes.byteOffset % BYTES_PER_ELEMENT === 0 ? bytes.buffer : bytes.slice(0, needed).buffer;
}

function decodeGray(bytes, format) {
  const count = format.rows * format.columns;
  const signed = format.pixelRepresentation === 1;
  let data;
  if (format.bitsAllocated === 16) {
    const offset = bytes.byteOffset % 2 === 0 ? bytes.byteOffset : 0;
    data = signed ? new Int16Array(aligned(bytes, 2, count), offset, count) : new Uint16Array(aligned(bytes, 2, count), offset, count);
  } else if (format.bitsAllocated === 8) {
    if (bytes.byteLength < count) throw new Error(`frame has ${bytes.byteLength} bytes, expected ${count}`);
    data = signed ? new Int8Array(bytes.buffer, bytes.byteOffset, count) : bytes.subarray(0, count);
  } else if (format.bitsAllocated === 32) {
    const offset = bytes.byteOffset % 4 === 0 ? bytes.byteOffset : 0;
    data = signed ? new Int32Array(aligned(bytes, 4, count), offset, count) : new Uint32Array(aligned(bytes, 4, count), offset, count);
  } else if (format.bitsAllocated === 1) {
    data = unpackBits(bytes, count);
  } else {
    throw new Error(`BitsAllocated ${format.bitsAllocated} is not supported in the browser`);
  }
  if (format.bitsAllocated > 1 && format.bitsStored < format.bitsAllocated) {
    data = maskToBitsStored(data, format.bitsStored, signed);
  }
  let minStored = Infinity;
  let maxStored = -Infinity;
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (v < minStored) minStored = v;
    if (v > maxStored) maxStored = v;
  }
  return { rows: format.rows, columns: format.columns, color: false, data, minStored, maxStored, format };
}

// Bits above BitsStored may hold overlay data or garbage (PS3.5 §8.1.1): mask them, and
// sign-extend from the high bit for signed data.
function maskToBitsStored(data, bitsStored, signed) {
  const out = data.slice();
  if (signed) {
    const shift = 32 - bitsStored;
    for (let i = 0; i < out.length; i++) out[i] = (out[i] << shift) >> shift;
  } else {
    const mask = bitsStored >= 32 ? 0xffffffff : (1 << bitsStored) - 1;
    for (let i = 0; i < out.length; i++) out[i] = out[i] & mask;
  }
  return out;
}

// BitsAllocated 1: pixels packed eight to a byte, first pixel in the lowest bit (PS3.5 §8.1.1).
function unpackBits(bytes, count) {
  if (bytes.byteLength * 8 < count) throw new Error(`frame has ${bytes.byteLength} bytes, expected ${Math.ceil(count / 8)}`);
  const out = new Uint8Array(count);
  for (let i = 0; i < count; i++) out[i] = (bytes[i >> 3] >> (i & 7)) & 1;
  return out;
}

function decodeColor(bytes, format) {
  if (format.bitsAllocated !== 8) throw new Error(`colour with BitsAllocated ${format.bitsAllocated} is not supported in the browser`);
  const count = format.rows * format.columns;
  let photometric = format.photometric;
  let planarConfiguration = format.planarConfiguration;
  // The metadata describes the stored (compressed) pixels. Decoders hand back interleaved
  // RGB for colour JPEG/JPEG 2000/RLE (pydicom's decompress() does), and a YBR_FULL_422
  // frame of three bytes per pixel can only be that, since native 4:2:2 has two.
  const decodedToRgb = format.serverDecompressed || (photometric === 'YBR_FULL_422' && bytes.byteLength >= count * 3);
  if (decodedToRgb) {
    photometric = 'RGB';
    planarConfiguration = 0;
  }
  let rgb;
  if (photometric === 'YBR_FULL_422') {
    if (bytes.byteLength < count * 2) throw new Error(`frame has ${bytes.byteLength} bytes, expected ${count * 2}`);
    rgb = ybr422ToRgb(bytes, format.rows, format.columns);
  } else {
    if (bytes.byteLength < count * 3) throw new Error(`frame has ${bytes.byteLength} bytes, expected ${count * 3}`);
    rgb = new Uint8ClampedArray(count * 3);
    if (planarConfiguration === 1) {
      // PS3.3 §C.7.6.3.1.3: colour-by-plane, all R then all G then all B.
      for (let i = 0; i < count; i++) {
        rgb[i * 3] = bytes[i];
        rgb[i * 3 + 1] = bytes[count + i];
        rgb[i * 3 + 2] = bytes[2 * count + i];
      }
    } else {
      rgb.set(bytes.subarray(0, count * 3));
    }
    if (photometric === 'YBR_FULL') ybrFullToRgbInPlace(rgb);
    else if (photometric === 'YBR_PARTIAL_422' || photometric === 'YBR_PARTIAL_420') ybrPartialToRgbInPlace(rgb);
    else if (!['RGB', 'YBR_RCT', 'YBR_ICT'].includes(photometric)) {
      // YBR_RCT/ICT only exist inside JPEG 2000 streams; decoders hand back RGB.
      throw new Error(`PhotometricInterpretation ${photometric} is not supported in the browser`);
    }
  }
  return { rows: format.rows, columns: format.columns, color: true, data: rgb, minStored: 0, maxStored: 255, format };
}

/** YCbCr full range → RGB (PS3.3 §C.7.6.3.1.2), in place on interleaved triplets. */
export function ybrFullToRgbInPlace(rgb) {
  for (let i = 0; i < rgb.length; i += 3) {
    const y = rgb[i];
    const cb = rgb[i + 1] - 128;
    const cr = rgb[i + 2] - 128;
    rgb[i] = y + 1.402 * cr;
    rgb[i + 1] = y - 0.344136 * cb - 0.714136 * cr;
    rgb[i + 2] = y + 1.772 * cb;
  }
}

// Partial range (Y 16–235, Cb/Cr 16–240), ITU-R BT.601.
function ybrPartialToRgbInPlace(rgb) {
  for (let i = 0; i < rgb.length; i += 3) {
    const y = 1.164 * (rgb[i] - 16);
    const cb = rgb[i + 1] - 128;
    const cr = rgb[i + 2] - 128;
    rgb[i] = y + 1.596 * cr;
    rgb[i + 1] = y - 0.392 * cb - 0.813 * cr;
    rgb[i + 2] = y + 2.017 * cb;
  }
}

// YBR_FULL_422 uncompressed: Y1 Y2 Cb Cr for each horizontal pair of pixels (PS3.3 §C.7.6.3.1.2).
function ybr422ToRgb(bytes, rows, columns) {
  const rgb = new Uint8ClampedArray(rows * columns * 3);
  let src = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < columns; c += 2) {
      const y1 = bytes[src];
      const y2 = bytes[src + 1];
      const cb = bytes[src + 2] - 128;
      const cr = bytes[src + 3] - 128;
      src += 4;
      writeYbrPixel(rgb, (r * columns + c) * 3, y1, cb, cr);
      if (c + 1 < columns) writeYbrPixel(rgb, (r * columns + c + 1) * 3, y2, cb, cr);
    }
  }
  return rgb;
}

function writeYbrPixel(rgb, dst, y, cb, cr) {
  rgb[dst] = y + 1.402 * cr;
  rgb[dst + 1] = y - 0.344136 * cb - 0.714136 * cr;
  rgb[dst + 2] = y + 1.772 * cb;
}

/** Modality value (PS3.3 §C.11.1: stored × slope + intercept) at image column x, row y. */
export function modalityValueAt(frame, x, y) {
  if (frame.color || x < 0 || y < 0 || x >= frame.columns || y >= frame.rows) return undefined;
  const stored = frame.data[y * frame.columns + x];
  return stored * frame.format.slope + frame.format.intercept;
}

/** Modality value range of a grayscale frame (for a default window). */
export function modalityRange(frame) {
  const a = frame.minStored * frame.format.slope + frame.format.intercept;
  const b = frame.maxStored * frame.format.slope + frame.format.intercept;
  return { min: Math.min(a, b), max: Math.max(a, b) };
}
