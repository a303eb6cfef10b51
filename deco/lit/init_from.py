"""`init_from=`: start a run from another run's weights (e.g. the pretrain stage's last.ckpt), not its state.

Strict by default: a parameter of this model that the checkpoint does not hold would keep its random
initialisation, and a checkpoint tensor this model has no place for would be dropped; either means the
checkpoint is of another model (say, another projector), so the run stops naming the keys and the
projector the checkpoint was trained with. `init_from_strict=false` allows it (those parts then train
from scratch), and says so. A successful load logs how many tensors of each part it copied.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import torch

from deco.models.formats.common import safe_torch_load

log = logging.getLogger(__name__)


def _parts(keys) -> dict[str, int]:
    return dict(Counter(k.split(".", 1)[0] for k in keys))


def _shown(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")


def load_model_weights(model: torch.nn.Module, ckpt_path: str | Path, strict: bool = True) -> dict:
    """Copy the weights of a deco Lightning checkpoint into `model`; returns {loaded, missing, unexpected}."""
    checkpoint = safe_torch_load(ckpt_path, map_location="cpu")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"init_from={ckpt_path}: not a deco Lightning checkpoint (no state_dict)")
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    trained_with = ((checkpoint.get("hyper_parameters") or {}).get("build") or {}).get("projector") or {}
    where = f" (the checkpoint was trained with projector={trained_with.get('name')})" if trained_with else ""
    if mismatched:
        raise ValueError(f"init_from={ckpt_path}: {len(mismatched)} tensors have other shapes than this "
                         f"model's{where}: {_shown(mismatched)}")
    if (missing or unexpected) and strict:
        problems = []
        if missing:
            problems.append(f"{len(missing)} parameters of this model are not in it and would keep their random "
                            f"initialisation ({_shown(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} of its tensors have no place in this model ({_shown(unexpected)})")
        raise ValueError(f"init_from={ckpt_path} does not fit this model{where}: " + "; ".join(problems)
                         + ". Use the same model and projector, or init_from_strict=false to train the "
                         "missing parts from scratch")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    loaded = [k for k in own if k in state]
    log.info("init_from %s (global step %s): loaded %d tensors %s", ckpt_path, checkpoint.get("global_step"),
             len(loaded), _parts(loaded))
    if missing:
        log.warning("init_from %s: %d parameters keep their random initialisation (init_from_strict=false): %s",
                    ckpt_path, len(missing), _shown(missing))
    if unexpected:
        log.warning("init_from %s: %d checkpoint tensors were not used (init_from_strict=false): %s",
                    ckpt_path, len(unexpected), _shown(unexpected))
    return {"loaded": loaded, "missing": missing, "unexpected": unexpected}
