"""Run-level glue for sweeps on clusters: W&B grouping by sweep, and a W&B logger that never hangs.

- The `sweep_group` config resolver names a multirun's W&B group after its sweep directory
  (`multirun/train/2026-11-25_21-00-00` -> `train/2026-11-25_21-00-00`), so all runs of one sweep
  sit side by side on the dashboard; single runs get no group.
- `wandb_logger` decides online vs offline before W&B starts: offline when there is no API key,
  when `WANDB_MODE` says so, or when api.wandb.ai cannot be reached within a couple of seconds
  (compute nodes often have no internet; W&B would otherwise wait up to its init timeout).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import OmegaConf

from deco.lit import loggers

log = logging.getLogger(__name__)


def sweep_group(mode, sweep_dir) -> str | None:
    """W&B group of a run: `<parent>/<name>` of the sweep dir in multirun mode, else None."""
    if not str(mode).upper().endswith("MULTIRUN"):
        return None
    path = Path(str(sweep_dir))
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("sweep_group"):
        OmegaConf.register_new_resolver("sweep_group", sweep_group)


def wandb_reachable(timeout_s: float = 2.0) -> bool:
    """Whether a TCP connection to the W&B server (WANDB_BASE_URL or api.wandb.ai:443) opens in time."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wandb_logger(project: str, save_dir: str, name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, offline: bool | None = None, reach_timeout_s: float = 2.0,
                 **kwargs):
    """`deco.lit.loggers.wandb_logger`, offline also when the server is unreachable."""
    if offline is None:
        wanted_offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not loggers.wandb_has_key()
        offline = wanted_offline or not wandb_reachable(reach_timeout_s)
        if offline and not wanted_offline:
            log.warning("W&B server unreachable: logging offline to %s (upload later with `wandb sync`)", save_dir)
    return loggers.wandb_logger(project=project, save_dir=save_dir, name=name, group=group, tags=tags,
                                offline=offline, **kwargs)


def fsdp_strategy(wrap_layers: list[str], activation_checkpointing: bool = True, **kwargs):
    """Lightning `FSDPStrategy` that shards (and optionally checkpoints) the named layer classes.

    `wrap_layers` are dotted class paths (a YAML cannot hold classes). Frozen parts (the vision
    tower, the base LLM under LoRA) need `use_orig_params`, which Lightning enables by default.
    """
    from hydra.utils import get_class
    from lightning.pytorch.strategies import FSDPStrategy

    if not wrap_layers:
        raise ValueError("trainer.strategy.wrap_layers is empty: name the layer classes to shard, "
                         "e.g. transformers.models.llama.modeling_llama.LlamaDecoderLayer")
    layers = set()
    for path in wrap_layers:
        try:
            layers.add(get_class(path))
        except Exception as error:
            raise ValueError(f"trainer.strategy.wrap_layers: cannot import {path}: {error}") from None
    if activation_checkpointing:
        kwargs["activation_checkpointing_policy"] = layers
    return FSDPStrategy(auto_wrap_policy=layers, **kwargs)
