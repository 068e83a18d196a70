"""Exports of a model: Python code and ONNX."""
