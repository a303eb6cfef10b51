"""The text `python -m deco.plan` prints: one row per strategy, GiB per GPU, and whether it fits."""

from __future__ import annotations

from deco.planning.memory import GIB
from deco.planning.run import PlanReport

COLUMNS = ("parameters", "gradients", "optimizer", "communication", "activations", "total")
NAMES = {"single": "one process", "ddp": "DDP", "fsdp": "FSDP full shard (ZeRO-3)",
         "lora+ddp": "LoRA r128 (LLaVA's) + DDP"}


def _gib(n: int) -> str:
    return f"{n / GIB:8.1f}"


def format_report(report: PlanReport) -> str:
    s = report.setting
    usable = report.gpu_memory * (1 - report.reserve)
    lines = [
        f"memory plan per GPU: model={s['model']} projector={s['projector']} query_num={s['query_num']} "
        f"stage={s['stage']}{' (LoRA)' if s['lora'] else ''} precision={s['precision']}",
        f"  {s['devices']} GPU(s) x batch {s['batch_size']} x {s['seq_len']} positions (worst case: every sample "
        f"that long; plan.seq_len=N for typical lengths), gradient checkpointing "
        f"{'on' if s['checkpointing'] else 'off'}",
        f"  fits = total <= {usable / GIB:.1f} GiB ({report.gpu_memory / GIB:.1f} GiB GPU, plan.gpu_memory, less "
        f"{report.reserve:.0%} for CUDA context, fragmentation and NCCL buffers: plan.reserve)",
        "",
        f"  {'strategy (GiB per GPU; * = composed)':<34}" + "".join(f"{c[:11]:>12}" for c in COLUMNS) + "   fits",
    ]
    for name, plan in report.plans.items():
        label = ("* " if name == report.composed else "  ") + NAMES.get(name, name)
        values = [plan.parameters, plan.gradients, plan.optimizer, plan.communication, plan.activations, plan.total]
        lines.append(f"  {label:<34}" + "".join(f"{_gib(v):>12}" for v in values)
                     + f"   {'yes' if report.fits(name) else 'NO'}")
    lines.append("")
    lines.append("  activations with / without gradient checkpointing: " + "; ".join(
        f"{NAMES.get(n, n)} {p.activations_checkpointing / GIB:.1f} / {p.activations_no_checkpointing / GIB:.1f}"
        for n, p in report.plans.items()))
    lines += [f"  note: {note}" for note in report.notes]
    return "\n".join(lines)
