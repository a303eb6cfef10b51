"""RefCOCO and captions scored by deco and by the references, on crafted answers.

References: lmms-eval lmms_eval/tasks/refcoco/utils_rec.py (EvolvingLMMs-Lab/lmms-eval 75571cf; parse,
IoU, ACC@0.5), transcribed below; pycocoevalcap (COCO caption evaluation: PTBTokenizer, Bleu(4), Rouge,
Cider), called directly as its eval.py does.
"""

from __future__ import annotations

import re
import shutil

import pytest

from deco.eval.metrics import GroundingAccuracy, coco_caption_scores
from deco.eval.metrics.caption import fallback_tokenize

# ------------------------------------------------------------------ utils_rec.py transcription


def ref_parse(input_str):
    pattern = r"\[\s*(-?\d+(?:\.\d+)?),\s*(-?\d+(?:\.\d+)?),\s*(-?\d+(?:\.\d+)?),\s*(-?\d+(?:\.\d+)?)\s*\]"
    match = re.search(pattern, input_str)
    return [float(match.group(i)) for i in range(1, 5)] if match else [0, 0, 0, 0]


def ref_iou(box1, box2):
    x_left, y_top = max(box1[0], box2[0]), max(box1[1], box2[1])
    x_right, y_bottom = min(box1[2], box2[2]), min(box1[3], box2[3])
    inter = max(0, x_right - x_left) * max(0, y_bottom - y_top)
    area1 = (box1[2] - box1[0]) * (box1[3] - box1[1])
    area2 = (box2[2] - box2[0]) * (box2[3] - box2[1])
    return inter / (area1 + area2 - inter)


GT = [0.2, 0.2, 0.6, 0.6]
BOX_CASES = [
    "[0.2, 0.2, 0.6, 0.6]", "[0.2,0.2,0.6,0.6]", "The box is [0.25, 0.2, 0.6, 0.6].", "[0.4, 0.2, 0.8, 0.6]",
    "[0.2, 0.2, 0.4, 0.6]", "[0.1, 0.1, 0.5, 0.5]", "[.2, .2, .6, .6]", "[0.2 , 0.2 , 0.6 , 0.6]", "[1, 1, 2, 2]",
    "[0.6, 0.6, 0.2, 0.2]", "no box", "[0.2, 0.2, 0.6]", "[0.2, 0.2, 0.6, 0.6] [0, 0, 1, 1]", "[0, 0, 1, 1]",
    "[-0.1, 0.2, 0.6, 0.6]", "[2e-1, 0.2, 0.6, 0.6]", "(0.2, 0.2, 0.6, 0.6)", "[0.20, 0.20, 0.60, 0.60]",
    "[0.2, 0.3, 0.6, 0.7]", "[0.3, 0.3, 0.5, 0.5]",
]


def test_refcoco_same_as_lmms_eval_utils_rec():
    metric = GroundingAccuracy(0.5)
    metric.update(BOX_CASES, [GT] * len(BOX_CASES))
    out = {k: v.item() for k, v in metric.compute().items()}
    ious = [ref_iou(GT, ref_parse(text)) for text in BOX_CASES]  # aggregation: scorers[metric](gt, pred)
    assert out["accuracy"] == pytest.approx(100 * sum(i >= 0.5 for i in ious) / len(ious))
    assert out["mean_iou"] == pytest.approx(100 * sum(ious) / len(ious))
    assert 0 < out["accuracy"] < 100 and out["unparsed"] == sum(ref_parse(t) == [0, 0, 0, 0] for t in BOX_CASES)


# ------------------------------------------------------------------ captions

CAPTIONS = [  # (prediction, references)
    ("A man riding a horse on a beach.", ["A man rides a horse along the beach.", "a person on a horse at the sea"]),
    ("two dogs playing in the snow", ["Two dogs play in the snow.", "Dogs running through snow."]),
    ("A red bus.", ["A red double-decker bus on a street.", "The bus is red."]),
    ("a cat sitting on a laptop", ["A cat is sitting on a laptop keyboard.", "cat on a computer"]),
    ("People walking down a busy street", ["A crowd walks down a city street.", "Many people on a street."]),
    ("A plate of food with broccoli", ["A plate with meat and broccoli.", "Food on a white plate."]),
    ("a dog's toy", ["The dog's toy is on the floor.", "A toy for a dog."]),
    ("Don't walk sign", ["A sign that says don't walk.", "A pedestrian signal."]),
    ("A kitchen -- with a stove.", ["A kitchen with a stove and an oven.", "an empty kitchen"]),
    ("Two giraffes, standing (tall) in a field!", ["Two giraffes stand in a grassy field.", "giraffes in a field"]),
]


def _pycocoevalcap_reference(preds, refs):
    """What pycocoevalcap/eval.py's COCOEvalCap.evaluate computes (minus METEOR / SPICE)."""
    import contextlib
    import io

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in r] for i, r in enumerate(refs)})
    res = tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(preds)})
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    return {"bleu4": 100 * bleu[3], "rougeL": 100 * Rouge().compute_score(gts, res)[0],
            "cider": 100 * Cider().compute_score(gts, res)[0]}, gts, res


@pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer needs java")
def test_captions_same_as_pycocoevalcap_and_fallback_tokens_match_ptb():
    preds, refs = [p for p, _ in CAPTIONS], [r for _, r in CAPTIONS]
    expected, gts, res = _pycocoevalcap_reference(preds, refs)
    got = coco_caption_scores(preds, refs)
    assert got["tokenizer"] == "ptb"
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    # the fallback tokenizer gives PTB's tokens on these captions, so its numbers are close to COCO's
    for i, (p, r) in enumerate(CAPTIONS):
        assert fallback_tokenize(p) == res[i][0], p
        assert [fallback_tokenize(c) for c in r] == gts[i], r


def test_caption_fallback_without_java_is_recorded(monkeypatch):
    from deco.eval.metrics import caption

    monkeypatch.setattr(caption.shutil, "which", lambda name: None)
    got = coco_caption_scores(["a red bus"], [["a red bus"]])
    assert got["tokenizer"] == "fallback" and got["rougeL"] == pytest.approx(100.0)
