"""Guards around a run directory that another job may share: a lock, a safe-checkpoint check, the saved config.

- `RunDirLock`: an exclusive POSIX lock on `<run>/.deco.lock` for the whole run (rank 0). A second
  job in the same `hydra.run.dir` (a requeue while the old job still lives) stops with a message
  naming the process that holds it, instead of writing into its files. The kernel drops the lock
  when the holder dies (even by SIGKILL), so a requeue after a crash proceeds.
- `clean_orphan_tmps`: temp files of checkpoint writes that a kill interrupted (deco.utils.io.atomic_write);
  only safe once the lock is held, since a live run's save in progress would look the same.
- `check_checkpoint`: opens a checkpoint with `weights_only=True` (tensors memory-mapped, so it is cheap)
  before Lightning sees it; a pickle that needs arbitrary code is refused and nothing in it runs.
- `check_same_model`: a resume must train the model the run was trained with. The saved `config.yaml`
  (or the checkpoint's own build config) is compared with this command's; a difference in the model,
  projector, pooling, query_num or stage (name, trained parts, LoRA, template) stops the run naming each key
  (with both values); a checkpoint of another run is compared through its own hyper-parameters.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path

import yaml

from deco.models.formats.common import safe_torch_load

log = logging.getLogger(__name__)

LOCK_NAME = ".deco.lock"
# What fixes the model's parameters (and which of them train): a resume may change anything else.
# The stage keys that fix which parameters train and what the model was taught to read.
STAGE_KEYS = ("stage.name", "stage.train_vision", "stage.train_llm", "stage.lora", "stage.template")
MODEL_KEYS = ("model", "projector", "pooling", "query_num", *STAGE_KEYS)
# What a checkpoint of another run records of these: its build config (model, projector: the projector's
# pooling and query_num are inside it) and its stage.
CHECKPOINT_KEYS = ("model", "projector", *STAGE_KEYS)
# Keys under MODEL_KEYS that change how a model runs, not what it is: a resume may change them.
RUNTIME_KEYS = ("model.gradient_checkpointing",)


class RunDirBusy(RuntimeError):
    """Another live process holds the run directory."""


class RunDirLock:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "an unknown process"
            os.close(fd)
            raise RunDirBusy(
                f"run dir {self.path.parent} is in use by {holder}; two runs in one hydra.run.dir would write "
                "into each other's files. Wait for it to end (a requeued job continues once it has), stop it, "
                "or pick another hydra.run.dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"pid {os.getpid()} on {socket.gethostname()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})".encode(), 0
        )
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def clean_orphan_tmps(checkpoint_dir: str | Path) -> list[Path]:
    """Remove `.<name>.*.tmp` files that an interrupted atomic write left; returns what was removed."""
    directory = Path(checkpoint_dir)
    removed = sorted(directory.glob(".*.tmp")) if directory.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        log.warning(
            "removed %d unfinished checkpoint writes of an earlier, killed run: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed


def check_checkpoint(path: str | Path) -> dict:
    """The checkpoint, loaded with weights_only=True and memory-mapped tensors (UnsafeCheckpointError if refused)."""
    return safe_torch_load(path, map_location="cpu", mmap=True)


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_differences(old: dict, new: dict, keys: tuple[str, ...] = MODEL_KEYS) -> list[str]:
    """`key: old -> new` for every leaf under one of the dotted `keys` that differs."""
    a, b = _flat(old), _flat(new)

    def wanted(k: str) -> bool:
        return any(k == p or k.startswith(p + ".") for p in keys) and k not in RUNTIME_KEYS

    leaves = sorted(k for k in set(a) | set(b) if wanted(k))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in leaves if a.get(k) != b.get(k)]


def saved_config(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text()) or {}


def _current_names(cfg: dict) -> dict:
    """`cfg` with its projector's keys spelled as today (a run saved before a rename is the same model)."""
    from deco.models.projectors.base import stored_projector_config

    projector = cfg.get("projector")
    return {**cfg, "projector": stored_projector_config(projector)} if isinstance(projector, dict) else cfg


def check_same_model(resolved: dict, checkpoint: dict, ckpt_path: str | Path, run_dir: str | Path) -> None:
    """Raise ValueError when this command would resume `ckpt_path` into a different model than it holds."""
    saved = saved_config(run_dir) if Path(ckpt_path).resolve().parent.parent == Path(run_dir).resolve() else None
    if saved is not None:
        diffs, source = config_differences(_current_names(saved), resolved), f"{Path(run_dir) / 'config.yaml'}"
    else:  # a checkpoint from elsewhere: its own build config (model, projector) and stage
        hparams = checkpoint.get("hyper_parameters") or {}
        build = hparams.get("build") or {}
        old = {"model": build.get("model"), "projector": build.get("projector"), "stage": hparams.get("stage")}
        diffs = config_differences(_current_names(old), resolved, CHECKPOINT_KEYS) if build else []
        source = f"{ckpt_path} (its hyper-parameters)"
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; ... ({len(diffs)} in all)" if len(diffs) > 8 else "")
        raise ValueError(
            f"refusing to resume {ckpt_path}: this command asks for a different model than the run trained "
            f"({source} -> this command): {shown}. Repeat the run's own overrides (see its config.yaml) to "
            "continue it, or use another hydra.run.dir (or resume=null) to start a new run"
        )
