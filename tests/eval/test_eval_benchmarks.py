"""Benchmark readers on small files written in each benchmark's published layout, scored end to end."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from deco.eval import benchmarks as B
from deco.eval.benchmarks import load_image, normalise_box


def _image(path: Path, size=(8, 6), colour=(200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _score(bench: B.Benchmark, answers: list[str]) -> dict:
    samples = bench.samples()
    metric = bench.build_metric()
    bench.update(metric, answers, samples)
    return {k: v if isinstance(v, str) else v.item() for k, v in metric.compute().items()}


def test_vqav2_official_layout(tmp_path):
    _image(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    q = _json(tmp_path / "q.json", {"questions": [
        {"image_id": 42, "question": "How many dogs?", "question_id": 420},
        {"image_id": 42, "question": "What colour?", "question_id": 421},
    ]})
    a = _json(tmp_path / "a.json", {"annotations": [
        {"question_id": 420, "image_id": 42, "answers": [{"answer": "2"}] * 3 + [{"answer": "3"}] * 7},
        {"question_id": 421, "image_id": 42, "answers": [{"answer": "red"}] * 10},
    ]})
    bench = B.VQAv2(str(q), str(tmp_path / "val2014"), str(a))
    samples = bench.samples()
    assert [s.id for s in samples] == [420, 421]
    assert bench.prompt(samples[0]) == "How many dogs?\nAnswer the question using a single word or phrase."
    assert load_image(samples[0].image).size == (8, 6)
    assert _score(bench, ["Two", "Red."])["accuracy"] == pytest.approx(100 * (0.9 + 1.0) / 2)


def test_vqav2_llava_jsonl_without_annotations(tmp_path):
    _image(tmp_path / "img" / "x.jpg")
    q = _jsonl(tmp_path / "q.jsonl", [{"question_id": 1, "image": "x.jpg",
                                      "text": "What?\nAnswer the question using a single word or phrase."}])
    bench = B.VQAv2(str(q), str(tmp_path / "img"))
    assert not bench.has_references
    # the suffix already in LLaVA's question text is not appended twice
    assert bench.prompt(bench.samples()[0]) == "What?\nAnswer the question using a single word or phrase."


def test_textvqa_and_vizwiz_and_gqa(tmp_path):
    _image(tmp_path / "train_images" / "abc.jpg")
    tv = _json(tmp_path / "TextVQA_0.5.1_val.json", {"data": [
        {"question_id": 5, "question": "What brand?", "image_id": "abc", "answers": ["nike"] * 4 + ["adidas"] * 6}]})
    bench = B.TextVQA(str(tv), str(tmp_path / "train_images"))
    assert _score(bench, ["Nike"])["accuracy"] == pytest.approx(100.0)
    ocr = _jsonl(tmp_path / "llava_textvqa.jsonl", [{"question_id": 0, "image": "abc.jpg",
                                                     "text": "What brand?\nReference OCR token: NIKE"}])
    bench = B.TextVQA(str(tv), str(tmp_path / "train_images"), question_file=str(ocr))
    assert "Reference OCR token: NIKE" in bench.prompt(bench.samples()[0])
    assert bench.samples()[0].reference[0] == "nike"

    _image(tmp_path / "val" / "VizWiz_val_00000000.jpg")
    vz = _json(tmp_path / "val.json", [{"image": "VizWiz_val_00000000.jpg", "question": "What is this?",
                                        "answers": [{"answer": "unanswerable", "answer_confidence": "yes"}] * 10}])
    bench = B.VizWiz(str(vz), str(tmp_path / "val"))
    assert "respond with 'Unanswerable'" in bench.prompt(bench.samples()[0])
    assert _score(bench, ["Unanswerable"])["accuracy"] == 100.0

    _image(tmp_path / "images" / "n1.jpg")
    gq = _json(tmp_path / "testdev.json", {"201": {"imageId": "n1", "question": "Which side?", "answer": "left"},
                                           "202": {"imageId": "n1", "question": "Is it red?", "answer": "yes"}})
    bench = B.GQA(str(gq), str(tmp_path / "images"))
    assert _score(bench, ["Left.", "No"])["accuracy"] == 50.0


def test_pope_layout(tmp_path):
    _image(tmp_path / "val2014" / "COCO_val2014_000000000001.jpg")
    for split in ("random", "popular", "adversarial"):
        _jsonl(tmp_path / "pope" / f"coco_pope_{split}.json", [
            {"question_id": 1, "image": "COCO_val2014_000000000001.jpg", "text": "Is there a dog in the image?",
             "label": "yes"},
            {"question_id": 2, "image": "COCO_val2014_000000000001.jpg", "text": "Is there a cat in the image?",
             "label": "no"},
        ])
    bench = B.POPE(str(tmp_path / "pope"), str(tmp_path / "val2014"))
    assert len(bench.samples()) == 6 and bench.samples()[2].meta["split"] == "popular"
    out = _score(bench, ["Yes", "No", "Yes", "Yes", "No", "No"])
    assert out["random/f1"] == 100.0 and out["popular/accuracy"] == 50.0 and out["adversarial/recall"] == 0.0
    assert bench.headline == "f1"


def test_mme_both_folder_layouts(tmp_path):
    root = tmp_path / "MME"
    # layout 1: image and txt side by side
    _image(root / "existence" / "000.png")
    (root / "existence" / "000.txt").write_text("Is there a dog? Please answer yes or no.\tYes\n"
                                                "Is there a cat? Please answer yes or no.\tNo\n")
    # layout 2: images/ and questions_answers_YN/
    _image(root / "artwork" / "images" / "10002.jpg")
    (root / "artwork" / "questions_answers_YN").mkdir(parents=True)
    (root / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        "Is this by Monet?\tYes\nIs this by Dali?\tNo\n")
    bench = B.MME(str(root), categories=["existence", "artwork"])
    samples = bench.samples()
    assert [s.meta["image_id"] for s in samples] == [0, 0, 1, 1]
    assert samples[3].reference == "no" and samples[3].image.name == "10002.jpg"
    assert bench.prompt(samples[0]) == ("Is there a dog? Please answer yes or no.\n"
                                        "Answer the question using a single word or phrase.")  # LLaVA's llava_mme.jsonl
    out = _score(bench, ["Yes", "No", "Yes", "Yes"])
    assert out["existence/score"] == 200.0 and out["artwork/score"] == 50.0 and out["perception"] == 250.0


def _b64_png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (0, 0, 255)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_mmbench_tsv_circular(tmp_path):
    path = tmp_path / "mmbench_dev.tsv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"])
        writer.writerow([11, "Which colour?", "Look closely.", "red", "blue", "green", "nan", "B", "colour",
                         _b64_png()])
        writer.writerow([12, "Which shape?", "nan", "circle", "square", "nan", "nan", "A", "shape", _b64_png()])
    bench = B.MMBench(str(path))
    samples = bench.samples()
    assert len(samples) == 3 + 2  # one round per option
    # round r rotates the options left by r; the answer letter follows its option
    assert [s.meta["options"] for s in samples[:3]] == [["red", "blue", "green"], ["blue", "green", "red"],
                                                         ["green", "red", "blue"]]
    assert [s.reference for s in samples] == ["B", "A", "C", "A", "B"]
    assert bench.prompt(samples[0]) == ("Look closely.\nWhich colour?\nA. red\nB. blue\nC. green\n"
                                        "Answer with the option's letter from the given choices directly.")
    assert load_image(samples[0].image).size == (4, 4)
    out = _score(bench, ["B", "A", "C", "A", "A"])  # question 12 wrong in round 1
    assert out["accuracy"] == 80.0 and out["circular_accuracy"] == 50.0
    assert bench.headline == "circular_accuracy"


def test_mmbench_tsv_with_released_circular_copies(tmp_path):
    """The released TSVs hold the copies (index + k * 1e6, rotated options, image by reference): asked as
    they are, grouped by index mod 1e6."""
    path = tmp_path / "mmbench_dev.tsv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"])
        writer.writerow([11, "Which colour?", "nan", "red", "blue", "green", "nan", "B", "colour", _b64_png()])
        writer.writerow([1000011, "Which colour?", "nan", "blue", "green", "red", "nan", "A", "colour", "11"])
        writer.writerow([2000011, "Which colour?", "nan", "green", "red", "blue", "nan", "C", "colour", "11"])
        writer.writerow([12, "Which shape?", "nan", "circle", "square", "nan", "nan", "A", "shape", _b64_png()])
        writer.writerow([1000012, "Which shape?", "nan", "square", "circle", "nan", "nan", "B", "shape", "12"])
    bench = B.MMBench(str(path))
    samples = bench.samples()
    assert len(samples) == 5  # not rotated again (that would ask 3 * 3 + 2 * 2 = 13 prompts)
    assert [s.id for s in samples] == [11, 1000011, 2000011, 12, 1000012]
    assert [s.meta["question_index"] for s in samples] == [11, 11, 11, 12, 12]
    assert load_image(samples[1].image).size == (4, 4)  # image "11" is row 11's image
    out = _score(bench, ["B", "A", "C", "A", "A"])
    assert out["questions"] == 2 and out["n"] == 5
    assert out["accuracy"] == 80.0 and out["circular_accuracy"] == 50.0
    test_tsv = tmp_path / "mmbench_test.tsv"  # the test split has no answers: predictions only
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    test_tsv.write_text("\n".join("\t".join(r[:7] + r[8:]) for r in rows) + "\n")
    test_bench = B.MMBench(str(test_tsv))
    assert len(test_bench.samples()) == 5 and not test_bench.has_references


def test_seed_and_scienceqa(tmp_path):
    _image(tmp_path / "seed_img" / "1_2.jpg")
    seed = _json(tmp_path / "SEED-Bench.json", {"questions": [
        {"question_id": "101", "question": "What is shown?", "choice_a": "a", "choice_b": "b", "choice_c": "c",
         "choice_d": "d", "answer": "C", "data_type": "image", "data_id": "1_2", "question_type_id": 1},
        {"question_id": "102", "question": "Video?", "choice_a": "a", "choice_b": "b", "choice_c": "c",
         "choice_d": "d", "answer": "A", "data_type": "video", "data_id": "v.mp4", "question_type_id": 10},
    ]})
    bench = B.SEEDBench(str(seed), str(tmp_path / "seed_img"))
    assert [s.id for s in bench.samples()] == ["101"]  # video questions skipped
    assert bench.samples()[0].image.name == "1_2.jpg"
    assert _score(bench, ["C"])["accuracy"] == 100.0

    _image(tmp_path / "sqa" / "test" / "7" / "image.png")
    problems = _json(tmp_path / "problems.json", {
        "7": {"question": "Which is a mammal?", "choices": ["shark", "whale"], "answer": 1, "hint": "Think.",
              "image": "image.png", "split": "test"},
        "8": {"question": "No image here?", "choices": ["x", "y"], "answer": 0, "hint": "", "image": None,
              "split": "test"},
        "9": {"question": "Train", "choices": ["x", "y"], "answer": 0, "hint": "", "image": "image.png",
              "split": "train"},
    })
    bench = B.ScienceQA(str(problems), str(tmp_path / "sqa"))
    samples = bench.samples()
    assert [s.id for s in samples] == ["7"] and samples[0].reference == "B"
    assert bench.prompt(samples[0]).startswith("Context: Think.\nWhich is a mammal?\nA. shark\nB. whale\n")
    assert len(B.ScienceQA(str(problems), str(tmp_path / "sqa"), image_only=False).samples()) == 2


def test_refcoco_mdetr_layout_and_box_frame(tmp_path):
    _image(tmp_path / "train2014" / "COCO_train2014_000000000009.jpg", size=(200, 100))
    ann = _json(tmp_path / "final_refcoco_testA.json", {
        "images": [{"id": 0, "file_name": "COCO_train2014_000000000009.jpg", "width": 200, "height": 100,
                    "caption": "the man on the left"}],
        "annotations": [{"id": 5, "image_id": 0, "bbox": [0, 0, 100, 100], "category_id": 1}],
    })
    # pad: a 200 x 200 canvas, image pasted 50 px down
    assert normalise_box([0, 0, 100, 100], 200, 100, "pad") == (0.0, 0.25, 0.5, 0.75)
    assert normalise_box([0, 0, 100, 100], 200, 100, "resize") == (0.0, 0.0, 0.5, 1.0)
    with pytest.raises(ValueError, match="crop"):
        normalise_box([0, 0, 1, 1], 2, 2, "crop")
    bench = B.RefCOCO(str(ann), str(tmp_path / "train2014"))  # image_aspect null: the runner says which
    sample = bench.samples()[0]
    assert bench.prompt(sample) == ("Please provide the bounding box coordinate of the region this sentence "
                                    "describes: the man on the left.")
    assert sample.reference == [0.0, 0.25, 0.5, 0.75]
    assert _score(bench, ["[0.00, 0.25, 0.25, 0.75]"])["accuracy"] == 100.0  # IoU exactly 0.5
    assert bench.family == "localization"
    bench.use_image_aspect("resize")  # what the runner does once the checkpoint's preprocessing is known
    assert bench.samples()[0].reference == [0.0, 0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="crop"):
        bench.use_image_aspect("crop")
    fixed = B.RefCOCO(str(ann), str(tmp_path / "train2014"), image_aspect="pad")
    with pytest.raises(ValueError, match="benchmark.image_aspect=pad"):
        fixed.use_image_aspect("resize")


def test_captioning_layouts(tmp_path):
    _image(tmp_path / "val2014" / "a.jpg")
    coco = _json(tmp_path / "captions.json", {"images": [{"id": 1, "file_name": "a.jpg"}],
                                              "annotations": [{"image_id": 1, "id": 1, "caption": "A red image."},
                                                              {"image_id": 1, "id": 2, "caption": "Red."}]})
    bench = B.Captioning(str(coco), str(tmp_path / "val2014"))
    assert bench.samples()[0].reference == ["A red image.", "Red."]
    karpathy = _json(tmp_path / "karpathy.json", [{"image": "a.jpg", "caption": ["A red image."]}])
    bench = B.Captioning(str(karpathy), str(tmp_path / "val2014"))
    out = _score(bench, ["a red image"])
    assert out["rougeL"] == 100.0 and out["n"] == 1 and bench.family == "open_vqa"


def test_shapes_benchmarks_match_make_sample():
    from deco.data.shapes import make_sample

    for task, family in [("existence", "mllm"), ("attribute", "mllm"), ("grounding", "localization"),
                         ("caption", "open_vqa")]:
        bench = B.ShapesBenchmark(task, seed=50_000, num_samples=4)
        samples = bench.samples()
        assert bench.family == family and len(samples) == 4
        scene, _, meta = make_sample(50_000, 3, (task,))
        assert samples[3].question == meta["question"]
        assert list(load_image(samples[3].image).getdata()) == list(scene.image.getdata())
    refs = [s.reference for s in B.ShapesBenchmark("existence", num_samples=4).samples()]
    assert set(refs) <= {"yes", "no"}
    grounding = B.ShapesBenchmark("grounding", num_samples=4)
    answers = [make_sample(50_000, i, ("grounding",))[2]["answer"] for i in range(4)]
    assert _score(grounding, answers)["accuracy"] == 100.0  # the reference answers score 100


def test_missing_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.json")):
        B.GQA(str(tmp_path / "nope.json"), str(tmp_path)).samples()
    (tmp_path / "pope").mkdir()
    with pytest.raises(FileNotFoundError, match="coco_pope_random.json"):
        B.POPE(str(tmp_path / "pope"), str(tmp_path)).samples()
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        B.GQA(str(bad), str(tmp_path)).samples()
    with pytest.raises(ValueError, match="unknown shapes task"):
        B.ShapesBenchmark("counting")


def test_bad_rows_name_file_and_row(tmp_path):
    """A missing image, answer, label or box stops the reader with the file and row, before any model."""
    _image(tmp_path / "img" / "a.jpg")
    pope = tmp_path / "pope"
    _jsonl(pope / "coco_pope_random.json", [
        {"question_id": 1, "image": "a.jpg", "text": "Is there a dog?", "label": "yes"},
        {"question_id": 2, "image": "gone.jpg", "text": "Is there a cat?", "label": "no"},
    ])
    with pytest.raises(FileNotFoundError, match=r"1 of 2 images not found: .*coco_pope_random.json:2: .*gone.jpg"):
        B.POPE(str(pope), str(tmp_path / "img"), splits=["random"]).samples()
    _jsonl(pope / "coco_pope_random.json", [{"question_id": 1, "image": "a.jpg", "text": "Is there a dog?"}])
    with pytest.raises(ValueError, match=r"coco_pope_random.json:1: missing 'label'"):
        B.POPE(str(pope), str(tmp_path / "img"), splits=["random"]).samples()
    _jsonl(pope / "coco_pope_random.json", [{"question_id": 1, "image": "a.jpg", "text": "?", "label": "maybe"}])
    with pytest.raises(ValueError, match=r"coco_pope_random.json:1: label must be yes or no"):
        B.POPE(str(pope), str(tmp_path / "img"), splits=["random"]).samples()
    gqa = _json(tmp_path / "gqa.json", {"q1": {"imageId": "a", "question": "What?"}})
    with pytest.raises(ValueError, match=r"gqa.json \['q1'\]: missing 'answer'"):
        B.GQA(str(gqa), str(tmp_path / "img")).samples()
    ref = _json(tmp_path / "final_refcoco_val.json", {
        "images": [{"id": 0, "file_name": "a.jpg", "width": 8, "height": 6, "caption": "x"}],
        "annotations": [{"id": 5, "image_id": 0, "category_id": 1}]})
    with pytest.raises(ValueError, match=r"final_refcoco_val.json annotations\[0\]: missing 'bbox'"):
        B.RefCOCO(str(ref), str(tmp_path / "img")).samples()
    tsv = tmp_path / "mmb.tsv"
    tsv.write_text("index\tquestion\tA\tB\tanswer\timage\n1\tq\tx\ty\tE\tZm9v\n")
    with pytest.raises(ValueError, match=r"mmb.tsv:2: answer 'E' is not one of AB"):
        B.MMBench(str(tsv)).samples()
