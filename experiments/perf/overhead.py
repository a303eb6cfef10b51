"""Figure 1 — framework overhead: a `deco.train` step against a bare PyTorch loop on the same model and batches.

The Lightning side is what `python -m deco.train` runs: `MLLMModule` in a `Trainer` built from the real
configs (trainer=cpu, logger=csv, every callback of callbacks=default, progress bar on), so every per-step
hook, `self.log` call and logger write is included. The bare side is the loop a
person would write: the same module's model and loss (`MLLMModule.forward`, a plain function of the batch: the
same math on both sides), the same AdamW groups and cosine schedule, gradient clipping
at the trainer's `gradient_clip_val`, the same DataLoader over the same pre-collated batches. Step time is
everything the loop does per step, fetching the batch included, measured step by step in one fit: a bare
step runs (and is timed) at the start of every Lightning step, so the pairs run back to back; the figure is
the median over steps of Lightning / bare. `python -m experiments.perf.overhead` compares the step before the
per-step fixes (every metric logged every step, torch.manual_seed) with now (README.md, figure 1).
Goal: Lightning / bare <= 1.03.
"""

from __future__ import annotations

import contextlib
import io
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from experiments.perf.common import CONFIGS, Bench, make_optimizer, paired_ratio, projector_configs

GOAL = 1.03


class BareSteps(L.Callback):
    """Runs one bare PyTorch step at the start of every Lightning step and times both, back to back.

    Timeline: [callback: bare step] [Lightning: fetch batch, hooks, training_step, backward, clip, optimizer,
    scheduler, logging] [callback: bare step] ... The Lightning step is the time from leaving this callback to
    entering it again; the bare step is timed inside it, with its own DataLoader over the same batches, its own
    AdamW groups and cosine schedule (same values as MLLMModule's) on the same model.
    """

    def __init__(self, model, stage: dict, batches: list[dict], clip: float | None, loss_fn=None):
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer, self.scheduler = make_optimizer(model, stage, total_steps=len(batches))
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.batches = iter(DataLoader(batches, batch_size=None, shuffle=False))
        self.clip = clip
        self.bare: list[float] = []
        self.lightning: list[float] = []
        self._left: float | None = None

    def bare_step(self) -> None:
        batch = next(self.batches)
        if self.loss_fn is not None:  # the module's own loss, called as a plain function (no Lightning)
            loss = self.loss_fn(batch)
        else:
            loss = self.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                pixel_values=batch["pixel_values"],
                labels=batch["labels"],
            ).loss
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _enter(self) -> None:
        if self._left is not None:
            self.lightning.append(time.perf_counter() - self._left)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._enter()
        start = time.perf_counter()
        self.bare_step()
        self._left = time.perf_counter()
        self.bare.append(self._left - start)

    def on_train_end(self, trainer, pl_module) -> None:
        self._enter()


# Lightning's notes about a fit without validation data, with fewer steps than its logging interval
NO_VALIDATION = ("You defined a `validation_step` but have no `val_dataloader`",
                 "The number of training batches .* is smaller than the logging interval",
                 r"`ModelCheckpoint\(monitor='val/loss'\)` could not find the monitored key")


def compose_train_config(output_dir: Path, overrides: list[str]):
    """configs/train.yaml composed as the CLI does (no Hydra run dir), with `overrides`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides, f"paths.output_dir={output_dir}"])


def interleaved_fit(
    module, batches: list[dict], output_dir: Path, clip: float | None, progress_bar: bool = True
) -> BareSteps:
    """Fit `len(batches)` steps with the deco trainer/logger/callbacks configs, a bare step before each."""
    from hydra.utils import instantiate

    cfg = compose_train_config(
        output_dir,
        [
            f"trainer.max_steps={len(batches)}",
            "logger=csv",
            f"+trainer.enable_progress_bar={str(progress_bar).lower()}",
            "++trainer.enable_model_summary=false",
        ],
    )
    bare = BareSteps(module.model, module.stage, batches, clip, loss_fn=module.forward)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None] + [bare]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    loader = DataLoader(batches, batch_size=None, shuffle=False)
    # the progress bar writes to the terminal: keep the benchmark's output readable (the writes still happen)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        for expected in NO_VALIDATION:  # this fit has no validation and few steps by design
            warnings.filterwarnings("ignore", message=expected)
        trainer.fit(module, train_dataloaders=loader)
    return bare


def run(
    smoke: bool = False,
    steps: int | None = None,
    batch_size: int | None = None,
    progress_bar: bool = True,
    module_factory=None,
) -> dict:
    """Figure 1. `module_factory(model, stage)` swaps in another LightningModule (profiling variants)."""
    from deco.lit.module import MLLMModule

    size = "smoke" if smoke else "tiny"
    steps = steps or (4 if smoke else 40)
    batch_size = batch_size or (2 if smoke else 4)
    bench = Bench(size)
    label, projector = next((k, v) for k, v in projector_configs(size).items() if k.startswith("avgpool"))
    model = bench.model(projector)
    module = (module_factory or (lambda m, s: MLLMModule(m, s, build_config={})))(model, bench.stage)
    distinct = [bench.train_batch(batch_size, seed=i) for i in range(min(steps, 4))]
    batches = [distinct[i % len(distinct)] for i in range(steps)]
    clip = compose_train_config(Path("."), []).trainer.get("gradient_clip_val")

    quiet = ["lightning", "lightning.pytorch", "lightning.fabric"]
    levels = {name: logging.getLogger(name).level for name in quiet}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bare = interleaved_fit(module, batches, Path(tmp), clip, progress_bar)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    # pair bare step i with Lightning step i; skip step 0 (optimizer state is created there)
    lightning, bare_times = bare.lightning[1:], bare.bare[1 : len(bare.lightning)]
    ratio = paired_ratio(lightning, bare_times)
    return {
        "figure": "framework overhead",
        "size": size,
        "projector": label,
        "batch_size": batch_size,
        "steps": steps,
        "gradient_clip_val": clip,
        "progress_bar": progress_bar,
        "lightning_step_s": statistics.median(lightning),
        "bare_step_s": statistics.median(bare_times),
        "overhead_ms": 1e3 * statistics.median(a - b for a, b in zip(lightning, bare_times)),
        "ratio": ratio,
        "goal": f"<= {GOAL}",
        "meets_goal": ratio <= GOAL,
    }


def _log_timed(cls):
    """`cls` with the seconds spent in each `self.log` call recorded in `log_seconds`."""

    class LogTimed(cls):
        def log(self, name, value, *args, **kwargs):
            start = time.perf_counter()
            super().log(name, value, *args, **kwargs)
            self.log_seconds.append(time.perf_counter() - start)

    return LogTimed


def timed_module(model, stage):
    from deco.lit.module import MLLMModule

    module = _log_timed(MLLMModule)(model, stage, build_config={})
    module.log_seconds = []
    return module


@contextlib.contextmanager
def before_fixes():
    """The previous behaviour, for before/after numbers: learning rates, tokens/s and step time passed to
    `self.log` on every step, not only on the steps the loggers write (`deco.lit.callbacks.logs_this_step`),
    and StepSeed reseeding through `torch.manual_seed` (which also queues lazy CUDA/XPU seeds)."""
    from deco.lit import callbacks, checkpointing, module

    saved = module.logs_this_step, callbacks.logs_this_step, checkpointing._accelerator_available
    module.logs_this_step = callbacks.logs_this_step = lambda trainer: True
    checkpointing._accelerator_available = lambda: True
    try:
        yield
    finally:
        module.logs_this_step, callbacks.logs_this_step, checkpointing._accelerator_available = saved


def main(argv: list[str] | None = None) -> None:
    """`python -m experiments.perf.overhead [--smoke] [--rounds N]`: before vs after the per-step fixes."""
    import argparse

    parser = argparse.ArgumentParser(description="framework overhead before vs after the per-step fixes")
    parser.add_argument("--smoke", action="store_true", help="the smoke model: overhead dominates, ms are visible")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = (("before", before_fixes), ("now", contextlib.nullcontext))
    for r in range(args.rounds):
        for label, context in variants if r % 2 == 0 else variants[::-1]:
            modules = []

            def make(model, stage):
                modules.append(timed_module(model, stage))
                return modules[-1]

            with context():
                result = run(smoke=args.smoke, module_factory=make)
            spent = modules[0].log_seconds
            print(
                f"{label:>6}: lightning {1e3 * result['lightning_step_s']:7.1f} ms  "
                f"bare {1e3 * result['bare_step_s']:7.1f} ms  overhead {result['overhead_ms']:+6.1f} ms  "
                f"ratio {result['ratio']:.3f}  in self.log: {1e3 * sum(spent) / result['steps']:.1f} ms/step "
                f"({len(spent) / result['steps']:.1f} calls, median {1e3 * statistics.median(spent):.2f} ms)",
                flush=True,
            )


if __name__ == "__main__":
    main()
