"""Figures 2 and 3 — does compression pay? Train-step time and FLOPs per projector; parameters and peak memory.

Figure 2: one finetune step (vision frozen; projector + LLM train; AdamW) with avgpool-144 and qformer-144
against linear-576, on the tiny model and on a wider one, timed interleaved (linear, avgpool, qformer, then
reversed, ...). The time ratio (projector / linear, median over rounds of the paired ratios) is compared with
the FLOP ratio counted by FlopCounterMode on the same step; goal: within 10 %. At LLaVA-1.5-7B dimensions
only the FLOP ratio is computed (on the meta device; timing needs a GPU, see gpu.py).
Figure 3: trainable parameters (finetune stage; projector alone too) and the peak memory of one step.
"""

from __future__ import annotations

import statistics

from experiments.perf.common import (
    Bench,
    interleaved,
    make_optimizer,
    paired_ratio,
    projector_configs,
    summary,
    train_step_fn,
)
from experiments.perf.counting import peak_train_memory, train_step_flops
from experiments.perf.profile_ops import NAMES, profile_step

TOLERANCE = 0.10


def profiled_rounds(steps: dict, rounds: int) -> dict[str, list[dict[str, float]]]:
    """`rounds` profiled steps of each model, interleaved (order flipped every round): seconds per category."""
    names = list(steps)
    out: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(profile_step(steps[name], steps=1))
    return out


def step_ratios(size: str, batch_size: int, repeats: int, warmup: int = 1, attn: str | None = None,
                profile_rounds: int = 0) -> dict:
    """Time and FLOP ratios vs the linear projector for one model size (`attn`: switch the LLM's attention).

    profile_rounds > 0 adds the profile split (`profile_ops`) of each projector's step and the like-with-like
    comparison: the time of the ops FlopCounterMode counts, projector / linear, against the FLOP ratio.
    """
    bench = Bench(size)
    batch = bench.train_batch(batch_size)
    configs = projector_configs(size)
    models = {label: bench.model(cfg) for label, cfg in configs.items()}
    if attn is not None:
        for model in models.values():
            model.llm.set_attn_implementation(attn)
    flops = {label: train_step_flops(model, batch) for label, model in models.items()}
    steps = {}
    for label, model in models.items():
        optimizer, _ = make_optimizer(model, bench.stage)
        steps[label] = train_step_fn(model, batch, optimizer)
    times = interleaved(steps, repeats=repeats, warmup=warmup)
    profiles = profiled_rounds(steps, profile_rounds) if profile_rounds else {}
    base = next(label for label in configs if label.startswith("linear"))
    rows = {}
    for label in configs:
        row = {"step": summary(times[label]), "flops": flops[label],
               "visual_tokens": models[label].num_visual_tokens}
        if label != base:
            time_ratio = paired_ratio(times[label], times[base])
            flop_ratio = flops[label] / flops[base]
            rel = time_ratio / flop_ratio - 1
            row.update(time_ratio=time_ratio, flop_ratio=flop_ratio, rel_diff=rel,
                       meets_goal=abs(rel) <= TOLERANCE)
        if profiles:
            # median of each category over the rounds; the total is their sum, so the parts add up
            row["profile_ms"] = {k: 1e3 * statistics.median(p[k] for p in profiles[label]) for k in NAMES}
            row["profile_ms"]["total"] = sum(row["profile_ms"].values())
            row["uncounted_share"] = 1 - row["profile_ms"]["counted"] / row["profile_ms"]["total"]
            if label != base:
                counted = paired_ratio([p["counted"] for p in profiles[label]], [p["counted"] for p in profiles[base]])
                rel = counted / row["flop_ratio"] - 1
                row.update(counted_time_ratio=counted, counted_rel_diff=rel, counted_meets_goal=abs(rel) <= TOLERANCE,
                           counted_ratio_rounds=[p["counted"] / q["counted"]
                                                 for p, q in zip(profiles[label], profiles[base])])
        rows[label] = row
    built = next(iter(models.values())).llm.config._attn_implementation
    return {"size": size, "llm_attention": attn or f"{built} (as built)", "batch_size": batch_size,
            "seq_len_text": int(batch["input_ids"].shape[1]),
            "baseline": base, "repeats": repeats, "projectors": rows}


def params_and_memory(size: str, batch_size: int) -> dict:
    """Figure 3: trainable parameters (finetune) and the peak memory of one training step, per projector."""
    bench = Bench(size)
    batch = bench.train_batch(batch_size)
    rows = {}
    for label, cfg in projector_configs(size).items():
        model = bench.model(cfg)
        optimizer, _ = make_optimizer(model, bench.stage)
        memory = peak_train_memory(model, batch, optimizer)
        rows[label] = {
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "projector_params": sum(p.numel() for p in model.projector.parameters()),
            "total_params": sum(p.numel() for p in model.parameters()),
            **memory,
        }
    return {"size": size, "batch_size": batch_size, "stage": bench.stage["name"], "projectors": rows}


def run(smoke: bool = False) -> dict:
    from experiments.perf.gpu import llava_flop_ratios

    if smoke:
        sizes = {"smoke": (2, 2, 1)}
    else:
        sizes = {"tiny": (4, 9, 5), "wide": (2, 5, 3)}  # size: (batch, repeats, profiled rounds)
    figure2 = {size: step_ratios(size, b, r, profile_rounds=p) for size, (b, r, p) in sizes.items()}
    if not smoke:
        figure2["llava15_7b_flops_only"] = llava_flop_ratios(batch_size=1, text_len=256)
    figure3 = params_and_memory("smoke" if smoke else "tiny", 2 if smoke else 4)
    return {"figure2": {"figure": "compression pays", "tolerance": TOLERANCE, **figure2},
            "figure3": {"figure": "parameters and peak memory", **figure3}}
