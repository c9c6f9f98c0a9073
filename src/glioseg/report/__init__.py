"""Human-readable outputs: preview images, per-case and experiment reports."""
