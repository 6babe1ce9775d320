"""latentwatch.export: PyTorch training runs -> ONNX model versions the service can trust.

Entry points: `exporter.export_run` (`latentwatch export`) and `bootstrap.ensure_default_models`
(`latentwatch bootstrap`). graphs: the torch modules that become scorer/encoder/decoder graphs;
onnx_file: tracing and checking one graph; parity: ONNX Runtime vs PyTorch; calibration: the
conformal calibration scores; triton: the Triton config.pbtxt. Needs torch and onnx (the
`train` extra); the serving path never imports this package.
"""
