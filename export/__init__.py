"""Exporters (TorchScript, ONNX, .pt2) and the parity checks that prove them (installed as `zoo.export`)."""
