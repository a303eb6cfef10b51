"""The predictions file of an evaluation: one JSON line per answered question, and resuming from it.

A run streams `predictions.jsonl` as batches finish, so a killed or failed run keeps every answer it
finished. `finished_answers` reads such a file back (a torn last line from a kill is dropped) and keeps
the answers whose id, prompt and reference match the benchmark's questions now (a changed reference,
e.g. a grounding box in another image frame, means the answer is asked again), so a rerun into the same
run dir (or with `resume_from=`) asks only the rest.
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


def finished_answers(path: Path, ids: Sequence, prompts: Sequence[str], references: Sequence) -> dict[str, dict]:
    """{id_key: record} of the answers in `path` that belong to these questions (same id, prompt, reference)."""
    if not path.is_file():
        return {}
    wanted = {id_key(i): (p, id_key(r)) for i, p, r in zip(ids, prompts, references)}
    done, stale = {}, 0
    for record in read_records(path):
        k = id_key(record["id"])
        if k in wanted and (record.get("prompt"), id_key(record.get("reference"))) == wanted[k]:
            done[k] = record
        elif k in wanted:
            stale += 1
    if stale:
        log.warning("%s: %d answers were asked with another prompt or reference; asking them again", path, stale)
    return done
