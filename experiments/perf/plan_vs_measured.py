"""The memory planner (deco.planning) against measured peaks, on CPU: `python experiments/perf/plan_vs_measured.py`.

For each small config below (tiny widths, so a run takes seconds; big enough that the model's memory
dwarfs the allocator's noise), a fresh process builds the MLLM, applies the stage, and takes three AdamW
steps (forward, backward, step) on a batch whose every sample has `seq_len` positions: the very
setting the planner's `single` strategy describes. Its peak resident memory above the level before the
model was built (VmHWM after resetting it through /proc/self/clear_refs, Linux) is compared with the
planner's total. The child runs with MALLOC_MMAP_THRESHOLD_=65536, so glibc serves tensors from mmap and
returns freed ones at once: the peak is that of live memory, as a GPU allocator's `max_memory_allocated`
is. (With glibc's defaults, freed heap memory stays resident and RSS creeps up step after step: +60% after
three steps here; that is allocator retention, which on a GPU `plan.reserve` stands for.)
Recorded results: experiments/perf/README.md ("Memory planner").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = {
    "name": "bench",
    "gradient_checkpointing": False,
    "vision": {"name_or_path": None, "select_layer": -2, "select_feature": "patch", "attn_implementation": "sdpa",
               "config": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 3,
                          "num_attention_heads": 4, "image_size": 336, "patch_size": 14}},
    "llm": {"name_or_path": None, "attn_implementation": "sdpa",
            "config": {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 6,
                       "num_attention_heads": 8, "num_key_value_heads": 8, "max_position_embeddings": 2048}},
    "tokenizer": {"name_or_path": "zoo:tiny/tokenizer", "model_max_length": 2048},
}
FINETUNE = {"name": "finetune", "train_llm": True, "train_vision": False, "lora": {"enabled": False}, "lr": 1e-4}
CASES = {
    "finetune_b4_s1024": dict(stage=FINETUNE, batch=4, seq_len=1024, ckpt=False, projector={"name": "mlp2x_gelu"},
                              q=576),
    "finetune_b8_s1024_ckpt": dict(stage=FINETUNE, batch=8, seq_len=1024, ckpt=True,
                                   projector={"name": "avgpool", "query_num": 144, "mlp_depth": 2}, q=144),
    "finetune_b4_s1024_avgpool": dict(stage=FINETUNE, batch=4, seq_len=1024, ckpt=False,
                                      projector={"name": "avgpool", "query_num": 144, "mlp_depth": 2}, q=144),
    "pretrain_b16_s640": dict(stage={**FINETUNE, "name": "pretrain", "train_llm": False}, batch=16, seq_len=640,
                              ckpt=False, projector={"name": "mlp2x_gelu"}, q=576),
    "lora_b8_s768": dict(stage={**FINETUNE, "name": "finetune_lora", "train_llm": False,
                                "lora": {"enabled": True, "r": 32, "alpha": 64, "dropout": 0.05}},
                         batch=8, seq_len=768, ckpt=False,
                         projector={"name": "avgpool", "query_num": 144, "mlp_depth": 2}, q=144),
    "qformer_b8_s512": dict(stage=FINETUNE, batch=8, seq_len=512, ckpt=False,
                            projector={"name": "qformer", "query_num": 144, "layer_num": 2}, q=144),
    "finetune_b8_s1024_ckpt_tower": dict(stage={**FINETUNE, "train_vision": True}, batch=8, seq_len=1024, ckpt=True,
                                         projector={"name": "avgpool", "query_num": 144, "mlp_depth": 2}, q=144),
}


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(name: str) -> int:
    """Peak bytes above the pre-model level of three training steps of case `name` (run in a fresh process)."""
    import gc

    import torch

    from deco.data.tokenizer import load_tokenizer
    from deco.models.build import build_mllm
    from deco.models.recompute import enable_gradient_checkpointing
    from deco.models.stages import apply_stage, parameter_groups

    case = CASES[name]
    torch.manual_seed(0)
    tok = load_tokenizer(**MODEL["tokenizer"])
    ids = torch.randint(10, len(tok) - 2, (case["batch"], case["seq_len"] - case["q"] + 1))
    ids[:, 1] = tok.convert_tokens_to_ids("<image>")
    pixels = torch.randn(case["batch"], 3, 336, 336)
    gc.collect()
    baseline = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    model = build_mllm({k: v for k, v in MODEL.items() if k not in ("name", "gradient_checkpointing")},
                       dict(case["projector"]), tok)
    apply_stage(model, case["stage"])
    if case["ckpt"]:
        enable_gradient_checkpointing(model)
    model.train()
    optimizer = torch.optim.AdamW(parameter_groups(model, case["stage"]))
    labels = ids.clone()
    for _ in range(3):
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return _status("VmHWM") - baseline


def planned(name: str) -> int:
    from deco.planning.run import plan_config

    case = CASES[name]
    cfg = {"model": {**MODEL, "gradient_checkpointing": case["ckpt"]}, "projector": case["projector"],
           "query_num": case["q"], "stage": case["stage"], "trainer": {"precision": "32-true", "devices": 1},
           "data": {"batch_size": case["batch"], "max_length": 2048}, "plan": {"seq_len": case["seq_len"]}}
    return plan_config(cfg).plans["single"].total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help="measure one case in this process (internal)")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    if args.one:
        print(json.dumps({"peak": measure(args.one)}))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "65536"}
    print(f"{'case':<30}{'planned MiB':>12}{'measured MiB':>14}{'planned/measured':>18}")
    worst = 0.0
    for name in args.cases:
        out = subprocess.run([sys.executable, __file__, "--one", name], env=env, capture_output=True, text=True,
                             check=True).stdout
        peak = json.loads(out.strip().splitlines()[-1])["peak"]
        plan = planned(name)
        worst = max(worst, abs(plan / peak - 1))
        print(f"{name:<30}{plan / 2**20:>12.0f}{peak / 2**20:>14.0f}{plan / peak:>18.3f}", flush=True)
    print(f"largest deviation: {worst:.1%}")


if __name__ == "__main__":
    main()
