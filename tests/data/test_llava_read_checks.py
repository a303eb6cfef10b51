"""The checks `data=llava_json` runs on every record while the file is read, made cheaper (figure 9): the exact-
type fast path keeps `check_record`'s verdicts, and the missing-image test stats each distinct image once."""

import json
import os

import pytest

from deco.data import llava_json, llava_record_checks, llava_records
from deco.data.skips import SkipSample


class Text(str):
    """A str subclass (json.loads never makes one): not the fast path's exact type, the full walk decides."""


def _turns(value="<image>\nWhat colour?"):
    return [{"from": "human", "value": value}, {"from": "gpt", "value": "Red."}]


@pytest.mark.parametrize(
    ("record", "shallow"),
    [
        ({"id": "a", "image": "x.jpg", "conversations": _turns()}, True),
        ({"id": 1, "score": 0.5, "ok": True, "none": None, "conversations": _turns()}, True),
        ({"id": Text("a"), "conversations": _turns()}, False),  # a subclass: the walk, and it is valid
        ({"conversations": [{"from": "human", "value": ["nested"]}]}, False),
        ({"meta": {"a": 1}, "conversations": _turns()}, False),
    ],
)
def test_fast_path_takes_exact_json_types_only(record, shallow):
    assert llava_record_checks._shallow(record) is shallow


def test_records_off_the_fast_path_get_the_same_verdicts():
    llava_json.check_record({"id": Text("a"), "image": "x.jpg", "conversations": _turns()})  # valid: no raise
    deep = {"conversations": _turns()}
    node = deep
    for _ in range(llava_json.MAX_NESTING + 2):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(SkipSample, match="nested more than"):
        llava_json.check_record(deep)


def test_missing_images_are_found_with_one_stat_per_distinct_image(tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"x")
    records = [
        {"id": str(k), "image": ["img/a.jpg", "img/gone.jpg", "img/a.jpg"][k % 3], "conversations": _turns()}
        for k in range(30)
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    calls = []
    real = os.path.isfile
    monkeypatch.setattr(llava_json.os.path, "isfile", lambda p: calls.append(p) or real(p))
    llava_records.clear_cache()
    kept = llava_json.load_records(path, image_root=tmp_path)
    assert len(kept) == 20 and [e.reason for e, _, _ in kept.skips] == ["missing_image"] * 10
    assert sorted(kept.positions.tolist()) == [k for k in range(30) if k % 3 != 1]
    assert len(calls) == 2  # img/a.jpg and img/gone.jpg, once each
    llava_records.clear_cache()


def _variants():
    """Valid records and every kind of defect the checks know, in the usual shape and around it."""
    ok = {"id": "a", "image": "x.jpg", "conversations": _turns()}
    yield ok
    yield {"id": 1, "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    yield {**ok, "conversations": _turns("What?\n<image>")}
    yield {**ok, "conversations": _turns("<image>") + [{"from": "human", "value": "  "}]}
    yield {**ok, "conversations": _turns("<image>")[:1] + [{"from": "gpt", "value": ""}]}  # every turn blank
    yield {**ok, "conversations": [{"from": "human", "value": " <image> "}, {"from": "gpt", "value": " "}]}
    yield {**ok, "image": None}  # an image placeholder without an image
    yield {k: v for k, v in ok.items() if k != "image"}
    yield {**ok, "image": 3}
    yield {**ok, "image": ["x.jpg"]}
    yield {**ok, "conversations": _turns("<image><image>")}
    yield {**ok, "conversations": _turns("no placeholder")}
    yield {**ok, "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "<image>"}]}
    yield {**ok, "conversations": []}
    yield {**ok, "conversations": "text"}
    yield {"id": "x"}
    yield {**ok, "conversations": [{"from": "human"}]}
    yield {**ok, "conversations": [{"from": 1, "value": "<image>"}]}
    yield {**ok, "conversations": ["turn"]}
    yield {**ok, "conversations": [{"from": "human", "value": "<image>", "extra": [1]}]}
    yield {**ok, "tags": ["a"]}
    yield {**ok, "meta": {"a": 1}}
    yield {**ok, "id": Text("a")}
    yield {**ok, "conversations": [{"from": Text("human"), "value": "<image>"}, {"from": "gpt", "value": "x"}]}
    yield [ok]
    yield "record"


def _full_verdict(record):
    """What the full checks say (the fast path bypassed)."""
    if isinstance(record, dict):
        saved = llava_record_checks._usual_and_valid
        llava_record_checks._usual_and_valid = lambda r: False
    try:
        llava_record_checks.check_record(record)
        return None
    except SkipSample as error:
        return str(error)
    finally:
        if isinstance(record, dict):
            llava_record_checks._usual_and_valid = saved


def test_the_one_pass_fast_path_passes_exactly_the_valid_usual_records():
    verdicts = []
    for record in _variants():
        full = _full_verdict(record)
        try:
            llava_record_checks.check_record(record)
            got = None
        except SkipSample as error:
            got = str(error)
        assert got == full, record  # same verdict and message with the fast path
        if isinstance(record, dict) and llava_record_checks._usual_and_valid(record):
            assert full is None, record  # the fast path never passes what the full checks refuse
        verdicts.append(full is None)
    assert verdicts.count(True) == 8 and verdicts.count(False) == 18  # the variants cover both sides
