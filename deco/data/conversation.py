"""LLaVA-1.5 conversation templates and the tokenization that turns a conversation into (input_ids, labels).

Two templates, as in LLaVA-1.5 (llava/conversation.py): `plain` for projector pretraining
("<image>" + caption + "\\n", loss on the caption) and `vicuna_v1` for instruction tuning
("<system> USER: <image>\\n{q} ASSISTANT: {a}</s>USER: ..."). The sequence is built by
tokenizing segment by segment and concatenating, so the label mask is exact by
construction (loss on the answer tokens and the `</s>` that ends each answer; everything
else is IGNORE_INDEX) and needs none of LLaVA's length-counting heuristics. The `<image>`
placeholder is always one token (the tokenizer's `<image>` id); the model replaces it
with the projector's output tokens. Segment boundaries are placed before a space, where
a byte-level BPE splits anyway, so for such tokenizers the ids equal those of the whole
string; SentencePiece tokenizers that add their own prefix space get that space removed
from the segment first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deco.data.tokenizer import IGNORE_INDEX, IMAGE_TOKEN


class SampleTooLong(ValueError):
    """A tokenized sample exceeds max_length (datasets skip it and count)."""


@dataclass(frozen=True)
class Template:
    name: str
    system: str
    roles: tuple[str, str]  # (human role, assistant role)
    sep: str
    sep2: str | None
    image_first: bool = True  # "<image>\n{question}" (LLaVA) or "{question}\n<image>" (question first)


TEMPLATES: dict[str, Template] = {
    "plain": Template(name="plain", system="", roles=("", ""), sep="\n", sep2=None),
    "vicuna_v1": Template(
        name="vicuna_v1",
        system=(
            "A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions."
        ),
        roles=("USER", "ASSISTANT"),
        sep=" ",
        sep2="</s>",
    ),
}
# The question before the image: visual tokens then attend to the question (causal attention), which a small
# LLM needs to bind colour with shape (../experiments/zoo/README.md measures it); the embedded zoo uses it.
TEMPLATES["vicuna_v1_qfirst"] = Template(**{**TEMPLATES["vicuna_v1"].__dict__, "name": "vicuna_v1_qfirst",
                                            "image_first": False})


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise ValueError(f"unknown conversation template {name!r}; allowed: {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def _adds_prefix_space(tokenizer) -> bool:
    """True for SentencePiece-style tokenizers that prepend '▁' to every encoded text."""
    cached = getattr(tokenizer, "_deco_prefix_space", None)
    if cached is None:
        toks = tokenizer.convert_ids_to_tokens(tokenizer.encode("a", add_special_tokens=False))
        cached = bool(toks) and toks[0].startswith("\u2581")
        try:
            tokenizer._deco_prefix_space = cached
        except AttributeError:  # tokenizer objects that refuse new attributes: recompute each time
            pass
    return cached


def _encode(text: str, tokenizer) -> list[int]:
    if not text:
        return []
    if text.startswith(" ") and _adds_prefix_space(tokenizer):
        text = text[1:]  # the tokenizer adds the space itself ("▁Red")
    return tokenizer.encode(text, add_special_tokens=False)


def _image_token_id(tokenizer) -> int:
    tid = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if tid is None or tid == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {IMAGE_TOKEN!r} token; load it with deco.data.tokenizer.load_tokenizer")
    return tid


def _check_turns(conversations: list[dict]) -> list[dict]:
    """Validate roles; skip a leading assistant turn (as LLaVA's preprocess_v1 does)."""
    for k, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise ValueError(f"conversation turn {k} must be a dict with keys 'from' and 'value', got {turn!r}")
    turns = list(conversations)
    if turns and turns[0]["from"] != "human":
        turns = turns[1:]
    if not turns or len(turns) % 2:
        raise ValueError(f"conversation needs alternating human/gpt turns ending with gpt, got {len(turns)} turns")
    for k, turn in enumerate(turns):
        want = "human" if k % 2 == 0 else "gpt"
        if turn["from"] != want:
            raise ValueError(f"conversation turn {k} should be from {want!r}, got {turn['from']!r}")
    return turns


def _move_image_first(value: str) -> tuple[str, bool]:
    """LLaVA preprocess_multimodal: "<image>\\n" + rest.strip(). Returns (text without image, had_image)."""
    if IMAGE_TOKEN not in value:
        return value, False
    return value.replace(IMAGE_TOKEN, "").strip(), True


def tokenize_conversation(
    conversations: list[dict], tokenizer, template: str = "vicuna_v1", max_length: int | None = None
) -> dict[str, torch.Tensor]:
    """Tokenize a LLaVA conversation ([{from: human|gpt, value: str}, ...]) into input_ids and labels (1D long).

    Raises SampleTooLong when the sequence (counting `<image>` as one token) exceeds max_length.
    """
    tpl = get_template(template)
    turns = _check_turns(conversations)
    image_id = _image_token_id(tokenizer)
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("tokenizer needs bos and eos tokens")
    ids: list[int] = [tokenizer.bos_token_id]
    labels: list[int] = [IGNORE_INDEX]

    def add(seg_ids: list[int], train: bool) -> None:
        ids.extend(seg_ids)
        labels.extend(seg_ids if train else [IGNORE_INDEX] * len(seg_ids))

    n_images = sum(IMAGE_TOKEN in t["value"] for t in turns if t["from"] == "human")
    if n_images > 1:
        raise ValueError(f"conversation has {n_images} human turns with {IMAGE_TOKEN!r}; one image is supported")

    if tpl.name == "plain":
        # Pretraining: the question is dropped; "<image>" + caption + "\n", loss on caption + "\n".
        if len(turns) != 2 or IMAGE_TOKEN not in turns[0]["value"]:
            raise ValueError(f"template 'plain' needs one human turn containing {IMAGE_TOKEN!r} and one gpt turn")
        add([image_id], False)
        add(_encode(turns[1]["value"] + tpl.sep, tokenizer), True)
    else:
        user, assistant = tpl.roles
        prefix = tpl.system + tpl.sep  # "<system> "
        for k in range(0, len(turns), 2):
            question, has_image = _move_image_first(turns[k]["value"])
            answer = turns[k + 1]["value"]
            if has_image:
                for segment in _image_prompt_segments(tpl, prefix, question):
                    add(_encode(segment, tokenizer) if segment is not None else [image_id], False)
            else:
                add(_encode(prefix + f"{user}: {question}{tpl.sep}{assistant}:", tokenizer), False)
            # The space after "ASSISTANT:" belongs to the answer's first token (" Red" / "▁Red").
            add(_encode(" " + answer, tokenizer), True)
            add([tokenizer.eos_token_id], True)  # sep2 "</s>" ends each answer
            prefix = ""  # later rounds start right after "</s>": "USER: ..."
    if max_length is not None and len(ids) > max_length:
        raise SampleTooLong(f"sample has {len(ids)} tokens > max_length={max_length}")
    return {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long)}


def _image_prompt_segments(tpl: Template, prefix: str, question: str) -> list[str | None]:
    """The user turn with an image as text segments, None standing for the `<image>` placeholder."""
    user, assistant = tpl.roles
    if tpl.image_first:
        return [prefix + f"{user}: ", None, f"\n{question}{tpl.sep}{assistant}:"]
    return [prefix + f"{user}: {question}\n", None, f"{tpl.sep}{assistant}:"]


def build_prompt(question: str, template: str = "vicuna_v1", with_image: bool = True) -> str:
    """The generation prompt as a string (vicuna_v1 ends with "ASSISTANT:", no trailing space)."""
    tpl = get_template(template)
    question = question.replace(IMAGE_TOKEN, "").strip()
    if tpl.name == "plain":
        return IMAGE_TOKEN if with_image else ""
    user, assistant = tpl.roles
    if with_image:
        return "".join(IMAGE_TOKEN if seg is None else seg for seg in _image_prompt_segments(tpl, tpl.system + tpl.sep, question))
    return f"{tpl.system}{tpl.sep}{user}: {question}{tpl.sep}{assistant}:"


def tokenize_prompt(question: str, tokenizer, template: str = "vicuna_v1", with_image: bool = True) -> torch.Tensor:
    """BOS + prompt ids (1D long), built with the same segments as tokenize_conversation."""
    tpl = get_template(template)
    ids = [tokenizer.bos_token_id]
    if tpl.name == "plain":
        if with_image:
            ids.append(_image_token_id(tokenizer))
        return torch.tensor(ids, dtype=torch.long)
    question = question.replace(IMAGE_TOKEN, "").strip()
    user, assistant = tpl.roles
    prefix = tpl.system + tpl.sep
    if with_image:
        for segment in _image_prompt_segments(tpl, prefix, question):
            ids += _encode(segment, tokenizer) if segment is not None else [_image_token_id(tokenizer)]
    else:
        ids += _encode(prefix + f"{user}: {question}{tpl.sep}{assistant}:", tokenizer)
    return torch.tensor(ids, dtype=torch.long)
