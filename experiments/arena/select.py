"""Pick each projector's arena setting from its tuning runs and write `configs/arena/<projector>.yaml`.

    python -m experiments.arena.run --out multirun/arena_tune --tune      # the budget, validation world
    python -m experiments.arena.select multirun/arena_tune [--configs configs/arena] [--dry-run] [--table]

The criterion is the overall score (stats.overall) on the validation world (benchmark seed 60000: never the
benchmarks' questions); ties go to the smaller lr, then the default heads. A projector is written only when every
trial of its budget has all four scores, so a half-finished sweep never chooses.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from experiments.arena.jobs import ATTENTION, BASE_PROJECTOR_LR, HEADS, LR_SCALES
from experiments.arena.stats import overall
from experiments.arena.table import read_runs

TRIAL = re.compile(r"(?P<proj>.+?)-lr(?P<lr>[\d.]+)(?:-h(?P<heads>\d+))?")
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "arena"


def trials(root: Path) -> dict[str, list[dict]]:
    """{projector: [{lr_scale, heads, tokens, seed, score}]} from the tuning run dirs."""
    out: dict[str, list[dict]] = {}
    for (name, q), by_seed in read_runs(root).items():
        m = TRIAL.fullmatch(name)
        if not m:
            continue
        for seed, run in by_seed.items():
            out.setdefault(m["proj"], []).append({"lr_scale": float(m["lr"]), "heads": int(m["heads"]) if m["heads"] else None,
                                                   "tokens": q, "seed": seed, "score": overall(run["scores"]),
                                                   "scores": run["scores"]})
    return out


def choose(rows: list[dict], projector: str) -> dict | None:
    """The best complete trial, or None while the budget is incomplete."""
    budget = len(LR_SCALES) * (len(HEADS) if projector in ATTENTION else 1)
    done = [r for r in rows if r["score"] is not None]
    if len(done) < budget:
        return None
    return max(done, key=lambda r: (round(r["score"], 6), -r["lr_scale"], r["heads"] is None))


def render(projector: str, best: dict, rows: list[dict], default_heads) -> str:
    def label(r: dict) -> str:
        return f"lr x{r['lr_scale']:g}" + ("" if r["heads"] is None else f" heads {r['heads']}")

    tried = "; ".join(f"{label(r)}: {r['score']:.1f}" for r in sorted(rows, key=lambda r: (r["lr_scale"], r["heads"] or 0)))
    lines = ["# @package _global_",
             f"# The arena's setting for {projector} (experiments/arena/README.md), added to both stages as `+arena={projector}`.",
             "# Chosen by `python -m experiments.arena.select` on the validation world (seed 60000), overall score,",
             f"# {best['tokens']} tokens, seed {best['seed']}; the budget's trials: {tried}.",
             "stage:", f"  projector_lr: {BASE_PROJECTOR_LR * best['lr_scale']:g}"]
    if projector in ATTENTION:
        heads = best["heads"] if best["heads"] is not None else default_heads
        lines += ["projector:", f"  num_attention_heads: {'null' if heads is None else heads}"]
    return "\n".join(lines) + "\n"


def trials_table(by_projector: dict[str, list[dict]]) -> list[str]:
    """Every trial's validation scores as Markdown; the chosen one (complete budgets only) in bold."""
    lines = ["| projector | lr x | heads | existence | attribute | grounding Acc@0.5 | caption CIDEr | overall | chosen |",
             "|---|---|---|---|---|---|---|---|---|"]
    for projector, rows in sorted(by_projector.items()):
        best = choose(rows, projector)
        for r in sorted(rows, key=lambda r: (r["lr_scale"], r["heads"] or 0)):
            cells = [f"{r['scores'][t]:.1f}" if t in r["scores"] else "-"
                     for t in ("existence", "attribute", "grounding", "caption")]
            score = "-" if r["score"] is None else f"{r['score']:.1f}"
            mark = "**yes**" if r is best else ""
            lines.append(f"| {projector} | {r['lr_scale']:g} | {r['heads'] or 'default'} | " + " | ".join(cells)
                         + f" | {score} | {mark} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--configs", type=Path, default=CONFIGS)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--table", action="store_true", help="print every trial's validation scores (Markdown) first")
    a = ap.parse_args(argv)
    by_projector = trials(a.root)
    if a.table:
        print("\n".join(trials_table(by_projector)) + "\n")
    for projector, rows in sorted(by_projector.items()):
        best = choose(rows, projector)
        if best is None:
            print(f"{projector}: budget incomplete ({sum(r['score'] is not None for r in rows)} trials scored); not written")
            continue
        text = render(projector, best, rows, 8 if projector == "dabstractor" else None)
        print(f"{projector}: lr x{best['lr_scale']:g}, heads {best['heads'] or 'default'} (overall {best['score']:.1f})")
        if not a.dry_run:
            (a.configs / f"{projector}.yaml").write_text(text)


if __name__ == "__main__":
    main()
