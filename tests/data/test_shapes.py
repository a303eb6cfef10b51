"""Shapes world: determinism, boxes that match the drawn pixels, correct and balanced answers."""

from collections import Counter

import numpy as np
import pytest
import torch

from deco.data.image import build_image_processor
from deco.data.shapes import COLOURS, TASKS, ShapesDataset, format_box, make_sample, parse_box, render_scene
from deco.data.tokenizer import IGNORE_INDEX, build_tiny_tokenizer

N = 80


@pytest.fixture(scope="module")
def samples():
    return [make_sample(3, i, TASKS) for i in range(N)]


def test_determinism():
    a, b = render_scene(7, 11), render_scene(7, 11)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.objects == b.objects
    assert make_sample(7, 11, TASKS)[1:] == make_sample(7, 11, TASKS)[1:]
    other = render_scene(8, 11)
    assert not np.array_equal(np.asarray(a.image), np.asarray(other.image))


def test_scene_invariants_and_pixels(samples):
    for scene, _, _ in samples:
        img = np.asarray(scene.image)
        assert img.shape == (336, 336, 3)
        objs = scene.objects
        assert 1 <= len(objs) <= 3
        assert len({(o.colour, o.shape) for o in objs}) == len(objs)  # referents are unique
        for o in objs:
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= 336 and 0 <= y1 < y2 <= 336
            assert all(0 <= v <= 1 for v in o.box_norm)
            # the object's colour fills its box edge to edge (tight bounding box within 1 px)
            mask = (img[y1:y2, x1:x2] == COLOURS[o.colour]).all(-1)
            ys, xs = np.nonzero(mask)
            assert abs(xs.min()) <= 1 and abs(xs.max() - (x2 - x1 - 1)) <= 1
            assert abs(ys.min()) <= 1 and abs(ys.max() - (y2 - y1 - 1)) <= 1
            expected = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}[o.shape]
            assert abs(mask.mean() - expected) < 0.06
        # no object pixel outside all boxes
        inside = np.zeros(img.shape[:2], bool)
        for o in objs:
            inside[o.box[1] : o.box[3], o.box[0] : o.box[2]] = True
        background = img[~inside]
        assert (background == background[0]).all()


def test_tasks_round_robin_and_answers(samples):
    for i, (scene, conv, meta) in enumerate(samples):
        assert meta["task"] == TASKS[i % 4]
        assert conv[0] == {"from": "human", "value": "<image>\n" + meta["question"]}
        assert conv[1] == {"from": "gpt", "value": meta["answer"]}
        objs = scene.objects
        q, a = meta["question"], meta["answer"]
        if meta["task"] == "caption":
            assert a.count(",") + a.count(" and ") == len(objs) - 1
            for o in objs:
                assert f"{o.size} {o.colour} {o.shape}" in a
        elif meta["task"] == "attribute":
            word = q.split("the ")[1].split(" ")[0].rstrip("?")
            match = [o for o in objs if word in (o.shape, o.colour)]
            assert len(match) == 1  # unique answer
            o = match[0]
            assert a == (o.colour if word == o.shape else o.shape).capitalize() + "."
        elif meta["task"] == "existence":
            colour, shape = q[len("Is there a ") :].split(" ")[:2]
            present = any((o.colour, o.shape) == (colour, shape) for o in objs)
            assert a == ("Yes." if present else "No.")
        else:
            assert parse_box(a) == meta["box"]
            phrase = q.rsplit("describes: the ", 1)[1].rstrip(".")
            (o,) = [o for o in objs if o.phrase == phrase]
            assert parse_box(a) == tuple(round(v / 336, 2) for v in o.box)


def test_existence_balanced():
    answers = Counter(make_sample(0, i, ["existence"])[2]["answer"] for i in range(400))
    assert 160 <= answers["Yes."] <= 240, answers


def _asked_pair(question):
    colour, shape = question.removeprefix("Is there a ").removesuffix(" in the image?").split()
    return colour, shape


def test_adversarial_negatives_share_one_attribute_and_keep_the_scene_and_positives():
    counts = Counter()
    for i in range(300):
        scene, _, rand = make_sample(0, i, ["existence"])
        _, _, adv = make_sample(0, i, ["existence"], negatives="adversarial")
        present = {(o.colour, o.shape) for o in scene.objects}
        assert adv["answer"] == rand["answer"]  # same coin: same Yes/No split as the benchmark's questions
        colour, shape = _asked_pair(adv["question"])
        if adv["answer"] == "Yes.":
            assert adv["question"] == rand["question"] and (colour, shape) in present
            continue
        assert (colour, shape) not in present
        assert any(colour == c or shape == s for c, s in present), (adv["question"], present)
        counts["random shares one"] += any(
            _asked_pair(rand["question"])[0] == c or _asked_pair(rand["question"])[1] == s for c, s in present
        )
        counts["no"] += 1
    # random negatives are often easy ones (neither attribute seen); adversarial ones never are
    assert counts["random shares one"] < counts["no"] - 20, counts


def test_unknown_negatives():
    with pytest.raises(ValueError, match="adversarial"):
        make_sample(0, 0, ["existence"], negatives="popular")


def test_box_format():
    assert format_box((0.1, 0.234, 0.5, 1)) == "[0.10, 0.23, 0.50, 1.00]"
    assert parse_box("the box is [0.10, 0.23, 0.50, 1.00].") == (0.1, 0.23, 0.5, 1.0)
    with pytest.raises(ValueError, match="no box"):
        parse_box("none")


def test_unknown_task():
    with pytest.raises(ValueError, match="grounding"):
        make_sample(0, 0, ["counting"])


def test_dataset_items():
    tok, proc = build_tiny_tokenizer(), build_image_processor(56)
    ds = ShapesDataset(8, 5, tokenizer=tok, image_processor=proc, image_size=56)
    assert len(ds) == 8
    item = ds[3]
    assert item["task"] == "grounding" and item["index"] == 3
    assert item["pixel_values"].shape == (3, 56, 56)
    _, _, meta = make_sample(5, 3, TASKS, image_size=56)
    lab = item["labels"]
    assert tok.decode(lab[lab != IGNORE_INDEX]) == " " + meta["answer"] + "</s>"
    assert torch.equal(ds[3]["input_ids"], item["input_ids"])
    plain = ShapesDataset(4, 5, ("attribute",), tokenizer=tok, image_processor=proc, template="plain", image_size=56)
    assert {plain[i]["task"] for i in range(4)} == {"caption"}
    with pytest.raises(IndexError):
        ds[8]


def test_grounded_caption_lists_every_object_left_to_right_with_its_box():
    scene, conv, meta = make_sample(0, 0, ["grounded_caption"])
    assert meta["task"] == "grounded_caption"
    assert conv[0]["value"] == "<image>\nDescribe every object with its bounding box."
    # Scene 0 of seed 0 (checked by eye on its drawn objects): a green circle left of a blue square.
    assert [(o.colour, o.shape, o.box) for o in scene.objects] == [
        ("green", "circle", (124, 103, 248, 227)),
        ("blue", "square", (228, 232, 312, 316)),
    ]
    assert (
        meta["answer"]
        == "A large green circle at [0.37, 0.31, 0.74, 0.68]; a medium blue square at [0.68, 0.69, 0.93, 0.94]."
    )
    # Every object appears once, in the order of its left edge, with the box grounding would print.
    for i in range(1, 30):
        scene, _, meta = make_sample(4, i, ["grounded_caption"])
        ordered = sorted(scene.objects, key=lambda o: (o.box[0], o.box[1]))
        parts = meta["answer"].rstrip(".").split("; ")
        assert len(parts) == len(ordered)
        for part, o in zip(parts, ordered):
            assert part.lower() == f"a {o.size} {o.colour} {o.shape} at {format_box(o.box_norm)}"


def test_plain_template_keeps_the_caption_tasks_it_is_given():
    tok, proc = build_tiny_tokenizer(), build_image_processor(56)
    kw = dict(tokenizer=tok, image_processor=proc, template="plain", image_size=56)
    both = ShapesDataset(4, 5, ("caption", "grounded_caption", "grounding"), **kw)
    assert both.tasks == ("caption", "grounded_caption")
    assert [both[i]["task"] for i in range(4)] == ["caption", "grounded_caption"] * 2
    assert ShapesDataset(2, 5, ("grounding",), **kw).tasks == ("caption",)
    with pytest.raises(ValueError, match="grounded_caption"):
        make_sample(0, 0, ["counting"])
