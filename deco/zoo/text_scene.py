"""A *text* rendering of shapes scenes: the zoo LLM's reading without any visual-token layout.

The symbolic rendering (`deco.zoo.symbolic`) hands the LLM a g x g grid in a pooling projector's raster order;
an LLM pretrained on it has learnt that layout, and a projector that emits the same layout (avgpool at g*g
tokens) is favoured over any other (issue 24's permutation control: avgpool-64 with its tokens shuffled loses
half its grounding). Vicuna never read visual tokens of any layout before LLaVA's stage 1. This rendering
gives the LLM the scene as words and numbers instead, in the `<image>` slot of the same conversations:

    "a medium red square at [0.10, 0.20, 0.35, 0.45]; a small blue circle at [0.52, 0.60, 0.67, 0.75]."

objects in a random order (seeded per sample, so neither position nor order carries a layout), each with its
size word, colour, shape and normalised box as the grounding answers print it. The LLM reads these through
its own token embeddings; a projector later has to produce tokens that the LLM reads the same way, from
pixels, with whatever token layout it likes.
"""

from __future__ import annotations

import random

import torch

from deco.data.shapes import Scene, object_with_box

SCENE_SEP = "; "


def scene_text(scene: Scene, rng: random.Random) -> str:
    """The scene's objects as text, in the order `rng` shuffles them to; ends with a full stop."""
    objects = list(scene.objects)
    rng.shuffle(objects)
    return SCENE_SEP.join(object_with_box(o) for o in objects) + "."


def scene_ids(scene: Scene, tokenizer, rng: random.Random) -> torch.Tensor:
    """(k,) token ids of `scene_text` (no BOS / EOS): what stands in the `<image>` slot."""
    ids = tokenizer.encode(" " + scene_text(scene, rng), add_special_tokens=False)
    return torch.tensor(ids, dtype=torch.long)


def pad_ids(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1D id rows to one length: ids (b, k) and valid (b, k), False on padding (masked out)."""
    k = max(len(r) for r in rows)
    ids = torch.full((len(rows), k), pad_id, dtype=torch.long)
    valid = torch.zeros(len(rows), k, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)], valid[i, : len(r)] = r, True
    return ids, valid


def text_tokens(llm, tokenizer, seed: int = 0):
    """scenes -> (b, k, d) embeddings of their text renderings, for one scene at a time (b = 1: no padding,
    which `MLLM.generate` could not mask); the object order is drawn from `seed` and the scene's position."""
    def encode(scenes: list) -> torch.Tensor:
        if len(scenes) != 1:
            raise ValueError(f"text scenes are encoded one at a time (no padding mask in generate), got {len(scenes)}")
        ids = scene_ids(scenes[0], tokenizer, random.Random(seed))
        return llm.get_input_embeddings()(ids[None])
    return encode
