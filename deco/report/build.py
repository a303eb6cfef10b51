"""One sweep -> `summary.md`, `summary.csv` and the figures, optionally logged to a W&B run."""

from __future__ import annotations

from pathlib import Path

from deco.report.figures import plot_accuracy, plot_convergence, plot_relevance
from deco.report.runs import FINAL_LOSS_WINDOW, WARMUP_STEPS, find_runs
from deco.report.table import is_eval_metric, markdown_table, summarize, write_csv


def build_report(sweep_dir: str | Path, out_dir: str | Path | None = None, method: str = "rgae",
                 wandb_run=None, probe_image: str | Path | None = None, image_aspect: str | None = None) -> dict:
    """Read every run below `sweep_dir`, write the table and figures to `out_dir`; returns
    {"rows": [...], "files": {name: path}, "table": markdown}. `wandb_run`: an active wandb run to
    log them to; `probe_image`: the probe the relevance files explain, drawn under R_t2i (made square
    by `image_aspect`, default: as the runs were trained)."""
    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir else sweep_dir / "report"
    runs = find_runs(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(runs)
    table = "## Training\n\n" + markdown_table(rows, evaluation=False)
    if any(is_eval_metric(r["metric"]) for r in rows):
        table += "\n## Evaluation and relevance\n\n" + markdown_table(rows, evaluation=True)
    else:
        table += ("\nNo evaluation results in these runs: `evaluate=true` scores each run on the shapes benchmarks "
                  "first (or run `deco.evaluate ... hydra.run.dir=<run>/eval/<benchmark>`).\n")
    files = {"summary.md": out / "summary.md", "summary.csv": out / "summary.csv",
             "convergence.png": out / "convergence.png"}
    header = (f"# Sweep report: {sweep_dir}\n\n{len(runs)} runs. Cells: mean ± 95% CI half-width over seeds "
              f"(Student t; with one seed, a rate's CI is over the benchmark's questions: half the 95% Wilson interval); step time excludes the first {WARMUP_STEPS} steps; train_loss_final is the "
              f"mean of the last {FINAL_LOSS_WINDOW} logged steps.\n\n")
    files["summary.md"].write_text(header + table)
    write_csv(rows, files["summary.csv"])
    plot_convergence(runs, files["convergence.png"])
    if plot_accuracy(rows, out / "accuracy.png"):
        files["accuracy.png"] = out / "accuracy.png"
    if plot_relevance(runs, out / "relevance.png", method=method, probe_image=probe_image,
                      image_aspect=image_aspect):
        files["relevance.png"] = out / "relevance.png"
    if wandb_run is not None:
        import wandb

        wandb_run.log({name.removesuffix(".png"): wandb.Image(str(p)) for name, p in files.items() if p.suffix == ".png"})
        columns = ["stage", "projector", "tokens", "metric", "mean", "ci95", "n"]
        wandb_run.log({"summary": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})
    return {"rows": rows, "files": files, "table": table}
