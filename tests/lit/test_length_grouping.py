"""LLaVA's modality-length grouping (deco.lit.length_grouping): hand-checked rules, one modality per global
batch, the same micro-batches on any device count, and the lengths of real LLaVA JSON records."""

from __future__ import annotations

import torch
from conftest import write_llava_corpus

from deco.data.llava_json import LlavaJsonDataset
from deco.lit.length_grouping import (ModalityLengthSampler, dataset_modality_lengths,
                                      modality_length_grouped_indices, record_modality_length,
                                      split_to_even_chunks)


class Lengths(torch.utils.data.Dataset):
    def __init__(self, lengths):
        self.modality_lengths = list(lengths)

    def __len__(self):
        return len(self.modality_lengths)

    def __getitem__(self, i):
        return i


def test_split_to_even_chunks_by_hand():
    # longest first, each to the shortest chunk: 0 -> A (10), 1 -> B (8), 2 -> B (11, full), 3 -> A
    assert split_to_even_chunks([0, 1, 2, 3], [10, 8, 3, 1], 2) == [[0, 3], [1, 2]]
    # not divisible: round-robin, as LLaVA
    assert split_to_even_chunks([0, 1, 2], [5, 5, 5], 2) == [[0, 2], [1]]


def test_each_global_batch_is_one_modality_and_sorted_into_even_micro_batches():
    gen = torch.Generator().manual_seed(0)
    lengths = [int(x) for x in torch.randint(1, 200, (64,), generator=gen)]
    lengths = [x if i % 3 else -x for i, x in enumerate(lengths)]  # a third text-only
    order = modality_length_grouped_indices(lengths, batch_size=4, world_size=2, generator=gen)
    assert sorted(order) == list(range(64))
    megabatches = [order[i:i + 8] for i in range(0, 64, 8)]
    mixed = [m for m in megabatches if len({lengths[i] > 0 for i in m}) > 1]
    assert len(mixed) <= 1  # only the merged leftovers of the two modalities may mix
    for m in megabatches:
        if m in mixed:
            continue
        first, second = m[:4], m[4:]
        by_length = sorted(m, key=lambda i: abs(lengths[i]), reverse=True)
        assert by_length[0] in first and by_length[1] in second  # the two longest lead the two micro-batches


def test_same_micro_batches_for_any_device_count():
    lengths = [(7 * i) % 53 + 1 if i % 4 else -((5 * i) % 31 + 1) for i in range(96)]
    dataset = Lengths(lengths)

    def micro_batches(devices, accumulate):
        per_rank = []
        for rank in range(devices):
            sampler = ModalityLengthSampler(dataset, 4, num_replicas=devices, rank=rank, accumulate=accumulate, seed=3)
            ids = list(sampler)
            per_rank.append([ids[i:i + 4] for i in range(0, len(ids), 4)])
        steps = len(per_rank[0]) // accumulate
        return [[per_rank[r][s * accumulate + a] for r in range(devices) for a in range(accumulate)]
                for s in range(steps)]

    one = micro_batches(1, 4)
    assert one == micro_batches(2, 2) == micro_batches(4, 1)
    assert len(one) == 96 // 16
    for step in one:  # a global batch of 16 with one modality, unless it is the leftovers' batch
        assert len({lengths[i] > 0 for b in step for i in b}) == 1 or step is one[0] or step is one[-1]


def test_epochs_differ_and_repeat_with_the_seed():
    dataset = Lengths([i + 1 if i % 2 else -(i + 1) for i in range(32)])
    a = ModalityLengthSampler(dataset, 4, seed=1)
    b = ModalityLengthSampler(dataset, 4, seed=1)
    first = list(a)
    assert first == list(b)
    a.set_epoch(1)
    assert list(a) != first


def test_lengths_of_llava_records(tmp_path, tok, proc):
    records = write_llava_corpus(tmp_path)
    assert record_modality_length({"image": "x.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A red circle."}]}) == 7
    assert record_modality_length({"conversations": [{"from": "human", "value": "Hi there"},
                                                     {"from": "gpt", "value": "Hello."}]}) == -3
    ds = LlavaJsonDataset(str(tmp_path / "data.json"), tokenizer=tok, image_processor=proc, template="vicuna_v1",
                          max_length=256)
    expected = [record_modality_length(r) for r in records]
    assert dataset_modality_lengths(ds) == expected
    assert sum(x < 0 for x in expected) == 2
