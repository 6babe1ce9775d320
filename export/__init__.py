"""latentwatch.export: PyTorch training runs -> ONNX model versions the service can trust.

Entry points: `exporter.export_run` (`latentwatch export`) and `bootstrap.ensure_default_models`
(`latentwatch bootstrap`). run_inputs: what a training run holds; graphs: the torch modules that
become scorer/encoder/decoder graphs (which ones, by latentwatch.families); onnx_file: tracing
and checking one graph; parity: ONNX Runtime vs PyTorch; second_stage_fit: the second-stage
score; reference: the latent reference for bias reports; calibration: the conformal calibration
scores; publish: staging and the atomic rename; triton: the Triton config.pbtxt. Needs torch and
onnx (the `train` extra); the serving path never imports this package.
"""
