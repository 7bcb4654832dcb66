"""nnverify front door: CLI, API, ONNX import, pipeline, attacks, results."""
