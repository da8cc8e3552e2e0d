// Reading and writing NumPy .npy files (format versions 1-3, little-endian, C order).
// The format: magic "\x93NUMPY", version, header length, a Python-dict header
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }, then the raw array bytes.
'use strict';

const fs = require('fs');

// NumPy type string -> the name zoo metadata and ONNX Runtime use, and the typed array holding it.
const DTYPES = {
  '<f4': { name: 'float32', array: Float32Array },
  '<f8': { name: 'float64', array: Float64Array },
  '<f2': { name: 'float16', array: Uint16Array }, // ONNX Runtime for Node takes raw half bits
  '<i8': { name: 'int64', array: BigInt64Array },
  '<i4': { name: 'int32', array: Int32Array },
  '<i2': { name: 'int16', array: Int16Array },
  '|i1': { name: 'int8', array: Int8Array },
  '|u1': { name: 'uint8', array: Uint8Array },
  '|b1': { name: 'bool', array: Uint8Array },
};

class NpyError extends Error {}

function headerField(header, key, path) {
  const match = header.match(new RegExp(`['"]${key}['"]\\s*:\\s*(\\([^)]*\\)|'[^']*'|"[^"]*"|True|False)`));
  if (!match) throw new NpyError(`${path} is not a valid .npy file: its header has no '${key}'`);
  return match[1];
}

// Returns {dtype, shape, data}: dtype as zoo names it ('float32', 'int64', ...), shape as numbers,
// data as a typed array that owns its memory.
function readNpy(path) {
  let buf;
  try {
    buf = fs.readFileSync(path);
  } catch (e) {
    throw new NpyError(e.code === 'ENOENT' ? `${path} not found` : `cannot read ${path}: ${e.message}`);
  }
  return parseNpy(buf, path);
}

// The same from bytes already read (a test vector, whose sha256 is checked first); `path` names it in errors.
function parseNpy(buf, path) {
  if (buf.length < 10 || buf[0] !== 0x93 || buf.toString('latin1', 1, 6) !== 'NUMPY') {
    throw new NpyError(`${path} is not a .npy file (write it with numpy.save)`);
  }
  const major = buf[6];
  let headerLen;
  let offset;
  if (major === 1) {
    headerLen = buf.readUInt16LE(8);
    offset = 10;
  } else if (major === 2 || major === 3) {
    headerLen = buf.readUInt32LE(8);
    offset = 12;
  } else {
    throw new NpyError(`${path} has unsupported .npy version ${major}`);
  }
  if (offset + headerLen > buf.length) throw new NpyError(`${path} is truncated (incomplete .npy header)`);
  const header = buf.toString('latin1', offset, offset + headerLen);
  offset += headerLen;

  let descr = headerField(header, 'descr', path).slice(1, -1);
  if (descr[0] === '=') descr = '<' + descr.slice(1); // native order is little-endian on Node's platforms
  if (/^[<=][iub]1$/.test(descr)) descr = '|' + descr.slice(1);
  if (descr[0] === '>') throw new NpyError(`${path} is big-endian (${descr}); save it little-endian (array.astype('<${descr.slice(1)}'))`);
  const dtype = DTYPES[descr];
  if (!dtype) throw new NpyError(`${path} has unsupported dtype ${descr}`);
  if (headerField(header, 'fortran_order', path) !== 'False') {
    throw new NpyError(`${path} is Fortran-ordered; save numpy.ascontiguousarray(array) instead`);
  }
  const shapeText = headerField(header, 'shape', path);
  const shape = shapeText
    .slice(1, -1)
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => {
      if (!/^\d+$/.test(s)) throw new NpyError(`${path} is not a valid .npy file: bad shape ${shapeText}`);
      return Number(s);
    });
  const count = shape.reduce((a, b) => a * b, 1);
  const nbytes = count * dtype.array.BYTES_PER_ELEMENT;
  if (buf.length - offset < nbytes) {
    throw new NpyError(`${path} is truncated: ${buf.length - offset} of ${nbytes} data bytes`);
  }
  // Copy into a fresh buffer: typed arrays need aligned offsets, which a file buffer need not have.
  const data = new dtype.array(count);
  new Uint8Array(data.buffer).set(buf.subarray(offset, offset + nbytes));
  return { dtype: dtype.name, shape, data };
}

// Writes a typed array with `shape` and zoo dtype name to `path`, atomically (temp file + rename).
function writeNpy(path, dtypeName, shape, data) {
  const descr = Object.keys(DTYPES).find((d) => DTYPES[d].name === dtypeName);
  if (!descr) throw new NpyError(`cannot write dtype ${dtypeName} to .npy`);
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // Pad with spaces and end with '\n' so the data starts on a 64-byte boundary, as NumPy does.
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const prefix = Buffer.alloc(10);
  prefix.write('\x93NUMPY', 0, 'latin1');
  prefix[6] = 1;
  prefix[7] = 0;
  prefix.writeUInt16LE(header.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const tmp = `${path}.partial`;
  fs.writeFileSync(tmp, Buffer.concat([prefix, Buffer.from(header, 'latin1'), body]));
  fs.renameSync(tmp, path);
}

module.exports = { readNpy, parseNpy, writeNpy, NpyError, DTYPES };
