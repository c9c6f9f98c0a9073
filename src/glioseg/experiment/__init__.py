"""End-to-end experiments (``glioseg experiment ...``)."""
