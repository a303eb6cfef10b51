"""The arena's table from its run dirs (experiments/arena/run.py), as Markdown on stdout.

    python -m experiments.arena.table multirun/arena [--steps 800] [--control multirun/arena_perm [--control-plain D]]

Per projector and token count: seeds, per task mean ± 95 % CI (Student t over seeds), the overall score
(stats.overall), projector / total trainable parameters, s/step, steps to 80 % attribute and to 50 % grounding
(per seed), the paired difference against avgpool at the same token count (same seeds), Kendall tau /
Spearman rho between the arena's overall ranking and TokenPacker Table 3's average (tokenpacker_table3.json),
the same tau per task (which of the shapes tasks ranks projectors as the 7B benchmarks do), the setting each row
ran at (projector lr and heads, read from its runs' configs: a row whose seeds ran at different settings shows
each), and with
`--control DIR` (avgpool runs with `projector.permute_tokens`) the layout control: plain vs permuted avgpool.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

import yaml

from experiments.arena.stats import fmt, mean_ci, overall, rank_correlation

BENCH_TASK = {"shapes_existence": "existence", "shapes_attribute": "attribute", "shapes_grounding": "grounding",
              "shapes_caption": "caption"}
TARGETS = {"attribute": 80.0, "grounding": 50.0}
PUBLISHED = Path(__file__).with_name("tokenpacker_table3.json")
RUN = re.compile(r"(?P<name>.+)-q(?P<q>\d+)-s(?P<seed>\d+)")


def _headline(path: Path) -> float:
    data = json.loads(path.read_text())
    return float(data["metrics"][data["headline"]])


def read_run(run: Path) -> dict:
    scores = {BENCH_TASK[b]: _headline(run / "eval" / b / "metrics.json")
              for b in BENCH_TASK if (run / "eval" / b / "metrics.json").is_file()}
    curve: dict[str, dict[int, float]] = defaultdict(dict)
    for path in run.glob("curve/step*/*/metrics.json"):
        if path.parent.name in BENCH_TASK:
            curve[BENCH_TASK[path.parent.name]][int(path.parent.parent.name.removeprefix("step"))] = _headline(path)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] \
        if (run / "metrics.jsonl").is_file() else []
    times = [r["train/step_time_s"] for r in records if "train/step_time_s" in r]
    params = {}
    for hp in run.rglob("hparams.yaml"):
        params.update({k: int(v) for k, v in re.findall(r"params/(\w+)_trainable: (\d+)", hp.read_text())})
    return {"scores": scores, "curve": dict(curve), "s_per_step": statistics.median(times) if times else None,
            "projector_params": params.get("projector"), "trainable_params": sum(params.values()) if params else None,
            "setting": read_setting(run / ".hydra" / "config.yaml")}


def read_setting(config: Path) -> str | None:
    """'lr 0.001' or 'lr 0.002, 4 heads' from a run's composed config (heads only where set); None without one."""
    if not config.is_file():
        return None
    cfg = yaml.safe_load(config.read_text()) or {}
    lr, heads = cfg.get("stage", {}).get("projector_lr"), cfg.get("projector", {}).get("num_attention_heads")
    # float(): YAML 1.1 reads an exponent without a dot (1e-3) as a string
    return f"lr {float(lr):g}" + (f", {heads} heads" if heads else "") if lr is not None else None


def read_runs(root: Path) -> dict[tuple[str, int], dict[int, dict]]:
    """{(projector, tokens): {seed: run}} for the finetune run dirs below root (pretrain dirs are skipped)."""
    runs: dict[tuple[str, int], dict[int, dict]] = defaultdict(dict)
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        m = RUN.fullmatch(path.name)
        if m:
            runs[(m["name"], int(m["q"]))][int(m["seed"])] = read_run(path)
    return dict(runs)


def steps_to(run: dict, task: str, final_step: int) -> int | None:
    """First evaluated step at or above the task's target (the final score counts at final_step); None if never."""
    points = dict(run["curve"].get(task, {}))
    if task in run["scores"]:
        points[final_step] = run["scores"][task]
    return next((s for s, v in sorted(points.items()) if v >= TARGETS[task]), None)


def _score(run: dict, task: str) -> float | None:
    return overall(run["scores"]) if task == "overall" else run["scores"].get(task)


def arena_table(runs, final_step: int) -> list[str]:
    cols = ["existence", "attribute", "grounding", "caption", "overall"]
    lines = ["| projector | tokens | seeds | setting | existence | attribute | grounding Acc@0.5 | caption CIDEr | "
             "overall | projector params | trainable params | s/step | steps to 80 % attribute | "
             "steps to 50 % grounding |", "|---|---|---|---|" + "---|" * 10]
    for (name, q), by_seed in sorted(runs.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        rs = [r for r in by_seed.values() if r["scores"]]
        if not rs:
            continue
        cells = [fmt(mean_ci([_score(r, c) for r in rs])) for c in cols]
        sps = [r["s_per_step"] for r in rs if r["s_per_step"]]
        reach = [", ".join(str(x) if x is not None else f">{final_step}" for x in
                           (steps_to(r, t, final_step) for r in rs)) for t in TARGETS]
        setting = " / ".join(dict.fromkeys(r["setting"] or "?" for r in rs))
        lines.append(f"| {name} | {q} | {len(rs)} | {setting} | " + " | ".join(cells) + f" | {rs[0]['projector_params'] or '-'} | "
                     f"{rs[0]['trainable_params'] or '-'} | {f'{statistics.fmean(sps):.2f}' if sps else '-'} | "
                     + " | ".join(reach) + " |")
    return lines


def paired_table(runs) -> list[str]:
    cols = ["existence", "attribute", "grounding", "caption", "overall"]
    lines = ["| projector | tokens | seeds | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for (name, q), by_seed in sorted(runs.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        ref = runs.get(("avgpool", q), {})
        seeds = sorted(s for s in by_seed if s in ref and by_seed[s]["scores"] and ref[s]["scores"])
        if name == "avgpool" or not seeds:
            continue
        diffs = []
        for c in cols:
            pairs = [(_score(by_seed[s], c), _score(ref[s], c)) for s in seeds]
            diffs.append(fmt(mean_ci([a - b for a, b in pairs if a is not None and b is not None])))
        lines.append(f"| {name} | {q} | {len(seeds)} | " + " | ".join(diffs) + " |")
    return lines


def _means_at(runs, tokens: int, value) -> dict[str, float]:
    """{projector: mean over seeds of value(run)} for the rows at `tokens` (mean_ci skips the runs where it is None)."""
    means = {name: mean_ci([value(r) for r in by_seed.values()]) for (name, q), by_seed in runs.items() if q == tokens}
    return {name: ci[0] for name, ci in means.items() if ci is not None}


def transfer(runs, published: dict) -> list[str]:
    lines = ["| tokens | projectors in both | Kendall tau | Spearman rho | arena order (overall) | Table 3 order |",
             "|---|---|---|---|---|---|"]
    for q, table in published["average"].items():
        arena = _means_at(runs, int(q), lambda r: overall(r["scores"]))
        corr = rank_correlation(arena, table)
        both = sorted(set(arena) & set(table))
        order = lambda d: " > ".join(sorted(both, key=lambda n: -d[n]))  # noqa: E731
        if corr is None:
            lines.append(f"| {q} | {len(both)} | - | - | {order(arena) or '-'} | {order(table) or '-'} |")
        else:
            lines.append(f"| {q} | {corr[0]} | {corr[1]:.2f} | {corr[2]:.2f} | {order(arena)} | {order(table)} |")
    return lines


def transfer_by_task(runs, published: dict) -> list[str]:
    """Kendall tau of each task's arena ranking against Table 3's average: which tasks agree with 7B."""
    tasks = ["existence", "attribute", "grounding", "caption"]
    lines = ["| tokens | " + " | ".join(f"{t} tau (n)" for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    for q, table in published["average"].items():
        corrs = [rank_correlation(_means_at(runs, int(q), lambda r, t=task: r["scores"].get(t)), table) for task in tasks]
        lines.append(f"| {q} | " + " | ".join("-" if c is None else f"{c[1]:.2f} ({c[0]})" for c in corrs) + " |")
    return lines


CONTROL_MARGIN = 5.0  # issue 24: permuted avgpool within 5 points of avgpool on grounding (mean of 3 seeds)


def control_table(runs, permuted_runs) -> list[str]:
    """The layout control: avgpool against avgpool with its output tokens permuted (`projector.permute_tokens`),
    the same seeds, per token count; it passes when the mean grounding gap is within CONTROL_MARGIN points."""
    lines = ["| tokens | seeds | grounding: avgpool | permuted | paired difference | "
             f"within {CONTROL_MARGIN:g} points | existence: avgpool / permuted | attribute: avgpool / permuted |",
             "|---|---|---|---|---|---|---|---|"]
    for (name, q), permuted in sorted(permuted_runs.items(), key=lambda kv: -kv[0][1]):
        plain = runs.get((name, q), {}) if name == "avgpool" else {}
        seeds = sorted(s for s in permuted if s in plain and "grounding" in permuted[s]["scores"]
                       and "grounding" in plain[s]["scores"])
        if not seeds:
            continue
        gap = mean_ci([plain[s]["scores"]["grounding"] - permuted[s]["scores"]["grounding"] for s in seeds])
        cells = {t: [fmt(mean_ci([side[s]["scores"].get(t) for s in seeds])) for side in (plain, permuted)]
                 for t in ("grounding", "existence", "attribute")}
        lines.append(f"| {q} | {', '.join(map(str, seeds))} | {' | '.join(cells['grounding'])} | {fmt(gap)} | "
                     f"{'yes' if abs(gap[0]) <= CONTROL_MARGIN else 'no'} | {' / '.join(cells['existence'])} | "
                     f"{' / '.join(cells['attribute'])} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--steps", type=int, default=800, help="the finetune's last step (for steps-to-target)")
    ap.add_argument("--published", type=Path, default=PUBLISHED)
    ap.add_argument("--control", type=Path, help="run dirs of avgpool with permuted tokens (the layout control)")
    ap.add_argument("--control-plain", type=Path, help="where the control's plain avgpool runs are, when they ran at "
                    "another setting than the arena's avgpool (default: root)")
    a = ap.parse_args(argv)
    runs, published = read_runs(a.root), json.loads(a.published.read_text())
    print("\n".join(["## The arena (mean ± 95 % CI over seeds; overall = mean of existence, attribute, grounding and "
                     "CIDEr / 10)", "", *arena_table(runs, a.steps), "",
                     "## Paired difference against avgpool (same seeds, same token count)", "", *paired_table(runs), "",
                     f"## Rank correlation with TokenPacker Table 3 (arXiv 2407.02392; {a.published.name})", "",
                     *transfer(runs, published), "", "Per task (Kendall tau of the task's arena ranking against Table 3's "
                     "average; which tasks agree with 7B):", "", *transfer_by_task(runs, published)]))
    if a.control:
        print("\n".join(["", f"## The layout control: avgpool vs its tokens permuted ({a.control.name}; passes within "
                          f"{CONTROL_MARGIN:g} points of grounding)", "",
                          *control_table(read_runs(a.control_plain) if a.control_plain else runs, read_runs(a.control))]))


if __name__ == "__main__":
    main()
