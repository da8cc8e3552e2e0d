// The metadata_props of an ONNX file, read straight from its protobuf encoding: ONNX Runtime for
// Node does not expose them. A ModelProto is a sequence of (tag, value) fields; metadata_props is
// field 14, each entry a StringStringEntryProto {key = 1, value = 2}. Everything else is skipped.
'use strict';

const fs = require('fs');

class NotOnnx extends Error {}

function readVarint(buf, pos) {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) throw new NotOnnx('truncated varint');
    const byte = buf[pos++];
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return [value, pos];
    scale *= 128;
  }
  throw new NotOnnx('varint too long');
}

// Calls visit(fieldNumber, wireType, start, end) for every field of the message in buf[start, end).
function forEachField(buf, start, end, visit) {
  let pos = start;
  while (pos < end) {
    let tag;
    [tag, pos] = readVarint(buf, pos);
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (field === 0) throw new NotOnnx('field number 0');
    let valueStart = pos;
    if (wire === 0) {
      [, pos] = readVarint(buf, pos);
    } else if (wire === 1) {
      pos += 8;
    } else if (wire === 5) {
      pos += 4;
    } else if (wire === 2) {
      let length;
      [length, pos] = readVarint(buf, pos);
      valueStart = pos;
      pos += length;
    } else {
      throw new NotOnnx(`unsupported wire type ${wire}`);
    }
    if (pos > end) throw new NotOnnx('field runs past the end');
    visit(field, wire, valueStart, pos);
  }
}

// Returns {key: value} of the model's metadata_props; throws NotOnnx when the file is not a ModelProto.
function onnxMetadata(path) {
  const buf = fs.readFileSync(path);
  const props = {};
  let hasIrVersion = false;
  let hasGraph = false;
  forEachField(buf, 0, buf.length, (field, wire, start, end) => {
    if (field === 1 && wire === 0) hasIrVersion = true;
    if (field === 7 && wire === 2) hasGraph = true;
    if (field === 14 && wire === 2) {
      let key = '';
      let value = '';
      forEachField(buf, start, end, (f, w, s, e) => {
        if (f === 1 && w === 2) key = buf.toString('utf8', s, e);
        if (f === 2 && w === 2) value = buf.toString('utf8', s, e);
      });
      props[key] = value;
    }
  });
  if (!hasIrVersion || !hasGraph) throw new NotOnnx('no ir_version or graph');
  return props;
}

module.exports = { onnxMetadata, NotOnnx };
