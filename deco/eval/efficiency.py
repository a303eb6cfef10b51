"""What a run costs, measured on one prompt: kept tokens, prefill FLOPs (deco.models.reduction.efficiency),
time to first token, decode ms/token, KV-cache bytes and peak memory. Written into each evaluation's
metrics.json (`efficiency`), so a sweep over reducers and budgets reads accuracy and cost from the same run.

Timing: batch of one (no padding), the median of `repeats` calls after one warm-up. Time to first token is a
`generate(max_new_tokens=1)` call: vision tower, reducer, projector, prefill and the first token. Decode
ms/token = (t(N) - t(1)) / (N - 1) with N forced steps (no EOS stop). Peak memory: CUDA's max allocated bytes
during the calls; on CPU the process's peak resident set size (ru_maxrss, since the process started: an upper
bound that includes everything loaded before).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

import torch

from deco.models.reduction.efficiency import FORMULA, kv_cache_bytes, layer_tokens, prefill_flops


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@torch.no_grad()
def measure_efficiency(model, input_ids: torch.Tensor, pixel_values: torch.Tensor | None, decode_tokens: int = 8,
                       repeats: int = 3) -> dict:
    """input_ids: t (one prompt with its <image> placeholder); pixel_values: 3 H W or None."""
    if decode_tokens < 2:
        raise ValueError(f"decode_tokens must be >= 2 (decode time is t(N) - t(1)), got {decode_tokens}")
    param = next(model.parameters())
    device = param.device
    ids = input_ids.to(device)[None]
    pixels = None if pixel_values is None else pixel_values.to(device, param.dtype)[None]
    was_training = model.training
    model.eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        def run(n):
            return lambda: model.generate(ids, None, pixels, max_new_tokens=n, eos_token_id=None)

        run(1)()  # warm-up
        first = statistics.median(_timed(run(1), device) for _ in range(repeats))
        full = statistics.median(_timed(run(decode_tokens), device) for _ in range(repeats))
    finally:
        model.train(was_training)
    reducer = model.reducer
    q = model.projector.num_tokens()
    has_image = bool((input_ids == model.image_token_id).any()) and pixels is not None
    kept = q if reducer is None else reducer.keep
    text = int(input_ids.numel()) - (1 if has_image else 0)
    entering = text + (kept if reducer is not None and reducer.stage == "vision" else q) * has_image
    config = model.llm.config
    per_layer = layer_tokens(config, entering, reducer, q if has_image else None)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), "cuda max allocated"
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak, kind = rss * (1 if sys.platform == "darwin" else 1024), "process peak RSS"
    return {
        "visual_tokens": q if has_image else 0,
        "kept_visual_tokens": kept if has_image else 0,
        "prompt_tokens_per_layer": per_layer,
        "prefill_flops": prefill_flops(config, per_layer),
        "prefill_flops_formula": FORMULA,
        "ttft_ms": round(first * 1000, 3),
        "decode_ms_per_token": round((full - first) * 1000 / (decode_tokens - 1), 3),
        "kv_cache_bytes": kv_cache_bytes(config, per_layer, param.element_size()),
        "peak_memory_bytes": int(peak),
        "peak_memory_kind": kind,
        "device": str(device),
        "repeats": repeats,
    }
