#!/usr/bin/env node
// zoo-run-node: runs a zoo ONNX export with ONNX Runtime for Node on .npy input files.
//
//   node zoo-run.js MODEL.onnx [NAME=FILE.npy ...] [--inputs DIR] [--outputs DIR]
//                   [--threads N] [--repeat N] [--warmup N] [--metadata]
//   node zoo-run.js MODEL.onnx --self-test [--outputs DIR] [--threads N]
//
// Input NAME is read from NAME=FILE.npy when given, otherwise from DIR/NAME.npy (DIR defaults to
// "."); each output is written to --outputs DIR/NAME.npy. Names, dtypes and shapes come from the
// model's zoo.json metadata; an integer input outside its declared value_range is refused. On
// success one JSON line on stdout describes the outputs (and, with --repeat N, the median latency
// of N runs after the warm-up, excluding model load and file I/O).
// --self-test runs the model on the test vectors its metadata names (seeded inputs and eager
// PyTorch's outputs, .npy files beside it, pinned by sha256) and compares the outputs with the
// stored tolerances: |got - expected| <= atol + rtol * |expected|, integers exactly. One JSON line
// on stdout gives the verdict and the worst difference; exit 0 when every output matches, else 1.
// Any failure prints one line "zoo-run-node: ..." on stderr; exit 1, or 2 for bad arguments.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { readNpy, parseNpy, writeNpy, NpyError } = require('./npy');
const { onnxMetadata, NotOnnx } = require('./onnx-metadata');

const USAGE =
  'usage: zoo-run-node MODEL.onnx [NAME=FILE.npy ...] [--inputs DIR] [--outputs DIR] ' +
  '[--threads N] [--repeat N] [--warmup N] [--metadata] [--self-test]';

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
  const o = {
    model: null,
    inputsDir: '.',
    outputsDir: '.',
    inputFiles: {},
    threads: 0,
    repeat: 0,
    warmup: -1,
    metadata: false,
    selfTest: false,
    inputsGiven: false,
    outputsGiven: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '-h' || a === '--help') {
      process.stdout.write(USAGE + '\n');
      process.exit(0);
    } else if (a === '--inputs') {
      o.inputsDir = value();
      o.inputsGiven = true;
    } else if (a === '--outputs') {
      o.outputsDir = value();
      o.outputsGiven = true;
    }
    else if (a === '--threads') o.threads = parseCount(a, value(), 1);
    else if (a === '--repeat') o.repeat = parseCount(a, value(), 1);
    else if (a === '--warmup') o.warmup = parseCount(a, value(), 0);
    else if (a === '--metadata') o.metadata = true;
    else if (a === '--self-test') o.selfTest = true;
    else if (a === '--device') {
      const device = value();
      if (device !== 'cpu') throw new UsageError(`the Node runner runs on cpu only, not '${device}'`);
    } else if (a.startsWith('--')) throw new UsageError(`unknown option ${a}`);
    else if (o.model === null) o.model = a;
    else if (a.indexOf('=') > 0) o.inputFiles[a.slice(0, a.indexOf('='))] = a.slice(a.indexOf('=') + 1);
    else throw new UsageError(`unexpected argument '${a}' (inputs are given as NAME=FILE.npy)`);
  }
  if (o.model === null) throw new UsageError('no MODEL given');
  if (o.selfTest && (o.inputsGiven || Object.keys(o.inputFiles).length > 0 || o.repeat > 0 || o.metadata)) {
    throw new UsageError(
      "--self-test reads the inputs the model's test vectors name; it takes no NAME=FILE, --inputs, --repeat or --metadata",
    );
  }
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

// Checks one input against its spec: dtype, rank, fixed dimensions, equal sizes for equally named
// dynamic dimensions (`namedDims` remembers them across the inputs), integers inside their value_range.
function checkInput(spec, array, namedDims) {
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
}

// Reads every input named in the metadata and checks it (`checkInput`). Returns {name: {dtype, shape, data}}.
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
    checkInput(spec, array, namedDims);
    arrays[spec.name] = array;
  }
  return arrays;
}

// ------------------------------------------------------------------------------------ --self-test

// A test vector's array, read from beside the model after its bytes are checked against the metadata.
function readVector(model, entry) {
  const rel = String(entry.path || '');
  const parts = rel.split(/[\\/]/);
  if (!rel || path.isAbsolute(rel) || parts.includes('..')) {
    throw new RunError(`the metadata names test vector '${rel}', which is not a path inside the export directory`);
  }
  const file = path.join(path.dirname(model), rel);
  if (!fs.existsSync(file) || !fs.statSync(file).isFile()) {
    throw new RunError(`test vector ${file} not found: copy the export's ${parts[0]}/ directory beside ${path.basename(model)}`);
  }
  const bytes = fs.readFileSync(file);
  const actual = crypto.createHash('sha256').update(bytes).digest('hex');
  if (actual !== entry.sha256) {
    const [got, recorded] = [actual.slice(0, 12), String(entry.sha256).slice(0, 12)];
    throw new RunError(`test vector ${file} was modified after export (sha256 ${got}..., the metadata says ${recorded}...)`);
  }
  try {
    return parseNpy(bytes, file);
  } catch (e) {
    if (e instanceof NpyError) throw new RunError(`test vector ${e.message}`);
    throw e;
  }
}

function vectorsNamed(section, kind) {
  if (!Array.isArray(section[kind])) throw new RunError(`the model's test_vectors metadata lists no ${kind}`);
  return section[kind];
}

// IEEE half-precision bits -> number (ONNX Runtime for Node and npy.js hold float16 as raw bits).
function halfToFloat(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

const FLOAT_DTYPES = new Set(['float32', 'float64', 'float16']);

// How one output ({dtype, shape, data}) compares with its vector. `ratio` is the worst
// |diff| / (atol + rtol * |expected|): above 1 fails (for integers any difference is infinitely over).
function compareOutput(name, got, want, rtol, atol) {
  const v = { name, passed: true, reason: '', maxAbs: 0, maxRel: 0, ratio: 0, index: [], got: 0, expected: 0, allowed: 0 };
  if (shapeText(got.shape) !== shapeText(want.shape)) {
    return { ...v, passed: false, reason: `output '${name}' has shape ${shapeText(got.shape)}, its test vector ${shapeText(want.shape)}` };
  }
  if (got.dtype !== want.dtype) return { ...v, passed: false, reason: `output '${name}' is ${got.dtype}, its test vector ${want.dtype}` };
  const floating = FLOAT_DTYPES.has(want.dtype);
  const value = want.dtype === 'float16' ? (x) => halfToFloat(x) : (x) => Number(x);
  let worst = -1;
  for (let i = 0; i < want.data.length; i++) {
    const g = value(got.data[i]);
    const w = value(want.data[i]);
    if (Number.isNaN(g) !== Number.isNaN(w)) {
      return { ...v, passed: false, reason: `output '${name}' is NaN where its test vector is not (or the reverse)` };
    }
    const same = Number.isNaN(w) || got.data[i] === want.data[i] || g === w; // BigInts compare exactly
    const diff = same ? 0 : Math.abs(g - w);
    const scale = Number.isNaN(w) ? 0 : Math.abs(w);
    const allowed = floating ? atol + rtol * scale : 0;
    let ratio = 0;
    if (!same) ratio = !floating ? Infinity : allowed > 0 ? diff / allowed : diff > 0 ? Infinity : 0;
    if (!same && (!floating || !(diff <= allowed))) v.passed = false;
    v.maxAbs = Math.max(v.maxAbs, diff);
    if (floating && scale > atol) v.maxRel = Math.max(v.maxRel, diff / scale);
    if (worst < 0 || ratio > v.ratio) {
      worst = i;
      Object.assign(v, { ratio, got: g, expected: w, allowed });
    }
  }
  // The flat position of the worst element as an index into the shape.
  let rest = Math.max(worst, 0);
  v.index = want.shape.map(() => 0);
  for (let d = want.shape.length - 1; d >= 0; d--) {
    v.index[d] = rest % want.shape[d];
    rest = Math.floor(rest / want.shape[d]);
  }
  return v;
}

// `x` as C's printf("%.6g") writes it, so both runners word their lines alike (1e-05, 0.000119062).
function shortNumber(x) {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'nan' : x > 0 ? 'inf' : '-inf';
  if (x === 0) return '0';
  const strip = (digits) => (digits.includes('.') ? digits.replace(/\.?0+$/, '') : digits);
  const exponent = Math.floor(Math.log10(Math.abs(x)));
  if (exponent >= -4 && exponent < 6) return strip(x.toPrecision(6));
  const [mantissa, power] = x.toExponential(5).split('e');
  return `${strip(mantissa)}e${power[0] === '-' ? '-' : '+'}${power.replace(/^[-+]/, '').padStart(2, '0')}`;
}

async function selfTest(o, meta) {
  const section = meta.test_vectors;
  const name = path.basename(o.model);
  if (!section || typeof section !== 'object') {
    throw new RunError(`${name} names no test vectors in its metadata: export it again with \`zoo export\` to self-test it`);
  }
  const tolerance = (key, fallback) => {
    if (typeof section[key] === 'number') return section[key];
    return typeof meta[key] === 'number' ? meta[key] : fallback;
  };
  const rtol = tolerance('rtol', 1e-4);
  const atol = tolerance('atol', 1e-5);

  const arrays = {};
  for (const entry of vectorsNamed(section, 'inputs')) arrays[entry.name] = readVector(o.model, entry);
  const expected = {};
  for (const entry of vectorsNamed(section, 'outputs')) expected[entry.name] = readVector(o.model, entry);
  for (const spec of meta.outputs) {
    if (!expected[spec.name]) throw new RunError(`the model's test vectors have no output '${spec.name}'`);
  }
  const namedDims = {};
  for (const spec of meta.inputs) {
    if (!arrays[spec.name]) throw new RunError(`the model's test vectors have no input '${spec.name}'`);
    checkInput(spec, arrays[spec.name], namedDims);
  }

  const session = await openSession(o);
  const { results } = await runSession(session, o, meta, arrays);
  if (o.outputsGiven) writeOutputs(o, meta, results);

  const verdicts = meta.outputs.map((spec) => {
    const t = results[spec.name];
    return compareOutput(spec.name, { dtype: t.type, shape: Array.from(t.dims, Number), data: t.data }, expected[spec.name], rtol, atol);
  });
  const worst = verdicts.find((v) => v.reason) || verdicts.reduce((a, b) => (b.ratio > a.ratio ? b : a));
  const passed = verdicts.every((v) => v.passed);
  const maxAbs = Math.max(...verdicts.map((v) => v.maxAbs));
  const maxRel = Math.max(...verdicts.map((v) => v.maxRel));
  const summary = {
    runtime: 'node',
    format: 'onnx',
    device: 'cpu',
    self_test: passed ? 'passed' : 'failed',
    rtol,
    atol,
    max_abs: maxAbs,
    max_rel: maxRel,
    worst: worst.reason ? { output: worst.name } : { output: worst.name, index: worst.index, got: worst.got, expected: worst.expected },
    outputs: verdicts.map((v, i) => {
      const t = results[meta.outputs[i].name];
      const shape = Array.from(t.dims, Number);
      const row = { name: v.name, shape, dtype: t.type, max_abs: v.maxAbs, max_rel: v.maxRel, passed: v.passed };
      return v.reason ? { ...row, reason: v.reason } : row;
    }),
  };
  process.stdout.write(JSON.stringify(summary) + '\n');
  if (passed) return;
  const diff = Math.abs(worst.got - worst.expected);
  const why =
    worst.reason ||
    `output '${worst.name}' differs from its test vector at [${worst.index.join(', ')}]: got ${shortNumber(worst.got)}, ` +
      `expected ${shortNumber(worst.expected)} (|diff| ${shortNumber(diff)} > ${shortNumber(worst.allowed)} ` +
      `= atol ${shortNumber(atol)} + rtol ${shortNumber(rtol)} x |expected|)`;
  process.stderr.write(`zoo-run-node: self-test failed: ${why}; max_abs ${shortNumber(maxAbs)}, max_rel ${shortNumber(maxRel)}\n`);
  process.exitCode = 1;
}

// ------------------------------------------------------------------------------------ main

async function openSession(o) {
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
  return session;
}

// Runs `session` on `arrays` ({name: {dtype, shape, data}}): `warmup` untimed runs, then `repeat`
// (at least one) timed ones. Returns the last run's outputs by name, and the times in ms.
async function runSession(session, o, meta, arrays, warmup = 0, repeat = 1) {
  const ort = require('onnxruntime-node');
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
  for (let i = 0; i < warmup; i++) results = await runOnce();
  const timesMs = [];
  for (let i = 0; i < Math.max(repeat, 1); i++) {
    const start = process.hrtime.bigint();
    results = await runOnce();
    timesMs.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return { results, timesMs };
}

// Writes each output to --outputs DIR/NAME.npy; returns what was written.
function writeOutputs(o, meta, results) {
  fs.mkdirSync(o.outputsDir, { recursive: true });
  const written = [];
  for (const spec of meta.outputs) {
    const t = results[spec.name];
    const dims = Array.from(t.dims, Number);
    writeNpy(path.join(o.outputsDir, `${spec.name}.npy`), t.type, dims, t.data);
    written.push({ name: spec.name, shape: dims, dtype: t.type });
  }
  return written;
}

async function main(o) {
  const { text, meta } = loadMetadata(o.model);
  if (o.metadata) {
    process.stdout.write(text + '\n');
    return;
  }
  if (o.selfTest) {
    await selfTest(o, meta);
    return;
  }
  const arrays = readInputs(meta.inputs, o);
  const session = await openSession(o);
  const { results, timesMs } = await runSession(session, o, meta, arrays, o.warmup, o.repeat);
  const summary = { runtime: 'node', format: 'onnx', device: 'cpu', outputs: writeOutputs(o, meta, results) };
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
