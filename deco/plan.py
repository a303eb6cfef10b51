"""Entry point: the per-GPU memory plan of a training run, before it starts (nothing is allocated).

    python -m deco.plan experiment=llava15_finetune trainer.devices=8
    python -m deco.plan experiment=llava15_finetune plan.gpu_memory=40GB plan.seq_len=1024

Takes the same overrides as `python -m deco.train` (composes configs/train.yaml), builds the model with
fake tensors from its config (LLaVA-1.5's parts plan offline), runs one fake training forward to measure
what is saved for backward, and prints parameters, gradients, optimizer state, communication buffers and
activations per GPU for DDP, FSDP full shard and (for a full finetune) LoRA, and whether each fits
`plan.gpu_memory`. Rules: deco/planning/memory.py; validation: experiments/perf/plan_vs_measured.py.
"""

from __future__ import annotations

import logging
import warnings

import hydra
from omegaconf import DictConfig, OmegaConf

from deco.lit.launch import register_resolvers

log = logging.getLogger(__name__)
register_resolvers()
warnings.filterwarnings("ignore", message=".*is validated against ConfigStore schema with the same name")


def run(cfg: DictConfig):
    from deco.planning.report import format_report
    from deco.planning.run import plan_config

    resolved = OmegaConf.to_container(cfg, resolve=True)
    try:
        report = plan_config(resolved)
    except (ValueError, KeyError) as error:
        raise SystemExit(f"deco.plan: {error}") from None
    print(format_report(report), flush=True)
    return report


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig):
    run(cfg)


if __name__ == "__main__":
    main()
