"""An on-disk cache of frozen-tower outputs, shared by the runs of a study.

Every projector of a sweep, and every seed's rerun, feeds the same frozen vision tower the same scenes: the
tower's output for a sample depends only on the tower's weights, the preprocessing, and the image the data
source draws for that sample. This cache stores it once, on disk, and every later run reads it back.

Keys and invalidation. A cache directory holds one *namespace* per (tower fingerprint, preprocessing): the
digest of both names a subdirectory, so a changed weight, `select_layer`, processor setting or
`image_aspect` reads and writes a different namespace and never sees the old entries (they age out under
the size bound below). Inside a namespace an entry is named by the data source's key for the sample's
image (e.g. `shapes:seed=0:size=336:index=123`: the data seed and sample index), hashed to a file name.
`namespace.json` next to the entries says in words what the namespace holds.

Entry files: a 32-byte header (magic, dtype code, rank, payload length, CRC-32 of the payload), the shape,
then the raw tensor bytes. A file with a wrong magic, length or checksum is a *corrupt* entry: it is
deleted, counted, and read as a miss (the caller recomputes and rewrites it).

Concurrency: an entry is written to a temporary file in its own directory and renamed over its name
(`os.replace`, atomic on POSIX), so a reader in another lane sees the old file, the new file or none,
never a torn one; two lanes that compute the same entry write the same bytes.

Size bound and eviction rule: the cache directory (all namespaces) is kept under `max_bytes`. A hit
refreshes the entry's modification time; every process re-counts the directory when it has written a
twentieth of the bound since its last count (and at its first write), and when the total is above the
bound it deletes the entries with the oldest modification time (least recently used, any namespace) until
the total is at most 90 % of the bound. An entry deleted under a reader is a miss for that reader.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deco.utils.io import atomic_write_bytes

MAGIC = b"DECOFEA1"
_HEADER = struct.Struct("<8sBBxxxxxxQI")  # magic, dtype code, rank, pad, payload bytes, crc32 -> 32 bytes
_DTYPES = {1: torch.float32, 2: torch.float16, 3: torch.bfloat16}
_CODES = {v: k for k, v in _DTYPES.items()}
SUFFIX = ".feat"
LOW_WATER = 0.9  # eviction stops at this fraction of the bound


def digest(obj) -> str:
    """Stable hex digest of a JSON-able description (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    writes: int = 0
    corrupt: int = 0
    evicted: int = 0
    bytes_read: int = 0
    bytes_written: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FeatureCache:
    """Entries of one namespace under `root`, the whole of `root` bounded by `max_bytes`.

    Args:
        root: the cache directory (created if missing); one directory may serve many runs at once.
        namespace: what the stored features depend on besides the sample (tower fingerprint, preprocessing).
        max_bytes: the bound on everything under `root`.
        dtype: the dtype entries are stored in (`torch.float32` keeps the tower's values exactly).
    """

    root: Path
    namespace: dict
    max_bytes: int
    dtype: torch.dtype = torch.float32
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self):
        if self.max_bytes <= 0:
            raise ValueError(f"tower_features.max_gb must be positive (got a bound of {self.max_bytes} bytes)")
        if self.dtype not in _CODES:
            raise ValueError(f"tower_features.dtype {self.dtype} is not supported; choose one of: "
                             f"{', '.join(str(d).removeprefix('torch.') for d in _CODES)}")
        self.root = Path(self.root).expanduser()
        self.name = digest({**self.namespace, "stored_dtype": str(self.dtype)})[:20]
        self.dir = self.root / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "namespace.json"
        if not info.exists():
            atomic_write_bytes(info, json.dumps(self.namespace, indent=1, sort_keys=True, default=str).encode())
        self._written_since_count = None  # count the directory at the first write

    def path(self, key: str) -> Path:
        h = hashlib.sha1(key.encode()).hexdigest()
        return self.dir / h[:2] / (h + SUFFIX)

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()

    def get(self, key: str) -> torch.Tensor | None:
        """The stored tensor, or None (missing, or corrupt: then deleted and counted)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        tensor = _decode(data)
        if tensor is None:
            self.stats.corrupt += 1
            self.stats.misses += 1
            path.unlink(missing_ok=True)
            return None
        try:
            os.utime(path)  # least recently used = oldest mtime
        except FileNotFoundError:  # evicted by another lane meanwhile; the bytes read are still good
            pass
        self.stats.hits += 1
        self.stats.bytes_read += len(data)
        return tensor

    def put(self, key: str, tensor: torch.Tensor) -> None:
        data = _encode(tensor.detach().to("cpu", self.dtype).contiguous())
        path = self.path(key)
        path.parent.mkdir(exist_ok=True)
        atomic_write_bytes(path, data, durable=False)  # an entry lost to a crash is recomputed
        self.stats.writes += 1
        self.stats.bytes_written += len(data)
        if self._written_since_count is None or self._written_since_count + len(data) > self.max_bytes / 20:
            self._written_since_count = 0
            self.evict()
        else:
            self._written_since_count += len(data)

    def evict(self) -> int:
        """Delete least recently used entries (all namespaces) while the total exceeds the bound."""
        entries = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.endswith(SUFFIX):
                    try:
                        st = os.stat(os.path.join(dirpath, name))
                    except FileNotFoundError:
                        continue
                    entries.append((st.st_mtime_ns, st.st_size, os.path.join(dirpath, name)))
        total = sum(size for _, size, _ in entries)
        if total <= self.max_bytes:
            return 0
        removed = 0
        for _mtime, size, name in sorted(entries):
            if total <= LOW_WATER * self.max_bytes:
                break
            try:
                os.unlink(name)
                removed += 1
            except FileNotFoundError:
                pass  # another lane evicted it
            total -= size
        self.stats.evicted += removed
        return removed

    def total_bytes(self) -> int:
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(self.root) for f in fs
                   if f.endswith(SUFFIX))


def _encode(tensor: torch.Tensor) -> bytes:
    if tensor.dtype == torch.bfloat16:
        payload = tensor.view(torch.int16).numpy().tobytes()
    else:
        payload = tensor.numpy().tobytes()
    shape = struct.pack(f"<{tensor.dim()}Q", *tensor.shape)
    header = _HEADER.pack(MAGIC, _CODES[tensor.dtype], tensor.dim(), len(payload), zlib.crc32(payload))
    return header + shape + payload


def _decode(data: bytes) -> torch.Tensor | None:
    """The tensor in `data`, or None when the bytes are not an intact entry."""
    if len(data) < _HEADER.size:
        return None
    magic, code, rank, nbytes, crc = _HEADER.unpack_from(data)
    start = _HEADER.size + 8 * rank
    if magic != MAGIC or code not in _DTYPES or len(data) != start + nbytes:
        return None
    payload = memoryview(data)[start:]
    if zlib.crc32(payload) != crc:
        return None
    shape = struct.unpack_from(f"<{rank}Q", data, _HEADER.size)
    dtype = _DTYPES[code]
    np_dtype = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.int16}[dtype]
    if int(np.prod(shape)) * np.dtype(np_dtype).itemsize != nbytes:
        return None
    array = np.frombuffer(payload, dtype=np_dtype).reshape(shape).copy()
    tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if dtype == torch.bfloat16 else tensor
