"""The image must reach the answer: two samples with the same text and different answers can only both be
fitted if the visual tokens carry information through the projector and the LLM."""

import math
from pathlib import Path

import torch
from omegaconf import OmegaConf
from PIL import Image

from deco.data.collate import Collator
from deco.data.conversation import tokenize_conversation
from deco.data.image import load_image_processor, process_image
from deco.data.tokenizer import load_tokenizer
from deco.models.build import build_mllm

# The embedded model, randomly initialised (configs/model/tiny_scratch.yaml): this test checks the path, not the zoo.
TINY = OmegaConf.to_container(
    OmegaConf.load(Path(__file__).resolve().parents[2] / "configs" / "model" / "tiny_scratch.yaml")
)


def test_same_question_different_images_is_learnable():
    torch.manual_seed(0)
    tokenizer, processor = load_tokenizer(None), load_image_processor(None)
    model = build_mllm(TINY, {"name": "avgpool", "query_num": 16, "mlp_depth": 2}, tokenizer)
    model.vision.requires_grad_(False)
    samples = []
    for colour, answer in (((255, 0, 0), "Yes."), ((0, 0, 255), "No.")):
        conversation = [{"from": "human", "value": "<image>\nIs the image red?"}, {"from": "gpt", "value": answer}]
        sample = tokenize_conversation(conversation, tokenizer, "vicuna_v1")
        sample["pixel_values"] = process_image(Image.new("RGB", (336, 336), colour), processor, "pad")
        samples.append(sample)
    batch = Collator(tokenizer.pad_token_id)(samples)
    # Best loss without looking at the image: each sample pays ln 2 once, where the answers part.
    text_only_floor = 2 * math.log(2) / int((batch["labels"] != -100).sum())

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(80):
        loss = model(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * text_only_floor
