"""Shapes-world samples for the zoo's pretraining jobs: tokenized conversations with label grids.

Batches of `batch_size` consecutive indices share one grid size (drawn from `grids` by the batch
number), so their coverage grids stack. Captions use the `plain` template with probability
`plain_fraction` (what LLaVA's projector pretraining feeds a frozen LLM), the other tasks `template`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from deco.data.collate import Collator
from deco.data.conversation import tokenize_conversation
from deco.data.shapes import make_sample
from deco.zoo.symbolic import coverage_grid, label_mask


class SymbolicScenes(torch.utils.data.Dataset):
    def __init__(self, num_samples: int, seed: int, tokenizer, tasks: Sequence[str], grids: Sequence[int],
                 batch_size: int, template: str, plain_fraction: float = 0.0, max_length: int = 256,
                 grid_weights: Sequence[float] | None = None):
        self.num_samples, self.seed, self.tokenizer = num_samples, seed, tokenizer
        self.tasks, self.grids, self.batch_size = tuple(tasks), tuple(grids), batch_size
        self.grid_weights = list(grid_weights) if grid_weights is not None else None
        self.template, self.plain_fraction, self.max_length = template, plain_fraction, max_length

    def __len__(self) -> int:
        return self.num_samples

    def grid_of_batch(self, batch: int) -> int:
        return random.Random(self.seed * 7919 + batch).choices(self.grids, weights=self.grid_weights)[0]

    def __getitem__(self, i: int) -> dict:
        plain = random.Random(self.seed * 104_729 + i).random() < self.plain_fraction
        scene, conv, meta = make_sample(self.seed, i, ("caption",) if plain else self.tasks)
        tok = tokenize_conversation(conv, self.tokenizer, "plain" if plain else self.template, self.max_length)
        grid = self.grid_of_batch(i // self.batch_size)
        coverage = torch.from_numpy(coverage_grid(label_mask(scene), grid))
        return {**tok, "coverage": coverage, "meta": meta, "scene": scene}


def collate(samples: list[dict], pad_token_id: int) -> dict:
    batch = Collator(pad_token_id=pad_token_id)([{k: s[k] for k in ("input_ids", "labels")} for s in samples])
    batch["coverage"] = torch.stack([s["coverage"] for s in samples])
    return batch
