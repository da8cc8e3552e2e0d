"""zoo's built-in export formats, one module each, registered under `zoo.formats` in
zoo's `pyproject.toml` like any third party's: `torchscript`, `onnx`, `pt2`."""
