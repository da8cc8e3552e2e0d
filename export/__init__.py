"""Exporters and the parity checks that prove them (installed as `zoo.export`).

- `format`: the export-format protocol and the `zoo.formats` registry; `formats/`:
  zoo's own (`torchscript`, `onnx`, `pt2`), one module each.
- `runtime`: the runtime protocol and the `zoo.runtimes` registry; `runtimes/`: zoo's
  own (`python` in process, `cpp` = zoo-run, `node` = onnxruntime-node).
- `pipeline`: the `zoo export` workflow; `verify`: the `zoo verify` workflow;
  `manifest`: `export.json`; `parity_runner`: artifacts x runtimes x devices x sizes.
- `program`: `torch.export` of a target (dynamic axes, errors that name the cause).
- `parity`: comparing outputs, TF32-free CUDA checks, latency timing.
- `artifacts`: `load(path, device)` runs any exported file (used by sample and predict);
  `metadata`: the `zoo.json` document every artifact carries.

Nothing here imports torch at import time; `zoo --help` stays fast.
"""
