"""LLaVA-format JSON datasets: `blip_laion_cc_sbu_558k.json`, `llava_v1_5_mix665k.json` and the like.

A record is `{"id": ..., "image": "relative/path.jpg" (optional), "conversations": [{"from":
"human"|"gpt", "value": str}, ...]}`; the `<image>` placeholder may sit anywhere in the
first human turn (the core template moves it to the front as LLaVA does); records without
`image` are text-only (pixel_values None; the collator gives them a zeros image). Files are
a JSON array (`.json`) or one record per line (`.jsonl`). Tokenization is the core's
`tokenize_conversation` (same templates, same -100 masking) and images go through
`process_image` (LLaVA-1.5 `pad`, or `resize` / `crop`).

Bad samples never stop training. Cheap checks run when the file is read (malformed JSON
lines and records, empty conversations, `<image>` without an image and the reverse, and
with `check_images` missing image files), and those records are dropped and counted; the
rest (corrupt or truncated images, over-long conversations, wrong turn order) are found
when a sample is loaded: the dataset counts it (`deco.data.skips`, shared across DataLoader
workers) and returns the next good record instead, so batches keep their size and every
DDP rank takes the same number of steps. Skip counts are per split: records rejected while
reading the file count once, in the `train` (or `all`) split.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from deco.data.conversation import SampleTooLong, get_template, tokenize_conversation
from deco.data.image import ASPECTS, image_size_problem, process_image
from deco.data.llava_record_checks import (  # noqa: F401 (MAX_NESTING, check_record: re-exported)
    MAX_NESTING,
    check_record,
    read_options,
    readable_check,
)
from deco.data.llava_records import Records, read_records
from deco.data.skips import SkipCounter, SkipSample
from deco.data.tokenizer import IMAGE_TOKEN

log = logging.getLogger(__name__)

SPLITS = ("all", "train", "val")
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _with_size(counter: SkipCounter, size: int) -> SkipCounter:
    """A copy of `counter` (same counts) that also de-duplicates by sample index < size."""
    out = SkipCounter(counter.name, counter.log_first, size=size)
    out.load(counter.counts())
    return out


def record_id(record: dict, position: int) -> str:
    return str(record.get("id", f"#{position}"))


def open_image(source: str | os.PathLike | bytes) -> Image.Image:
    """Decode an image fully (path or bytes); SkipSample('missing_image' / 'corrupt_image') if impossible."""
    if not isinstance(source, bytes) and not os.path.isfile(source):
        raise SkipSample("missing_image", f"no file {str(source)!r}")
    try:
        with warnings.catch_warnings():  # PIL warns of a likely bomb at open; it is skipped just below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        problem = image_size_problem(img.size)  # from the header, before anything is decoded
        if problem:
            raise SkipSample(*problem)
        img.load()  # decode now: truncated files fail here, not later inside the processor
        return img
    except _IMAGE_ERRORS as error:
        raise SkipSample("corrupt_image", f"{type(error).__name__}: {error}") from None


def build_sample(
    record: dict,
    load_image: Callable[[], Image.Image] | None,
    *,
    tokenizer,
    image_processor,
    template: str,
    max_length: int | None,
    image_aspect: str,
    sample_id: str,
) -> dict:
    """Tokenize a checked record and preprocess its image -> {input_ids, labels, pixel_values, id}.

    load_image: returns the decoded image (or raises SkipSample); None for text-only records.
    Raises SkipSample('too_long' / 'bad_conversation' / image reasons).
    """
    try:
        tok = tokenize_conversation(record["conversations"], tokenizer, template, max_length)
    except SampleTooLong as error:
        raise SkipSample("too_long", str(error)) from None
    except ValueError as error:
        raise SkipSample("bad_conversation", str(error)) from None
    pixels = None
    if load_image is not None:
        img = load_image()
        try:
            pixels = process_image(img, image_processor, image_aspect)  # 3 S S
        except _IMAGE_ERRORS as error:
            raise SkipSample("corrupt_image", f"preprocessing failed: {type(error).__name__}: {error}") from None
    return {**tok, "pixel_values": pixels, "id": sample_id}


def check_dataset_args(tokenizer, template: str, max_length: int | None, image_aspect: str) -> None:
    """Fail before training on settings that would make every sample a skip."""
    get_template(template)
    if image_aspect not in ASPECTS:
        raise ValueError(f"unknown image_aspect {image_aspect!r}; allowed: {list(ASPECTS)}")
    if max_length is not None and max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    # Raises a clear ValueError for a tokenizer without <image>/bos/eos.
    probe = [{"from": "human", "value": f"{IMAGE_TOKEN}\nx"}, {"from": "gpt", "value": "y"}]
    tokenize_conversation(probe, tokenizer, template, None)


def _count_skips(records: Records, skips: SkipCounter, path: Path) -> None:
    for error, record, pos in records.skips:
        if record is None and not isinstance(error, SkipSample):  # a .jsonl line that is not JSON
            skips.add("malformed_json", f"{path.name}:{pos + 1}", str(error) or type(error).__name__)
        else:
            skips.skip(error, record_id(record, pos) if isinstance(record, dict) else f"#{pos}")


def load_records(
    path: str | os.PathLike, allow_absolute_paths: bool = False, image_root: Path | None = None
) -> Records:
    """The structurally valid records of a .json array or .jsonl file, read once per process (both splits).

    Malformed lines / records, records whose image path leaves the image root (`unsafe_path`: `../x.jpg`,
    and absolute paths unless `allow_absolute_paths`), and with `image_root` records whose image file is
    not there (`missing_image`: one stat each), are dropped and kept in `.skips`.
    A missing file, or a .json file that is not a JSON array, raises.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"LLaVA JSON file not found: {str(path)!r}")
    options = read_options(allow_absolute_paths, image_root)
    return read_records(path, readable_check(allow_absolute_paths, image_root), options=options)


def read_json_records(
    path: str | os.PathLike, skips: SkipCounter | None, allow_absolute_paths: bool = False
) -> list[tuple[int, dict]]:
    """(position, record) for every structurally valid record (skips counted in `skips` unless None)."""
    records = load_records(path, allow_absolute_paths)
    if skips is not None:
        _count_skips(records, skips, Path(path).expanduser())
    return [(int(records.positions[k]), records.record(k)) for k in range(len(records))]


# val_size=auto: 1% of the valid records, at least 1 and at most this many.
AUTO_VAL_MAX = 1000


def resolve_val_size(val_size: int | float | str, num_records: int) -> int:
    """Held-out records for `val_size`: an int is a count; a float in (0, 1) a fraction (rounded up);
    "auto" 1% of the records, at least 1, at most AUTO_VAL_MAX (so any dataset of 2+ records splits)."""
    if val_size == "auto":
        return min(AUTO_VAL_MAX, max(1, num_records // 100)) if num_records > 1 else 0
    if isinstance(val_size, float) and not isinstance(val_size, bool):
        if not 0 < val_size < 1:
            raise ValueError(f"data.val_size={val_size}: a fraction must be in (0, 1); or give a count or auto")
        return max(1, math.ceil(val_size * num_records)) if num_records > 1 else 0
    if isinstance(val_size, int) and not isinstance(val_size, bool) and val_size >= 0:
        return val_size
    raise ValueError(f"data.val_size={val_size!r}: use a count >= 0, a fraction in (0, 1) or auto")


class LlavaJsonDataset(torch.utils.data.Dataset):
    """LLaVA-format records + an image folder, tokenized and preprocessed on access.

    json_path: .json (array) or .jsonl file. image_root: folder the records' `image` paths are
    relative to (default: the JSON file's folder). num_samples: keep at most the first N
    records of the split. split/val_size: "val" is the last `val_size` valid records, "train"
    the rest, "all" everything; val_size is a count, a fraction in (0, 1), or "auto" (see `resolve_val_size`). check_images: test at start that every image file exists
    (one stat per record). max_retries: consecutive bad records tolerated before giving up.
    allow_absolute_paths: read records whose `image` is an absolute path (refused by default, as
    are paths that leave image_root, e.g. `../x.jpg`: skipped as `unsafe_path`).
    Items: input_ids (t), labels (t), pixel_values (3 S S float, None for text-only), id.
    """

    def __init__(
        self,
        json_path: str,
        image_root: str | None = None,
        num_samples: int | None = None,
        split: str = "all",
        val_size: int | float | str = 0,
        check_images: bool = True,
        max_retries: int = 32,
        allow_absolute_paths: bool = False,
        *,
        tokenizer,
        image_processor,
        template: str = "vicuna_v1",
        max_length: int | None = 2048,
        image_aspect: str = "pad",
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if num_samples is not None and num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        resolve_val_size(val_size, 2)  # a bad value fails before the file is read
        check_dataset_args(tokenizer, template, max_length, image_aspect)
        self.json_path = Path(json_path).expanduser()
        if not self.json_path.is_file():  # before image_root, which defaults to this file's folder
            raise FileNotFoundError(f"data.json_path: LLaVA JSON file not found: {str(self.json_path)!r}")
        self.image_root = Path(image_root).expanduser() if image_root is not None else self.json_path.parent
        if not self.image_root.is_dir():
            raise FileNotFoundError(f"image_root is not a directory: {str(self.image_root)!r}")
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.template, self.max_length, self.image_aspect = template, max_length, image_aspect
        self.max_retries = max_retries
        self.skips = SkipCounter(f"llava_json[{split}]")

        # One parse per process for both splits; file-level skips are counted once: by the train (or all) split.
        records = load_records(self.json_path, allow_absolute_paths, self.image_root if check_images else None)
        if split != "val":
            _count_skips(records, self.skips, self.json_path)
        val_size = resolve_val_size(val_size, len(records))
        if split != "all" and val_size >= len(records):
            raise ValueError(
                f"data val_size={val_size} leaves no training records: "
                f"{self.json_path} has {len(records)} valid records"
            )
        keep = np.arange(len(records), dtype=np.int64)  # indices into the shared records, in file order
        if split == "val":
            keep = keep[len(records) - val_size :]
        elif split == "train" and val_size:
            keep = keep[: len(records) - val_size]
        if num_samples is not None:
            keep = keep[:num_samples]
        if not len(keep):
            raise ValueError(f"no usable samples in {self.json_path} (split {split!r}); {self.skips.summary()}")
        # The records stay one bytes blob + int64 offsets shared by the splits (deco.data.llava_records):
        # compact, and forked workers do not touch millions of Python objects.
        self._records, self._keep = records, keep
        # A second counter keyed by sample index: a bad sample counts once however many epochs read it.
        self.skips = _with_size(self.skips, len(keep))
        if self.skips.total():
            log.warning("%s (%d usable)", self.skips.summary(), len(self))

    def __len__(self) -> int:
        return len(self._keep)

    def record(self, i: int) -> dict:
        k = int(self._keep[i])
        return {**self._records.record(k), "_pos": int(self._records.positions[k])}

    def load(self, i: int) -> dict:
        """Sample i, or SkipSample if it is broken."""
        record = self.record(i)
        pos = record.pop("_pos")
        image = record.get("image")
        loader = None if image is None else (lambda: open_image(self.image_root / image))
        return build_sample(
            record,
            loader,
            tokenizer=self.tokenizer,
            image_processor=self.image_processor,
            template=self.template,
            max_length=self.max_length,
            image_aspect=self.image_aspect,
            sample_id=record_id(record, pos),
        )

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} samples")
        for attempt in range(min(self.max_retries, n - 1) + 1):
            j = (i + attempt) % n
            if self.skips.is_known_bad(j):  # found bad in an earlier epoch: no need to decode it again
                continue
            try:
                return self.load(j)
            except SkipSample as error:
                record = self.record(j)
                self.skips.skip(error, record_id(record, record["_pos"]), index=j)
        raise RuntimeError(
            f"{self.max_retries + 1} consecutive bad samples from index {i} in {self.json_path}: "
            f"the data looks broken ({self.skips.summary()})"
        )
