"""Gather a finished sweep into one comparison of projectors: a table and three figures.

    python -m deco.report sweep_dir=experiments/projector_study/runs
    python -m deco.report sweep_dir=multirun/train/2026-11-25_21-00-00 out_dir=report wandb=true
    python -m deco.report sweep_dir=experiments/projector_study/runs \
        out_dir=experiments/projector_study/results probe_image=experiments/projector_study/probe.png

A run dir is any folder below `sweep_dir` that holds `config.yaml` (the resolved training config)
and `metrics.jsonl` (records with `step`, `train/loss`, `train/step_time_s`, `val/loss`); so both
a Hydra multirun dir and the study's `<stage>/<projector>-q<tokens>-s<seed>/` layout work.
Runs are grouped by (stage, projector, visual tokens); seeds are the replicates. Evaluation
results are read from `<run>/eval/<benchmark>/metrics.json` (what `deco.evaluate` writes there
with `paths.output_dir=<run>/eval/<benchmark>`), relevance tensors from
`<run>/relevance/relevance-*.{pt,npz}` (what `deco.explain` writes) and relevance box scores from
`<run>/relevance_score/summary.json` (`deco.explain mode=score`). Rates (accuracy, F1) are shown
in [0, 1] whatever scale the benchmark wrote. Every metric is reported as
mean ± half-width of the 95% confidence interval of the mean over seeds (Student t, n-1 degrees
of freedom; no interval with one seed). Outputs in `out_dir` (default `<sweep_dir>/report`):
`summary.md`, `summary.csv` (one row per group and metric, with the per-seed values),
`convergence.png`, `accuracy.png` and, when relevance files exist, `relevance.png`. With
`wandb=true` the figures and the table also go to a W&B run (offline without an API key).
Science-side: imports neither Lightning nor Hydra.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from deco.utils.io import read_jsonl

# Two-sided 95% Student t quantiles t_{0.975, df} for df = 1..30 (standard tables).
_T975 = [12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423]
# Task family of each shapes benchmark (the paper's three: MLLM benchmarks, localization, open-ended).
FAMILY_NAMES = {"mllm": "benchmarks", "localization": "localization", "open_vqa": "open-ended"}
# Steps left out of the time-per-step mean: the first steps pay for lazy initialisation.
WARMUP_STEPS = 2
# Final train loss = mean of the last this many logged train/loss values (one step is noisy).
FINAL_LOSS_WINDOW = 5


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table for df <= 30, a Cornish-Fisher expansion beyond (error < 1e-4)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, 95% CI half-width, n) of the finite values; half-width is nan for n < 2."""
    xs = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(xs.mean())
    if n < 2:
        return mean, math.nan, 1
    sem = float(xs.std(ddof=1)) / math.sqrt(n)
    return mean, t_quantile_975(n - 1) * sem, n


# ----------------------------------------------------------------------------- reading runs


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
    relevance: list[Path] = field(default_factory=list)

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
    projector = config.get("projector") or {}
    if isinstance(projector.get("query_num"), int):
        return projector["query_num"]
    vision = ((config.get("model") or {}).get("vision") or {}).get("config") or {}
    if vision.get("image_size") and vision.get("patch_size"):
        return (int(vision["image_size"]) // int(vision["patch_size"])) ** 2
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


def _eval_scalars(run_dir: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Headline metric of each `metrics.json` written by deco.evaluate below the run dir."""
    scalars, families = {}, {}
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
    return scalars, families


def _relevance_scalars(run_dir: Path) -> dict[str, float]:
    """Box scores of `deco.explain mode=score` (`relevance_score/summary.json`): per method, the
    share of relevance inside the asked-about object's box (energy) and the pointing-game hit rate."""
    out = {}
    for path in sorted(run_dir.glob("relevance_score/**/summary.json")):
        entries = json.loads(path.read_text())
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a list of per-method summaries (deco.explain mode=score)")
        for entry in entries:
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
    projector = (config.get("projector") or {}).get("name")
    if not projector:
        raise ValueError(f"{config_path}: no projector.name")
    stage = (config.get("stage") or {}).get("name", "train")
    run = Run(
        path=run_dir, stage=stage, projector=projector, tokens=visual_tokens(config),
        seed=config.get("seed"), records=read_jsonl(metrics_path),
    )
    run.scalars.update(_train_scalars(run.records))
    run.scalars.update(_trainable_params(run_dir))
    if run.tokens is not None:
        run.scalars["visual_tokens"] = float(run.tokens)
    evals, run.families = _eval_scalars(run_dir)
    run.scalars.update(evals)
    run.scalars.update(_family_scalars(evals, run.families))
    run.scalars.update(_relevance_scalars(run_dir))
    run.relevance = sorted(p for p in run_dir.glob("relevance/**/relevance-*") if p.suffix in (".pt", ".npz"))
    return run


def find_runs(sweep_dir: Path) -> list[Run]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep_dir={sweep_dir}: no such directory")
    dirs = sorted({p.parent for p in sweep_dir.glob("**/metrics.jsonl") if (p.parent / "config.yaml").is_file()})
    if not dirs:
        raise FileNotFoundError(f"sweep_dir={sweep_dir}: no run dirs (folders with config.yaml and metrics.jsonl)")
    return [read_run(d) for d in dirs]


# ----------------------------------------------------------------------------- the table


# Column order of the table; anything else (per-benchmark metrics) follows in name order.
LEADING = ["visual_tokens", "params_projector", "params_trainable", "steps", "step_time_s", "tokens_per_s",
           "train_loss_final", "val_loss"]
STAGE_ORDER = {"pretrain": 0, "finetune": 1, "finetune_lora": 2}


def _group_key(group: tuple[str, str, int | None]):
    stage, projector, tokens = group
    return STAGE_ORDER.get(stage, 9), stage, -(tokens or 0), projector


def summarize(runs: Sequence[Run]) -> list[dict]:
    """Long-format rows: stage, projector, tokens, metric, mean, ci95, n, values (per seed)."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.group].append(run)
    rows = []
    for group in sorted(groups, key=_group_key):
        members = sorted(groups[group], key=lambda r: (r.seed is None, r.seed))
        metrics = sorted({m for r in members for m in r.scalars},
                         key=lambda m: (LEADING.index(m) if m in LEADING else len(LEADING), m))
        for metric in metrics:
            values = [r.scalars.get(metric, math.nan) for r in members]
            mean, ci, n = mean_ci(values)
            rows.append({
                "stage": group[0], "projector": group[1], "tokens": group[2], "metric": metric,
                "mean": mean, "ci95": ci, "n": n, "seeds": [r.seed for r in members], "values": values,
            })
    return rows


def _fmt(mean: float, ci: float, metric: str) -> str:
    if math.isnan(mean):
        return "-"
    if metric.startswith("params") or metric in ("visual_tokens", "steps"):
        text = f"{mean:,.0f}"
        return text if math.isnan(ci) or ci == 0 else f"{text} ± {ci:,.0f}"
    digits = 2 if abs(mean) >= 100 else 3
    return f"{mean:.{digits}f}" if math.isnan(ci) else f"{mean:.{digits}f} ± {ci:.{digits}f}"


def is_eval_metric(metric: str) -> bool:
    """Evaluation / relevance metrics are named `<benchmark or family>/<metric>`; training ones are not."""
    return "/" in metric


def markdown_table(rows: Sequence[dict], evaluation: bool | None = None) -> str:
    """One line per (stage, projector, tokens), one column per metric: `mean ± ci95`. `evaluation`:
    True keeps only evaluation metrics (and groups that have any), False only training metrics."""
    if evaluation is not None:
        rows = [r for r in rows if is_eval_metric(r["metric"]) == evaluation]
    metrics = []
    for row in rows:
        if row["metric"] not in metrics:
            metrics.append(row["metric"])
    by_group: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        by_group[(row["stage"], row["projector"], row["tokens"])][row["metric"]] = row
    lines = ["| stage | projector | seeds | " + " | ".join(metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for group, cells in by_group.items():
        n = max(c["n"] for c in cells.values())
        label = f"{group[1]}-{group[2]}" if group[2] is not None else group[1]
        values = [_fmt(cells[m]["mean"], cells[m]["ci95"], m) if m in cells else "-" for m in metrics]
        lines.append(f"| {group[0]} | {label} | {n} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["stage", "projector", "tokens", "metric", "mean", "ci95", "n", "seeds", "values"])
    for r in rows:
        writer.writerow([r["stage"], r["projector"], "" if r["tokens"] is None else r["tokens"], r["metric"],
                         repr(r["mean"]), repr(r["ci95"]), r["n"], " ".join(map(str, r["seeds"])),
                         " ".join(repr(v) for v in r["values"])])
    path.write_text(buf.getvalue())


def read_csv(path: Path) -> list[dict]:
    """Read `summary.csv` back (for notebooks and comparisons across sweeps)."""
    rows = []
    with Path(path).open() as f:
        for r in csv.DictReader(f):
            rows.append({
                "stage": r["stage"], "projector": r["projector"], "tokens": int(r["tokens"]) if r["tokens"] else None,
                "metric": r["metric"], "mean": float(r["mean"]), "ci95": float(r["ci95"]), "n": int(r["n"]),
                "seeds": r["seeds"].split(), "values": [float(v) for v in r["values"].split()],
            })
    return rows


# ----------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a server
    import matplotlib.pyplot as plt

    return plt


def _colors(labels: Iterable[str]) -> dict[str, tuple]:
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    return {label: cmap(i % 10) for i, label in enumerate(sorted(set(labels)))}


def plot_convergence(runs: Sequence[Run], path: Path) -> None:
    """Train loss vs step per stage: mean over seeds per projector, band = min..max over seeds."""
    plt = _plt()
    stages = sorted({r.stage for r in runs}, key=lambda s: STAGE_ORDER.get(s, 9))
    colors = _colors(r.label for r in runs)
    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 4), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        groups: dict[str, list[Run]] = defaultdict(list)
        for run in runs:
            if run.stage == stage:
                groups[run.label].append(run)
        for label in sorted(groups, key=lambda s: (s.split("-")[0], s)):
            curves = [{r["step"]: r["train/loss"] for r in run.records if "train/loss" in r} for run in groups[label]]
            steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
            if not steps:
                continue
            ys = np.array([[c[s] for s in steps] for c in curves])  # seeds x steps
            ax.plot(steps, ys.mean(0), color=colors[label], label=f"{label} (n={len(curves)})")
            if len(curves) > 1:
                ax.fill_between(steps, ys.min(0), ys.max(0), color=colors[label], alpha=0.2, linewidth=0)
        ax.set_title(f"{stage}: train loss")
        ax.set_xlabel("step")
        ax.set_ylabel("train/loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy(rows: Sequence[dict], path: Path) -> bool:
    """Grouped bars of each evaluation metric (per benchmark and per family), error bars = 95% CI.
    Returns False (and writes nothing) when no evaluation results exist."""
    plt = _plt()
    rows = [r for r in rows if is_eval_metric(r["metric"]) and not r["metric"].startswith("relevance")
            and not math.isnan(r["mean"])]
    if not rows:
        return False
    metrics = sorted({r["metric"] for r in rows}, key=lambda m: (not m.startswith("family/"), m))
    labels = []
    for r in rows:
        label = f"{r['projector']}-{r['tokens']}" if r["tokens"] is not None else r["projector"]
        if label not in labels:
            labels.append(label)
    colors = _colors(labels)
    cell = {(f"{r['projector']}-{r['tokens']}" if r["tokens"] is not None else r["projector"], r["metric"]): r
            for r in rows}
    # CIDEr is not in [0, 1]: give unbounded metrics their own panel.
    bounded = [m for m in metrics if all(0 <= cell[k]["mean"] <= 1 for k in cell if k[1] == m)]
    panels = [p for p in (bounded, [m for m in metrics if m not in bounded]) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6, 1.3 * len(metrics) * len(labels) / 3), 4),
                             squeeze=False, gridspec_kw={"width_ratios": [len(p) for p in panels]})
    width = 0.8 / len(labels)
    for ax, panel in zip(axes[0], panels):
        x = np.arange(len(panel))
        for i, label in enumerate(labels):
            means = [cell[(label, m)]["mean"] if (label, m) in cell else np.nan for m in panel]
            cis = [cell[(label, m)]["ci95"] if (label, m) in cell else np.nan for m in panel]
            cis = [0 if math.isnan(c) else c for c in cis]
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, means, width, yerr=cis, capsize=2,
                   color=colors[label], label=label)
        ax.set_xticks(x)
        ax.set_xticklabels([m.replace("shapes_", "").replace("/", "\n") for m in panel], fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("score (mean over seeds, 95% CI)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Evaluation per benchmark and task family")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def load_relevance(path: Path) -> dict:
    """A relevance tensor file (.pt or .npz, as deco.explain writes) -> dict of numpy arrays / metadata."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    if path.suffix == ".pt":
        import torch

        data = torch.load(path, map_location="cpu", weights_only=True)
        return {k: v.detach().float().numpy() if isinstance(v, torch.Tensor) else v for k, v in data.items()}
    raise ValueError(f"{path}: unknown relevance file type (expected .pt or .npz)")


def _scalar_text(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value.tolist()
    return str(value)


def plot_relevance(runs: Sequence[Run], path: Path, method: str = "rgae", probe_image: str | Path | None = None) -> bool:
    """One row per projector (its lowest seed, last stage): R_t2i (patch grid, over the probe image
    when given), R_t2q (per visual token), R_q2i (visual tokens x patches), for the same probe text.
    Returns False (and writes nothing) when no relevance files exist."""
    plt = _plt()
    chosen: dict[str, Path] = {}
    for run in sorted(runs, key=lambda r: (-STAGE_ORDER.get(r.stage, 9), r.seed if r.seed is not None else 0)):
        files = [p for p in run.relevance if f"-{method}-" in p.name] or run.relevance
        if files and run.label not in chosen:
            chosen[run.label] = files[0]
    if not chosen:
        return False
    image = None
    if probe_image is not None:
        from PIL import Image

        if not Path(probe_image).is_file():
            raise FileNotFoundError(f"probe_image={probe_image}: no such file")
        image = np.asarray(Image.open(probe_image).convert("RGB"))
    labels = sorted(chosen, key=lambda s: (s.split("-")[0], -int(s.split("-")[-1]) if s.split("-")[-1].isdigit() else 0))
    fig, axes = plt.subplots(len(labels), 3, figsize=(12, 3.2 * len(labels)), squeeze=False)
    for row, label in zip(axes, labels):
        data = load_relevance(chosen[label])
        t2i = np.asarray(data["r_t2i"], dtype=float)  # g g
        t2q = np.asarray(data["r_t2q"], dtype=float).reshape(-1)  # q
        q2i = np.asarray(data["r_q2i"], dtype=float)  # q n
        text = _scalar_text(data.get("text", ""))
        if image is not None:
            h, w = image.shape[:2]
            row[0].imshow(image)
            row[0].imshow(t2i, cmap="jet", alpha=0.5, extent=(0, w, h, 0), interpolation="bilinear")
        else:
            row[0].imshow(t2i, cmap="jet")
        row[0].set_title(f"{label}: R_t2i for {text[:40]!r}", fontsize=9)
        row[0].axis("off")
        row[1].bar(np.arange(len(t2q)), t2q, width=1.0)
        row[1].set_title(f"R_t2q ({len(t2q)} visual tokens)", fontsize=9)
        row[1].set_xlabel("visual token")
        row[2].imshow(q2i, aspect="auto", cmap="viridis", interpolation="nearest")
        row[2].set_title("R_q2i (visual tokens x patches)", fontsize=9)
        row[2].set_xlabel("patch")
        row[2].set_ylabel("visual token")
    fig.suptitle(f"Relevance ({method}) of the same probe per projector")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.2 * len(labels))))  # room for the title
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- entry point


def build_report(sweep_dir: str | Path, out_dir: str | Path | None = None, method: str = "rgae",
                 wandb_run=None, probe_image: str | Path | None = None) -> dict:
    """Read every run below `sweep_dir`, write the table and figures to `out_dir`; returns
    {"rows": [...], "files": {name: path}, "table": markdown}. `wandb_run`: an active wandb run to
    log them to; `probe_image`: the probe the relevance files explain, drawn under R_t2i."""
    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir else sweep_dir / "report"
    runs = find_runs(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(runs)
    table = "## Training\n\n" + markdown_table(rows, evaluation=False)
    if any(is_eval_metric(r["metric"]) for r in rows):
        table += "\n## Evaluation and relevance\n\n" + markdown_table(rows, evaluation=True)
    files = {"summary.md": out / "summary.md", "summary.csv": out / "summary.csv",
             "convergence.png": out / "convergence.png"}
    header = (f"# Sweep report: {sweep_dir}\n\n{len(runs)} runs. Cells: mean ± 95% CI half-width over seeds "
              f"(Student t); step time excludes the first {WARMUP_STEPS} steps; train_loss_final is the "
              f"mean of the last {FINAL_LOSS_WINDOW} logged steps.\n\n")
    files["summary.md"].write_text(header + table)
    write_csv(rows, files["summary.csv"])
    plot_convergence(runs, files["convergence.png"])
    if plot_accuracy(rows, out / "accuracy.png"):
        files["accuracy.png"] = out / "accuracy.png"
    if plot_relevance(runs, out / "relevance.png", method=method, probe_image=probe_image):
        files["relevance.png"] = out / "relevance.png"
    if wandb_run is not None:
        import wandb

        wandb_run.log({name.removesuffix(".png"): wandb.Image(str(p)) for name, p in files.items() if p.suffix == ".png"})
        columns = ["stage", "projector", "tokens", "metric", "mean", "ci95", "n"]
        wandb_run.log({"summary": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})
    return {"rows": rows, "files": files, "table": table}


def _parse_args(argv: Sequence[str]) -> dict[str, str]:
    allowed = {"sweep_dir", "out_dir", "method", "probe_image", "wandb", "wandb_project"}
    args = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            raise SystemExit(f"usage: python -m deco.report sweep_dir=DIR [out_dir=DIR] [method=rgae] "
                             f"[probe_image=PNG] [wandb=true] [wandb_project=deco]; bad argument {item!r} "
                             f"(allowed keys: {', '.join(sorted(allowed))})")
        args[key] = value
    if "sweep_dir" not in args:
        raise SystemExit("sweep_dir is required: python -m deco.report sweep_dir=<multirun or study runs dir>")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    wandb_run = None
    if args.get("wandb", "false").lower() in ("1", "true", "yes"):
        import os

        import wandb

        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        wandb_run = wandb.init(project=args.get("wandb_project", "deco"), job_type="report", mode=mode,
                               name=f"report-{Path(args['sweep_dir']).name}")
    try:
        result = build_report(args["sweep_dir"], args.get("out_dir"), args.get("method", "rgae"), wandb_run,
                              args.get("probe_image"))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"deco.report: {error}") from None
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    print(result["table"])
    for name, path in result["files"].items():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
