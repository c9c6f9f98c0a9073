"""Training: fingerprint -> plan -> preprocess -> train (PyTorch Lightning) -> safe checkpoints,
and fold construction (``splits``).

Kept free of torch imports at module level so that ``glioseg split`` starts fast.
"""
