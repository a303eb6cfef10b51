"""LLaVA JSON records read once per process and held compactly: one bytes blob, numpy offsets.

`llava_v1_5_mix665k.json` is ~1 GB of JSON: `json.loads` of the whole file builds millions of Python objects
(several GB), and the train and val splits used to read it once each. Here the file is streamed: each record
is decoded on its own (`json.JSONDecoder.raw_decode` over a sliding window of the text, so the whole file is
never in memory as text or objects), checked, and its original bytes appended to one blob; `offsets` (int64)
mark where each record starts and `positions` (int64) where it sat in the file. A record is decoded again when
a sample is loaded. Forked DataLoader workers share the blob's pages and touch no per-record Python objects.

`read_records` keeps the last file it read (path, size, mtime and the reading options as the key), so the
`train` and `val` splits of `data=llava_json` parse the file once between them; the file-level skip counts
come with it. A progress line (`deco.data.llava_records` logger) is written every few seconds while reading.
"""

from __future__ import annotations

import codecs
from array import array
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CHUNK = 8 << 20  # bytes read at a time
MAX_RECORD_CHARS = 64 << 20  # an element that does not decode within this much text is an error
PROGRESS_EVERY_S = 2.0
_WS = re.compile(r"[ \t\n\r]*")


@dataclass
class Records:
    """The valid records of one file: bytes of record k are blob[offsets[k]:offsets[k + 1]]."""

    blob: bytearray
    offsets: np.ndarray  # int64, len = n + 1
    positions: np.ndarray  # int64, the record's index in the file (line number for .jsonl)
    skips: list = field(default_factory=list)  # (exception, record or None, position) of each record dropped

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, k: int) -> bytes:
        return self.blob[self.offsets[k] : self.offsets[k + 1]]

    def record(self, k: int) -> dict:
        return json.loads(self.raw(k))


def iter_json_array(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[tuple[object, str]]:
    """(record, its source text) for each element of the JSON array in `path`, decoding one at a time.

    Raises ValueError when the file is not a JSON array (or not valid JSON).
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as f:
        buf, i, eof = "", 0, False

        def fill() -> None:
            nonlocal buf, i, eof
            chunk = f.read(CHUNK)
            eof = not chunk
            if on_bytes is not None and chunk:
                on_bytes(len(chunk))
            buf, i = buf[i:] + utf8.decode(chunk, final=eof), 0

        fill()
        while not buf and not eof:  # the first bytes may not make a whole character yet
            fill()
        if buf.startswith("\ufeff"):
            i = 1
        i = _WS.match(buf, i).end()
        while i >= len(buf) and not eof:
            fill()
            i = _WS.match(buf, i).end()
        if i >= len(buf) or buf[i] != "[":
            try:  # a valid JSON document of another type, or not JSON at all
                kind = type(json.loads(buf[i:] + utf8.decode(f.read(), final=True))).__name__
            except ValueError as error:
                raise ValueError(f"not valid JSON ({error})") from None
            raise TypeError(kind)
        i += 1
        first = True
        raw_decode, ws = decoder.raw_decode, _WS.match
        while True:
            if i < len(buf) and buf[i] in " \t\n\r":
                i = ws(buf, i).end()
            if i >= len(buf):
                if eof:
                    raise ValueError("not valid JSON (the array is not closed)")
                fill()
                continue
            if first and buf[i] == "]":
                return
            try:
                obj, end = raw_decode(buf, i)
            except json.JSONDecodeError as error:
                if eof or len(buf) - i > MAX_RECORD_CHARS:
                    raise ValueError(f"not valid JSON ({error})") from None
                fill()  # the element may go on in the next chunk
                continue
            j, n = end, len(buf)
            if j < n and buf[j] in " \t\n\r":
                j = ws(buf, j).end()
            # a number may go on in the next chunk ("0.5e" of "0.5e-3"): decode it again with more text
            if not eof and (j >= n or buf[j] not in ",]" and j + 64 >= n):
                fill()
                continue
            yield obj, buf[i:end]
            first = False
            if j >= n:
                raise ValueError("not valid JSON (the array is not closed)")
            if buf[j] == "]":
                return
            if buf[j] != ",":
                raise ValueError(f"not valid JSON (expected ',' or ']' after element, found {buf[j]!r})")
            i = j + 1


class _Progress:
    def __init__(self, path: Path):
        self.path, self.total = path, max(path.stat().st_size, 1)
        self.done, self.start, self.last = 0, time.monotonic(), time.monotonic()

    def bytes(self, n: int) -> None:
        self.done += n

    def tick(self, records: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            log.info(
                "reading %s: %.0f / %.0f MB (%.0f%%), %d records, %.1f s",
                self.path.name,
                self.done / 2**20,
                self.total / 2**20,
                100 * self.done / self.total,
                records,
                now - self.start,
            )


_LAST: dict = {}


def read_records(path: Path, check: Callable[[object, int], None], options: tuple = ()) -> Records:
    """The records of `path` that pass `check(record, position)`, which raises to drop one (the exception,
    record and position are kept in `skips`). The last result is reused while the file (size, mtime) and
    `options` are unchanged."""
    key = records_key(path, options)
    if _LAST.get("key") == key:
        return _LAST["records"]
    from deco.data.llava_prefetch import collect

    records = collect(key)  # read by a forked reader while the run started (None: there was none)
    if records is None:
        records = _read(path, check)
    _LAST.clear()
    _LAST.update(key=key, records=records)
    return records


def records_key(path: Path, options: tuple = ()) -> tuple:
    """What a read of `path` is cached under: the file (resolved path, size, mtime) and the reading options."""
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, options)


def _read(path: Path, check: Callable[[object, int], None]) -> Records:
    progress = _Progress(path)
    # 8 bytes per record for offsets and positions while reading (Python ints in a list take ~36)
    blob, offsets, positions, skips = bytearray(), array("q", [0]), array("q"), []

    def keep(record, text: bytes, pos: int) -> None:
        try:
            check(record, pos)
        except Exception as error:  # noqa: BLE001 - the checker's own exception type: a skip
            skips.append((error, record, pos))
            return
        blob.extend(text)
        offsets.append(len(blob))
        positions.append(pos)

    if path.suffix == ".jsonl":
        with path.open("rb") as f:
            for pos, line in enumerate(f):
                progress.bytes(len(line))
                if not pos % 4096:
                    progress.tick(len(positions))
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError, deep nesting
                    skips.append((error, None, pos))
                    continue
                keep(record, line.strip(), pos)
    else:
        try:
            for pos, (record, text) in enumerate(iter_json_array(path, progress.bytes)):
                if not pos % 4096:
                    progress.tick(len(positions))
                keep(record, text.encode(), pos)
        except RecursionError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); one record per line needs a .jsonl name") from None
        except ValueError as error:
            raise ValueError(f"{path} is {error}; one record per line needs a .jsonl name") from None
        except TypeError as error:
            raise ValueError(f"{path} must hold a JSON array of records, got {error}") from None
    records = Records(blob, np.frombuffer(offsets, dtype=np.int64), np.frombuffer(positions, dtype=np.int64), skips)
    log.info(
        "read %s: %d records kept, %d dropped, %.1f s",
        path.name,
        len(records),
        len(skips),
        time.monotonic() - progress.start,
    )
    return records


def clear_cache() -> None:
    """Forget the last file read (tests; a file rewritten within the mtime resolution)."""
    _LAST.clear()


__all__ = ["Records", "read_records", "records_key", "iter_json_array", "clear_cache"]
