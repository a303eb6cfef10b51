"""Pretrain the zoo's LLM on symbolic scenes: LLaVA's tasks over label grids instead of pixels.

The LLM (with the `SymbolicScene` embedder in place of tower + projector) learns the answer formats,
colour-shape binding, negatives and box coordinates from exact scene grids; `deco.train` later teaches a
projector to speak the same language from pixels. Plain PyTorch (no Lightning): a one-off job.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

import torch

from deco.models.loss import next_token_loss
from deco.models.mllm import position_ids_from_mask
from deco.utils.progress import track
from deco.zoo.optim import adamw_cosine, optimizer_step
from deco.zoo.scenes import SymbolicScenes, collate, shuffle_cells
from deco.zoo.symbolic import SymbolicScene, coverage_grid, label_mask

log = logging.getLogger(__name__)


def symbolic_tokens(symbolic: SymbolicScene, grid: int, shuffle: bool = False, seed: int = 0):
    """scenes -> (b, grid*grid, d) embeddings of their exact label grids; `shuffle`: each scene's cells in a
    random order (seeded), as the shuffled zoo reads them."""
    gen = torch.Generator().manual_seed(seed)

    def encode(scenes: list) -> torch.Tensor:
        cov = torch.stack([torch.from_numpy(coverage_grid(label_mask(s), grid)) for s in scenes])
        if not shuffle:
            return symbolic(cov)
        cells = torch.arange(grid * grid).expand(len(cov), -1)
        cov, cells, _ = shuffle_cells(cov, cells, torch.ones_like(cells, dtype=torch.bool), gen)
        return symbolic(cov, cells, grid)
    return encode


def new_embedder(llm, cfg: Mapping) -> SymbolicScene:
    return SymbolicScene(llm.get_input_embeddings().embedding_dim, content_std=float(cfg.get("content_std", 0.02)),
                         position_std=float(cfg.get("position_std", 0.02)))


def train_llm(model, tokenizer, cfg: Mapping, evaluate=None, on_eval=None,
              symbolic: SymbolicScene | None = None) -> tuple[SymbolicScene, list[dict]]:
    """Train `model.llm` (an MLLM's) and a SymbolicScene embedder; returns the embedder and the eval curve.

    cfg keys: steps, batch_size, lr, warmup_ratio, seed, tasks, grids, grid_weights, plain_fraction, template,
    max_length, eval_every, eval_grid, num_workers; optional: content_std, position_std, sparse_until,
    existence_negatives, scene ("symbolic", "shuffled" or "text": deco.zoo.scenes; with "text" the embedder
    is unused).
    `evaluate(step, symbolic) -> dict` is called every eval_every steps and at the end; `on_eval(step, symbolic,
    curve)` after it (e.g. to save the weights, so a long run that is stopped leaves its latest evaluated state).
    """
    torch.manual_seed(int(cfg["seed"]))
    llm = model.llm
    if symbolic is None:  # a fresh embedder; a given one continues an earlier stage
        symbolic = new_embedder(llm, cfg)
    steps, bs = int(cfg["steps"]), int(cfg["batch_size"])
    data = SymbolicScenes(steps * bs, int(cfg["seed"]), tokenizer, cfg["tasks"], cfg["grids"], bs,
                          cfg["template"], float(cfg["plain_fraction"]), int(cfg["max_length"]),
                          cfg.get("grid_weights"), float(cfg.get("sparse_until") or 0.0),
                          cfg.get("existence_negatives", "random"), cfg.get("scene", "symbolic"))
    loader = torch.utils.data.DataLoader(data, batch_size=bs, shuffle=False, num_workers=int(cfg["num_workers"]),
                                         collate_fn=functools.partial(collate, pad_token_id=tokenizer.pad_token_id,
                                                                                seed=int(cfg["seed"])))
    params = list(llm.parameters()) + list(symbolic.parameters())
    opt, sched = adamw_cosine(params, float(cfg["lr"]), steps, float(cfg["warmup_ratio"]))
    curve: list[dict] = []
    llm.train()
    for step, batch in enumerate(track(loader, "zoo llm", total=steps), start=1):
        if "scene_ids" in batch:  # the scene in words, read through the LLM's own embeddings
            tokens, valid = llm.get_input_embeddings()(batch["scene_ids"]), batch["scene_valid"]
        else:  # b k: padding cells of the sparse curriculum are masked out
            tokens, valid = symbolic(batch["coverage"], batch["cells"], batch["grid"]), batch["cell_valid"]
        embeds, mask, labels, image_at = model.prepare_inputs_embeds(
            batch["input_ids"], batch["attention_mask"], labels=batch["labels"], image_tokens=tokens)
        cols = image_at[:, None] + torch.arange(valid.shape[1])
        mask = mask.scatter(1, cols, valid.to(mask.dtype))
        logits = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        loss = next_token_loss(logits, labels, reduction="sample")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"zoo LLM pretraining: loss is {loss.item()} at step {step}")
        optimizer_step(loss, params, opt, sched)
        if evaluate is not None and (step % int(cfg["eval_every"]) == 0 or step == steps):
            scores = evaluate(step, symbolic)
            value = loss.item()  # float(loss) of a tensor that requires grad warns (torch >= 2.6)
            curve.append({"step": step, "loss": value, **scores})
            log.info("zoo llm step %d: loss %.4f %s", step, value, scores)
            if on_eval is not None:
                on_eval(step, symbolic, curve)
            llm.train()
    return symbolic, curve
