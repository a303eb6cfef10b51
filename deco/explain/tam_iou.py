"""TAM's plausibility scores of per-token maps on captions: Obj-IoU, Func-IoU and F1-IoU.

Transcribed from the evaluation rule of TAM (Token Activation Map, ICCV 2025; xmed-lab/TAM, `eval.py`):

* The caption's tokens are grouped into words: a token starts a new word when it is the first one, a
  punctuation mark, or begins with a space / a word-start marker ("▁", "Ġ"); otherwise it continues the last word.
* Each word gets a type: a **noun** (matched to a category of the ground-truth segmentation, or unmatched),
  a **function word** (determiners, conjunctions, pronouns, modals...: POS tags CC DT EX MD POS PRP PRP$ UH
  WDT WP WP$ WRB), or another word. TAM tags words with NLTK's POS tagger; deco's shapes captions use a closed
  vocabulary, so `word_type` reads a fixed table (`FUNCTION_WORDS`; the nouns are the mask names).
* Each token's map (g x g) is min-max normalised to [0, 255] as uint8 (`to_uint8`), resized to the mask's
  size (bilinear, cv2.resize's default) and binarised by Otsu's threshold t (`otsu_threshold`: the first
  t maximising the between-class variance w0 w1 (mu0 - mu1)^2 of {v <= t} and {v > t}; foreground v > t).
* **Obj-IoU** of a noun with a non-empty mask: the best IoU over its tokens of foreground vs mask; nouns that
  follow a noun of the same category merge into one value (the better one).
* **Func-IoU** of a function word: with fg = the mean over the caption's nouns of their largest token
  threshold, the mean over its tokens of the fraction of the (unresized) uint8 map below fg -- a function
  word's map should stay dark.
* TAM pools every noun (function word) of the data set into one mean; F1-IoU = 2 O F / (O + F). `score_model`
  writes each caption's means (`obj_iou`, `func_iou`), so its tables average over captions instead
  (`deco.explain.summary` adds `f1_iou` of the two means).
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

FUNCTION_WORDS = frozenset(
    "a an the this that these those each every either neither some any no another all both "  # DT
    "and or but nor yet "  # CC
    "there "  # EX
    "can could may might must shall should will would "  # MD
    "i me you he him she her it we us they them its his their our your my mine "  # PRP, PRP$
    "which whatever whichever what who whom whose how when where why".split()  # WDT WP WP$ WRB
)


def word_groups(pieces: Sequence[str], decoded: Sequence[str]) -> tuple[list[str], list[list[int]]]:
    """(words, token indices of each word) from each token's raw piece and its decoded text."""
    words: list[str] = []
    groups: list[list[int]] = []
    for i, (piece, text) in enumerate(zip(pieces, decoded)):
        starts = (
            i == 0
            or (text.strip() != "" and all(ch in string.punctuation for ch in text.strip()))
            or text.startswith(" ")
            or piece[:1] in ("▁", "Ġ")
        )
        if starts:
            words.append(text.replace(" ", ""))
            groups.append([i])
        else:
            words[-1] += text.replace(" ", "")
            groups[-1].append(i)
    return words, groups


def word_type(word: str, nouns: Sequence[str]) -> str:
    """ "noun" (one of `nouns`, singular or plural), "function" or "other"."""
    w = word.lower()
    if w in nouns or (w.endswith("s") and w[:-1] in nouns):
        return "noun"
    return "function" if w in FUNCTION_WORDS else "other"


def to_uint8(rel: torch.Tensor) -> torch.Tensor:
    """Min-max normalised map x 255, truncated to uint8 as TAM stores its maps (a flat map: all 0)."""
    rel = rel.detach().double()
    norm = (rel - rel.min()) / max(float(rel.max() - rel.min()), 1e-300)  # a flat map: 0 / tiny = all 0
    return (norm * 255).to(torch.uint8)


def otsu_threshold(values: torch.Tensor) -> int:
    """Otsu's threshold of uint8 values: the first t in 0..255 maximising w0 w1 (mu0 - mu1)^2 (0 if none splits)."""
    hist = torch.bincount(values.flatten().long(), minlength=256).double()
    p = hist / hist.sum()
    levels = torch.arange(256, dtype=torch.float64)
    w0 = p.cumsum(0)
    m0 = (p * levels).cumsum(0)
    total = float((p * levels).sum())
    best, threshold = 0.0, 0
    for t in range(256):
        a = float(w0[t])
        b = 1.0 - a
        if a < 1e-7 or b < 1e-7:
            continue
        mu0, mu1 = float(m0[t]) / a, (total - float(m0[t])) / b
        sigma = a * b * (mu0 - mu1) ** 2
        if sigma > best:
            best, threshold = sigma, t
    return threshold


def _resized(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(m.shape) == tuple(size):
        return m
    up = F.interpolate(m.double()[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return up.round().to(torch.uint8)  # bilinear values stay within [0, 255]


def caption_ious(
    maps: torch.Tensor, pieces: Sequence[str], decoded: Sequence[str], masks: Mapping[str, torch.Tensor]
) -> tuple[list[float], list[float]]:
    """(Obj-IoU per noun, Func-IoU per function word) of one caption: maps k g g (one per target token),
    the tokens' pieces and decoded texts, and a bool H x W mask per noun (category)."""
    if maps.shape[0] != len(pieces):
        raise ValueError(f"{maps.shape[0]} maps for {len(pieces)} caption tokens: score captions with per-token maps")
    words, groups = word_groups(pieces, decoded)
    maps8 = [to_uint8(m) for m in maps]
    obj, func_words, noun_thresh, previous = [], [], [], None
    for word, tokens in zip(words, groups):
        kind = word_type(word, list(masks))
        label = word.lower() if word.lower() in masks else word.lower()[:-1]
        if kind == "function":
            func_words.append(tokens)
        if kind != "noun":
            previous = None
            continue
        gt = masks[label]
        ious, thresholds = [], []
        for j in tokens:
            m = _resized(maps8[j], tuple(gt.shape))
            t = otsu_threshold(m)
            pred = m > t
            thresholds.append(t)
            if gt.any():
                ious.append(float((gt & pred).sum()) / float((gt | pred).sum()))
        noun_thresh.append(max(thresholds))
        if ious:
            if previous == label and obj:  # one object named by consecutive nouns: keep the better IoU
                obj[-1] = max(obj[-1], max(ious))
            else:
                obj.append(max(ious))
        previous = label
    func = []
    if noun_thresh:
        fg = sum(noun_thresh) / len(noun_thresh)
        for tokens in func_words:
            func.append(sum(float((maps8[j].double() < fg).double().mean()) for j in tokens) / len(tokens))
    return obj, func


def caption_scores(maps: torch.Tensor, inp, tokenizer, masks: Mapping[str, torch.Tensor]) -> dict:
    """{"obj_iou", "func_iou"}: the caption's means (a key is absent when it has no noun / function word, or
    when the method has no per-token maps, e.g. ig and perturb)."""
    ids = inp.input_ids[inp.target_mask].tolist()
    if maps.shape[0] != len(ids):
        return {}
    obj, func = caption_ious(maps, tokenizer.convert_ids_to_tokens(ids), [tokenizer.decode([i]) for i in ids], masks)
    out = {}
    if obj:
        out["obj_iou"] = sum(obj) / len(obj)
    if func:
        out["func_iou"] = sum(func) / len(func)
    return out
