"""Training-side logic that does not need a network: fold construction (``splits``).

Kept free of torch imports at module level so that ``glioseg split`` starts fast.
"""
