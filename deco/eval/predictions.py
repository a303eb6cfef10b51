"""The predictions file of an evaluation: one JSON line per answered question, and resuming from it.

A run streams `predictions.jsonl` as batches finish, so a killed or failed run keeps every answer it
finished. `finished_answers` reads such a file back (a torn last line from a kill is dropped, also when the
tear splits a multi-byte UTF-8 character) and keeps the answers whose id, prompt and reference match the
benchmark's questions now (a changed reference, e.g. a grounding box in another image frame, means the
answer is asked again) and whose `model` is this model's `fingerprint` (the checkpoint's bytes and the
options that change answers): a rerun after `last.ckpt` changed, or with another `ckpt=` into the same run
dir, asks everything again instead of reporting another model's answers. So a rerun into the same run dir
(or with `resume_from=`) asks only the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


def id_key(sample_id) -> str:
    """A hashable key of a sample id as it reads back from JSON (42 and "42" stay different)."""
    return json.dumps(jsonable(sample_id), sort_keys=True, default=str)


def _hash_file(path: Path, digest) -> None:
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 23), b""):
            digest.update(block)


def fingerprint(ckpt: str | Path, **options) -> str:
    """Identity of the model a checkpoint gives: a hash of its bytes (a file, or every file of a directory,
    with their relative names) and of `options` (load and generation settings that change answers).

    A hub name that is not a local path is hashed by name. Reading the bytes costs about a second per GB,
    small next to evaluating the model it belongs to.
    """
    digest = hashlib.blake2b(digest_size=12)
    path = Path(str(ckpt)).expanduser()
    if path.is_file():
        _hash_file(path, digest)
    elif path.is_dir():
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                file = Path(root) / name
                if file.is_file():
                    digest.update(str(file.relative_to(path)).encode() + b"\0")
                    _hash_file(file, digest)
    else:
        digest.update(f"name:{ckpt}".encode())
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def read_records(path: Path) -> list[dict]:
    """The complete JSON lines of a predictions file; a line that does not decode or parse is dropped.

    A kill or a full disk mid-write leaves a torn last line, possibly half a multi-byte UTF-8 character: the
    file is split into lines as bytes and each is decoded on its own, so one torn line never blocks the rest.
    """
    records = []
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            log.warning("%s:%d: unreadable line dropped (a run killed while writing it)", path, number)
            continue
        if isinstance(record, dict) and "id" in record and "answer" in record:
            records.append(record)
    return records


def finished_answers(path: Path, ids: Sequence, prompts: Sequence[str], references: Sequence,
                     model: str | None = None) -> dict[str, dict]:
    """{id_key: record} of the answers in `path` that belong to these questions (same id, prompt, reference)
    and, when `model` is given, were answered by that model (`fingerprint`); others are asked again."""
    if not path.is_file():
        return {}
    wanted = {id_key(i): (p, id_key(r)) for i, p, r in zip(ids, prompts, references)}
    done, stale, foreign = {}, 0, 0
    for record in read_records(path):
        k = id_key(record["id"])
        if k not in wanted:
            continue
        if model is not None and record.get("model") != model:
            foreign += 1
        elif (record.get("prompt"), id_key(record.get("reference"))) == wanted[k]:
            done[k] = record
        else:
            stale += 1
    if foreign:
        log.warning("%s: %d answers came from another model or settings (the checkpoint changed, or another "
                    "ckpt= wrote them); refusing them and asking again", path, foreign)
    if stale:
        log.warning("%s: %d answers were asked with another prompt or reference; asking them again", path, stale)
    return done
