"""Decomposed ONNX export (prefix graph + expert graph + manifest) and parity validation."""
