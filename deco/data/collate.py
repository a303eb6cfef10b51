"""Batch collation for LLaVA-style samples: pad token sequences, stack images, pass other keys through.

`Collator` pads `input_ids` with the tokenizer's pad id and `labels` with IGNORE_INDEX
(-100), truncates to `max_length` (as LLaVA's DataCollatorForSupervisedDataset), builds
the attention mask from the true lengths (not from `input_ids != pad`, which would break
when pad == unk or pad == eos appears inside a sequence), and stacks `pixel_values`;
text-only samples (`pixel_values=None`) get a zeros image like LLaVA. Right padding is for
training; left padding (`padding_side="left"`) is for batched generation, where every
prompt must end at the last position.
"""

from __future__ import annotations

import torch

from deco.data.tokenizer import IGNORE_INDEX

_PADDED = ("input_ids", "labels", "attention_mask", "pixel_values")


class Collator:
    def __init__(
        self,
        pad_token_id: int,
        padding_side: str = "right",
        max_length: int | None = None,
        image_size: int | None = None,
    ):
        """image_size: side S of the zeros image for an all-text batch (else pixel_values is None)."""
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        if pad_token_id is None:
            raise ValueError("pad_token_id is None: the tokenizer needs a pad token (see load_tokenizer)")
        if max_length is not None and max_length <= 0:
            raise ValueError(f"max_length must be positive or None, got {max_length}")
        self.pad_token_id = int(pad_token_id)
        self.padding_side = padding_side
        self.max_length = max_length
        self.image_size = image_size

    def _pad(self, seqs: list[torch.Tensor], value: int) -> torch.Tensor:
        t = max(len(s) for s in seqs)
        out = torch.full((len(seqs), t), value, dtype=torch.long)  # b t
        for i, s in enumerate(seqs):
            if self.padding_side == "right":
                out[i, : len(s)] = s
            elif len(s):
                out[i, t - len(s) :] = s
        return out

    def __call__(self, samples: list[dict]) -> dict:
        if not samples:
            raise ValueError("Collator got an empty list of samples")
        for k, s in enumerate(samples):
            if "input_ids" not in s:
                raise ValueError(f"sample {k} has no 'input_ids' (keys: {sorted(s)})")
        ids = [torch.as_tensor(s["input_ids"], dtype=torch.long).reshape(-1) for s in samples]
        if self.max_length is not None:
            # Right truncation keeps the prompt start (and the image token) as LLaVA does.
            ids = [x[: self.max_length] for x in ids]
        batch = {"input_ids": self._pad(ids, self.pad_token_id)}
        batch["attention_mask"] = self._pad([torch.ones(len(x), dtype=torch.long) for x in ids], 0)
        if any("labels" in s for s in samples):
            labels = []
            for x, s in zip(ids, samples):
                lab = s.get("labels")
                lab = torch.full_like(x, IGNORE_INDEX) if lab is None else torch.as_tensor(lab, dtype=torch.long)
                lab = lab.reshape(-1)[: len(x)]
                if len(lab) != len(x):
                    raise ValueError(f"labels length {len(lab)} != input_ids length {len(x)}")
                labels.append(lab)
            batch["labels"] = self._pad(labels, IGNORE_INDEX)
        batch["pixel_values"] = self._stack_images([s.get("pixel_values") for s in samples])
        for key in samples[0]:
            if key not in _PADDED:
                batch[key] = [s.get(key) for s in samples]
        return batch

    def _stack_images(self, images: list) -> torch.Tensor | None:
        ref = next((im for im in images if im is not None), None)
        if ref is None:  # a text-only batch: no image shape to copy
            if self.image_size is None:
                return None
            return torch.zeros(len(images), 3, self.image_size, self.image_size)
        ref = torch.as_tensor(ref)
        out = []
        for k, im in enumerate(images):
            im = torch.zeros_like(ref) if im is None else torch.as_tensor(im)
            if im.shape != ref.shape:
                raise ValueError(f"pixel_values of sample {k} has shape {tuple(im.shape)}, expected {tuple(ref.shape)}")
            out.append(im)
        return torch.stack(out)  # b 3 S S
