"""Adapters that let other evaluation harnesses run deco checkpoints (optional extras, imported on demand).

* `lmms_eval` — a `deco` model for lmms-eval (`pip install -e .[lmms]`), registered through the
  `lmms_eval.models` entry point in setup.cfg: `python -m lmms_eval --model deco --model_args ckpt=...`.
"""
