"""`python -m deco.<job> --help`: what the job does, its required keys, two examples, the groups it uses.

The text comes from the job's primary config, `configs/<job>.yaml`: its first comment line (`Primary config
of ...: <what it does>`), its `#   python -m ...` example lines, the comment above each required (`???`) key,
and the config groups of its defaults list with their options (the files in `configs/<group>/`). `deco`'s
package init prints it before anything heavy is imported when the process was started as
`python -m deco.<job> ... --help` (torch takes seconds to import); inside a running Hydra app the same text
is Hydra's help template (`configs/hydra/default.yaml`, resolver `deco_help`). Imports only the standard
library, OmegaConf and, for composing, Hydra.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
# module -> primary config
JOB_CONFIGS = {
    "deco.train": "train",
    "deco.evaluate": "evaluate",
    "deco.explain": "explain",
    "deco.export": "export",
    "deco.report": "report",
    "deco.data.to_wds": "to_wds",
    "deco.app": "app",
    "deco.zoo": "zoo",
}
HIDDEN_GROUPS = ("hydra", "paths")  # run-dir plumbing, not a user's choice (hydra/launcher is shown)


def _header(job: str) -> tuple[str, list[str], list[str]]:
    """(what the job does, example commands, all lines) from the comment block atop configs/<job>.yaml."""
    lines = (CONFIG_DIR / f"{job}.yaml").read_text().splitlines()
    block = []
    for line in lines:
        if not line.startswith("#"):
            break
        block.append(line[1:].strip())
    first = ""
    for line in block:  # the first sentence, over as many lines as it takes
        if line.startswith("python -m ") or first.endswith("."):
            break
        first = f"{first} {line}".strip()
    what = first.split(":", 1)[1].strip() if first.startswith("Primary config") and ":" in first else first
    examples = [b for b in block if b.startswith("python -m ")]
    return what, examples, lines


def _required(lines: list[str]) -> list[tuple[str, str]]:
    """(key, the comment line above it) of each top-level `key: ???` of the primary config."""
    found = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\w+): \?\?\?", line)
        if match:
            comments = []
            j = i - 1
            while j >= 0 and lines[j].startswith("#"):
                comments.insert(0, lines[j][1:].strip())
                j -= 1
            found.append((match.group(1), comments[0] if comments else ""))  # the first comment line
    return found


def _groups(choices) -> list[tuple[str, str | None, list[str]]]:
    """(group, chosen option, options) of the groups the job's defaults list uses."""
    out = []
    for group, chosen in choices.items():
        if group.split("/")[0] in HIDDEN_GROUPS and group != "hydra/launcher":
            continue
        folder = CONFIG_DIR / group
        options = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        if group == "hydra/launcher":
            options = ["basic", *options]
        out.append((group, chosen, options))
    return sorted(out, key=lambda g: (g[0].startswith("hydra/"), g[0] in ("debug", "experiment"), g[0]))


def help_text(job: str, choices) -> str:
    module = next(m for m, j in JOB_CONFIGS.items() if j == job)
    what, examples, lines = _header(job)
    out = [f"python -m {module}: {what}", ""]
    required = _required(lines)
    out.append("Required keys:" if required else "Required keys: none (every key has a default)")
    out += [f"  {key}=...  {comment}" for key, comment in required]
    out += ["", "Examples:", *[f"  {e}" for e in examples[:2]], ""]
    groups = _groups(choices)
    if groups:
        out.append("Config groups (group=option; * = the default):")
        for group, chosen, options in groups:
            shown = [f"{o}*" if o == chosen else o for o in options]
            out.append(f"  {group:<15} {', '.join(shown)}")
        out.append("")
    out += [
        f"Every key of configs/{job}.yaml can be set as key=value; `--cfg job` prints the composed config",
        "without running, `-m` sweeps comma-separated values, hydra.run.dir= picks the run dir.",
    ]
    return "\n".join(out)


def _choices(job: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            cfg = compose(config_name=job, overrides=overrides, return_hydra_config=True)
        except Exception:  # noqa: BLE001 - a bad override: help for the defaults (the run would say what is wrong)
            cfg = compose(config_name=job, return_hydra_config=True)
    return cfg.hydra.runtime.choices


def hydra_template(job: str, *, _root_) -> str:
    """The resolver behind hydra.help.template: the same text, `$` escaped for Hydra's string.Template."""
    return help_text(job, _root_.hydra.runtime.choices).replace("$", "$$")


def fast_help_if_asked() -> None:
    """At `import deco` in a process started as `python -m deco.<job> ... --help`: print the help, exit 0."""
    argv = list(getattr(sys, "orig_argv", []))
    if sys.argv[:1] != ["-m"] or "-m" not in argv:  # only while `python -m` locates the module
        return
    rest = argv[argv.index("-m") + 1 :]
    if len(rest) < 2 or rest[0] not in JOB_CONFIGS or "--help" not in rest[1:]:
        return
    job = JOB_CONFIGS[rest[0]]
    overrides = [a for a in rest[1:] if not a.startswith("-")]
    print(help_text(job, _choices(job, overrides)))
    raise SystemExit(0)
