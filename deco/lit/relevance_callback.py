"""Training callback: watch relevance form. Every N steps, R_t2i / R_t2q / R_q2i of a few fixed probes.

The probes are fixed inputs chosen once at fit start: shapes-world scenes with the named object's box
(`source="shapes"`, default; the callback then also logs `relevance/energy_<method>`, the share of R_t2i
inside the box) or the first items of the validation dataset (`source="val"`). Each time, the maps are
rendered and written as PNGs + tensors under `out_dir/step_<N>/` (deco.explain.export names) and sent
to W&B as images (`WandbLogger.log_image`) when a W&B logger is attached. The explanation runs on rank 0
in eval mode with `torch.autograd.grad`, so it leaves parameter gradients and train/eval flags untouched
(under FSDP, where rank 0 holds only a shard of the weights, it is skipped with a warning).
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch

from deco.explain.export import export_relevance, render_all, slugify
from deco.explain.methods import METHODS, explain_all

log = logging.getLogger(__name__)
SOURCES = ("shapes", "val")



def one_size(pictures: list) -> list:
    """The images of one W&B key padded (white, bottom / right) to one size: wandb shows a key's images side by
    side and warns "Images sizes do not match" when they differ (probes with other token counts or panels)."""
    from PIL import Image

    width, height = max(p.width for p in pictures), max(p.height for p in pictures)
    out = []
    for picture in pictures:
        if picture.size != (width, height):
            canvas = Image.new("RGB", (width, height), (255, 255, 255))
            canvas.paste(picture.convert("RGB"), (0, 0))
            picture = canvas
        out.append(picture)
    return out

class RelevanceImages(L.Callback):
    """Log relevance maps of `num_probes` fixed probes every `every_n_steps` optimizer steps (and at the end).

    Args:
        out_dir: where `step_<N>/` folders of PNGs and tensors go.
        every_n_steps: logging period in optimizer steps.
        num_probes: how many fixed inputs.
        methods: relevance methods (see deco.explain.methods.METHODS).
        source: "shapes" (scenes of world `seed`, with boxes) or "val" (the datamodule's val split).
        seed / tasks: the shapes world and the tasks whose answers are explained (vicuna template).
        log_images: send the PNGs to W&B when a WandbLogger is attached.
    """

    def __init__(self, out_dir: str, every_n_steps: int = 100, num_probes: int = 4, methods=("rgae",),
                 source: str = "shapes", seed: int = 1000, tasks=("attribute", "grounding"), log_images: bool = True,
                 max_queries: int = 64):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if source not in SOURCES:
            raise ValueError(f"source='{source}' is unknown; choose one of: {', '.join(SOURCES)}")
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown relevance method(s) {bad}; choose among: {', '.join(METHODS)}")
        self.out_dir = Path(out_dir)
        self.every_n_steps = every_n_steps
        self.num_probes = num_probes
        self.methods = list(methods)
        self.source = source
        self.seed = seed
        self.tasks = list(tasks)
        self.log_images = log_images
        self.max_queries = max_queries
        self.probes: list | None = None  # [(ExplainInput, box or None)]
        self._tokenizer = None
        self._last_step = -1

    # -- setup -------------------------------------------------------------------------------------------

    def _processing(self, trainer, pl_module):
        """Tokenizer, image processor and template of this run (from the datamodule, else rebuilt)."""
        kwargs = getattr(getattr(trainer, "datamodule", None), "dataset_kwargs", None) or {}
        tokenizer, processor = kwargs.get("tokenizer"), kwargs.get("image_processor")
        if tokenizer is None or processor is None:
            from deco.data.image import load_image_processor
            from deco.data.tokenizer import load_tokenizer

            model_cfg = pl_module.hparams["build"]["model"]
            tokenizer = load_tokenizer(**model_cfg["tokenizer"])
            processor = load_image_processor(**model_cfg["image_processor"])
        template = kwargs.get("template") or (getattr(pl_module, "stage", None) or {}).get("template", "vicuna_v1")
        return tokenizer, processor, template

    def _make_probes(self, trainer, pl_module) -> list:
        tokenizer, processor, template = self._processing(trainer, pl_module)
        self._tokenizer = tokenizer
        if self.source == "shapes":
            from deco.explain.score import shapes_probes

            probes = shapes_probes(tokenizer, processor, self.seed, self.num_probes, template, tasks=self.tasks)
            return [(p.inp, p.box) for p in probes]
        from deco.explain.inputs import input_from_item

        dataset = (getattr(trainer.datamodule, "datasets", None) or {}).get("val")
        if dataset is None:
            raise ValueError("RelevanceImages(source='val') needs a datamodule with a val dataset")
        count = min(self.num_probes, len(dataset))
        return [(input_from_item(dataset[i], tokenizer, processor), None) for i in range(count)]

    def _tag(self, pl_module) -> str:
        from deco.models.loading import LoadedModel

        build = pl_module.hparams.get("build") or {}
        if "projector" not in build:
            return type(pl_module.model.projector).__name__
        return LoadedModel(None, None, None, dict(build)).projector_tag

    # -- logging -----------------------------------------------------------------------------------------

    def log_relevance(self, trainer, pl_module) -> dict[str, float]:
        """Explain every probe now; write files, log images and energies. Returns the logged scalars."""
        from deco.explain.score import energy_in_box

        if self.probes is None:
            self.probes = self._make_probes(trainer, pl_module)
        step = trainer.global_step
        out_dir = self.out_dir / f"step_{step:06d}"
        tag = self._tag(pl_module)
        energies: dict[str, list[float]] = {m: [] for m in self.methods}
        images: dict[str, list] = {}
        captions: dict[str, list[str]] = {}
        for k, (inp, box) in enumerate(self.probes):
            results = explain_all(pl_module.model, inp, self.methods, self._tokenizer)
            for method, rel in results.items():
                pictures = render_all(rel, inp, f"{method} | {inp.text!r} | {tag} | step {step}", self.max_queries)
                export_relevance(rel, inp, out_dir, tag, name=f"{k:02d}-{slugify(inp.text, 40)}", pictures=pictures)
                if box is not None:
                    energies[method].append(energy_in_box(rel.r_t2i, box))
                if self.log_images:
                    for kind, picture in pictures.items():
                        images.setdefault(f"relevance/{kind}_{method}", []).append(picture)
                        captions.setdefault(f"relevance/{kind}_{method}", []).append(f"{k}: {inp.text}")
        scalars = {f"relevance/energy_{m}": sum(v) / len(v) for m, v in energies.items() if v}
        for logger in trainer.loggers:
            if scalars:
                logger.log_metrics(scalars, step=step)
            if images and hasattr(logger, "log_image") and type(logger).__name__ == "WandbLogger":
                for key, pictures in images.items():
                    logger.log_image(key=key, images=one_size(pictures), step=step, caption=captions[key])
        log.info("relevance maps of %d probes at step %d -> %s", len(self.probes), step, out_dir)
        return scalars

    def _maybe_log(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or trainer.global_step == self._last_step:
            return
        if "FSDP" in type(trainer.strategy).__name__:
            if self._last_step == -1:
                log.warning("RelevanceImages is skipped under FSDP (rank 0 does not hold the full model)")
            self._last_step = trainer.global_step
            return
        self._last_step = trainer.global_step
        with torch.enable_grad():
            self.log_relevance(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._maybe_log(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._maybe_log(trainer, pl_module)
