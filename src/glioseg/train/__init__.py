"""Training: fingerprint -> plan -> preprocess -> train (PyTorch Lightning) -> safe checkpoints."""
