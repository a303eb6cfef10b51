"""LLaVA's `--group_by_modality_length` for map-style data (`data=llava_json data.group_by_modality_length=true`).

Each global batch holds samples of one modality only (with an image, or text-only) and of similar
length, so less of every micro-batch is padding (LLaVA: ~25% faster training). The functions below are
a transcription of haotian-liu/LLaVA llava/train/llava_trainer.py (`split_to_even_chunks`,
`get_length_grouped_indices`, `get_modality_length_grouped_indices`, called there with
world_size = GPUs x gradient accumulation, i.e. one "megabatch" = one global batch), with one
difference: every random draw uses the sampler's generator (seed + epoch), where LLaVA's inner shuffles
use torch's global RNG; so the order is reproducible and resumable. A sample's length is LLaVA's
`modality_lengths`: the number of whitespace-separated words of all its turns, negative for text-only.

`ModalityLengthSampler` lays that order out as `GlobalBatchSampler` does (deco.lit.sampling): each
megabatch is split into global_batch / batch_size micro-batches of even total length, and rank r takes
micro-batches r*A .. r*A+A-1 of it, so 1 GPU x 8 accumulation steps and 8 GPUs x 1 see the same batches.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from deco.lit.sampling import GlobalBatchSampler


def split_to_even_chunks(indices: list[int], lengths, num_chunks: int) -> list[list[int]]:
    """Deal `indices` (longest first) to `num_chunks` chunks, each next one to the shortest chunk so far."""
    if len(indices) % num_chunks != 0:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for index in indices:
        shortest = totals.index(min(totals))
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
        if len(chunks[shortest]) == per_chunk:
            totals[shortest] = float("inf")
    return chunks


def length_grouped_indices(lengths, batch_size: int, world_size: int, generator: torch.Generator) -> list[int]:
    """Shuffle, cut into megabatches of world_size x batch_size, sort each longest first, split evenly."""
    indices = torch.randperm(len(lengths), generator=generator)
    size = world_size * batch_size
    megabatches = [indices[i: i + size].tolist() for i in range(0, len(lengths), size)]
    megabatches = [sorted(m, key=lambda i: lengths[i], reverse=True) for m in megabatches]
    return [i for m in megabatches for chunk in split_to_even_chunks(m, lengths, world_size) for i in chunk]


def modality_length_grouped_indices(lengths, batch_size: int, world_size: int,
                                    generator: torch.Generator) -> list[int]:
    """Megabatches of one modality (length > 0: with image; < 0: text-only), in random order; the two
    leftover partial megabatches are merged and go first when they fill one, the rest last."""
    if any(length == 0 for length in lengths):
        raise ValueError("modality lengths must be non-zero (a record with no words?)")
    if all(length > 0 for length in lengths) or all(length < 0 for length in lengths):
        return length_grouped_indices([abs(x) for x in lengths], batch_size, world_size, generator)
    mm = [(i, x) for i, x in enumerate(lengths) if x > 0]
    lang = [(i, -x) for i, x in enumerate(lengths) if x < 0]
    mm_order = [mm[i][0] for i in length_grouped_indices([x for _, x in mm], batch_size, world_size, generator)]
    lang_order = [lang[i][0] for i in length_grouped_indices([x for _, x in lang], batch_size, world_size, generator)]
    size = world_size * batch_size
    mm_mega = [mm_order[i: i + size] for i in range(0, len(mm_order), size)]
    lang_mega = [lang_order[i: i + size] for i in range(0, len(lang_order), size)]
    additional = mm_mega[-1] + lang_mega[-1]
    megabatches = mm_mega[:-1] + lang_mega[:-1]
    megabatches = [megabatches[i] for i in torch.randperm(len(megabatches), generator=generator).tolist()]
    if len(additional) >= size:
        megabatches = [additional[:size]] + megabatches
        additional = additional[size:]
    if additional:
        megabatches.append(additional)
    return [i for m in megabatches for i in m]


def record_modality_length(record: dict) -> int:
    """LLaVA's modality length of one record: words in all turns, negated when it has no image."""
    words = sum(len(turn["value"].split()) for turn in record["conversations"])
    return words if record.get("image") is not None else -words


def dataset_modality_lengths(dataset: Dataset) -> list[int]:
    """Modality lengths of every sample: the dataset's own `modality_lengths` when it has them, else
    computed from its LLaVA records (`dataset.record(i)`, e.g. deco.data.llava_json.LlavaJsonDataset)."""
    own = getattr(dataset, "modality_lengths", None)
    if own is not None:
        return list(own() if callable(own) else own)
    if not callable(getattr(dataset, "record", None)):
        raise ValueError(f"data.group_by_modality_length=true needs LLaVA records; {type(dataset).__name__} has "
                         "neither modality_lengths nor record(i) (use data=llava_json)")
    return [record_modality_length(dataset.record(i)) for i in range(len(dataset))]


class ModalityLengthSampler(GlobalBatchSampler):
    """`GlobalBatchSampler` whose epoch order is LLaVA's modality-length grouping (module doc)."""

    def __init__(self, dataset: Dataset, batch_size: int, **kwargs):
        super().__init__(dataset, batch_size, **kwargs)
        self.lengths = dataset_modality_lengths(dataset)

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return modality_length_grouped_indices(self.lengths, self.batch_size, self.global_batch // self.batch_size,
                                               generator)
