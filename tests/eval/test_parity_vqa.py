"""VQAv2 / VizWiz / TextVQA / GQA scored by deco and by transcriptions of the reference scripts, on crafted answers.

References (read at the commits named in the transcriptions):
* GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py (the VQAv2 / VizWiz servers), applied to
  predictions cleaned by m4c's EvalAIAnswerProcessor as LLaVA's convert_vqav2_for_submission.py does;
* LLaVA llava/eval/m4c_evaluator.py (TextVQAAccuracyEvaluator, EvalAIAnswerProcessor), c121f04;
* LLaVA scripts/convert_gqa_for_eval.py + GQA's eval.py (prediction == answer).
"""

from __future__ import annotations

import re

import pytest

from deco.eval.metrics import ExactMatch, VQAAccuracy
from deco.eval.normalize import CONTRACTIONS, NUMBER_WORDS

# ------------------------------------------------------------------ transcriptions (independent of deco)

PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP_VQA = re.compile(r"(\d)(\,)(\d)")  # vqaEval.py
COMMA_STRIP_M4C = re.compile(r"(?<=\d)(\,)+(?=\d)")  # m4c_evaluator.py
ARTICLES = ["a", "an", "the"]


def ref_process_punctuation(in_text, comma_strip):
    out_text = in_text
    for p in PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (re.search(comma_strip, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    out_text = PERIOD_STRIP.sub("", out_text, re.UNICODE)  # sic: the flag is sub's count
    return out_text


def ref_process_digit_article(in_text):
    manual_map = dict(NUMBER_WORDS)
    out_text = []
    for word in in_text.lower().split():
        word = manual_map.setdefault(word, word)
        if word not in ARTICLES:
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in CONTRACTIONS:
            out_text[word_id] = CONTRACTIONS[word]
    return " ".join(out_text)


def ref_m4c_processor(item):
    """EvalAIAnswerProcessor.__call__."""
    item = item.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    item = item.replace("\n", " ").replace("\t", " ").strip()
    item = ref_process_punctuation(item, COMMA_STRIP_M4C)
    return ref_process_digit_article(item)


def ref_textvqa_accuracy(pred_list):
    """TextVQAAccuracyEvaluator.eval_pred_list."""
    scores = []
    for entry in pred_list:
        pred = ref_m4c_processor(entry["pred_answer"])
        answers = [ref_m4c_processor(a) for a in entry["gt_answers"]]
        assert len(answers) == 10
        gt = list(enumerate(answers))
        unique = {}
        for ua in set(answers):
            accs = []
            for g in gt:
                others = [item for item in gt if item != g]
                accs.append(min(1, float(len([item for item in others if item[1] == ua])) / 3))
            unique[ua] = sum(accs) / len(accs)
        scores.append(unique.get(pred, 0.0))
    return sum(scores) / len(scores)


def ref_vqaeval_accuracy(res, gts):
    """vqaEval.evaluate on {qid: answer} and {qid: [human answers]}; overall accuracy in [0, 1]."""
    acc_qa = []
    for qid, raw in res.items():
        answers = [{"answer": a.replace("\n", " ").replace("\t", " ").strip(), "answer_id": k + 1}
                   for k, a in enumerate(gts[qid])]
        res_ans = raw.replace("\n", " ").replace("\t", " ").strip()
        if len(set(a["answer"] for a in answers)) > 1:
            for a in answers:
                a["answer"] = ref_process_digit_article(ref_process_punctuation(a["answer"], COMMA_STRIP_VQA))
            res_ans = ref_process_digit_article(ref_process_punctuation(res_ans, COMMA_STRIP_VQA))
        gt_acc = []
        for datum in answers:
            others = [item for item in answers if item != datum]
            gt_acc.append(min(1, float(len([item for item in others if item["answer"] == res_ans])) / 3))
        acc_qa.append(float(sum(gt_acc)) / len(gt_acc))
    return sum(acc_qa) / len(acc_qa)


# ------------------------------------------------------------------ crafted answer sets

TEN = lambda *pairs: [a for a, n in pairs for _ in range(n)]  # noqa: E731
CASES = [  # (prediction, 10 human answers)
    ("Two", TEN(("2", 3), ("3", 7))),
    ("two dogs.", TEN(("2 dogs", 10))),
    ("dog.", TEN(("dog", 2), ("cat", 8))),
    ("a dog", TEN(("dog", 10))),
    ("Dog", TEN(("Dog", 10))),  # identical human answers are left as they are
    ("dog", TEN(("Dog", 10))),
    ("Yes", TEN(("yes", 9), ("no", 1))),
    ("No, it is not.", TEN(("no", 10))),
    ("1,000", TEN(("1000", 5), ("1,000", 5))),
    ("2.5", TEN(("2.5", 4), ("2 5", 6))),
    ("black/white", TEN(("black white", 3), ("black and white", 7))),
    ("black / white", TEN(("black white", 3), ("black and white", 7))),
    ("What's this?", TEN(("what's this", 4), ("what 's this", 6))),
    ("the man's hat", TEN(("man's hat", 5), ("hat", 5))),
    ("red, white", TEN(("red white", 4), ("red and white", 6))),
    ("red,white", TEN(("red white", 4), ("red,white", 6))),
    ("why?", TEN(("why", 10))),
    ("dont", TEN(("don't", 6), ("do not", 4))),
    ("Isnt", TEN(("isn't", 6), ("no", 4))),
    ("none", TEN(("0", 5), ("none", 5))),
    ("ten", TEN(("10", 3), ("ten", 7))),
    ("an apple", TEN(("apple", 8), ("an apple", 2))),
    ("  Apple\n", TEN(("apple", 8), ("apples", 2))),
    ("tab\tseparated", TEN(("tab separated", 5), ("tab", 5))),
    ("left-hand", TEN(("left hand", 5), ("left-hand", 5))),
    ("left - hand", TEN(("left hand", 5), ("lefthand", 5))),
    ("(yes)", TEN(("yes", 10))),
    ("\"coke\"", TEN(("coke", 6), ("pepsi", 4))),
    ("e.g.", TEN(("eg", 5), ("e.g", 5))),
    ("3.", TEN(("3", 5), ("three", 5))),
    ("o'clock", TEN(("oclock", 5), ("o'clock", 5))),
    ("It's a cat", TEN(("it 's cat", 3), ("cat", 7))),
    ("unanswerable", TEN(("unanswerable", 6), ("unsuitable", 4))),
    ("", TEN(("", 3), ("nothing", 7))),
    ("Stop!", TEN(("stop", 10))),
    ("McDonald's", TEN(("mcdonald's", 5), ("mcdonalds", 5))),
    ("#1", TEN(("1", 5), ("#1", 5))),
    ("50%", TEN(("50%", 5), ("50", 5))),
    ("2:30", TEN(("2:30", 5), ("230", 5))),
    ("a" + "." * 40, TEN(("a", 5), ("b", 5))),  # more than 32 periods: the count quirk
    ("the", TEN(("", 4), ("the", 6))),
    ("they're", TEN(("theyre", 5), ("they're", 5))),
    ("hes", TEN(("he's", 5), ("hes", 5))),
]


def _deco(rule: str, cases) -> float:
    metric = VQAAccuracy(rule)
    metric.update([p for p, _ in cases], [g for _, g in cases])
    return metric.compute()["accuracy"].item()


def test_textvqa_same_as_m4c_evaluator():
    expected = 100 * ref_textvqa_accuracy([{"pred_answer": p, "gt_answers": g} for p, g in CASES])
    assert _deco("textvqa", CASES) == pytest.approx(expected, abs=1e-9)
    for case in CASES:  # and case by case, so a compensating pair of errors cannot hide
        one = 100 * ref_textvqa_accuracy([{"pred_answer": case[0], "gt_answers": case[1]}])
        assert _deco("textvqa", [case]) == pytest.approx(one, abs=1e-9), case


def test_textvqa_issue_cases_differ_from_plain_vqaeval_processing():
    """The three cases the issue found: m4c deletes "," and "?" and splits "'s" (plain vqaEval does not)."""
    from deco.eval.normalize import normalize_vqa

    for pred, gt in [("What's this?", "what 's this"), ("red,white", "redwhite"), ("huh?what", "huhwhat")]:
        assert _deco("textvqa", [(pred, TEN((gt, 10)))]) == 100.0
        assert normalize_vqa(pred) != gt  # the old rule scored these 0


def test_vqav2_and_vizwiz_same_as_vqaeval_on_m4c_cleaned_predictions():
    res = {k: ref_m4c_processor(p) for k, (p, _) in enumerate(CASES)}
    gts = {k: g for k, (_, g) in enumerate(CASES)}
    assert _deco("vqav2", CASES) == pytest.approx(100 * ref_vqaeval_accuracy(res, gts), abs=1e-9)
    for k, case in enumerate(CASES):
        one = 100 * ref_vqaeval_accuracy({k: res[k]}, {k: gts[k]})
        assert _deco("vqav2", [case]) == pytest.approx(one, abs=1e-9), case


GQA_CASES = [("Yes", "yes"), ("yes.", "yes"), ("Left..", "left"), ("a dog", "dog"), ("the table", "the table"),
             ("no. ", "no"), ("Blue", "blue"), ("white and black", "black and white"), ("2", "two"), ("", "yes")]


def test_gqa_same_as_convert_gqa_for_eval():
    expected = sum(p.rstrip(".").lower() == gold for p, gold in GQA_CASES) / len(GQA_CASES)
    metric = ExactMatch(normalize_reference=False)
    metric.update([p for p, _ in GQA_CASES], [g for _, g in GQA_CASES])
    assert metric.compute()["accuracy"].item() == pytest.approx(100 * expected)
    assert expected == pytest.approx(0.5)  # the set really mixes hits and misses
