"""Entry point: `python -m deco.report sweep_dir=<sweep or study runs dir>` (Hydra config `configs/report.yaml`).

    python -m deco.report sweep_dir=multirun/train/<date>_<time> evaluate=true
    python -m deco.report sweep_dir=experiments/projector_study/runs out_dir=report probe_image=probe.png wandb=true

Composes the config, evaluates the runs that lack results when `evaluate=true`, opens a W&B run when asked, hands over to `deco.report.build_report` and prints
the table; the last line names the folder the report went to.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    from deco.report.build import build_report

    if OmegaConf.is_missing(cfg, "sweep_dir") or not cfg.sweep_dir:
        raise SystemExit("Config error: sweep_dir is required: python -m deco.report sweep_dir=<multirun or study runs dir>")
    if cfg.get("evaluate"):
        from deco.report.evaluate_missing import evaluate_missing

        limit = (cfg.get("benchmark") or {}).get("limit")  # debug=fast: a few questions each
        try:
            evaluate_missing(cfg.sweep_dir, list(cfg.benchmarks), [f"benchmark.limit={limit}"] if limit else [])
        except RuntimeError as error:
            raise SystemExit(f"deco.report: {error}") from None
    wandb_run = None
    if cfg.wandb:
        import wandb

        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        wandb_run = wandb.init(project=cfg.wandb_project, job_type="report", mode=mode,
                               name=f"report-{Path(cfg.sweep_dir).name}")
    try:
        result = build_report(cfg.sweep_dir, cfg.out_dir, cfg.method, wandb_run, cfg.probe_image, cfg.image_aspect)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"deco.report: {error}") from None
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    print(result["table"])
    for path in result["files"].values():
        log.info("wrote %s", path)
    return result


@hydra.main(version_base="1.3", config_path="../../configs", config_name="report")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
