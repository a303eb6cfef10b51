"""Config validation that runs before any model is built.

Every check raises `ConfigError` with one message that names the offending key, the value
given and what is allowed, so a bad sweep point fails in a second instead of after the
model has been built (or, worse, trains something other than what the user asked for).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping

from deco.zoo import resolve

POOLING_PROJECTORS = ("avgpool", "maxpool")
POOLING_OPERATORS = ("avg", "max")


class ConfigError(ValueError):
    """A configuration that cannot run, with a message a user can act on."""


def looks_like_path(name: str) -> bool:
    """A hub id is `org/name`; anything starting like a filesystem path is a path."""
    return name.startswith(("/", "./", "../", "~")) or os.path.isabs(name)


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """Whether a TCP connection to the Hugging Face hub (HF_ENDPOINT or huggingface.co) opens in time."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout_s):
            return True
    except (OSError, ValueError):
        return False


def hub_cached(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds files of `repo_id`."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return True  # cannot tell: let from_pretrained decide
    names = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "adapter_config.json")
    cache_dir = os.environ.get("HF_HUB_CACHE")  # read now: huggingface_hub reads it once, at import
    return any(isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache_dir), str) for name in names)


def check_model_path(key: str, name_or_path: str | None) -> None:
    if name_or_path is None:
        return
    name_or_path = resolve(name_or_path)  # a zoo name must exist in the package
    expanded = os.path.expanduser(str(name_or_path))
    if looks_like_path(str(name_or_path)) and not os.path.exists(expanded):
        raise ConfigError(f"{key}={name_or_path}: no such file or directory")
    if (
        str(name_or_path).count("/") == 1
        and not os.path.exists(expanded)
        and not hub_cached(str(name_or_path))
        and not hub_reachable()
    ):
        # Without this, transformers retries for about a minute and ends in a traceback that names no key.
        raise ConfigError(
            f"{key}={name_or_path}: not a local directory, not in the Hugging Face cache, and the hub cannot be "
            "reached (offline, or HF_HUB_OFFLINE=1). Download it where there is network (`huggingface-cli "
            f"download {name_or_path}`) or point {key} at a local directory"
        )


def vision_patch_count(vision_cfg: Mapping) -> int | None:
    """Number of patch tokens the vision tower emits, or None when it cannot be known offline."""
    config = vision_cfg.get("config")
    if config:
        return (int(config["image_size"]) // int(config["patch_size"])) ** 2
    name = str(resolve(vision_cfg.get("name_or_path")) or "")
    config_file = os.path.join(os.path.expanduser(name), "config.json")
    if os.path.isfile(config_file):
        with open(config_file) as f:
            data = json.load(f)
        data = data.get("vision_config", data)
        if "image_size" in data and "patch_size" in data:
            return (data["image_size"] // data["patch_size"]) ** 2
    match = re.search(r"patch(\d+)-(\d+)", name)  # e.g. openai/clip-vit-large-patch14-336
    if match:
        return (int(match.group(2)) // int(match.group(1))) ** 2
    return None


def validate_projector(projector_cfg: Mapping, num_patches: int | None) -> None:
    from deco.models.projectors import PROJECTORS

    name = projector_cfg.get("name")
    if name not in PROJECTORS:
        raise ConfigError(f"projector={name} is unknown; choose one of: {', '.join(sorted(PROJECTORS))}")
    if name in POOLING_PROJECTORS:
        pooling = projector_cfg.get("pooling")
        if pooling not in POOLING_OPERATORS:
            raise ConfigError(f"pooling={pooling} is unknown; choose one of: {', '.join(POOLING_OPERATORS)}")
    if "query_num" not in projector_cfg:
        return
    query_num = projector_cfg["query_num"]
    if not isinstance(query_num, int) or query_num < 1:
        raise ConfigError(f"query_num={query_num} must be a positive integer")
    if num_patches is not None and query_num > num_patches:
        raise ConfigError(
            f"query_num={query_num} is larger than the vision tower's {num_patches} patches; "
            f"use query_num <= {num_patches}"
        )
    rule = getattr(PROJECTORS[name], "query_rule", None)  # the projector zoo states its own rule
    if rule is not None and num_patches is not None:
        from deco.models.projectors.compressor import query_num_problem

        problem = query_num_problem(name, rule, query_num, num_patches)
        if problem:
            raise ConfigError(problem)
    if name in POOLING_PROJECTORS and math.isqrt(query_num) ** 2 != query_num:
        limit = math.isqrt(num_patches) if num_patches else 24
        squares = ", ".join(str(i * i) for i in range(1, limit + 1))
        raise ConfigError(
            f"query_num={query_num} is not a perfect square; projector={name} pools the patch grid "
            f"to sqrt(query_num) x sqrt(query_num), so use one of: {squares}"
        )


def check_keys_and_values(cfg: Mapping) -> None:
    """Unknown keys (typos such as `+stage.lrr=1e-3`) and settings that cannot train as meant."""
    from deco.utils.config_keys import unknown_keys, value_problems

    for key, siblings in unknown_keys(cfg):
        raise ConfigError(f"{key} is not a setting deco knows (a typo?); known keys there: {', '.join(siblings)}")
    problems = value_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))


def validate_train_config(cfg: Mapping) -> None:
    """All checks for `deco.train`; raises ConfigError on the first problem found."""
    check_keys_and_values(cfg)
    fault = cfg.get("fault") or {}
    if fault.get("on_nan", "stop") not in ("stop", "skip"):
        raise ConfigError(f"fault.on_nan={fault.get('on_nan')} is not supported; choose one of: stop, skip")
    if cfg.get("resume") not in (None, False, "auto", "none", "null", "never"):
        raise ConfigError(
            f"resume={cfg.get('resume')} is not supported; use resume=auto, resume=null or ckpt_path=<file>"
        )
    model = cfg["model"]
    for part in ("vision", "llm", "tokenizer", "image_processor"):
        check_model_path(f"model.{part}.name_or_path", model[part].get("name_or_path"))
    from deco.models.attention import check_implementation

    for part in ("vision", "llm"):
        if model[part].get("attn_implementation") is not None:
            try:
                check_implementation(model[part]["attn_implementation"], f"model.{part}.attn_implementation")
            except ValueError as error:
                raise ConfigError(str(error)) from None
    for key in ("init_from", "ckpt_path"):
        value = cfg.get(key)
        if value is not None and value != "auto" and not os.path.exists(os.path.expanduser(str(value))):
            raise ConfigError(f"{key}={value}: no such file")
    validate_projector(cfg["projector"], vision_patch_count(model["vision"]))
    stage = cfg["stage"]
    enabled = (cfg.get("tower_features") or {}).get("enabled", False)
    if enabled not in (True, False, "auto") or type(enabled) is int:
        raise ConfigError(f"tower_features.enabled={enabled} is not one of: true, false, auto")
    if enabled is True and stage.get("train_vision"):
        raise ConfigError(
            "tower_features.enabled=true precomputes the vision tower's outputs, but "
            "stage.train_vision=true trains it: disable one of them (auto turns it off then)"
        )
    from deco.data.conversation import TEMPLATES

    from deco.data.image import ASPECTS

    aspect = (cfg.get("data") or {}).get("image_aspect", "pad")
    if aspect not in ASPECTS:
        raise ConfigError(f"data.image_aspect={aspect} is unknown; choose one of: {', '.join(ASPECTS)}")
    if stage["template"] not in TEMPLATES:
        raise ConfigError(f"stage.template={stage['template']} is unknown; choose one of: {', '.join(TEMPLATES)}")


def reducer_or_exit(section: Mapping | None):
    """The `reduction` group as a reducer (None for none/absent); a bad key exits with "Config error: ..."."""
    from deco.models.reduction import ReductionConfigError, reducer_from_config

    try:
        return reducer_from_config(dict(section) if section is not None else None)
    except ReductionConfigError as error:
        raise SystemExit(f"Config error: {error}") from None


def apply_reduction_or_exit(model, reducer) -> None:
    """model.set_reduction(reducer); a budget this model cannot take (more than its tokens, a layer it lacks, a
    projector that mixes patches) exits with "Config error: ..." naming the key."""
    from deco.models.reduction import ReductionConfigError

    try:
        model.set_reduction(reducer)
    except ReductionConfigError as error:
        raise SystemExit(f"Config error: {error}") from None
