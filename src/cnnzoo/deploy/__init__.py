"""Deployment: inference-time folding, export (ONNX, TorchScript, torch.export) and benchmarks."""
