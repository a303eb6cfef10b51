"""LightningModule that trains an MLLM (vision tower -> projector -> LLM) with next-token loss.

The module owns nothing but the training recipe: which parts train (from the stage config),
per-part learning rates, AdamW with a cosine schedule and linear warmup, and the metrics a
researcher watches (train/val loss, learning rates, trainable parameters;
throughput comes from `deco.lit.callbacks.Throughput`). The model is
built outside (`deco.models.build.build_mllm`) and handed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from transformers import get_cosine_schedule_with_warmup

from deco.lit.callbacks import logs_this_step
from deco.lit.fault import ON_NAN_CHOICES, check_gradients, gradient_norm, loss_is_finite
from deco.models.loss import REDUCTIONS, answer_loss
from deco.models.mllm import position_ids_from_mask
from deco.models.stages import apply_stage, parameter_groups, trainable_summary


def _partial(spec: Mapping | None, default):
    """`stage.optimizer` / `stage.scheduler` (a Hydra `_partial_` target), or `default` when the stage has none."""
    if not spec:
        return default
    from hydra.utils import instantiate

    return instantiate(dict(spec), _partial_=True)


def parameter_line(part: str, trainable: int, total: int) -> str:
    """'   vision:      224,832 parameters, frozen (eval mode: no dropout, fixed statistics)' and the like."""
    if trainable == 0:
        state = "frozen (eval mode: no dropout, fixed statistics)" if part == "vision" else "frozen"
    elif trainable == total:
        state = "all trainable"
    else:
        state = f"{trainable:,} trainable (LoRA adapters or a partly frozen part)"
    return f"{part:>9}: {total:>12,} parameters, {state}"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; training cannot continue meaningfully."""


class MLLMModule(L.LightningModule):
    def __init__(
        self, model: torch.nn.Module, stage: Mapping, build_config: Mapping | None = None, on_nan: str = "stop"
    ):
        super().__init__()
        if on_nan not in ON_NAN_CHOICES:
            raise ValueError(f"fault.on_nan={on_nan} is not supported; choose one of: {', '.join(ON_NAN_CHOICES)}")
        self.model = model
        self.stage = dict(stage)
        self.on_nan = on_nan
        self.loss_reduction = str(self.stage.get("loss_reduction") or "sample")  # as configs/stage/*.yaml
        if self.loss_reduction not in REDUCTIONS:
            raise ValueError(
                f"stage.loss_reduction={self.loss_reduction} is unknown; choose one of: {', '.join(REDUCTIONS)}"
            )
        self._skip_step = False  # a micro-batch of this optimizer step had a non-finite loss
        apply_stage(self.model, self.stage)
        # What `deco` needs to rebuild this model from the checkpoint alone (model/projector configs).
        self.save_hyperparameters({"stage": self.stage, "build": dict(build_config or {})})

    def forward(self, batch: Mapping) -> torch.Tensor:
        # Tower features made in the data pipeline (deco.data.tower_features): only projector + LLM run here.
        feats = batch.get("vision_features")
        image_tokens = self.model.project(feats) if feats is not None else None
        if self.loss_reduction == "sample":  # each sample's answer counts once, however long it is
            embeds, mask, labels, _ = self.model.prepare_inputs_embeds(
                batch["input_ids"],
                batch["attention_mask"],
                batch["pixel_values"],
                batch["labels"],
                image_tokens=image_tokens,
            )
            # the LM head on the answer positions only: the loss of the full logits, ~1/6 less LLM compute
            return answer_loss(
                self.model.llm, embeds, mask, position_ids_from_mask(mask), labels, "sample", self.model.ignore_index
            )
        out = self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
            labels=batch["labels"],
            image_tokens=image_tokens,
        )
        return out.loss

    def on_fit_start(self) -> None:
        summary = trainable_summary(self.model)
        for part, counts in summary.items():
            rank_zero_info(parameter_line(part, counts["trainable"], counts["total"]))
        for logger in self.loggers:
            logger.log_hyperparams({f"params/{p}_trainable": c["trainable"] for p, c in summary.items()})

    def training_step(self, batch: Mapping, batch_idx: int) -> torch.Tensor:
        loss = self(batch)
        if not loss_is_finite(self, loss):  # agreed across ranks: all stop or all skip
            where = f"global step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
            value = loss.item() if not torch.isfinite(loss) else "non-finite on another rank"
            if self.on_nan == "skip":
                rank_zero_warn(f"loss is {value} at {where}: skipping this optimizer step (fault.on_nan=skip)")
                self._skip_step = True
                # A zero loss that reaches every trainable parameter: backward (and DDP's gradient
                # all-reduce) still runs on all ranks; on_before_optimizer_step then drops the grads.
                return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            raise NonFiniteLossError(
                f"loss is {value} at {where}; lower the learning rate or check the batch "
                "(no checkpoint was written after this step; use fault.on_nan=skip to skip such batches)"
            )
        # The loss and the learning rate per optimizer group (the module logs it so it works with any or no
        # logger), on the steps whose values are written only: each self.log call costs ~0.5-1 ms of Python
        # (figure 1 of make bench); the progress bar shows the loss of the last such step.
        if logs_this_step(self.trainer):
            batch_size = batch["input_ids"].shape[0]
            self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
            for group in self.optimizers().optimizer.param_groups:
                self.log(f"train/lr_{group.get('name', 'group')}", group["lr"], batch_size=batch_size)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        self._grad_norm = None
        if not self._skip_step:  # a finite loss can still give a NaN/inf gradient (deco.lit.fault)
            self._grad_norm = gradient_norm(self, [p for group in optimizer.param_groups for p in group["params"]])
            self._skip_step = check_gradients(self, self.on_nan, norm=self._grad_norm)
        if self._skip_step:  # no gradient -> AdamW leaves weights and moments untouched
            self._skip_step, self._grad_norm = False, None
            for p in self.parameters():
                p.grad = None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip by norm with the norm `on_before_optimizer_step` just computed over the same gradients (what
        Lightning's clipping would compute a second time: ~1 ms a step on CPU, figure 1 of make bench);
        other algorithms and strategies (FSDP shards its gradients) clip as Lightning does."""
        norm, self._grad_norm = getattr(self, "_grad_norm", None), None
        if (
            norm is None
            or not gradient_clip_val
            or gradient_clip_algorithm not in (None, "norm")
            or not isinstance(self.trainer.strategy, (SingleDeviceStrategy, DDPStrategy))
        ):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        grads = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grads_with_norm_(grads, gradient_clip_val, norm)

    def validation_step(self, batch: Mapping, batch_idx: int) -> torch.Tensor:
        loss = self(batch)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def configure_optimizers(self):
        groups = parameter_groups(self.model, self.stage)
        make_optimizer = _partial(self.stage.get("optimizer"), torch.optim.AdamW)
        optimizer = make_optimizer(groups, weight_decay=float(self.stage.get("weight_decay", 0.0)))
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = math.ceil(total * float(self.stage.get("warmup_ratio", 0.03)))  # configs/stage/*.yaml
        make_scheduler = _partial(self.stage.get("scheduler"), get_cosine_schedule_with_warmup)
        scheduler = make_scheduler(optimizer, num_warmup_steps=warmup, num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
