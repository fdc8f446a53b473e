// multipart/related bodies (RFC 2387, used by WADO-RS, PS3.18 §8.6.1.1), parsed on bytes:
// pixel data must not go through a text decoder.

const CRLF_CRLF = new Uint8Array([13, 10, 13, 10]);
const ascii = new TextEncoder();
const latin1 = new TextDecoder('latin1');

/** Parameters of a Content-Type value: 'multipart/related; type="a/b"; boundary=xyz'. */
export function parseContentType(contentType) {
  const [mediaType, ...rest] = String(contentType ?? '').split(';');
  const params = {};
  for (const piece of rest) {
    const eq = piece.indexOf('=');
    if (eq < 0) continue;
    const name = piece.slice(0, eq).trim().toLowerCase();
    let value = piece.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
    params[name] = value;
  }
  return { mediaType: mediaType.trim().toLowerCase(), params };
}

/** Index of `needle` in `haystack` at or after `from`, or -1. */
export function indexOfBytes(haystack, needle, from = 0) {
  const first = needle[0];
  const last = haystack.length - needle.length;
  outer: for (let i = from; i <= last; i++) {
    if (haystack[i] !== first) continue;
    for (let j = 1; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}

/** Whether `needle` occurs in `haystack` exactly at `at`. */
function bytesAt(haystack, needle, at) {
  if (at < 0 || at + needle.length > haystack.length) return false;
  for (let j = 0; j < needle.length; j++) {
    if (haystack[at + j] !== needle[j]) return false;
  }
  return true;
}

function parseHeaders(bytes) {
  const headers = {};
  for (const line of latin1.decode(bytes).split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return headers;
}

/**
 * Split a multipart body into parts.
 * @param {Uint8Array|ArrayBuffer} body the whole response body
 * @param {string} boundary the boundary parameter of the response Content-Type
 * @returns {{headers: Object<string,string>, body: Uint8Array}[]} bodies are views into `body`
 * @throws {Error} when the boundary never occurs
 */
export function parseMultipart(body, boundary) {
  const bytes = body instanceof Uint8Array ? body : new Uint8Array(body);
  const delimiter = ascii.encode(`--${boundary}`);
  // Each later delimiter is preceded by CRLF, which belongs to the delimiter, not the part.
  const nextDelimiter = ascii.encode(`\r\n--${boundary}`);
  let position = indexOfBytes(bytes, delimiter, 0);
  if (position < 0) throw new Error(`multipart body has no boundary "--${boundary}"`);
  const parts = [];
  for (;;) {
    position += delimiter.length;
    // "--" right after a delimiter closes the body.
    if (bytes[position] === 45 && bytes[position + 1] === 45) break;
    const headersEnd = indexOfBytes(bytes, CRLF_CRLF, position);
    if (headersEnd < 0) break;
    const headerStart = bytes[position] === 13 && bytes[position + 1] === 10 ? position + 2 : position;
    const headers = parseHeaders(bytes.subarray(headerStart, headersEnd));
    const bodyStart = headersEnd + 4;
    // A part that states its length (minipacs's frames do) is not scanned byte by byte:
    // a 512×512 CT frame is half a megabyte. The delimiter must still be where it says.
    const length = Number(headers['content-length'] ?? Number.NaN);
    const bodyEnd = Number.isSafeInteger(length) && length >= 0 && bytesAt(bytes, nextDelimiter, bodyStart + length)
      ? bodyStart + length
      : indexOfBytes(bytes, nextDelimiter, bodyStart);
    if (bodyEnd < 0) {
      // Tolerate a body that was cut short of its closing delimiter.
      parts.push({ headers, body: bytes.subarray(bodyStart) });
      break;
    }
    parts.push({ headers, body: bytes.subarray(bodyStart, bodyEnd) });
    position = bodyEnd + 2;
  }
  return parts;
}

/**
 * Parts of a fetch Response: multipart/related is split; any other media type is one part.
 * @returns {Promise<{headers: Object<string,string>, body: Uint8Array}[]>}
 */
export async function responseParts(response) {
  const contentType = response.headers.get('content-type') ?? '';
  const body = new Uint8Array(await response.arrayBuffer());
  const { mediaType, params } = parseContentType(contentType);
  if (mediaType.startsWith('multipart/')) {
    if (!params.boundary) throw new Error(`"${contentType}" has no boundary parameter`);
    return parseMultipart(body, params.boundary);
  }
  return [{ headers: { 'content-type': contentType }, body }];
}
