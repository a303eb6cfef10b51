"""Keys renamed so that one concept has one name in every job (issue 28; docs/design.md, "Names").

The old spellings keep working, each with one line naming the new key:
- on the command line, `python -m deco.<job> model.base=x` is rewritten to `load.base=x` before Hydra reads it
  (`rename_overrides`, called at `import deco` like the fast `--help`); `RENAMED` lists every rename per job;
- `projector.layer_num=N` of a projector whose only depth is its MLP (avgpool, maxpool, mlp2x_gelu, pixelshuffle,
  ldp, ldpv2, tokenpacker) is now `projector.mlp_depth=N`; which projector a command builds is known only once
  Hydra has composed it, so the override is passed on as `++projector.layer_num=N` (valid whether or not the
  projector has the key) and `rename_projector_keys` moves it in the composed config;
- checkpoints and exports that stored an old projector config load through
  `deco.models.projectors.base.stored_projector_config`, silently (nothing a user has to change).
Imports only the standard library and OmegaConf.
"""

from __future__ import annotations

import logging
import re
import sys

log = logging.getLogger("deco")

LOAD = {"model.base": "load.base", "model.vision_tower": "load.vision_tower", "model.merge_lora": "load.merge_lora"}
CALLBACKS = {f"callbacks.{name}.output_dir": f"callbacks.{name}.out_dir" for name in ("relevance", "periodic_eval")}
# primary config -> {old dotted key: new dotted key}
RENAMED = {
    "train": CALLBACKS,
    "evaluate": LOAD,
    "explain": {**LOAD, "output_dir": "out_dir"},
    "export": {**LOAD, "out": "out_dir"},
    "to_wds": {"out": "out_dir"},
}
LAYER_NUM = "projector.layer_num"
_OVERRIDE = re.compile(r"(~?\+{0,2})([A-Za-z_][\w.]*)(=.*)?", flags=re.S)


def rename_overrides(job: str, argv: list[str]) -> tuple[list[str], list[str]]:
    """(`argv` with `job`'s old keys spelled anew, one message per renamed override)."""
    table = RENAMED.get(job, {})
    out, messages = [], []
    for arg in argv:
        match = _OVERRIDE.fullmatch(arg)
        if match and match.group(2) in table:
            prefix, old, rest = match.group(1), match.group(2), match.group(3) or ""
            new = table[old]
            arg = f"{prefix}{new}{rest}"
            messages.append(f"`{old}` is now `{new}` (docs/design.md, Names); using {arg}")
        elif match and match.group(2) == LAYER_NUM and not match.group(1) and match.group(3):
            arg = f"++{arg}"  # rename_projector_keys decides, once the projector is known
        out.append(arg)
    return out, messages


def rename_overrides_if_run() -> None:
    """At `import deco` in a process started as `python -m deco.<job> ...`: rewrite sys.argv's old keys."""
    from deco.utils.job_help import JOB_CONFIGS

    argv = list(getattr(sys, "orig_argv", []))
    if sys.argv[:1] != ["-m"] or "-m" not in argv:  # only while `python -m` locates the module
        return
    rest = argv[argv.index("-m") + 1 :]
    if not rest or rest[0] not in JOB_CONFIGS:
        return
    new, messages = rename_overrides(JOB_CONFIGS[rest[0]], sys.argv[1:])
    for message in messages:
        print(f"deco: {message}", file=sys.stderr)
    sys.argv[1:] = new


def rename_projector_keys(cfg) -> list[str]:
    """Move the composed config's old projector keys (layer_num of an MLP-only projector) to their new names in
    place; returns (and logs) one message per key moved."""
    from omegaconf import open_dict

    from deco.models.projectors.base import renamed_config

    projector = cfg.get("projector")
    if projector is None or not hasattr(projector, "keys"):
        return []
    name = projector.get("name")
    new, renames = renamed_config(name, {k: projector[k] for k in projector.keys()})
    messages = []
    with open_dict(cfg):
        for old, key in renames:
            projector[key] = new[key]
            del projector[old]
            messages.append(
                f"projector.{old} is now projector.{key} for projector={name} (the Linear layers of "
                f"its MLP; docs/design.md, Names); using projector.{key}={new[key]}"
            )
    for message in messages:
        log.warning(message)
    return messages
