"""Interchangeable inference backends for a FlowPolicy: PyTorch and ONNX Runtime."""
