"""The figures `make bench` runs (FIGURES, in the order run.py runs them) and how each one is started.

A figure is a module `experiments.perf.<name>` with `run(smoke=...) -> dict`; the few that need more (figure 4's
attention variants, figure 6 when its module is absent, gpu's smoke fallback) are dispatched here.
"""

from __future__ import annotations

import importlib

import torch

FIGURES = (
    "overhead",
    "compression",
    "generation",
    "transformers",
    "train_transformers",
    "relevance",
    "data",
    "time_to_accuracy",
    "llava_scale",
    "gpu",
)


def run_data(smoke: bool) -> dict:
    """Figure 6 from the data helper's module, when it exists."""
    try:
        module = importlib.import_module("experiments.perf.bench_data")
    except ModuleNotFoundError as error:
        if error.name != "experiments.perf.bench_data":
            raise
        return {"figure": "data loader", "skipped": "experiments/perf/bench_data.py does not exist yet"}
    if not hasattr(module, "run"):
        return {"figure": "data loader", "skipped": "experiments/perf/bench_data.py has no run(smoke=...)"}
    return module.run(smoke=smoke)


def run_gpu(smoke: bool) -> dict:
    from experiments.perf import gpu

    if torch.cuda.is_available() and not smoke:
        return gpu.run(smoke=False)
    result = gpu.run(smoke=True)
    result["note"] = "smoke mode only: " + ("--smoke given" if smoke else "no CUDA device on this machine")
    return result


def run_figure(name: str, smoke: bool, generation_attn: tuple[str | None, ...]) -> dict:
    if name == "data":
        return run_data(smoke)
    if name == "gpu":
        return run_gpu(smoke)
    if name == "generation":
        from experiments.perf import generation

        out = {(attn or "as_built"): generation.run(smoke=smoke, attn=attn) for attn in generation_attn}
        # diagnostic: the same with the images encoded beforehand (what batching can speed up at all)
        out[f"{generation_attn[-1] or 'as_built'}_llm_only"] = generation.run(
            smoke=smoke, attn=generation_attn[-1], llm_only=True
        )
        return out
    if name == "transformers":
        from experiments.perf import hf_peer

        return hf_peer.run(smoke=smoke)
    if name == "train_transformers":
        from experiments.perf import hf_train

        return hf_train.run(smoke=smoke)
    module = importlib.import_module(f"experiments.perf.{name}")
    return module.run(smoke=smoke)
