// Continues a prompt with an exported zoo language model (.onnx), greedily (the likeliest next
// character each time), and prints the prompt and its continuation, as `zoo sample PLUGIN
// --temperature 0` does:
//   node examples/generate-text.js step.onnx "The " [LENGTH] [--threads N]      (or logits.onnx)
// The vocabulary comes from the file's metadata (data_info.vocabulary: one character an id). A
// target with a state (rnn's `step`) reads one character at a time from a zero state, feeding each
// `next_state` back as `state`; a target without one (transformer's `logits`) reads a sliding window
// of the last max_sizes[seq] characters and takes the last position's logits.
'use strict';

const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');
const { onnxMetadata, NotOnnx } = require('../onnx-metadata'); // ONNX Runtime for Node does not expose metadata_props

const USAGE = 'usage: node generate-text.js MODEL.onnx PROMPT [LENGTH] [--threads N]';

class UsageError extends Error {}

function count(text, minimum) {
  if (!/^\d{1,9}$/.test(text || '') || Number(text) < minimum) throw new UsageError(USAGE);
  return Number(text);
}

// The index of the largest of `vocab` scores; the lowest index among equal ones, and the first NaN
// if any, as torch.argmax picks (so every runtime breaks ties the same way).
function likeliest(values, vocab) {
  if (values.length !== vocab) throw new Error(`the model gives ${values.length} scores for a vocabulary of ${vocab}`);
  let best = 0;
  for (let i = 1; i < values.length && !Number.isNaN(values[best]); i++) {
    if (Number.isNaN(values[i]) || values[i] > values[best]) best = i;
  }
  return best;
}

// How a character is named in an error: itself in quotes, or U+XXXX for control characters.
function shown(c) {
  const code = c.codePointAt(0);
  return code < 0x20 || code === 0x7f ? `U+${code.toString(16).toUpperCase().padStart(4, '0')}` : `'${c}'`;
}

async function main(argv) {
  const args = [];
  let threads = 0;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--threads') threads = count(argv[++i], 1);
    else args.push(argv[i]);
  }
  if (args.length < 2 || args.length > 3) throw new UsageError(USAGE);
  const [model, prompt] = args;
  const length = args.length > 2 ? count(args[2], 1) : 200;

  if (!fs.existsSync(model)) throw new Error(`${model} not found`);
  let props;
  try {
    props = onnxMetadata(model);
  } catch (e) {
    throw e instanceof NotOnnx ? new Error(`${path.basename(model)} is not an ONNX model (${e.message})`) : e;
  }
  if (!props['zoo.json']) throw new Error(`${path.basename(model)} has no zoo.json metadata: export it with \`zoo export\``);
  const meta = JSON.parse(props['zoo.json']); // the zoo.json document inside every zoo export
  const vocabulary = (meta.data_info || {}).vocabulary; // id -> character
  if (!vocabulary) throw new Error(`${path.basename(model)} carries no vocabulary (data_info.vocabulary in its metadata)`);
  const ids = new Map(vocabulary.map((c, i) => [c, i]));

  // Characters are code points: [...text] splits a string by them, not by UTF-16 units.
  const chars = [...prompt];
  const unknown = [...new Set(chars.filter((c) => !ids.has(c)))].sort((a, b) => a.codePointAt(0) - b.codePointAt(0));
  if (unknown.length) {
    const names = unknown.map(shown).join(', ');
    throw new Error(`the prompt has characters the model's vocabulary lacks: ${names} (it knows ${vocabulary.length} characters)`);
  }
  if (!chars.length) throw new Error('the prompt must hold at least one character');
  const text = chars.map((c) => ids.get(c)); // the prompt's ids, then each generated one

  const options = { executionProviders: ['cpu'], logSeverityLevel: 3 };
  if (threads) options.intraOpNumThreads = threads;
  const session = await ort.InferenceSession.create(model, options);
  const [tokens, ...states] = meta.inputs;
  const tokenTensor = (list) => new ort.Tensor('int64', BigInt64Array.from(list, BigInt), [1, list.length]);

  if (states.length) {
    // A step target: (token [1, 1], state...) -> (logits [1, vocab], next_state...), from zero states.
    const feeds = {};
    for (const spec of states) {
      const shape = spec.shape.map((d) => (typeof d === 'number' ? d : 1)); // ["batch"] and other named axes: 1
      const zeros = new { float32: Float32Array, float64: Float64Array }[spec.dtype](shape.reduce((a, b) => a * b, 1));
      feeds[spec.name] = new ort.Tensor(spec.dtype, zeros, shape);
    }
    let logits;
    const feed = async (id) => {
      feeds[tokens.name] = tokenTensor([id]);
      const out = await session.run(feeds);
      logits = out[meta.outputs[0].name].data;
      states.forEach((spec, k) => (feeds[spec.name] = out[meta.outputs[k + 1].name])); // next_state -> state
    };
    for (const id of text) await feed(id);
    for (let n = 0; n < length; n++) {
      text.push(likeliest(logits, vocabulary.length));
      if (n + 1 < length) await feed(text[text.length - 1]);
    }
  } else {
    // A window target: tokens [1, seq] -> logits [1, seq, vocab], seq at most max_sizes[seq].
    const axis = tokens.shape[1];
    const window = (meta.max_sizes || {})[axis] || Infinity;
    for (let n = 0; n < length; n++) {
      const recent = text.slice(-Math.min(window, text.length));
      const logits = (await session.run({ [tokens.name]: tokenTensor(recent) }))[meta.outputs[0].name];
      const vocab = logits.dims[2];
      const last = logits.data.subarray((recent.length - 1) * vocab, recent.length * vocab); // the last position's scores
      text.push(likeliest(last, vocabulary.length));
    }
  }
  process.stdout.write(text.map((id) => vocabulary[id]).join('') + '\n');
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e instanceof UsageError ? e.message : `generate-text: ${e.message.split('\n')[0]}`);
  process.exitCode = e instanceof UsageError ? 2 : 1;
});
