"""Shapes-world samples for the zoo's pretraining jobs: tokenized conversations with label grids.

Batches of `batch_size` consecutive indices share one grid size (drawn from `grids` by the batch
number), so their coverage grids stack. Captions use the `plain` template with probability
`plain_fraction` (what LLaVA's projector pretraining feeds a frozen LLM), the other tasks `template`.

Sparse curriculum (`sparse_until` > 0): early batches keep only the cells an object touches plus a share of
the background cells that grows linearly from 0 to all of them at fraction `sparse_until` of the run (cells
stay in raster order and keep their position code). A small LLM learns to find the asked object among a
few cells in a few hundred steps; among 64 mostly empty ones it sits on the blind answer much longer.

`scene="shuffled"`: the same grid, its cells (content and position code together) in a random order per scene,
so the sequence position carries no layout and the position code is the only where (issue 24).
`scene="text"`: the sample also carries `scene_ids`, the scene's text rendering (`deco.zoo.text_scene`: objects
in a seeded random order, no grid), which the LLM reads in place of the grid (the zoo without a layout prior).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

from deco.data.collate import Collator
from deco.data.conversation import tokenize_conversation
from deco.data.shapes import make_sample
from deco.zoo.symbolic import coverage_grid, label_mask
from deco.zoo.text_scene import pad_ids, scene_ids

SCENES = ("symbolic", "shuffled", "text")  # in the <image> slot: a label grid (raster or shuffled) or words


class SymbolicScenes(torch.utils.data.Dataset):
    def __init__(self, num_samples: int, seed: int, tokenizer, tasks: Sequence[str], grids: Sequence[int],
                 batch_size: int, template: str, plain_fraction: float = 0.0, max_length: int = 256,
                 grid_weights: Sequence[float] | None = None, sparse_until: float = 0.0,
                 negatives: str = "random", scene: str = "symbolic"):
        if scene not in SCENES:
            raise ValueError(f"llm.scene={scene!r}: choose among {list(SCENES)}")
        self.scene = scene
        self.num_samples, self.seed, self.tokenizer = num_samples, seed, tokenizer
        self.tasks, self.grids, self.batch_size = tuple(tasks), tuple(grids), batch_size
        self.grid_weights = list(grid_weights) if grid_weights is not None else None
        self.template, self.plain_fraction, self.max_length = template, plain_fraction, max_length
        self.sparse_until, self.negatives = sparse_until, negatives

    def __len__(self) -> int:
        return self.num_samples

    def grid_of_batch(self, batch: int) -> int:
        return random.Random(self.seed * 7919 + batch).choices(self.grids, weights=self.grid_weights)[0]

    def __getitem__(self, i: int) -> dict:
        plain = random.Random(self.seed * 104_729 + i).random() < self.plain_fraction
        scene, conv, meta = make_sample(self.seed, i, ("caption",) if plain else self.tasks, negatives=self.negatives)
        tok = tokenize_conversation(conv, self.tokenizer, "plain" if plain else self.template, self.max_length)
        grid = self.grid_of_batch(i // self.batch_size)
        coverage = torch.from_numpy(coverage_grid(label_mask(scene), grid))
        item = {**tok, "coverage": coverage, "meta": meta, "scene": scene, "index": i,
                "background_share": self.background_share(i), "shuffle": self.scene == "shuffled"}
        if self.scene == "text":
            item["scene_ids"] = scene_ids(scene, self.tokenizer, random.Random(self.seed * 15_485_863 + i))
        return item

    def background_share(self, i: int) -> float:
        """Share of background cells kept for sample i (1.0: the dense grid)."""
        if self.sparse_until <= 0:
            return 1.0
        return min(1.0, (i / max(self.num_samples, 1)) / self.sparse_until)


def keep_cells(coverage: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Indices (raster order) of the object cells plus `share` of the background cells (at random)."""
    on_object = coverage[:, 0] < 1.0
    background = (~on_object).nonzero().flatten()
    extra = background[torch.randperm(len(background), generator=generator)[: round(share * len(background))]]
    return torch.cat([on_object.nonzero().flatten(), extra]).sort().values


def sparsify(coverage: torch.Tensor, shares: list[float], seed: int):
    """(b, n, C) grids -> the kept cells of each row, left-aligned and padded to one length k: coverage
    (b, k, C), cell indices (b, k) for the position code, and valid (b, k), False on padding (masked out)."""
    b, n, _ = coverage.shape
    if all(share >= 1.0 for share in shares):
        return coverage, torch.arange(n).expand(b, n), torch.ones(b, n, dtype=torch.bool)
    gen = torch.Generator().manual_seed(seed)
    kept = [keep_cells(c, share, gen) for c, share in zip(coverage, shares)]
    k = max(len(x) for x in kept)
    index = torch.zeros(b, k, dtype=torch.long)
    valid = torch.zeros(b, k, dtype=torch.bool)
    for row, idx in enumerate(kept):
        index[row, : len(idx)], valid[row, : len(idx)] = idx, True
    return torch.gather(coverage, 1, index[..., None].expand(-1, -1, coverage.shape[-1])), index, valid


def shuffle_cells(coverage: torch.Tensor, cells: torch.Tensor, valid: torch.Tensor, generator: torch.Generator):
    """Each row's cells in its own random order: coverage (b, k, C), cell indices and validity move together,
    so every cell keeps its content and its position code; only the sequence order is lost."""
    order = torch.stack([torch.randperm(cells.shape[1], generator=generator) for _ in range(len(cells))])
    return (torch.gather(coverage, 1, order[..., None].expand(-1, -1, coverage.shape[-1])),
            torch.gather(cells, 1, order), torch.gather(valid, 1, order))


def collate(samples: list[dict], pad_token_id: int, seed: int = 0) -> dict:
    batch = Collator(pad_token_id=pad_token_id)([{k: s[k] for k in ("input_ids", "labels")} for s in samples])
    coverage = torch.stack([s["coverage"] for s in samples])
    batch["coverage"], batch["cells"], batch["cell_valid"] = sparsify(coverage, [s["background_share"] for s in samples],
                                                 seed + int(samples[0].get("index", 0)))
    if samples[0].get("shuffle"):
        gen = torch.Generator().manual_seed(seed * 31 + int(samples[0].get("index", 0)))
        batch["coverage"], batch["cells"], batch["cell_valid"] = shuffle_cells(
            batch["coverage"], batch["cells"], batch["cell_valid"], gen)
    batch["grid"] = math.isqrt(coverage.shape[1])
    if "scene_ids" in samples[0]:
        batch["scene_ids"], batch["scene_valid"] = pad_ids([s["scene_ids"] for s in samples], pad_token_id)
    return batch
