"""Reading finished run dirs: config, metrics.jsonl, evaluation, relevance scores and tensor files.

A run dir is any folder below `sweep_dir` that holds `config.yaml` (the resolved training config)
and `metrics.jsonl` (records with `step`, `train/loss`, `train/step_time_s`, `val/loss`); so both
a Hydra multirun dir (`multirun/train/<date>_<time>/<n>-<projector>-q<tokens>/`) and the study's
`<stage>/<projector>-q<tokens>-s<seed>/` layout work. Evaluation results are read from
`<run>/eval/<benchmark>/metrics.json` (what `deco.evaluate` writes with
`paths.output_dir=<run>/eval/<benchmark>`), relevance tensors from `<run>/relevance/relevance-*.{pt,npz}`
(`deco.explain`) and box scores from `<run>/relevance_score/summary.json` (`deco.explain mode=score`).
Rates (accuracy, F1) are kept in [0, 1] whatever scale the benchmark wrote.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deco.utils.io import read_jsonl

# Task family of each shapes benchmark (the paper's three: MLLM benchmarks, localization, open-ended).
FAMILY_NAMES = {"mllm": "benchmarks", "localization": "localization", "open_vqa": "open-ended"}
# Steps left out of the time-per-step mean: the first steps pay for lazy initialisation.
WARMUP_STEPS = 2
# Final train loss = mean of the last this many logged train/loss values (one step is noisy).
FINAL_LOSS_WINDOW = 5
STAGE_ORDER = {"pretrain": 0, "finetune": 1, "finetune_lora": 2}


@dataclass
class Run:
    """One finished run dir, reduced to what the report needs."""

    path: Path
    stage: str
    projector: str
    tokens: int | None
    seed: int | None
    records: list[dict]
    scalars: dict[str, float] = field(default_factory=dict)  # metric -> value of this run
    families: dict[str, str] = field(default_factory=dict)  # eval metric -> task family
    questions: dict[str, int] = field(default_factory=dict)  # eval rate metric -> questions it was measured on
    relevance: list[Path] = field(default_factory=list)
    image_aspect: str = "pad"  # how its images were made square (data.image_aspect), for overlays

    @property
    def group(self) -> tuple[str, str, int | None]:
        return self.stage, self.projector, self.tokens

    @property
    def label(self) -> str:
        return f"{self.projector}-{self.tokens}" if self.tokens is not None else self.projector


def _read_yaml(path: Path) -> dict:
    from omegaconf import OmegaConf  # a plain YAML reader here (the resolved config has no interpolations)

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)



def visual_tokens(config: dict) -> int | None:
    """Visual tokens per image: the projector's query_num, else one per patch of the vision grid."""
    from deco.utils.config import ConfigError, vision_patch_count

    projector = config.get("projector") or {}
    if isinstance(projector.get("query_num"), int):
        return projector["query_num"]
    try:  # the tower's own config.json (e.g. the zoo's), its inline config or a CLIP hub name
        return vision_patch_count((config.get("model") or {}).get("vision") or {})
    except (ConfigError, OSError, ValueError, KeyError):
        return None


def _trainable_params(run_dir: Path) -> dict[str, float]:
    """params/<part>_trainable from the CSV logger's hparams.yaml (written at fit start), if any."""
    found: dict[str, float] = {}
    for hparams in sorted(run_dir.glob("**/hparams.yaml")):
        data = _read_yaml(hparams)
        for key, value in data.items():
            if key.startswith("params/") and key.endswith("_trainable") and isinstance(value, (int, float)):
                found[key.removeprefix("params/").removesuffix("_trainable")] = float(value)
        if found:
            break
    out = {}
    if found:
        out["params_trainable"] = sum(found.values())
        if "projector" in found:
            out["params_projector"] = found["projector"]
    return out


def _train_scalars(records: list[dict]) -> dict[str, float]:
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    times = [r["train/step_time_s"] for r in records if "train/step_time_s" in r and r.get("step", 0) > WARMUP_STEPS]
    if not times:  # runs shorter than the warm-up: use every step
        times = [r["train/step_time_s"] for r in records if "train/step_time_s" in r]
    tps = [r["train/tokens_per_s"] for r in records if "train/tokens_per_s" in r and r.get("step", 0) > WARMUP_STEPS]
    vals = [r["val/loss"] for r in records if "val/loss" in r]
    steps = [r["step"] for r in records if "step" in r]
    out = {}
    if losses:
        out["train_loss_final"] = float(np.mean(losses[-FINAL_LOSS_WINDOW:]))
    if times:
        out["step_time_s"] = float(np.mean(times))
    if tps:
        out["tokens_per_s"] = float(np.mean(tps))
    if vals:
        out["val_loss"] = float(vals[-1])
    if steps:
        out["steps"] = float(max(steps))
    return out


# Headline metrics that are rates; benchmarks report them in [0, 1] or in percent.
RATE_METRICS = {"accuracy", "f1", "circular_accuracy", "precision", "recall"}


def _as_fraction(metric: str, value: float) -> float:
    """Rates in [0, 1] whatever scale the benchmark used (a rate above 1 is a percentage)."""
    return value / 100.0 if metric in RATE_METRICS and value > 1.0 else value


def _eval_scalars(run_dir: Path) -> tuple[dict[str, float], dict[str, str], dict[str, int]]:
    """Headline metric of each `metrics.json` written by deco.evaluate below the run dir, its task family,
    and for rates the number of questions (for a CI over questions when there is one seed)."""
    scalars, families, questions = {}, {}, {}
    for path in sorted(run_dir.glob("eval/**/metrics.json")):
        summary = json.loads(path.read_text())
        if "benchmark" not in summary or "metrics" not in summary:
            raise ValueError(f"{path}: not a deco.evaluate metrics.json (needs 'benchmark' and 'metrics')")
        headline = summary.get("headline")
        if headline not in summary["metrics"]:
            continue
        key = f"{summary['benchmark']}/{headline}"
        scalars[key] = _as_fraction(headline, float(summary["metrics"][headline]))
        families[key] = summary.get("family", "other")
        if headline in RATE_METRICS and summary.get("num_questions"):
            questions[key] = int(summary["num_questions"])
    return scalars, families, questions


def _relevance_scalars(run_dir: Path) -> dict[str, float]:
    """Box scores of `deco.explain mode=score` (`relevance_score/summary.json`): per method, the
    share of relevance inside the asked-about object's box (energy) and the pointing-game hit rate."""
    out = {}
    for path in sorted(run_dir.glob("relevance_score/**/summary.json")):
        entries = json.loads(path.read_text())
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a list of per-method summaries (deco.explain mode=score)")
        for entry in entries:
            if entry.get("probes", "shapes") != "shapes":  # the distractor set is scored beside, not instead
                continue
            for metric in ("energy", "pointing"):
                if metric in entry and "method" in entry:
                    out[f"relevance_{entry['method']}/{metric}"] = float(entry[metric])
    return out


def _family_scalars(scalars: dict[str, float], families: dict[str, str]) -> dict[str, float]:
    """Per family: mean of its benchmarks' headline metrics (accuracies in [0, 1]; CIDEr as is)."""
    grouped: dict[str, list[float]] = defaultdict(list)
    for key, family in families.items():
        grouped[family].append(scalars[key])
    return {f"family/{FAMILY_NAMES.get(f, f)}": float(np.mean(v)) for f, v in grouped.items()}


def read_run(run_dir: Path) -> Run:
    """One run dir -> Run; raises FileNotFoundError / ValueError naming the file that is wrong."""
    config_path, metrics_path = run_dir / "config.yaml", run_dir / "metrics.jsonl"
    for path in (config_path, metrics_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; is {run_dir} a deco.train run dir?")
    config = _read_yaml(config_path)
    from deco.utils.names import projector_name

    if not (config.get("projector") or {}).get("name"):
        raise ValueError(f"{config_path}: no projector.name")
    projector = projector_name(config["projector"])  # avgpool with pooling=max reports as maxpool
    stage = (config.get("stage") or {}).get("name", "train")
    run = Run(
        path=run_dir, stage=stage, projector=projector, tokens=visual_tokens(config),
        seed=config.get("seed"), records=read_jsonl(metrics_path),
        image_aspect=(config.get("data") or {}).get("image_aspect") or "pad",
    )
    run.scalars.update(_train_scalars(run.records))
    run.scalars.update(_trainable_params(run_dir))
    if run.tokens is not None:
        run.scalars["visual_tokens"] = float(run.tokens)
    evals, run.families, run.questions = _eval_scalars(run_dir)
    run.scalars.update(evals)
    run.scalars.update(_family_scalars(evals, run.families))
    run.scalars.update(_relevance_scalars(run_dir))
    run.relevance = sorted(p for p in run_dir.glob("relevance/**/relevance-*") if p.suffix in (".pt", ".npz"))
    return run


def find_runs(sweep_dir: Path) -> list[Run]:
    """Every run dir below `sweep_dir` (any depth), read; FileNotFoundError when there is none."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep_dir={sweep_dir}: no such directory")
    dirs = sorted({p.parent for p in sweep_dir.glob("**/metrics.jsonl") if (p.parent / "config.yaml").is_file()})
    if not dirs:
        raise FileNotFoundError(f"sweep_dir={sweep_dir}: no run dirs (folders with config.yaml and metrics.jsonl)")
    return [read_run(d) for d in dirs]


def load_relevance(path: Path) -> dict:
    """A relevance tensor file (.pt or .npz, as deco.explain writes) -> dict of numpy arrays / metadata."""
    import torch

    from deco.explain.export import load_relevance as load_tensors

    return {k: v.detach().float().numpy() if isinstance(v, torch.Tensor) else v for k, v in load_tensors(path).items()}
