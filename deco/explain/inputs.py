"""Teacher-forced explanation inputs: one image, a prompt and the target text whose relevance is explained.

An `ExplainInput` holds the token ids of prompt + target (one `<image>` placeholder), the mask of the
target tokens whose logits form the explained score, the preprocessed pixels and the image as the model
sees it (after padding to a square and resizing), on which the relevance maps are drawn. It is built from
a user's image and text (`build_input`: the target is the answer of a one-turn conversation in the
checkpoint's template; with the `plain` pretraining template it is a caption) or from any dataset item
that follows deco's contract (`input_from_item`: the target is the labelled answer). Tokens that carry no
content (end of sequence, whitespace-only pieces) are not targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deco.data.conversation import tokenize_conversation
from deco.data.image import process_image
from deco.data.tokenizer import IGNORE_INDEX, IMAGE_TOKEN

DEFAULT_QUESTION = "Describe the image briefly."


@dataclass
class ExplainInput:
    input_ids: torch.Tensor  # t (prompt + target, one <image> placeholder)
    target_mask: torch.Tensor  # t bool: tokens whose logits are explained
    pixel_values: torch.Tensor  # 3 S S
    image: Image.Image  # S x S RGB, what the model sees (for overlays)
    text: str  # the target text
    question: str | None = None
    meta: dict = field(default_factory=dict)

    def target_tokens(self, tokenizer) -> list[str]:
        ids = self.input_ids[self.target_mask].tolist()
        return [tokenizer.decode([i]) for i in ids]


def pixels_to_image(pixel_values: torch.Tensor, image_processor) -> Image.Image:
    """Undo the processor's normalisation: 3 S S float -> S x S RGB PIL image."""
    mean = torch.tensor(image_processor.image_mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(image_processor.image_std, dtype=torch.float32)[:, None, None]
    rgb = (pixel_values.detach().float().cpu() * std + mean) / float(getattr(image_processor, "rescale_factor", 1 / 255))
    arr = rgb.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def content_target_mask(input_ids: torch.Tensor, labels: torch.Tensor, tokenizer) -> torch.Tensor:
    """labels != IGNORE_INDEX, minus EOS and whitespace-only tokens (t bool)."""
    mask = labels != IGNORE_INDEX
    eos = tokenizer.eos_token_id
    for i in mask.nonzero().flatten().tolist():
        tid = int(input_ids[i])
        if tid == eos or not tokenizer.decode([tid]).strip():
            mask[i] = False
    return mask


def _check_target(mask: torch.Tensor, text: str) -> None:
    if not bool(mask.any()):
        raise ValueError(f"target text {text!r} has no content token to explain")


def build_input(
    tokenizer,
    image_processor,
    image: Image.Image | str | Path,
    text: str,
    question: str | None = None,
    template: str = "vicuna_v1",
    image_aspect: str = "pad",
    max_length: int | None = None,
) -> ExplainInput:
    """Teacher-forced input for `text` given `image` (a PIL image or a path) and an optional question.

    vicuna_v1: "USER: <image>\\n{question} ASSISTANT: {text}" (question default: a captioning request);
    plain: "<image>{text}" (the pretraining template has no question).
    """
    if isinstance(image, (str, Path)):
        path = Path(image).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"image={image}: no such file")
        image = Image.open(path)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string (the target to explain), got {text!r}")
    question = DEFAULT_QUESTION if question is None else question
    conversations = [
        {"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"},
        {"from": "gpt", "value": text},
    ]
    tok = tokenize_conversation(conversations, tokenizer, template, max_length)
    pixel_values = process_image(image, image_processor, image_aspect)
    mask = content_target_mask(tok["input_ids"], tok["labels"], tokenizer)
    _check_target(mask, text)
    return ExplainInput(
        input_ids=tok["input_ids"],
        target_mask=mask,
        pixel_values=pixel_values,
        image=pixels_to_image(pixel_values, image_processor),
        text=text,
        question=None if template == "plain" else question,
        meta={"template": template},
    )


def with_question(inp: ExplainInput, tokenizer, question: str) -> ExplainInput:
    """The same image and target text asked with another `question` (same template; the pixels are reused)."""
    template = inp.meta.get("template", "vicuna_v1")
    conversations = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"}, {"from": "gpt", "value": inp.text}]
    tok = tokenize_conversation(conversations, tokenizer, template)
    mask = content_target_mask(tok["input_ids"], tok["labels"], tokenizer)
    _check_target(mask, inp.text)
    return ExplainInput(input_ids=tok["input_ids"], target_mask=mask, pixel_values=inp.pixel_values, image=inp.image,
                        text=inp.text, question=None if template == "plain" else question, meta={"template": template})


def input_from_item(item: dict, tokenizer, image_processor, text: str | None = None) -> ExplainInput:
    """ExplainInput from a dataset item (input_ids, labels, pixel_values): the labelled answer is the target."""
    for key in ("input_ids", "labels", "pixel_values"):
        if key not in item:
            raise ValueError(f"dataset item has no '{key}' (keys: {sorted(item)})")
    mask = content_target_mask(item["input_ids"], item["labels"], tokenizer)
    if text is None:
        text = tokenizer.decode(item["input_ids"][item["labels"] != IGNORE_INDEX].tolist(), skip_special_tokens=True).strip()
    _check_target(mask, text)
    meta = {k: v for k, v in item.items() if k not in ("input_ids", "labels", "pixel_values", "attention_mask")}
    return ExplainInput(
        input_ids=item["input_ids"],
        target_mask=mask,
        pixel_values=item["pixel_values"],
        image=pixels_to_image(item["pixel_values"], image_processor),
        text=text,
        meta=meta,
    )
