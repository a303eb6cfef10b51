"""POPE and MME scored by deco and by transcriptions of the reference scripts, on crafted answers.

References: LLaVA llava/eval/eval_pope.py (c121f04); MME's eval_tool/calculation.py (as LLaVA's
convert_answer_to_mme.py feeds it: one "image\\tquestion\\tgt\\tanswer" line per question, two per image).
"""

from __future__ import annotations

import pytest

from deco.eval.metrics import MMEScore, YesNoMetrics

# ------------------------------------------------------------------ transcriptions


def ref_eval_pope(texts, labels):
    """eval_pope.eval_pope: (f1, acc, precision, recall, yes_ratio)."""
    preds = []
    for text in texts:
        if text.find(".") != -1:
            text = text.split(".")[0]
        text = text.replace(",", "")
        words = text.split(" ")
        preds.append(0 if ("No" in words or "not" in words or "no" in words) else 1)
    label_list = [0 if label == "no" else 1 for label in labels]
    tp = sum(p == 1 and t == 1 for p, t in zip(preds, label_list))
    fp = sum(p == 1 and t == 0 for p, t in zip(preds, label_list))
    tn = sum(p == 0 and t == 0 for p, t in zip(preds, label_list))
    fn = sum(p == 0 and t == 1 for p, t in zip(preds, label_list))
    precision = float(tp) / float(tp + fp)
    recall = float(tp) / float(tp + fn)
    f1 = 2 * precision * recall / (precision + recall)
    return f1, (tp + tn) / (tp + tn + fp + fn), precision, recall, preds.count(1) / len(preds)


def ref_mme_parse(pred_ans):
    if pred_ans in ["yes", "no"]:
        return pred_ans
    prefix = pred_ans[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def ref_mme_task_score(lines):
    """calculation.py process_result for one subtask file: acc * 100 + acc_plus * 100."""
    chunks = [lines[i:i + 2] for i in range(0, len(lines), 2)]
    gts, preds, plus = [], [], 0
    for img_items in chunks:
        assert len(img_items) == 2
        right = 0
        for item in img_items:
            _, _, gt_ans, pred_ans = item.split("\t")
            gt_ans, pred_ans = gt_ans.lower(), ref_mme_parse(pred_ans.lower())
            gts.append(gt_ans)
            preds.append(pred_ans)
            right += gt_ans == pred_ans
        plus += right == 2
    acc = sum(g == p for g, p in zip(gts, preds)) / len(gts)  # accuracy_score, "other" never equals a label
    return acc * 100 + plus / len(chunks) * 100


# ------------------------------------------------------------------ crafted answer sets

POPE_CASES = [  # (answer, label)
    ("Yes", "yes"), ("No", "no"), ("yes", "no"), ("no", "yes"), ("Yes, there is a dog.", "yes"),
    ("No, there is not.", "no"), ("There is a dog.", "no"), ("not sure", "yes"), ("I do not see one", "no"),
    ("Yes. No.", "yes"), ("No.Yes", "no"), ("NO", "no"), ("Nope", "no"), ("no,", "no"), ("yes,no", "yes"),
    ("There is no cat", "no"), ("not", "yes"), ("Y", "yes"), ("", "no"), ("None", "no"), ("Yes no", "yes"),
    ("nothing", "no"), ("It is not.", "no"), ("Yes!", "yes"),
]


def test_pope_same_as_eval_pope_per_split():
    splits = ["random", "popular", "adversarial"]
    metric = YesNoMetrics(splits)
    per_split = {s: POPE_CASES[k::3] for k, s in enumerate(splits)}
    for split, cases in per_split.items():
        metric.update([a for a, _ in cases], [lab for _, lab in cases], [split] * len(cases))
    out = {k: v.item() for k, v in metric.compute().items()}
    f1s = []
    for split, cases in per_split.items():
        f1, acc, precision, recall, yes_ratio = ref_eval_pope([a for a, _ in cases], [lab for _, lab in cases])
        f1s.append(f1)
        assert out[f"{split}/f1"] == pytest.approx(100 * f1)
        assert out[f"{split}/accuracy"] == pytest.approx(100 * acc)
        assert out[f"{split}/precision"] == pytest.approx(100 * precision)
        assert out[f"{split}/recall"] == pytest.approx(100 * recall)
        assert out[f"{split}/yes_ratio"] == pytest.approx(100 * yes_ratio)
    assert out["f1"] == pytest.approx(100 * sum(f1s) / 3)  # the paper's POPE number


MME_CASES = {  # subtask -> [(answer, gt)] two per image
    "existence": [("Yes", "Yes"), ("No", "No"), ("Yes.", "Yes"), ("yes", "No"), ("No, it is not", "No"),
                  ("Yes", "Yes")],
    "count": [("maybe", "Yes"), ("no", "No"), ("...no", "No"), ("Nope", "No"), (" yes", "Yes"), ("YES", "Yes")],
    "OCR": [("The answer is yes", "Yes"), ("not", "No"), ("Yes, no", "Yes"), ("noyes", "No"), ("", "No"),
            ("y", "Yes")],
    "code_reasoning": [("Yes", "Yes"), ("No", "Yes"), ("yes it is", "Yes"), ("no.", "No")],
}


def test_mme_same_as_calculation_py():
    metric = MMEScore()
    image = 0
    expected = {}
    for category, cases in MME_CASES.items():
        ids = []
        for k in range(len(cases)):
            ids.append(image + k // 2)
        image += len(cases) // 2
        metric.update([a for a, _ in cases], [g.lower() for _, g in cases], [category] * len(cases), ids)
        # convert_answer_to_mme.py writes "file\tprompt\tgt\tanswer\n"; calculation.py reads it with readlines()
        lines = [f"{k // 2}.png\tQ? Please answer yes or no.\t{g}\t{a}\n" for k, (a, g) in enumerate(cases)]
        expected[category] = ref_mme_task_score(lines)
    out = {k: v.item() for k, v in metric.compute().items()}
    for category, score in expected.items():
        assert out[f"{category}/score"] == pytest.approx(score), category
    assert out["perception"] == pytest.approx(sum(v for k, v in expected.items() if k != "code_reasoning"))
    assert out["cognition"] == pytest.approx(expected["code_reasoning"])
