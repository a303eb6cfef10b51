"""Held-out shapes questions scored as `deco.evaluate`'s shapes benchmarks do (POPE yes/no, first word,
Acc@IoU>=0.5), for any callable that turns a batch of scenes into visual tokens (symbolic grids or pixels)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from deco.data.collate import Collator
from deco.data.conversation import tokenize_prompt
from deco.data.shapes import make_sample
from deco.eval.parsing import box_iou, parse_box, parse_yes_no_pope

TASK_SEED = 50_000  # the shapes benchmarks' held-out world


def score_answer(task: str, prediction: str, meta: dict) -> float:
    if task == "existence":
        return float(parse_yes_no_pope(prediction)[0] == meta["answer"].rstrip(".").lower())
    if task == "attribute":
        words = prediction.strip().split()
        return float(bool(words) and words[0].strip(".,").lower() == meta["answer"].rstrip(".").lower())
    if task == "grounding":
        box = parse_box(prediction)
        return float(box is not None and box_iou(box, meta["box"]) >= 0.5)
    return float(prediction.strip() == meta["answer"])  # caption: exact match


@torch.no_grad()
def shapes_accuracy(model, tokenizer, visual_tokens: Callable[[list], torch.Tensor], template: str,
                    tasks: Sequence[str] = ("existence", "attribute", "grounding"), num: int = 100,
                    batch_size: int = 50, seed: int = TASK_SEED) -> dict[str, float]:
    """Accuracy (%) per task on `num` held-out questions each; `visual_tokens(scenes) -> (b, q, d)`."""
    left_pad = Collator(tokenizer.pad_token_id, padding_side="left")  # generation prompts
    was_training = model.training
    model.eval()
    scores: dict[str, float] = {}
    for task in tasks:
        hits = 0.0
        for start in range(0, num, batch_size):
            samples = [make_sample(seed, i, (task,)) for i in range(start, min(num, start + batch_size))]
            batch = left_pad([{"input_ids": tokenize_prompt(meta["question"], tokenizer, template)}
                              for _, _, meta in samples])
            tokens = visual_tokens([scene for scene, _, _ in samples])
            out = model.generate(batch["input_ids"], batch["attention_mask"], image_tokens=tokens, max_new_tokens=32 if task == "grounding" else 8,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(out, skip_special_tokens=True)
            hits += sum(score_answer(task, t, meta) for t, (_, _, meta) in zip(texts, samples))
        scores[task] = 100.0 * hits / num
    model.train(was_training)
    return scores
