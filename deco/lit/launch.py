"""Run-level glue for sweeps on clusters: W&B grouping by sweep, and a W&B logger that never hangs.

- The `sweep_group` config resolver names a multirun's W&B group after its sweep directory
  (`multirun/train/2026-11-25_21-00-00` -> `train/2026-11-25_21-00-00`), so all runs of one sweep
  sit side by side on the dashboard; single runs get no group.
- `wandb_logger` decides online vs offline before W&B starts: offline when there is no API key,
  when `WANDB_MODE` says so, when the server wandb's own settings name (`base_url`: its settings
  file, then WANDB_BASE_URL) cannot be reached within a couple of seconds (compute nodes often
  have no internet), or when starting the online run fails in any way within `init_timeout_s`.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import OmegaConf

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


def wandb_base_url() -> str:
    """The server wandb itself will talk to: its settings (system settings file, then WANDB_* variables)."""
    try:
        from wandb.sdk.wandb_settings import Settings

        settings = Settings()
        config_dir = os.getenv("WANDB_CONFIG_DIR")
        settings.settings_system = (
            str(Path(config_dir).expanduser() / "settings")
            if config_dir
            else str(Path("~", ".config", "wandb", "settings").expanduser())
        )
        settings.update_from_system_settings()
        settings.update_from_env_vars(dict(os.environ))
        return str(settings.base_url)
    except Exception as error:  # an unreadable settings file, another wandb version: fall back to the variable
        log.debug("could not read wandb's settings (%s)", error)
        return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def wandb_reachable(timeout_s: float = 2.0, base_url: str | None = None) -> bool:
    """Whether a TCP connection to the W&B server (wandb's own base_url setting) opens in time."""
    url = urlparse(base_url or wandb_base_url())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _online_or_none(init_timeout_s: float, base_url: str, **kwargs):
    """An online W&B logger whose run has started, or None when starting it failed in any way."""
    import wandb

    if wandb.run is None:  # settings of an earlier run in this process (an in-process sweep) must not apply
        wandb.teardown()
    try:
        settings = kwargs.pop("settings", None) or wandb.Settings(init_timeout=init_timeout_s)
        from deco.lit import loggers

        logger = loggers.wandb_logger(offline=False, settings=settings, **kwargs)
        logger.experiment  # start the run now (rank 0), inside this try, rather than at the first log
        return logger
    except Exception as error:  # a host that accepts TCP but is not W&B, a bad key, a timeout, ...
        log.warning(
            "W&B at %s did not start a run (%s: %s): logging offline to %s (upload later with `wandb sync`)",
            base_url,
            type(error).__name__,
            str(error).splitlines()[0] if str(error) else "",
            kwargs.get("save_dir"),
        )
        try:
            wandb.teardown()  # the failed attempt's service must not carry over to the offline run
        except Exception:
            pass
        return None


def wandb_logger(
    project: str,
    save_dir: str,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    offline: bool | None = None,
    reach_timeout_s: float = 2.0,
    init_timeout_s: float = 30.0,
    **kwargs,
):
    """`deco.lit.loggers.wandb_logger`, offline also when the server is unreachable or a run cannot start."""
    from deco.lit import loggers  # Lightning: imported when a logger is made, not when the resolvers register

    common = dict(project=project, save_dir=save_dir, name=name, group=group, tags=tags, **kwargs)
    if offline is None:
        wanted_offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not loggers.wandb_has_key()
        base_url = wandb_base_url()
        offline = wanted_offline or not wandb_reachable(reach_timeout_s, base_url)
        if offline and not wanted_offline:
            log.warning(
                "W&B server %s unreachable: logging offline to %s (upload later with `wandb sync`)", base_url, save_dir
            )
        if not offline:
            logger = _online_or_none(init_timeout_s, base_url, **common)
            if logger is not None:
                return logger
            offline = True
    return loggers.wandb_logger(offline=offline, **common)


def fsdp_strategy(wrap_layers: list[str], activation_checkpointing: bool = True, **kwargs):
    """Lightning `FSDPStrategy` that shards (and optionally checkpoints) the named layer classes.

    `wrap_layers` are dotted class paths (a YAML cannot hold classes). Frozen parts (the vision
    tower, the base LLM under LoRA) need `use_orig_params`, which Lightning enables by default.
    """
    from hydra.utils import get_class
    from lightning.pytorch.strategies import FSDPStrategy

    if not wrap_layers:
        raise ValueError(
            "trainer.strategy.wrap_layers is empty: name the layer classes to shard, "
            "e.g. transformers.models.llama.modeling_llama.LlamaDecoderLayer"
        )
    layers = set()
    for path in wrap_layers:
        try:
            layers.add(get_class(path))
        except Exception as error:
            raise ValueError(f"trainer.strategy.wrap_layers: cannot import {path}: {error}") from None
    if activation_checkpointing:
        kwargs["activation_checkpointing_policy"] = layers
    return FSDPStrategy(auto_wrap_policy=layers, **kwargs)
