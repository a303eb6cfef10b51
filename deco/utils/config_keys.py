"""Checks of `deco.train` settings that no group validates itself: unknown keys (typos) and bad numbers.

`+stage.lrr=1e-3` adds a key nothing reads, so the run would silently train with the old learning
rate. The keys deco knows are read from the shipped configs themselves (train.yaml, every file of
the stage / data groups and the global experiment and debug presets), so a new key in any of them is known at
once and no second list has to be kept in sync. Free-form groups (model, projector, trainer,
callbacks, logger, paths) are left to the code that builds them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CHECKED = ("", "stage", "stage.lora", "data", "fault", "tower_features")  # "" = the top level


def _keys(tree, prefix: str, out: set[str]) -> None:
    if not isinstance(tree, dict):
        return
    for key, value in tree.items():
        if key == "defaults":
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        out.add(path)
        _keys(value, path, out)


@lru_cache(maxsize=1)
def known_keys() -> frozenset[str]:
    """Dotted keys that some shipped config sets (empty when the configs are not next to the package)."""
    if not (CONFIG_DIR / "train.yaml").is_file():
        return frozenset()
    known: set[str] = set()
    main = yaml.safe_load((CONFIG_DIR / "train.yaml").read_text()) or {}
    _keys(main, "", known)
    for entry in main.get("defaults", []):  # group names are top-level keys
        if isinstance(entry, dict):
            known.update(str(k).removeprefix("override ").strip("/") for k in entry)
    for group in ("stage", "data"):
        for file in sorted((CONFIG_DIR / group).glob("*.yaml")):
            _keys(yaml.safe_load(file.read_text()) or {}, group, known)
    # global presets: experiment=..., and debug=... (whose keys for evaluate / explain train ignores)
    for file in sorted([*(CONFIG_DIR / "experiment").glob("*.yaml"), *(CONFIG_DIR / "debug").glob("*.yaml")]):
        _keys(yaml.safe_load(file.read_text()) or {}, "", known)
    return frozenset(known)


def unknown_keys(cfg: Mapping) -> list[tuple[str, list[str]]]:
    """[(dotted key, known siblings)] for every key of the checked sections that no shipped config has."""
    known = known_keys()
    if not known:
        return []
    found = []
    for section in CHECKED:
        node = cfg
        for part in filter(None, section.split(".")):
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping):
            continue
        prefix = f"{section}." if section else ""
        siblings = sorted(k[len(prefix) :] for k in known if k.startswith(prefix) and "." not in k[len(prefix) :])
        found += [(prefix + str(key), siblings) for key in node if prefix + str(key) not in known]
    return found


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def value_problems(cfg: Mapping) -> list[str]:
    """One message per setting that cannot train as meant (each names the key, the value and what is allowed)."""
    stage, data, trainer = cfg.get("stage") or {}, cfg.get("data") or {}, cfg.get("trainer") or {}
    problems = []

    def need(ok: bool, key: str, value, allowed: str) -> None:
        if not ok:
            problems.append(f"{key}={value} {allowed}")

    need(
        _number(stage.get("lr")) and stage.get("lr") > 0,
        "stage.lr",
        stage.get("lr"),
        "must be a positive number (a negative rate would climb the loss)",
    )
    plr = stage.get("projector_lr")
    need(plr is None or (_number(plr) and plr > 0), "stage.projector_lr", plr, "must be null or a positive number")
    wd = stage.get("weight_decay", 0.0)
    need(_number(wd) and wd >= 0, "stage.weight_decay", wd, "must be a number >= 0")
    wr = stage.get("warmup_ratio", 0.03)
    need(_number(wr) and 0 <= wr < 1, "stage.warmup_ratio", wr, "must be in [0, 1)")
    lora = stage.get("lora") or {}
    if lora.get("enabled"):
        need(_int(lora.get("r")) and lora.get("r") > 0, "stage.lora.r", lora.get("r"), "must be a positive integer")
        dropout = lora.get("dropout", 0.0)
        need(_number(dropout) and 0 <= dropout < 1, "stage.lora.dropout", dropout, "must be in [0, 1)")
    for key in ("batch_size", "max_length"):
        need(_int(data.get(key)) and data.get(key) > 0, f"data.{key}", data.get(key), "must be a positive integer")
    for key in ("eval_batch_size", "global_batch_size"):
        value = data.get(key)
        need(value is None or (_int(value) and value > 0), f"data.{key}", value, "must be null or a positive integer")
    workers = data.get("num_workers", 0)
    need(_int(workers) and workers >= 0, "data.num_workers", workers, "must be an integer >= 0")
    reader = data.get("background_read", "auto")
    need(reader in (True, False, "auto"), "data.background_read", reader, "must be true, false or auto")
    need(_int(cfg.get("seed")), "seed", cfg.get("seed"), "must be an integer")
    steps = trainer.get("max_steps", -1)
    need(_int(steps) and (steps == -1 or steps > 0), "trainer.max_steps", steps, "must be -1 (no limit) or positive")
    epochs = trainer.get("max_epochs", 1)
    need(
        epochs is None or (_int(epochs) and (epochs == -1 or epochs > 0)),
        "trainer.max_epochs",
        epochs,
        "must be null, -1 or a positive integer",
    )
    acc = trainer.get("accumulate_grad_batches", 1)
    need(_int(acc) and acc > 0, "trainer.accumulate_grad_batches", acc, "must be a positive integer")
    clip = trainer.get("gradient_clip_val")
    need(clip is None or (_number(clip) and clip >= 0), "trainer.gradient_clip_val", clip, "must be null or >= 0")
    return problems
