"""Training callback: score a benchmark every N optimizer steps and log it (CSV, W&B, any Lightning logger).

    python -m deco.train callbacks=[default,periodic_eval] callbacks.benchmark_eval.benchmark=pope \
        callbacks.benchmark_eval.every_n_steps=500 callbacks.benchmark_eval.limit=500

The benchmark is a config of configs/benchmark/ (by name, `${eval_data_dir}` set from `eval_data_dir`) or
a mapping with `_target_`. Scoring is `deco.eval.runner.evaluate_benchmark`, the loop behind
`deco.evaluate`, on the model being trained (eval mode, no gradients, then back to training): the same
prompts, template and metric, so the logged value is what `deco.evaluate` would give for a checkpoint of
that step. Under DDP every rank answers a strided share and the metric is reduced across ranks; under
FSDP (rank 0 holds a shard only) it is skipped with a warning. Predictions go to
`<out_dir>/<benchmark>/step_<N>.jsonl`; metrics are logged as `benchmark/<name>/<metric>`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
import yaml

log = logging.getLogger(__name__)
BENCHMARK_DIR = Path(__file__).resolve().parents[2] / "configs" / "benchmark"


def benchmark_config(benchmark: str | Mapping, eval_data_dir: str | None = None, limit: int | None = None) -> dict:
    """The benchmark's config as a plain dict: configs/benchmark/<name>.yaml resolved, or the mapping given."""
    from omegaconf import OmegaConf

    if isinstance(benchmark, str):
        path = BENCHMARK_DIR / f"{benchmark}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in BENCHMARK_DIR.glob("*.yaml"))
            raise ValueError(f"callbacks.benchmark_eval.benchmark={benchmark} is unknown; "
                             f"choose one of: {', '.join(known)}")
        benchmark = yaml.safe_load(path.read_text())
    root = OmegaConf.create({"eval_data_dir": str(eval_data_dir or "data/eval"), "benchmark": dict(benchmark)})
    config = OmegaConf.to_container(root, resolve=True)["benchmark"]
    if limit is not None:
        config["limit"] = int(limit)
    return config


class BenchmarkEval(L.Callback):
    """Evaluate `benchmark` every `every_n_steps` optimizer steps (and at the end of training when `at_end`)."""

    def __init__(self, benchmark: str | Mapping, every_n_steps: int = 500, out_dir: str | None = None,
                 eval_data_dir: str | None = None, limit: int | None = None, batch_size: int = 16,
                 max_new_tokens: int | None = None, at_end: bool = True):
        if every_n_steps < 1:
            raise ValueError(f"callbacks.benchmark_eval.every_n_steps must be >= 1, got {every_n_steps}")
        self.config = benchmark_config(benchmark, eval_data_dir, limit)
        self.every_n_steps, self.at_end = every_n_steps, at_end
        self.out_dir = Path(out_dir) if out_dir else None
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.benchmark = None
        self.history: list[tuple[int, dict]] = []  # (global step, metrics) of every evaluation
        self._last_step = -1

    def _benchmark(self):
        if self.benchmark is None:
            from hydra.utils import instantiate

            self.benchmark = instantiate(self.config)
            self.benchmark.samples()  # read the files once, now
        return self.benchmark

    def evaluate(self, trainer, pl_module) -> dict:
        """Score the benchmark on the model as it is now; log and return the metrics."""
        from deco.eval.runner import evaluate_benchmark

        kwargs = getattr(getattr(trainer, "datamodule", None), "dataset_kwargs", None) or {}
        template = kwargs.get("template") or pl_module.stage.get("template", "vicuna_v1")
        benchmark = self._benchmark()
        step = trainer.global_step
        path = None
        if self.out_dir is not None and trainer.is_global_zero:
            path = self.out_dir / benchmark.name / f"step_{step:06d}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
        model = pl_module.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                result = evaluate_benchmark(
                    model, kwargs["tokenizer"], kwargs["image_processor"], benchmark, batch_size=self.batch_size,
                    max_new_tokens=self.max_new_tokens, template="vicuna_v1" if template == "plain" else template,
                    image_aspect=kwargs.get("image_aspect", "pad"), device=pl_module.device, predictions_path=path,
                    progress=False, resume_from=None)
        finally:
            model.train(was_training)
        metrics = {f"benchmark/{benchmark.name}/{k}": float(v) for k, v in result.metrics.items()
                   if not isinstance(v, str)}
        self.history.append((step, dict(result.metrics)))
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
            log.info("%s at step %d: %s = %s", benchmark.name, step, result.headline,
                     result.metrics.get(result.headline))
        return metrics

    def _maybe(self, trainer, pl_module) -> None:
        if trainer.global_step == self._last_step:
            return
        self._last_step = trainer.global_step
        if "FSDP" in type(trainer.strategy).__name__:
            if trainer.is_global_zero and not self.history:
                log.warning("BenchmarkEval is skipped under FSDP (a rank holds a shard of the model); "
                            "evaluate checkpoints with python -m deco.evaluate")
            return
        self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0:  # once per step (_maybe skips the other micro-batches)
            self._maybe(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_end:
            self._maybe(trainer, pl_module)
