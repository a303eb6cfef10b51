"""Multiple choice scored by deco and by transcriptions of the reference scripts, on crafted answers.

References (LLaVA c121f04): llava/eval/eval_science_qa.py (ScienceQA, deco's default for MMBench too),
scripts/convert_seed_for_submission.py (SEED-Bench), llava/eval/model_vqa_mmbench.py --all-rounds
(option rotation) with MMBench's circular rule (a question counts when every copy is right).
"""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from deco.eval.metrics import MultipleChoiceAccuracy

# ------------------------------------------------------------------ transcriptions

SQA_OPTIONS = ["A", "B", "C", "D", "E"]


def ref_sqa_pred_idx(pred_text, choices):
    """eval_science_qa.py's parse + get_pred_idx for one prediction."""
    if pred_text in SQA_OPTIONS:
        answer = pred_text
    elif len(pred_text) >= 3 and pred_text[0] in SQA_OPTIONS and pred_text[1:3] == ". ":
        answer = pred_text[0]
    else:
        res = re.compile(r"The answer is ([A-Z]).").findall(pred_text)
        answer = res[0] if len(res) == 1 else "FAILED"
    return SQA_OPTIONS.index(answer) if answer in SQA_OPTIONS[:len(choices)] else -1


def ref_sqa_accuracy(cases):
    correct = sum(ref_sqa_pred_idx(text, choices) == answer for text, choices, answer in cases)
    return correct / len(cases) * 100


# ------------------------------------------------------------------ crafted answer sets

FOUR = ["sunlight", "water", "soil", "air"]
TWO = ["yes", "no"]
SQA_CASES = [  # (answer text, choices, right index)
    ("B", FOUR, 1), ("A", FOUR, 1), ("B.", FOUR, 1), ("B. water", FOUR, 1), ("B.water", FOUR, 1),
    ("(B)", FOUR, 1), ("B)", FOUR, 1), ("(B) water", FOUR, 1), ("The answer is B.", FOUR, 1),
    ("The answer is B", FOUR, 1), ("the answer is B.", FOUR, 1), ("The answer is (B).", FOUR, 1),
    ("The answer is B. The answer is B.", FOUR, 1), ("The answer is AB.", FOUR, 0),
    ("(A) sunlight. The answer is B.", FOUR, 1), ("water", FOUR, 1), ("b", FOUR, 1), ("E", FOUR, 1),
    ("E", FOUR + ["fire"], 4), ("E. fire", FOUR + ["fire"], 4), ("F", FOUR, 1), ("", FOUR, 0),
    ("C. soil. The answer is B.", FOUR, 2), ("The answer is C!", FOUR, 2), ("The answer is C.", TWO, 0),
    ("A", TWO, 0), ("B.  no", TWO, 1), (" B", TWO, 1), ("Answer: B", FOUR, 1), ("The answer is Z.", FOUR, 1),
    ("The answer is D\n", FOUR, 3), ("I think the answer is D.", FOUR, 3), ("The answer is B, C.", FOUR, 1),
    ("D. air\nThe answer is D.", FOUR, 3), ("E. ", FOUR, 1),
]


def _deco_accuracy(cases, rule="reference"):
    metric = MultipleChoiceAccuracy(rule=rule)
    metric.update([t for t, _, _ in cases], ["ABCDE"[a] for _, _, a in cases], [c for _, c, _ in cases])
    return metric.compute()["accuracy"].item()


def test_scienceqa_same_as_eval_science_qa():
    expected = ref_sqa_accuracy(SQA_CASES)
    assert _deco_accuracy(SQA_CASES) == pytest.approx(expected)
    for case in SQA_CASES:
        assert _deco_accuracy([case]) == pytest.approx(ref_sqa_accuracy([case])), case


def test_scienceqa_issue_cases():
    """LLaVA marks these right; the old lenient default marked them wrong (and others the other way)."""
    for case in [("(A) sunlight. The answer is B.", FOUR, 1), ("The answer is AB.", FOUR, 0)]:
        assert ref_sqa_accuracy([case]) == 100.0 and _deco_accuracy([case]) == 100.0
        assert _deco_accuracy([case], "lenient") == 0.0
    for case in [("The answer is B", FOUR, 1), ("the answer is B.", FOUR, 1), ("(B)", FOUR, 1)]:
        assert _deco_accuracy([case]) == 0.0 and _deco_accuracy([case], "lenient") == 100.0


SEED_CASES = [("C", "C"), ("C.", "C"), ("c", "C"), ("(C)", "C"), ("The answer is C.", "C"), ("A", "C"),
              (" C", "C"), ("", "C"), ("B", "B"), ("D. dog", "D")]


def test_seed_same_as_convert_seed_for_submission():
    expected = sum(text == answer for text, answer in SEED_CASES) / len(SEED_CASES) * 100
    metric = MultipleChoiceAccuracy(rule="exact")
    metric.update([t for t, _ in SEED_CASES], [a for _, a in SEED_CASES], [["a", "b", "c", "d"]] * 10)
    assert metric.compute()["accuracy"].item() == pytest.approx(expected) and expected == pytest.approx(20.0)


def ref_rounds(options, answer_letter):
    """model_vqa_mmbench.py --all-rounds: round r shows the options rotated left r times under A, B, ...;
    the right letter is where the answer's option landed."""
    rounds, opts = [], list(options)
    answer_text = options["ABCD".index(answer_letter)]
    for _ in range(len(options)):
        rounds.append((list(opts), "ABCD"[opts.index(answer_text)]))
        opts = opts[1:] + opts[:1]
    return rounds


def test_mmbench_rotation_and_circular_rule(tmp_path):
    import csv

    from deco.eval.benchmarks import MMBench

    questions = {11: (["red", "blue", "green", "pink"], "B"), 12: (["circle", "square", "star"], "C"),
                 13: (["up", "down"], "A")}
    path = tmp_path / "mmbench.tsv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"])
        for index, (opts, ans) in questions.items():
            writer.writerow([index, "Q?", "nan", *(opts + ["nan"] * (4 - len(opts))), ans, "c", "Zm9v"])
    samples = MMBench(str(path)).samples()
    expected = [r for index, (opts, ans) in questions.items() for r in ref_rounds(opts, ans)]
    assert [(s.meta["options"], s.reference) for s in samples] == expected
    # answers: q11 right in all 4 rounds, q12 wrong in round 2, q13 right twice
    answers = [s.reference for s in samples]
    answers[4 + 2] = "A" if answers[4 + 2] != "A" else "B"
    per_question = defaultdict(list)
    for s, a in zip(samples, answers):
        per_question[s.meta["question_index"] % 1_000_000].append(a == s.reference)
    circular = 100 * sum(all(v) for v in per_question.values()) / len(per_question)
    metric = MultipleChoiceAccuracy(circular=True)
    metric.update(answers, [s.reference for s in samples], [s.meta["options"] for s in samples],
                  [s.meta["question_index"] for s in samples])
    out = metric.compute()
    assert out["circular_accuracy"].item() == pytest.approx(circular) and circular == pytest.approx(200 / 3)
    assert out["questions"].item() == 3 and out["n"].item() == 4 + 3 + 2
