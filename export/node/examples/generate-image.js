// Draws one image from an exported zoo generator (e.g. vae's decoder.onnx) and writes it as PGM/PPM:
//   node examples/generate-image.js decoder.onnx digit.pgm [SEED] [LABEL]
// Float inputs get N(0, 1) noise; integer inputs (a conditional generator's class) get LABEL.
'use strict';

const fs = require('fs');
const ort = require('onnxruntime-node');
const { onnxMetadata } = require('../onnx-metadata'); // ONNX Runtime for Node does not expose metadata_props

function gaussian(seed) {
  // mulberry32 uniform numbers through Box-Muller: reproducible noise without dependencies.
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t ^= t + Math.imul(t ^ (t >>> 7), 61 | t);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

async function main([model, out, seed = '0', label = '0']) {
  const meta = JSON.parse(onnxMetadata(model)['zoo.json']); // the zoo.json document inside every zoo export
  const session = await ort.InferenceSession.create(model);
  const noise = gaussian(Number(seed));
  const feeds = {};
  for (const spec of meta.inputs) {
    const shape = spec.shape.map((d) => (typeof d === 'number' ? d : 1)); // ["batch", 20] -> [1, 20]: one sample
    const count = shape.reduce((a, b) => a * b, 1);
    feeds[spec.name] = spec.dtype.startsWith('float')
      ? new ort.Tensor('float32', Float32Array.from({ length: count }, noise), shape)
      : new ort.Tensor('int64', BigInt64Array.from({ length: count }, () => BigInt(label)), shape);
  }
  const spec = meta.outputs[0];
  const image = (await session.run(feeds))[spec.name]; // dims [1, C, H, W]
  const [, channels, height, width] = image.dims;
  const [lo, hi] = spec.value_range || [0, 1]; // which values mean black and white
  const pixels = Buffer.alloc(channels * height * width);
  for (let c = 0; c < channels; c++)
    for (let i = 0; i < height * width; i++) {
      const v = Math.round(((image.data[c * height * width + i] - lo) / (hi - lo)) * 255);
      pixels[i * channels + c] = Math.min(255, Math.max(0, v)); // channels last, as PGM/PPM store them
    }
  fs.writeFileSync(out, Buffer.concat([Buffer.from(`${channels === 1 ? 'P5' : 'P6'}\n${width} ${height}\n255\n`), pixels]));
}

main(process.argv.slice(2)).catch((e) => {
  console.error(`generate-image: ${e.message.split('\n')[0]}`);
  process.exitCode = 1;
});
