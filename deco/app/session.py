"""What the relevance explorer does for one model, without any UI: read an image, answer, explain, draw.

A `Slot` is one loaded model with its own lock (one request at a time per model; a request waits for it
only until its deadline) and the template and image aspect it was trained with. `answer` generates with `MLLM.generate` (greedy, the prompt of
`deco.data.conversation`); `explain_text` builds the teacher-forced input with `deco.explain.inputs`
and runs `deco.explain.methods.explain` (per-token rows), so the app and `python -m deco.explain`
compute the same maps on one code path. Bad input (an unreadable image, an empty or too long text, an
answer with nothing to explain) raises `AppInputError` with a message for the user. The pictures are
drawn with `deco.explain.render`. Imports neither Gradio nor Hydra.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from deco.data.conversation import tokenize_prompt
from deco.data.image import process_image
from deco.explain.inputs import ExplainInput, build_input
from deco.explain.methods import METHODS, Relevance, explain
from deco.explain.render import overlay_with_bar, render_t2q
from deco.models.formats.common import LoadedModel
from deco.relevance.vit import VISION_RELEVANCE


class AppInputError(ValueError):
    """Input the app cannot use; the message is shown to the user as is."""


@dataclass
class Slot:
    """One model of the explorer."""

    loaded: LoadedModel
    name: str  # shown above its column, e.g. "avgpool2_16 (last.ckpt)"
    template: str
    image_aspect: str
    lock: threading.Lock
    note: str = ""  # shown under the name, e.g. that the projector is untrained

    @classmethod
    def of(cls, loaded: LoadedModel, name: str, template: str | None = None, image_aspect: str | None = None,
           note: str = ""):
        stage = loaded.config.get("stage") or {}
        return cls(loaded, name, template or stage.get("template") or "vicuna_v1",
                   image_aspect or loaded.config.get("image_aspect", "pad"), threading.Lock(), note)


@contextlib.contextmanager
def _turn(slot: Slot, deadline: float | None):
    """Hold the slot's lock; waiting for it ends at `deadline` (time.monotonic) with a message, never forever."""
    timeout = -1 if deadline is None else max(0.0, deadline - time.monotonic())
    if not slot.lock.acquire(timeout=timeout):
        raise AppInputError(f"{slot.name} is busy with another request past this one's time limit; try again.")
    try:
        yield
    finally:
        slot.lock.release()


@dataclass
class View:
    """One explained answer: what the pictures are drawn from (kept in the UI's session state)."""

    rel: Relevance
    inp: ExplainInput
    answer: str


def read_image(source, max_pixels: int = 64_000_000) -> Image.Image:
    """A user's image (path or PIL image) as RGB; AppInputError when it cannot be read."""
    if source is None:
        raise AppInputError("Upload an image first.")
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    path = Path(str(source))
    try:
        with Image.open(path) as img:
            if img.width * img.height > max_pixels:
                raise AppInputError(f"The image is {img.width}x{img.height} pixels; the limit is {max_pixels:,}.")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as err:
        if isinstance(err, AppInputError):
            raise
        raise AppInputError(f"Could not read '{path.name}' as an image ({type(err).__name__}). "
                            "Upload a PNG, JPEG, WebP, GIF or BMP file.") from None


def check_text(text: str, tokenizer, max_tokens: int, what: str) -> str:
    """The stripped text, or AppInputError when it is longer than `max_tokens` tokens."""
    text = (text or "").strip()
    n = len(tokenizer(text, add_special_tokens=False).input_ids) if text else 0
    if n > max_tokens:
        raise AppInputError(f"The {what} is {n} tokens long; the limit is {max_tokens} (max_text_tokens=...).")
    return text


@torch.no_grad()
def answer(slot: Slot, image: Image.Image, question: str, max_new_tokens: int = 24,
           deadline: float | None = None) -> str:
    """The model's greedy answer to `question` about `image` (one request at a time per slot)."""
    loaded = slot.loaded
    tok = loaded.tokenizer
    param = next(loaded.model.parameters())
    ids = tokenize_prompt(question, tok, slot.template)[None].to(param.device)
    pixels = process_image(image, loaded.image_processor, slot.image_aspect)[None].to(param.device, param.dtype)
    with _turn(slot, deadline):
        new = loaded.model.generate(ids, None, pixels, max_new_tokens=max_new_tokens,
                                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return tok.decode(new[0].cpu().tolist(), skip_special_tokens=True).strip()


def explain_text(slot: Slot, image: Image.Image, question: str, text: str, method: str = "rgae",
                 vision_relevance: str = "none", deadline: float | None = None) -> View:
    """Relevance of `text` as the answer to `question` (teacher-forced), per token, with `method`."""
    if method not in METHODS:
        raise AppInputError(f"Unknown method '{method}'; choose one of: {', '.join(METHODS)}.")
    if vision_relevance not in VISION_RELEVANCE:
        raise AppInputError(f"Unknown vision relevance '{vision_relevance}'; choose one of: {', '.join(VISION_RELEVANCE)}.")
    loaded = slot.loaded
    try:
        inp = build_input(loaded.tokenizer, loaded.image_processor, image, text, question or None, slot.template,
                          slot.image_aspect)
    except ValueError as err:  # an empty target, or one with no content token
        raise AppInputError(f"Nothing to explain: {err}.") from None
    with _turn(slot, deadline):
        rel = explain(loaded.model, inp, method, loaded.tokenizer, per_token=True, vision_relevance=vision_relevance)
    return View(rel=rel, inp=inp, answer=text)


# ---------------------------------------------------------------------------------------------- pictures


def t2i_picture(view: View, token: int | None = None, size: int = 336) -> Image.Image:
    """R_t2i of the whole text (token=None) or of one target token, over the image the model saw, with its
    colour bar (relevance / mean, the scale of every relevance picture: deco.explain.scale)."""
    rel = view.rel.r_t2i if token is None else view.rel.r_t2i_tokens[token]
    return overlay_with_bar(view.inp.image, rel, size=size)


def q2i_picture(view: View, query: int, size: int = 336) -> Image.Image:
    """R_q2i of one query token (the patches it reads), over the image, on R_q2i's log scale with its bar."""
    rel = view.rel
    return overlay_with_bar(view.inp.image, rel.r_q2i[query].reshape(rel.grid, rel.grid), size=size, log_scale=True)


def t2q_picture(view: View) -> Image.Image:
    """R_t2q bars, per-token heatmap and query grid."""
    rel = view.rel
    return render_t2q(rel.r_t2q, rel.r_t2q_tokens, rel.target_tokens, f"{rel.method}: R_t2q over {rel.num_queries} queries",
                      spatial=rel.spatial_queries)


def query_choices(view: View) -> list[tuple[str, int]]:
    """(label, query index), most text-relevant first: what the query selector lists."""
    r = view.rel.r_t2q
    order = torch.argsort(r, descending=True).tolist()
    return [(f"q{j} ({float(r[j]):.3g})", j) for j in order]


def token_choices(view: View) -> list[tuple[str, int]]:
    """(label, target-token index) for the answer-word selector; IG has one summed row only."""
    tokens = view.rel.target_tokens if view.rel.r_t2q_tokens.shape[0] == len(view.rel.target_tokens) else ["(all)"]
    return [(f"{k}: {t.strip() or repr(t)}", k) for k, t in enumerate(tokens)]
