"""Pretrain the zoo's vision tower on shapes scenes with dense per-patch supervision.

A CLIP-style ViT learns, at the layer LLaVA reads (`select_layer`), patch features from which linear heads
recover what covers each patch (background or one of 18 colour-shape pairs; soft targets = the exact label
mask pooled to the 24 x 24 patch grid), the patch's position, and, for patches inside an object, where in
the object's box they lie (a "part" target: shape is a property of the whole object, which an interior
patch of solid colour can only know from its context). The heads are dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from deco.data.image import process_image
from deco.data.shapes import render_scene
from deco.utils.progress import track
from deco.zoo.optim import adamw_cosine, optimizer_step
from deco.zoo.symbolic import NUM_CLASSES, cell_centres, class_index, coverage_grid, label_mask


class PatchScenes(torch.utils.data.Dataset):
    """Rendered scenes -> (pixel_values, per-patch coverage targets)."""

    def __init__(self, num_samples: int, seed: int, image_processor, grid: int):
        self.num_samples, self.seed, self.processor, self.grid = num_samples, seed, image_processor, grid

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int):
        scene = render_scene(self.seed, i)
        mask = label_mask(scene)
        target = torch.from_numpy(coverage_grid(mask, self.grid))
        return process_image(scene.image, self.processor, "pad"), target, part_targets(scene, mask, self.grid)


def part_targets(scene, mask, grid: int) -> torch.Tensor:
    """(grid*grid, 3): the patch centre's (x, y) offset in its object's box, in [0, 1], and 1 when the centre
    lies on an object (0 and no target elsewhere)."""
    size = mask.shape[0]
    centres = ((torch.arange(grid) + 0.5) * size / grid).long()
    out = torch.zeros(grid, grid, 3)
    by_class = {class_index(o.colour, o.shape): o for o in scene.objects}
    for r, y in enumerate(centres.tolist()):
        for c, x in enumerate(centres.tolist()):
            obj = by_class.get(int(mask[y, x]))
            if obj is not None:
                x1, y1, x2, y2 = obj.box
                out[r, c] = torch.tensor([(x - x1) / (x2 - x1), (y - y1) / (y2 - y1), 1.0])
    return out.reshape(grid * grid, 3)


def patch_accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Argmax accuracy (%) on patches covered more than half by one object (the informative ones)."""
    major = target.argmax(-1)
    keep = (major > 0) & (target.max(-1).values > 0.5)
    return 100.0 * float((logits.argmax(-1)[keep] == major[keep]).float().mean()) if bool(keep.any()) else 0.0


def train_vision(tower, image_processor, cfg: Mapping) -> list[dict]:
    """Train `tower` (deco VisionTower) in place; returns [{step, loss, patch_acc}] measured on held-out scenes."""
    torch.manual_seed(int(cfg["seed"]))
    grid, dim = tower.grid_size, tower.hidden_size
    heads = nn.ModuleDict({"cls": nn.Linear(dim, NUM_CLASSES), "pos": nn.Linear(dim, 2), "part": nn.Linear(dim, 2)})
    steps, bs = int(cfg["steps"]), int(cfg["batch_size"])
    loader = torch.utils.data.DataLoader(PatchScenes(steps * bs, int(cfg["seed"]), image_processor, grid),
                                         batch_size=bs, num_workers=int(cfg["num_workers"]))
    held_out = [PatchScenes(64, int(cfg["seed"]) + 50_000, image_processor, grid)[i] for i in range(64)]
    params = list(tower.parameters()) + list(heads.parameters())
    opt, sched = adamw_cosine(params, float(cfg["lr"]), steps, float(cfg["warmup_ratio"]))
    xy = cell_centres(grid)  # n 2
    curve = []
    tower.train()
    for step, (pixels, target, part) in enumerate(track(loader, "zoo vision", total=steps), start=1):
        feats = tower(pixels)  # b n d
        logits = heads["cls"](feats)
        loss = -(target * F.log_softmax(logits, -1)).sum(-1).mean()
        loss = loss + F.mse_loss(heads["pos"](feats), xy.expand(len(feats), -1, -1)) * float(cfg["pos_weight"])
        on_object = part[..., 2:]
        part_err = ((heads["part"](feats) - part[..., :2]) ** 2 * on_object).sum() / on_object.sum().clamp(min=1)
        loss = loss + part_err * float(cfg["part_weight"])
        optimizer_step(loss, params, opt, sched)
        if step % int(cfg["eval_every"]) == 0 or step == steps:
            with torch.no_grad():
                tower.eval()
                px = torch.stack([p for p, _, _ in held_out])
                tg = torch.stack([t for _, t, _ in held_out])
                curve.append({"step": step, "loss": loss.item(), "patch_acc": patch_accuracy(heads["cls"](tower(px)), tg)})
                tower.train()
    tower.eval()
    return curve
