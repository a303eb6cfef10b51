"""Experiment-logger builders.

W&B runs offline (logs kept on disk, `wandb sync` later) when no API key is configured or the
user asks for it, so a run never hangs waiting for a login or a network.
"""

from __future__ import annotations

import os

from lightning.pytorch.loggers import WandbLogger


def wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    return os.path.isfile(netrc) and "api.wandb.ai" in open(netrc).read()


def wandb_logger(project: str, save_dir: str, name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, offline: bool | None = None, **kwargs) -> WandbLogger:
    """WandbLogger that goes offline when `offline` is true, or when it is None and no key exists."""
    if offline is None:
        offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not wandb_has_key()
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(project=project, save_dir=save_dir, name=name, group=group, tags=list(tags or []),
                       offline=offline, **kwargs)


def finish_runs(loggers) -> None:
    """End the W&B run of a finished job, so that the next job of an in-process sweep (Hydra's
    basic launcher) starts its own run instead of logging into this one."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()
