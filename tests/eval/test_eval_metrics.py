"""Answer normalisation, parsing and every benchmark metric against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deco.eval.metrics import (
    CaptionMetrics,
    ExactMatch,
    GroundingAccuracy,
    MMEScore,
    MultipleChoiceAccuracy,
    VQAAccuracy,
    YesNoMetrics,
    vqa_accuracy,
)
from deco.eval.normalize import normalize_gqa, normalize_text, normalize_vqa
from deco.eval.parsing import box_iou, parse_box, parse_option, parse_yes_no_mme, parse_yes_no_pope


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Two", "2"),
        ("two dogs.", "2 dogs"),
        ("a dog", "dog"),
        ("The Dog!", "dog"),
        ("dog.", "dog"),
        ("2.5", "2.5"),  # a period before a digit stays
        ("1,000 people", "1000 people"),
        ("black/white", "black white"),  # punctuation inside a word separates
        ("dont", "don't"),
        ("  Yes\n", "yes"),
        ("none", "0"),
    ],
)
def test_normalize_vqa(text, expected):
    assert normalize_vqa(text) == expected


def test_normalize_gqa_and_text():
    assert normalize_gqa("Yes..") == "yes"
    assert normalize_gqa("yes. .") == "yes. "  # LLaVA's rstrip('.') only (the answer arrives stripped)
    assert normalize_gqa("a dog") == "a dog"  # LLaVA's GQA rule keeps articles
    assert normalize_text("A small, red Circle.") == "a small red circle"


def test_vqa_accuracy_leave_one_out():
    # 3 of 10 humans said "2": the 3 subsets without one of them hold 2 matches (2/3), the 7 others 3 (1).
    assert vqa_accuracy("Two", ["2"] * 3 + ["3"] * 7) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    # 2 of 10: subsets hold 1 match (x2) or 2 matches (x8) -> (2/3 + 16/3) / 10 = 0.6
    assert vqa_accuracy("dog.", ["dog"] * 2 + ["cat"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy("a dog", ["dog"] * 10) == 1.0  # m4c cleans the prediction before vqaEval
    assert vqa_accuracy("dog", ["Dog"] * 10) == 0.0  # vqaEval leaves identical human answers as they are
    assert vqa_accuracy("cat", ["dog"] * 10) == 0.0
    assert vqa_accuracy("Dog", ["dog"]) == 1.0  # a single reference: exact match


def test_vqa_accuracy_metric():
    metric = VQAAccuracy()
    metric.update(["Two", "dog."], [["2"] * 3 + ["3"] * 7, ["dog"] * 2 + ["cat"] * 8])
    out = metric.compute()
    assert out["accuracy"].item() == pytest.approx(100 * (0.9 + 0.6) / 2)
    assert out["n"].item() == 2 and out["unparsed"].item() == 0


def test_exact_match_gqa():
    metric = ExactMatch()
    metric.update(["Yes.", "a dog", "Left"], ["yes", "dog", "left"])
    assert metric.compute()["accuracy"].item() == pytest.approx(200 / 3)


def test_pope_parsing_rule():
    assert parse_yes_no_pope("Yes") == ("yes", True)
    assert parse_yes_no_pope("No, there is not.") == ("no", True)
    assert parse_yes_no_pope("There is a dog.") == ("yes", False)  # LLaVA defaults to yes
    assert parse_yes_no_pope("not sure") == ("no", True)
    assert parse_yes_no_pope("Yes. No.") == ("yes", True)  # only the first sentence counts


def test_yes_no_metrics_per_split():
    metric = YesNoMetrics(["random", "popular"])
    preds = ["Yes", "No, there is not.", "yes.", "There is a dog.", "not sure"]
    labels = ["yes", "no", "no", "yes", "yes"]
    metric.update(preds, labels, ["random"] * 5)
    metric.update(["no"], ["no"], ["popular"])
    out = {k: v.item() for k, v in metric.compute().items()}
    # random: tp = 2 (#1, #4), fp = 1 (#3), tn = 1 (#2), fn = 1 (#5)
    assert out["random/accuracy"] == pytest.approx(60.0)
    assert out["random/precision"] == pytest.approx(200 / 3)
    assert out["random/recall"] == pytest.approx(200 / 3)
    assert out["random/f1"] == pytest.approx(200 / 3)
    assert out["random/yes_ratio"] == pytest.approx(60.0)
    # popular: one true negative; no positives -> precision = recall = f1 = 0 by convention
    assert out["popular/accuracy"] == 100.0 and out["popular/f1"] == 0.0 and out["popular/yes_ratio"] == 0.0
    assert out["accuracy"] == pytest.approx(80.0)
    assert out["f1"] == pytest.approx(100 / 3)
    assert out["n"] == 6 and out["unclear"] == 1


def test_yes_no_metrics_rejects_bad_label():
    with pytest.raises(ValueError, match="maybe"):
        YesNoMetrics(["random"]).update(["yes"], ["maybe"], ["random"])


def test_mme_parsing_and_score():
    assert parse_yes_no_mme("Yes.") == "yes"
    assert parse_yes_no_mme("...no") is None  # calculation.py: the first four characters, nothing stripped
    assert parse_yes_no_mme("Nope") == "no"
    assert parse_yes_no_mme("yes it is") == "yes"
    assert parse_yes_no_mme("maybe") is None
    metric = MMEScore()
    metric.update(
        ["Yes", "No", "Yes", "Yes", "maybe", "no", "yes it is", "Nope"],
        ["yes", "no", "yes", "no", "yes", "no", "yes", "no"],
        ["existence"] * 4 + ["count"] * 2 + ["code_reasoning"] * 2,
        [0, 0, 1, 1, 2, 2, 3, 3],
    )
    out = {k: v.item() for k, v in metric.compute().items()}
    # existence: 3/4 right (75), image 0 fully right, image 1 not (50) -> 125
    assert out["existence/acc"] == 75.0 and out["existence/acc_plus"] == 50.0 and out["existence/score"] == 125.0
    # count: "maybe" is unparsed (wrong): 50 + 0
    assert out["count/score"] == 50.0
    assert out["code_reasoning/score"] == 200.0
    assert out["perception"] == 175.0 and out["cognition"] == 200.0 and out["total"] == 375.0
    assert out["unparsed"] == 1 and out["n"] == 8


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", "B"),
        ("B.", "B"),
        ("the answer is b", None),  # letters are upper case
        ("(C) blue", "C"),
        ("C. blue", "C"),
        ("The answer is D.", "D"),
        ("a red circle", "B"),  # matches option B's text
        ("A red circle", "B"),  # an article "A" is not the letter A
        ("E", None),
        ("", None),
        ("I do not know", None),
    ],
)
def test_parse_option_lenient(text, expected):
    assert parse_option(text, "ABCD", ["green square", "A red circle", "blue", "yellow"], "lenient") == expected


@pytest.mark.parametrize(
    "text, reference, exact",
    [("B", "B", "B"), ("B.", None, None), ("B. blue", "B", None), ("The answer is C.", "C", None),
     ("The answer is C", None, None), ("", None, None), ("E", None, None)],
)
def test_parse_option_reference_and_exact(text, reference, exact):
    assert parse_option(text, "ABCD") == reference
    assert parse_option(text, "ABCD", rule="exact") == exact


def test_multiple_choice_accuracy_and_circular():
    options = [["x", "y"]] * 4
    metric = MultipleChoiceAccuracy(circular=True)
    # question 7: both rounds right; question 9: round 0 right, round 1 wrong
    metric.update(["A", "B", "A", "A"], ["A", "B", "A", "B"], options, [7, 7, 9, 9])
    out = {k: v.item() for k, v in metric.compute().items()}
    assert out["accuracy"] == 75.0 and out["circular_accuracy"] == 50.0 and out["questions"] == 2

    plain = MultipleChoiceAccuracy()
    plain.update(["A", "no idea", "C"], ["A", "B", "B"], [["p", "q", "r"]] * 3)
    out = {k: v.item() for k, v in plain.compute().items()}
    assert out["accuracy"] == pytest.approx(100 / 3) and out["unparsed"] == 1


def test_parse_box_and_iou():
    assert parse_box("It is at [0.1, 0.20, 0.5, 1].") == (0.1, 0.2, 0.5, 1.0)
    assert parse_box("[0.1, 0.2, 0.5]") is None
    assert parse_box("box: [0.1, 0.1") is None
    assert parse_box("[.1, 0.2, 0.5, 1]") is None and parse_box("[.1, 0.2, 0.5, 1]", "lenient") == (0.1, 0.2, 0.5, 1)
    assert box_iou((0, 0, 1, 1), (0, 0, 0.5, 1)) == 0.5
    assert box_iou((0, 0, 1, 1), (0.5, 0.5, 1, 1)) == 0.25
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert box_iou((0.5, 0.5, 0.1, 0.1), (0, 0, 1, 1)) == 0.0  # inverted box: zero area


def test_grounding_accuracy():
    metric = GroundingAccuracy(0.5)
    preds = ["[0.0, 0.0, 0.5, 1.0]", "[0, 0, 0.49, 1]", "box: [0.1, 0.1", "[0.5, 0.5, 1.0, 1.0]"]
    metric.update(preds, [[0, 0, 1, 1]] * 4)
    out = {k: v.item() for k, v in metric.compute().items()}
    assert out["accuracy"] == 25.0  # IoU exactly 0.5 counts
    assert out["mean_iou"] == pytest.approx(100 * (0.5 + 0.49 + 0.0 + 0.25) / 4)
    assert out["unparsed"] == 1 and out["n"] == 4


def test_caption_metrics_state_round_trips():
    preds = ["a red circle.", "A small blue square", "café au lait"]
    refs = [["A red circle here."], ["A small blue square.", "a blue square"], ["café"]]
    metric = CaptionMetrics()
    metric.update(preds[:2], refs[:2])
    metric.update(preds[2:], refs[2:])
    assert metric.records() == list(zip(preds, refs))  # the byte state round-trips (unicode included)
    out = metric.compute()
    assert out["n"].item() == 3 and out["tokenizer"] in ("ptb", "fallback")


def test_metrics_reject_length_mismatch():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        VQAAccuracy().update(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="4 numbers"):
        GroundingAccuracy().update(["[0, 0, 1, 1]"], [[0, 0, 1]])
    with pytest.raises(ValueError, match="option letters"):
        MultipleChoiceAccuracy().update(["A"], ["E"], [["x", "y"]])


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        vqa = VQAAccuracy()
        mc = MultipleChoiceAccuracy(circular=True)
        cap = CaptionMetrics()
        mme = MMEScore()
        if rank == 0:
            vqa.update(["Two"], [["2"] * 3 + ["3"] * 7])
            mc.update(["A"], ["A"], [["x", "y"]], [7])  # question 7, round 0 (right)
            cap.update(["a red circle"], [["a red circle"]])
            mme.update(["Yes"], ["Yes"], ["existence"], [0])
        else:
            vqa.update(["dog.", "cat"], [["dog"] * 2 + ["cat"] * 8, ["dog"] * 10])
            mc.update(["A", "B"], ["B", "B"], [["x", "y"]] * 2, [7, 8])  # question 7 round 1 (wrong), q 8 right
            cap.update(["a blue square", "a green triangle"], [["a blue square"], ["a big green triangle"]])
            mme.update(["No"], ["Yes"], ["existence"], [0])  # the same image as rank 0's question
        result = {
            "vqa": vqa.compute()["accuracy"].item(),
            "mc": {k: v.item() for k, v in mc.compute().items()},
            "cap": cap.compute()["cider"].item(),
            "mme": mme.compute()["existence/acc_plus"].item(),
        }
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        torch.distributed.destroy_process_group()


def test_metrics_reduce_across_ddp_ranks(tmp_path):
    import torch.multiprocessing as mp

    # fork: the children inherit the imported modules (spawn would re-import torch and transformers)
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    results = {rank: json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)}
    single_vqa = VQAAccuracy()
    single_vqa.update(["Two", "dog.", "cat"], [["2"] * 3 + ["3"] * 7, ["dog"] * 2 + ["cat"] * 8, ["dog"] * 10])
    single_cap = CaptionMetrics()
    single_cap.update(["a red circle", "a blue square", "a green triangle"],
                      [["a red circle"], ["a blue square"], ["a big green triangle"]])
    for rank in (0, 1):
        got = results[rank]
        assert got["vqa"] == pytest.approx(single_vqa.compute()["accuracy"].item())
        assert got["mc"]["accuracy"] == pytest.approx(200 / 3)
        assert got["mc"]["circular_accuracy"] == 50.0  # question 7 split across ranks, and wrong once
        assert got["cap"] == pytest.approx(single_cap.compute()["cider"].item())
        assert got["mme"] == 0.0  # image 0's two questions sit on different ranks
