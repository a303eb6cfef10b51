"""Gather a finished sweep into one comparison of projectors: a table and three figures.

    python -m deco.report sweep_dir=multirun/train/2026-11-25_21-00-00
    python -m deco.report sweep_dir=experiments/projector_study/runs out_dir=report wandb=true

Runs are grouped by (stage, projector, visual tokens); seeds are the replicates. Every metric is
reported as mean ± half-width of the 95% confidence interval of the mean over seeds (Student t,
n-1 degrees of freedom; no interval with one seed). Outputs in `out_dir` (default
`<sweep_dir>/report`): `summary.md`, `summary.csv` (one row per group and metric, with the per-seed
values), `convergence.png`, `accuracy.png` and, when relevance files exist, `relevance.png`.

Modules: `runs` (reading run dirs), `stats` (mean and CI), `table` (markdown / CSV), `figures`,
`build` (all of it for one sweep); `__main__` is the Hydra entry point (`configs/report.yaml`).
Everything but `__main__` imports neither Lightning nor Hydra.
"""

from deco.report.build import build_report
from deco.report.figures import map_extent, plot_accuracy, plot_convergence, plot_relevance
from deco.report.runs import Run, find_runs, load_relevance, read_run, visual_tokens
from deco.report.stats import mean_ci, t_quantile_975
from deco.report.table import markdown_table, read_csv, summarize, write_csv

__all__ = [
    "Run", "build_report", "find_runs", "load_relevance", "map_extent", "markdown_table", "mean_ci",
    "plot_accuracy", "plot_convergence", "plot_relevance", "read_csv", "read_run", "summarize",
    "t_quantile_975", "visual_tokens", "write_csv",
]
