#!/usr/bin/env node
// zoo-run-node: runs a zoo ONNX export with ONNX Runtime for Node on .npy input files.
//
//   node zoo-run.js MODEL.onnx [NAME=FILE.npy ...] [--inputs DIR] [--outputs DIR]
//                   [--threads N] [--repeat N] [--warmup N] [--metadata]
//
// Input NAME is read from NAME=FILE.npy when given, otherwise from DIR/NAME.npy (DIR defaults to
// "."); each output is written to --outputs DIR/NAME.npy. Names, dtypes and shapes come from the
// model's zoo.json metadata; an integer input outside its declared value_range is refused. On
// success one JSON line on stdout describes the outputs (and, with --repeat N, the median latency
// of N runs after the warm-up, excluding model load and file I/O).
// Any failure prints one line "zoo-run-node: ..." on stderr; exit 1, or 2 for bad arguments.
'use strict';

const fs = require('fs');
const path = require('path');
const { readNpy, writeNpy, NpyError } = require('./npy');
const { onnxMetadata, NotOnnx } = require('./onnx-metadata');

const USAGE =
  'usage: zoo-run-node MODEL.onnx [NAME=FILE.npy ...] [--inputs DIR] [--outputs DIR] ' +
  '[--threads N] [--repeat N] [--warmup N] [--metadata]';

class UsageError extends Error {}
class RunError extends Error {}

function firstLine(message) {
  const line = String(message)
    .split('\n')
    .find((l) => l.trim().length > 0);
  return (line || String(message)).trim();
}

function parseCount(flag, text, minimum) {
  if (!/^\d+$/.test(text || '') || Number(text) < minimum) {
    throw new UsageError(`${flag} needs an integer >= ${minimum}, got '${text}'`);
  }
  return Number(text);
}

function parseArgs(argv) {
  const o = { model: null, inputsDir: '.', outputsDir: '.', inputFiles: {}, threads: 0, repeat: 0, warmup: -1, metadata: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '-h' || a === '--help') {
      process.stdout.write(USAGE + '\n');
      process.exit(0);
    } else if (a === '--inputs') o.inputsDir = value();
    else if (a === '--outputs') o.outputsDir = value();
    else if (a === '--threads') o.threads = parseCount(a, value(), 1);
    else if (a === '--repeat') o.repeat = parseCount(a, value(), 1);
    else if (a === '--warmup') o.warmup = parseCount(a, value(), 0);
    else if (a === '--metadata') o.metadata = true;
    else if (a === '--device') {
      const device = value();
      if (device !== 'cpu') throw new UsageError(`the Node runner runs on cpu only, not '${device}'`);
    } else if (a.startsWith('--')) throw new UsageError(`unknown option ${a}`);
    else if (o.model === null) o.model = a;
    else if (a.indexOf('=') > 0) o.inputFiles[a.slice(0, a.indexOf('='))] = a.slice(a.indexOf('=') + 1);
    else throw new UsageError(`unexpected argument '${a}' (inputs are given as NAME=FILE.npy)`);
  }
  if (o.model === null) throw new UsageError('no MODEL given');
  if (o.warmup < 0) o.warmup = o.repeat > 0 ? 3 : 0;
  return o;
}

function shapeText(shape) {
  return `[${shape.join(', ')}]`;
}

// The zoo.json document of an ONNX file, or a one-line reason why there is none.
function loadMetadata(model) {
  const name = path.basename(model);
  if (!fs.existsSync(model)) throw new RunError(`${model} not found`);
  if (!fs.statSync(model).isFile()) throw new RunError(`${model} is not a file`);
  const head = Buffer.alloc(4);
  const fd = fs.openSync(model, 'r');
  fs.readSync(fd, head, 0, 4, 0);
  fs.closeSync(fd);
  if (head.toString('latin1') === 'PK\x03\x04') {
    throw new RunError(`${name} is a zip archive (TorchScript or .pt2?): the Node runner runs .onnx files; run it with zoo-run`);
  }
  let props;
  try {
    props = onnxMetadata(model);
  } catch (e) {
    if (e instanceof NotOnnx) throw new RunError(`${name} is not an ONNX model (${e.message})`);
    throw e;
  }
  if (!props['zoo.json']) throw new RunError(`${name} has no zoo.json metadata: the Node runner runs models written by \`zoo export\``);
  let meta;
  try {
    meta = JSON.parse(props['zoo.json']);
  } catch (e) {
    throw new RunError(`${name} has unreadable zoo.json metadata: ${firstLine(e.message)}`);
  }
  if (!Array.isArray(meta.inputs) || !Array.isArray(meta.outputs) || meta.inputs.length === 0) {
    throw new RunError(`${name}: its zoo.json metadata lists no inputs or outputs`);
  }
  return { text: props['zoo.json'], meta };
}

function describeInputs(specs) {
  return specs.map((s) => `${s.name} ${shapeText(s.shape || [])} ${s.dtype}`).join(', ');
}

const INTEGER_DTYPES = new Set(['int64', 'int32', 'int16', 'int8', 'uint8']);

// An integer outside its declared range would index another row of an embedding (ONNX wraps
// -1 to the last one): refuse it by name and value. int64 data are BigInts.
function checkRange(spec, array) {
  const range = spec.value_range;
  if (!Array.isArray(range) || range.length !== 2 || !INTEGER_DTYPES.has(spec.dtype) || array.data.length === 0) return;
  const big = typeof array.data[0] === 'bigint';
  const [lo, hi] = big ? [BigInt(range[0]), BigInt(range[1])] : [range[0], range[1]];
  let smallest = array.data[0];
  let largest = array.data[0];
  for (const v of array.data) {
    if (v < smallest) smallest = v;
    if (v > largest) largest = v;
  }
  if (smallest < lo || largest > hi) {
    throw new RunError(`input '${spec.name}' must be in [${range[0]}, ${range[1]}], got ${smallest < lo ? smallest : largest}`);
  }
}

// Reads every input named in the metadata and checks dtype, rank, fixed dimensions, equal sizes
// for equally named dynamic dimensions, and integers inside their value_range. Returns
// {name: {dtype, shape, data}}.
function readInputs(specs, o) {
  for (const name of Object.keys(o.inputFiles)) {
    if (!specs.some((s) => s.name === name)) {
      throw new RunError(`unknown input '${name}' (the model takes ${specs.map((s) => s.name).join(', ')})`);
    }
  }
  const arrays = {};
  const namedDims = {};
  for (const spec of specs) {
    const file = o.inputFiles[spec.name] || path.join(o.inputsDir, `${spec.name}.npy`);
    if (!fs.existsSync(file)) {
      throw new RunError(`missing input '${spec.name}': ${file} not found (the model takes ${describeInputs(specs)})`);
    }
    let array;
    try {
      array = readNpy(file);
    } catch (e) {
      if (e instanceof NpyError) throw new RunError(`input '${spec.name}': ${e.message}`);
      throw e;
    }
    const want = spec.shape || [];
    if (array.dtype !== spec.dtype) throw new RunError(`input '${spec.name}' must be ${spec.dtype}, got ${array.dtype}`);
    if (array.shape.length !== want.length) {
      throw new RunError(
        `input '${spec.name}' must have shape ${shapeText(want)} (rank ${want.length}), got ${shapeText(array.shape)}`,
      );
    }
    want.forEach((dim, d) => {
      const size = array.shape[d];
      if (typeof dim === 'number') {
        if (size !== dim) {
          throw new RunError(
            `input '${spec.name}' must have shape ${shapeText(want)}, got ${shapeText(array.shape)} (dimension ${d} must be ${dim})`,
          );
        }
        return;
      }
      if (size < 1) throw new RunError(`input '${spec.name}' has an empty '${dim}' dimension`);
      const seen = namedDims[dim];
      if (seen && seen.size !== size) {
        throw new RunError(`input '${spec.name}' has ${dim} ${size} but input '${seen.input}' has ${dim} ${seen.size}`);
      }
      namedDims[dim] = seen || { size, input: spec.name };
    });
    checkRange(spec, array);
    arrays[spec.name] = array;
  }
  return arrays;
}

async function main(o) {
  const { text, meta } = loadMetadata(o.model);
  if (o.metadata) {
    process.stdout.write(text + '\n');
    return;
  }
  const arrays = readInputs(meta.inputs, o);

  // Loaded only now, so that argument and file errors need no native module.
  const ort = require('onnxruntime-node');
  ort.env.logLevel = 'error';
  const options = { executionProviders: ['cpu'], logSeverityLevel: 3 };
  if (o.threads > 0) options.intraOpNumThreads = o.threads;
  let session;
  try {
    session = await ort.InferenceSession.create(o.model, options);
  } catch (e) {
    throw new RunError(`cannot load ${path.basename(o.model)}: ${firstLine(e.message)}`);
  }
  const feeds = {};
  for (const spec of meta.inputs) {
    const a = arrays[spec.name];
    feeds[spec.name] = new ort.Tensor(a.dtype, a.data, a.shape);
  }
  const fetches = meta.outputs.map((s) => s.name);
  const runOnce = async () => {
    try {
      return await session.run(feeds, fetches);
    } catch (e) {
      throw new RunError(`running ${path.basename(o.model)} failed: ${firstLine(e.message)}`);
    }
  };

  let results;
  for (let i = 0; i < o.warmup; i++) results = await runOnce();
  const timesMs = [];
  for (let i = 0; i < Math.max(o.repeat, 1); i++) {
    const start = process.hrtime.bigint();
    results = await runOnce();
    timesMs.push(Number(process.hrtime.bigint() - start) / 1e6);
  }

  fs.mkdirSync(o.outputsDir, { recursive: true });
  const written = [];
  for (const spec of meta.outputs) {
    const t = results[spec.name];
    const dims = Array.from(t.dims, Number);
    writeNpy(path.join(o.outputsDir, `${spec.name}.npy`), t.type, dims, t.data);
    written.push({ name: spec.name, shape: dims, dtype: t.type });
  }
  const summary = { runtime: 'node', format: 'onnx', device: 'cpu', outputs: written };
  if (o.repeat > 0) {
    timesMs.sort((a, b) => a - b);
    const n = timesMs.length;
    const median = n % 2 ? timesMs[(n - 1) / 2] : (timesMs[n / 2 - 1] + timesMs[n / 2]) / 2;
    Object.assign(summary, { threads: o.threads || null, warmup: o.warmup, runs: n, median_ms: median, min_ms: timesMs[0] });
  }
  process.stdout.write(JSON.stringify(summary) + '\n');
}

let options;
try {
  options = parseArgs(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`zoo-run-node: ${e.message} (${USAGE})\n`);
  process.exit(2);
}
main(options).catch((e) => {
  const known = e instanceof RunError || e instanceof NpyError;
  process.stderr.write(`zoo-run-node: ${known ? e.message : firstLine(e.message || e)}\n`);
  process.exitCode = 1;
});
