"""Cheap structural checks of one LLaVA record, run on every record while a file is read (665k for the
LLaVA-1.5 mix, so the usual shape takes a fast path of plain loops over exact JSON types: `_usual_and_valid`
passes a valid record of the usual shape in one pass; anything else takes the full checks, which name the
problem)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deco.data.skips import SkipSample
from deco.data.image_paths import image_path_problem
from deco.data.tokens import IMAGE_TOKEN

MAX_NESTING = 32  # a LLaVA record nests 3 deep; far deeper ones could overflow the stack when re-read


def _nesting(value: Any) -> int:
    """How deep lists and objects nest in `value` (iterative: no recursion limit to hit)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_NESTING:
                todo.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


_SCALARS = frozenset((str, int, float, bool, type(None)))  # the types json.loads makes (exact types)


def _shallow(record: dict) -> bool:
    """True for the usual shape (scalars, and lists of objects of scalars: at most 3 deep); a fast path
    before `_nesting`, which walks every value (a value of another type, a subclass included, takes that walk).
    Plain loops over exact types: 665k records go through it when the file is read."""
    for value in record.values():
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind is not list:
            return False
        for item in value:
            if type(item) is not dict:
                return False
            for v in item.values():
                if type(v) not in _SCALARS:
                    return False
    return True


def _usual_and_valid(record: dict) -> bool:
    """True when `record` has the usual shape (exact JSON types: scalars, and one list, `conversations`, of
    objects of scalars) and passes every check below; False sends it to them (they raise, or let it pass).
    One pass over the turns instead of two: 665k records go through it when the file is read."""
    for key, value in record.items():
        kind = type(value)
        if kind is list:
            if key != "conversations":
                return False
        elif kind not in _SCALARS:
            return False
    conv = record.get("conversations")
    if not conv or type(conv) is not list:
        return False
    placeholders, blank = 0, True
    for turn in conv:
        if type(turn) is not dict:
            return False
        for v in turn.values():
            if type(v) not in _SCALARS:
                return False
        value, speaker = turn.get("value"), turn.get("from")
        if type(value) is not str or type(speaker) is not str:
            return False
        if IMAGE_TOKEN in value:
            if speaker == "gpt":
                return False
            placeholders += value.count(IMAGE_TOKEN)
            if blank and value.replace(IMAGE_TOKEN, "").strip():
                blank = False
        elif blank and value.strip():
            blank = False
    image = record.get("image")
    return not blank and (placeholders == 0 if image is None else type(image) is str and placeholders == 1)


def check_record(record: Any) -> None:
    """Cheap structural checks of one LLaVA record; raises SkipSample naming what is wrong."""
    if type(record) is dict and _usual_and_valid(record):
        return
    if not isinstance(record, dict):
        raise SkipSample("malformed_json", f"record is a {type(record).__name__}, expected an object")
    if not _shallow(record) and _nesting(record) > MAX_NESTING:
        raise SkipSample("malformed_json", f"lists/objects nested more than {MAX_NESTING} deep")
    conv = record.get("conversations")
    if not isinstance(conv, list):
        raise SkipSample("malformed_json", f"'conversations' must be a list, got {type(conv).__name__}")
    if not conv:
        raise SkipSample("empty_conversation", "no turns")
    # one pass over the turns (665k records are checked when the file is read)
    placeholders, blank, in_answer = 0, True, False
    for k, turn in enumerate(conv):
        if not (isinstance(turn, dict) and isinstance(turn.get("from"), str) and isinstance(turn.get("value"), str)):
            raise SkipSample("bad_conversation", f"turn {k} must be an object with string 'from' and 'value'")
        value = turn["value"]
        count = value.count(IMAGE_TOKEN)
        if count:
            placeholders += count
            in_answer = in_answer or turn["from"] == "gpt"
            if blank and value.replace(IMAGE_TOKEN, "").strip():
                blank = False
        elif blank and value.strip():
            blank = False
    if blank:
        raise SkipSample("empty_conversation", "every turn is blank")
    image = record.get("image")
    if image is not None and not isinstance(image, str):
        raise SkipSample("bad_conversation", f"'image' must be one path (str), got {type(image).__name__}")
    if in_answer:
        raise SkipSample("bad_conversation", f"{IMAGE_TOKEN} in an assistant turn")
    if image is not None and placeholders != 1:
        raise SkipSample("bad_conversation", f"record has an image and {placeholders} {IMAGE_TOKEN} placeholders")
    if image is None and placeholders:
        raise SkipSample("bad_conversation", f"{IMAGE_TOKEN} placeholder but no 'image'")


def read_options(allow_absolute_paths: bool, image_root: Path | str | None) -> tuple:
    """The `read_records` options (part of the read's cache key) of a read checked by `readable_check` with these
    arguments: the dataset and the forked reader (deco.data.llava_prefetch) must build the same key."""
    return (bool(allow_absolute_paths), None if image_root is None else str(image_root))


def readable_check(allow_absolute_paths: bool, image_root: Path | None) -> Callable[[Any, int], None]:
    """`check(record, position)` for `read_records`: `check_record`, then the image path's rule
    (`unsafe_path`) and, with an `image_root`, whether the image file is there (`missing_image`)."""
    root = None if image_root is None else os.path.join(image_root, "")
    exists: dict[str, bool] = {}  # one stat per distinct image while the file is read (665k records, ~100k images)

    def check(record: Any, pos: int) -> None:
        check_record(record)
        image = record.get("image")
        if image:
            # the common relative path without "..": nothing to check (image_path_problem is the rule)
            if ".." in image or image.startswith(("/", "~")) or os.sep != "/":
                problem = image_path_problem(image, allow_absolute_paths)
                if problem:
                    raise SkipSample("unsafe_path", problem)
            if root is not None:
                found = exists.get(image)
                if found is None:
                    found = exists[image] = os.path.isfile(
                        os.path.join(root, image) if image[0] == "/" else root + image
                    )
                if not found:
                    raise SkipSample("missing_image", f"no file {str(image_root / image)!r}")

    return check
