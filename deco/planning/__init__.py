"""Memory planning: what a training run needs per GPU, computed before anything is allocated.

`arch` builds the composed MLLM with fake tensors (no memory, no download), `activations` measures
what its forward saves for backward, `memory` turns both into per-GPU bytes for each strategy.
`python -m deco.plan` (deco/plan.py) is the entry point.
"""
