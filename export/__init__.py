"""Exporters (TorchScript, ONNX, .pt2) and the parity checks that prove them (installed as `zoo.export`).

- `formats`: one export target to one file, with the `zoo.json` metadata inside it.
- `parity`: comparing outputs, TF32-free CUDA checks, latency timing.
- `pipeline`: the `zoo export` / `zoo verify` workflows and the `export.json` manifest.
- `artifacts`: `load(path, device)` runs any exported file (used by sample and predict).
- `commands`: the click commands; `runtimes`: the native C++ and Node runners.

Nothing here imports torch at import time; `zoo --help` stays fast.
"""
