"""What the reduction study trains, in which order, and the deco.train command lines (nothing runs here).

A run is `<projector>-q<tokens>-s<seed>`. Every run is the default recipe of `make train` (finetune stage,
`steps` x 32 scenes, one epoch) with the frozen tower's features cached; `linear` (the 576-token model the
reducers cut) gets LLaVA's two stages instead: `experiment=shapes_pretrain` (projector only, captions,
`pretrain_steps`) then `experiment=shapes_finetune init_from=<stage 1>/checkpoints/last.ckpt` (the default
recipe from the aligned projector).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Seed-major: every run of the first seed before any of the next (checkpoints others read come early).
DEFAULT_RUNS = "qformer-q64,linear-q576,avgpool-q144,qformer-q144,avgpool-q64"
PROJECTORS = ("linear", "mlp2x_gelu", "avgpool", "qformer")
TWO_STAGE = ("linear", "mlp2x_gelu")


@dataclass(frozen=True)
class Run:
    projector: str
    tokens: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.projector}-q{self.tokens}-s{self.seed}"


def parse_runs(spec: str, seeds: list[int]) -> list[Run]:
    """`--runs qformer-q64,linear-q576` x `--seeds 42,1` -> runs, seed-major, in the order given."""
    kinds = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        found = re.fullmatch(r"([a-z0-9_]+)-q(\d+)", item)
        if not found or found.group(1) not in PROJECTORS:
            raise ValueError(f"--runs: {item!r} is not <projector>-q<tokens> with a projector of {PROJECTORS}")
        kinds.append((found.group(1), int(found.group(2))))
    return [Run(projector, tokens, seed) for seed in seeds for projector, tokens in kinds]


def common_overrides(run: Run, steps: int, cache_dir: str | None) -> list[str]:
    cache = ["tower_features.enabled=true", f"tower_features.cache_dir={cache_dir}"] if cache_dir else []
    return [
        f"projector={run.projector}",
        f"query_num={run.tokens}",
        f"seed={run.seed}",
        f"data.train.num_samples={steps * 32}",
        "logger=csv",
        "threads=1",
        *cache,
    ]


def train_commands(
    run: Run, out: Path, steps: int, pretrain_steps: int, cache_dir: str | None
) -> list[tuple[Path, list[str]]]:
    """(run dir, deco.train arguments) per stage; the last stage's run dir holds the study's checkpoint."""
    final = out / run.name
    if run.projector not in TWO_STAGE or pretrain_steps <= 0:
        return [(final, [*common_overrides(run, steps, cache_dir), f"hydra.run.dir={final}"])]
    first = out / f"{run.name}-pretrain"
    return [
        (
            first,
            ["experiment=shapes_pretrain", *common_overrides(run, pretrain_steps, cache_dir), f"hydra.run.dir={first}"],
        ),
        (
            final,
            [
                "experiment=shapes_finetune",
                f"init_from={first}/checkpoints/last.ckpt",
                *common_overrides(run, steps, cache_dir),
                f"hydra.run.dir={final}",
            ],
        ),
    ]


def parse_reuse(spec: str) -> dict[str, Path]:
    """`--reuse avgpool-q64-s42=/runs/x,...` -> {run name: finished run dir} (checked by hand to be this recipe)."""
    reuse = {}
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, sep, path = item.partition("=")
        if not sep or not re.fullmatch(r"[a-z0-9_]+-q\d+-s\d+", name):
            raise ValueError(f"--reuse: {item!r} is not <projector>-q<tokens>-s<seed>=<run dir>")
        reuse[name] = Path(path)
    return reuse


def checkpoint_row(run: Run, ckpt: Path, steps: int, pretrain_steps: int) -> str:
    """One line of CHECKPOINTS.md (a list others read while the study goes on)."""
    two = run.projector in TWO_STAGE and pretrain_steps > 0
    recipe = f"{pretrain_steps} pretrain + {steps} finetune" if two else f"{steps} finetune"
    return f"| {run.projector} | {run.tokens} | {run.seed} | {recipe} | {ckpt} |"


CHECKPOINTS_HEAD = (
    "# Finished checkpoints of the reduction study (appended as each run finishes)\n\n"
    "| projector | tokens | seed | steps | checkpoint |\n|---|---|---|---|---|\n"
)


def record_checkpoint(path: Path, row: str) -> None:
    text = path.read_text() if path.exists() else CHECKPOINTS_HEAD
    if row not in text.splitlines():
        path.write_text(text + row + "\n")
