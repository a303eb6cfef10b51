"""deco: train, sweep, evaluate and explain LLaVA-style MLLMs that differ only in their projector."""

__version__ = "0.1.0"
