"""LLaVA-1.5-7B-sized finetune step per projector on one GPU: samples/s, tokens/s, peak memory, MFU.

    python -m experiments.perf.gpu                 # on a CUDA machine: bf16, LLaVA-1.5-7B dimensions
    python -m experiments.perf.gpu --smoke         # anywhere: tiny dimensions on CPU (what the test runs)

The model has LLaVA-1.5-7B's dimensions with random weights (nothing is downloaded): a CLIP ViT-L/14-336
vision tower (24 layers, width 1024, 24x24 patches, features of layer -2) and a Llama-2-7B / Vicuna-7B
language model (32 layers, width 4096, MLP 11008, vocabulary 32000), all in bf16. The step is the finetune
stage (vision frozen; projector + whole LLM train; AdamW) with each projector at the paper's settings:
linear (576 tokens), avgpool (144) and qformer (144, 2 layers). The batch is the largest of `--batches`
that fits. MFU = model FLOPs per step (FlopCounterMode on the meta device, forward + backward) / step
time / the GPU's dense bf16 peak. Training attention uses SDPA (`--attn eager` for the maps-capable path).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from experiments.perf.common import sync
from experiments.perf.counting import PeakMemory, parts_train_flops

# CLIP ViT-L/14-336 (openai/clip-vit-large-patch14-336) and Llama-2-7B (lmsys/vicuna-7b-v1.5) dimensions.
LLAVA15_7B = {
    "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
               "image_size": 336, "patch_size": 14, "hidden_act": "quick_gelu"},
    "llm": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
    "vocab_size": 32000,
}
SMOKE = {
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 56, "patch_size": 14},
    "llm": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 2, "max_position_embeddings": 512},
    "vocab_size": 128,
}

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets (without sparsity).
BF16_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "A100": 312e12,
             "L40S": 362e12, "A10G": 70e12}


def bf16_peak(device_name: str) -> float | None:
    """The dense bf16 peak for a CUDA device name (longest matching key), None if unknown."""
    for key in sorted(BF16_PEAK, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return BF16_PEAK[key]
    return None


def projector_settings(num_patches: int) -> dict[str, dict[str, Any]]:
    """The paper's settings at 576 patches (linear 576, avgpool 144, qformer 144); a quarter for smaller grids."""
    q = 144 if num_patches == 576 else max(1, num_patches // 4)
    return {
        f"linear_{num_patches}": {"name": "linear"},
        f"avgpool_{q}": {"name": "avgpool", "query_num": q, "mlp_depth": 2, "pooling": "avg"},
        f"qformer_{q}": {"name": "qformer", "query_num": q, "layer_num": 2},
    }


def build_model(dims: dict, projector_cfg: dict, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.bfloat16, attn: str = "sdpa"):
    """MLLM with `dims`, random init, the finetune stage's freezing (vision frozen, projector + LLM train)."""
    from deco.models.llm import build_llm
    from deco.models.mllm import MLLM
    from deco.models.projectors import build_projector
    from deco.models.vision import VisionTower

    cfg = dict(projector_cfg)
    default_dtype = torch.get_default_dtype()
    # built directly in `dtype` on `device`: a 7B model in fp32 first would need twice the memory
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            vision = VisionTower(config=dims["vision"], attn_implementation=attn)
            llm = build_llm(config=dims["llm"], vocab_size=dims["vocab_size"], attn_implementation=attn)
            projector = build_projector(cfg.pop("name"), in_dim=vision.hidden_size,
                                        out_dim=llm.get_input_embeddings().embedding_dim,
                                        num_patches=vision.num_patches, **cfg)
    finally:
        torch.set_default_dtype(default_dtype)
    model = MLLM(vision, projector, llm, image_token_id=dims["vocab_size"] - 1).to(dtype)
    model.vision.requires_grad_(False)
    model.llm.requires_grad_(True)
    model.projector.requires_grad_(True)
    return model


def make_batch(dims: dict, batch_size: int, text_len: int, device, dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tokens with one `<image>` at position 1; loss on the second half of the text (the "answer")."""
    gen = torch.Generator().manual_seed(seed)
    vocab = dims["vocab_size"]
    ids = torch.randint(5, vocab - 1, (batch_size, text_len), generator=gen)
    ids[:, 0] = 1  # BOS
    ids[:, 1] = vocab - 1  # <image>
    labels = ids.clone()
    labels[:, : text_len // 2] = -100
    size = dims["vision"]["image_size"]
    pixels = torch.randn(batch_size, 3, size, size, generator=gen)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": labels.to(device), "pixel_values": pixels.to(device=device, dtype=dtype)}


def flops_per_step(dims: dict, projector_cfg: dict, batch_size: int, text_len: int) -> int:
    """Forward + backward FLOPs of one step, counted on the meta device (no memory, no GPU)."""
    model = build_model(dims, projector_cfg, device="meta", dtype=torch.bfloat16, attn="eager")
    # text_len includes the <image> placeholder, which the visual tokens replace
    return parts_train_flops(model, batch_size, text_len - 1, device="meta")


def llava_flop_ratios(batch_size: int = 1, text_len: int = 256, dims: dict | None = None) -> dict:
    """FLOPs per finetune step at LLaVA-1.5-7B dimensions and their ratio to linear-576 (meta device)."""
    dims = dims or LLAVA15_7B
    grid = dims["vision"]["image_size"] // dims["vision"]["patch_size"]
    settings = projector_settings(grid * grid)
    flops = {label: flops_per_step(dims, cfg, batch_size, text_len) for label, cfg in settings.items()}
    base = next(iter(flops))
    return {"batch_size": batch_size, "text_len": text_len, "baseline": base,
            "projectors": {label: {"flops": f, "flop_ratio": f / flops[base]} for label, f in flops.items()}}


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def bench_projector(dims: dict, label: str, projector_cfg: dict, batches: list[int], text_len: int, steps: int,
                    device, dtype, attn: str, peak_flops: float | None) -> dict:
    """Largest batch of `batches` that fits, then `steps` timed steps after two warm-up steps."""
    model = build_model(dims, projector_cfg, device=device, dtype=dtype, attn=attn)
    params = [p for p in model.parameters() if p.requires_grad]
    fused = torch.device(device).type == "cuda"
    optimizer = torch.optim.AdamW(params, lr=2e-5, fused=fused) if fused else torch.optim.AdamW(params, lr=2e-5)
    q = model.num_visual_tokens

    def step(batch):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    chosen, tried = None, {}
    for b in sorted(batches):
        batch = make_batch(dims, b, text_len, device, dtype)
        try:
            step(batch)
            sync()
            tried[b] = "fits"
            chosen = b
        except Exception as error:  # noqa: BLE001 - only out-of-memory ends the search; anything else re-raises
            if not _is_oom(error):
                raise
            tried[b] = "out of memory"
            optimizer.zero_grad(set_to_none=True)
            del error
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            break
    if chosen is None:
        return {"error": f"no batch size in {sorted(batches)} fits", "tried": tried}

    batch = make_batch(dims, chosen, text_len, device, dtype)
    is_cuda = torch.device(device).type == "cuda"
    if is_cuda:
        torch.cuda.reset_peak_memory_stats()
        step(batch)
        sync()
        peak = int(torch.cuda.max_memory_allocated())
    else:
        tracker = PeakMemory()
        tracker.watch([*model.parameters(), *model.buffers(), *batch.values()])
        tracker.watch(t for s in optimizer.state.values() for t in s.values())
        with tracker:
            step(batch)
        peak = tracker.peak
    step(batch)
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(batch)
        sync()
        times.append(time.perf_counter() - start)
    step_s = sorted(times)[len(times) // 2]
    flops = flops_per_step(dims, projector_cfg, chosen, text_len)
    seq = text_len - 1 + q
    return {
        "batch_size": chosen,
        "tried": tried,
        "visual_tokens": q,
        "seq_len": seq,
        "step_s": step_s,
        "samples_per_s": chosen / step_s,
        "tokens_per_s": chosen * seq / step_s,
        "peak_memory_bytes": peak,
        "trainable_params": sum(p.numel() for p in params),
        "flops_per_step": flops,
        "achieved_tflops": flops / step_s / 1e12,
        "mfu": (flops / step_s / peak_flops) if peak_flops else None,
    }


MFU_GOAL = 0.45


def _grid(dims: dict) -> int:
    return dims["vision"]["image_size"] // dims["vision"]["patch_size"]


def run(smoke: bool = False, batches: list[int] | None = None, text_len: int | None = None, steps: int | None = None,
        attn: str = "sdpa", peak_tflops: float | None = None, device: str | None = None,
        parts: tuple[str, ...] = ("steps", "lightning", "generation")) -> dict:
    """The bare finetune step per projector ("steps"), then "lightning" and "generation" (see the module doc)."""
    if smoke:
        dims, device = SMOKE, device or "cpu"
        batches, text_len, steps = batches or [1, 2], text_len or 16, steps or 2
    else:
        dims = LLAVA15_7B
        device = device or ("cuda" if torch.cuda.is_available() else None)
        if device is None:
            raise SystemExit("gpu.py needs a CUDA device for LLaVA-1.5-7B dimensions; use --smoke on a CPU")
        batches, text_len, steps = batches or [1, 2, 4, 8, 16, 32], text_len or 256, steps or 5
    name = torch.cuda.get_device_name(0) if torch.device(device).type == "cuda" else "cpu"
    peak = peak_tflops * 1e12 if peak_tflops else (bf16_peak(name) if name != "cpu" else None)
    results = {}
    if "steps" in parts:
        for label, cfg in projector_settings(_grid(dims) ** 2).items():
            results[label] = bench_projector(dims, label, cfg, batches, text_len, steps, device, torch.bfloat16, attn,
                                             peak)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    out = {"figure": "gpu finetune step", "smoke": smoke, "device": name, "dtype": "bfloat16", "attn": attn,
           "bf16_peak_flops": peak, "mfu_goal": MFU_GOAL, "text_len": text_len, "projectors": results}
    from experiments.perf.gpu_parts import run_generation, run_lightning

    if "lightning" in parts:
        fitted = [r["batch_size"] for k, r in results.items() if k.startswith("avgpool") and "batch_size" in r]
        batch = 2 if smoke else min(fitted[0] if fitted else 4, 8)
        out["lightning"] = run_lightning(dims, device, smoke, batch, text_len, steps=4 if smoke else 6)
    if "generation" in parts:
        out["generation"] = run_generation(dims, device, smoke)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny dimensions on CPU (runs anywhere)")
    parser.add_argument("--batches", type=int, nargs="+", help="batch sizes to try, largest that fits wins")
    parser.add_argument("--text-len", type=int, help="text tokens per sample, <image> placeholder included")
    parser.add_argument("--steps", type=int, help="timed steps per projector (median)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--peak-tflops", type=float, help="bf16 peak of the device when its name is not known")
    parser.add_argument("--parts", nargs="+", default=["steps", "lightning", "generation"],
                        choices=["steps", "lightning", "generation"])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("gpu_results.json"))
    args = parser.parse_args(argv)
    result = run(args.smoke, args.batches, args.text_len, args.steps, args.attn, args.peak_tflops,
                 parts=tuple(args.parts))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for label, row in result["projectors"].items():
        if "error" in row:
            print(f"{label:>12}: {row['error']}")
            continue
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "n/a"
        print(f"{label:>12}: batch {row['batch_size']:>3}  {row['samples_per_s']:8.2f} samples/s  "
              f"{row['tokens_per_s']:10.0f} tokens/s  peak {row['peak_memory_bytes'] / 2**20:9.1f} MiB  MFU {mfu}")
    for trainer, row in result.get("lightning", {}).items():
        if isinstance(row, dict) and "step_s" in row:
            print(f"{'lightning ' + trainer:>16}: {row['samples_per_s']:8.2f} samples/s  {row['step_s']:.3f} s/step  "
                  f"({row['strategy']}, {row['precision']})")
        elif isinstance(row, dict):
            print(f"{'lightning ' + trainer:>16}: {row.get('error', 'composed only (' + str(row.get('strategy')) + ')')}")
    for label, row in result.get("generation", {}).items():
        print(f"{'generate ' + label:>16}: {row['now_new_tokens_per_s']:9.1f} new tokens/s (before: "
              f"{row['before_new_tokens_per_s']:.1f}; same tokens: {row['same_tokens']})")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
