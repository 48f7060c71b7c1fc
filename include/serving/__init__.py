"""The BentoML service that serves the pipeline's ONNX model: include/serving/service.py."""
