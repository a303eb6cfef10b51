"""The predictions file of an evaluation: one JSON line per answered question, and resuming from it.

A run streams `predictions.jsonl` as batches finish, so a killed or failed run keeps every answer it
finished. `finished_answers` reads such a file back (a torn last line from a kill is dropped) and keeps
the answers whose id and prompt match the benchmark's questions now, so a rerun into the same run dir
(or with `resume_from=`) asks only the rest.
"""

from __future__ import annotations

import json
import logging
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


def read_records(path: Path) -> list[dict]:
    """The complete JSON lines of a predictions file; a line that does not parse (torn by a kill) is dropped."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: unreadable line dropped (a run killed while writing it)", path, number)
            continue
        if isinstance(record, dict) and "id" in record and "answer" in record:
            records.append(record)
    return records


def finished_answers(path: Path, ids: Sequence, prompts: Sequence[str]) -> dict[str, dict]:
    """{id_key: record} of the answers in `path` that belong to these questions (same id, same prompt)."""
    if not path.is_file():
        return {}
    wanted = {id_key(i): p for i, p in zip(ids, prompts)}
    done, stale = {}, 0
    for record in read_records(path):
        k = id_key(record["id"])
        if k in wanted and record.get("prompt") == wanted[k]:
            done[k] = record
        elif k in wanted:
            stale += 1
    if stale:
        log.warning("%s: %d answers were asked with another prompt; asking them again", path, stale)
    return done
