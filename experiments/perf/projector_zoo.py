"""Trainable parameters and train-step time of every zoo projector at 144 tokens, with avgpool as the ratio reference.

One finetune step (vision frozen; projector + LLM train; AdamW) on the tiny model, batch 4, every projector
built from its YAML in configs/projector/ at query_num=144 and timed interleaved with avgpool-144 in the
same process (the machine is shared: compare the ratios, not the seconds).

    python -m experiments.perf.projector_zoo [--repeats 5] [--batch 4] [--out zoo.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from experiments.perf.common import CONFIGS, Bench, interleaved, make_optimizer, paired_ratio, summary, train_step_fn

ZOO = ("avgpool", "pixelshuffle", "cabstractor", "dabstractor", "ldp", "ldpv2", "tokenpacker", "resampler")


def projector_config(name: str, query_num: int) -> dict:
    """configs/projector/<name>.yaml resolved at `query_num` (avgpool's pooling operator: avg)."""
    root = OmegaConf.create({"query_num": query_num, "pooling": {"name": "avg"},
                             "p": OmegaConf.load(CONFIGS / "projector" / f"{name}.yaml")})
    cfg = OmegaConf.to_container(root, resolve=True)["p"]
    cfg.pop("defaults", None)
    return cfg


def main(repeats: int, batch_size: int, query_num: int) -> dict:
    torch.set_num_threads(1)
    bench = Bench("tiny")
    batch = bench.train_batch(batch_size)
    models = {name: bench.model(projector_config(name, query_num)) for name in ZOO}
    steps = {}
    for name, model in models.items():
        optimizer, _ = make_optimizer(model, bench.stage)
        steps[name] = train_step_fn(model, batch, optimizer)
    times = interleaved(steps, repeats=repeats, warmup=1)
    rows = {}
    for name, model in models.items():
        rows[name] = {
            "visual_tokens": model.num_visual_tokens,
            "projector_params": sum(p.numel() for p in model.projector.parameters() if p.requires_grad),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "step": summary(times[name]),
            "time_ratio_vs_avgpool": paired_ratio(times[name], times["avgpool"]),
        }
    return {"batch_size": batch_size, "query_num": query_num, "repeats": repeats, "stage": "finetune",
            "projectors": rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--query-num", type=int, default=144)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = main(args.repeats, args.batch, args.query_num)
    print(f"{'projector':<13} {'tokens':>6} {'proj params':>11} {'trainable':>10} {'s/step':>7} {'x avgpool':>9}")
    for name, row in result["projectors"].items():
        print(f"{name:<13} {row['visual_tokens']:>6} {row['projector_params']:>11,} {row['trainable_params']:>10,} "
              f"{row['step']['median_s']:>7.3f} {row['time_ratio_vs_avgpool']:>9.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
