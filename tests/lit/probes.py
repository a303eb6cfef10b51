"""Test-only callbacks that record what a (possibly multi-process) training run computed.

Loaded in `python -m deco.train` subprocesses through `+callbacks.probe._target_=probes.<Name>`
with `tests/lit` on PYTHONPATH.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class GradientProbe(L.Callback):
    """Per rank: the loss of every micro-batch and, per optimizer step, the (all-reduced) gradients."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.losses: list[tuple[int, int, float]] = []  # (global step, batch_idx, loss)
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        # Lightning returns the loss already divided by accumulate_grad_batches: undo it.
        self.losses.append((trainer.global_step, batch_idx, float(loss) * trainer.accumulate_grad_batches))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads.append({n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None})

    def on_train_end(self, trainer, pl_module) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        torch.save({"losses": self.losses, "grads": self.grads,
                    "weights": {k: v.detach().clone() for k, v in pl_module.state_dict().items()}},
                   self.path / f"rank{trainer.global_rank}.pt")



class LossProbe(L.Callback):
    """Per rank: the loss of every micro-batch (any strategy, FSDP included: nothing is gathered)."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.losses: list[tuple[int, int, float]] = []  # (global step, batch_idx, loss)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append((trainer.global_step, batch_idx, float(loss) * trainer.accumulate_grad_batches))
        self.path.mkdir(parents=True, exist_ok=True)  # after every batch: a preempted run keeps its record
        torch.save({"losses": self.losses}, self.path / f"rank{trainer.global_rank}.pt")


class SignalAtStep(L.Callback):
    """Every rank sends itself SIGUSR2 (submitit's "about to time out") while the step that reaches `step`
    runs: deco's PreemptionCheckpoint saves last.ckpt after that step and stops, as on a cluster."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step - 1:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGUSR2)
