"""From the scanner to a BraTS-ready case, offline: ``glioseg prepare`` (docs/prepare.md).

Layer 2 of the package (docs/architecture.md): it imports ``glioseg.data`` and layer 0 only.
"""
