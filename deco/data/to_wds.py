"""Convert LLaVA-format JSON (or the shapes world) into webdataset tar shards with an index.

    python -m deco.data.to_wds input=llava_v1_5_mix665k.json image_root=/data out_dir=/data/mix665k_wds shard_size=1000
    python -m deco.data.to_wds input=shapes num_samples=2048 seed=0 out_dir=shards/shapes
    python -m deco.data.to_wds index_only=true out_dir=/data/foreign_shards   # index shards written elsewhere

Each sample becomes `<key>.json` (the record: id, conversations and any other fields) and,
unless text-only, `<key>.jpg`; keys are the running sample number (`000000042`). JPEG
sources are stored byte for byte; other formats are re-encoded as JPEG (`quality`). Every
record is checked and every image decoded once while converting, so broken samples
(malformed JSON lines or records, empty conversations, missing or corrupt images) are
left out and counted; tokenization-dependent checks (over-long conversations) happen in
the loader, which knows the tokenizer. Shards are written to temporary names and renamed
when complete; `index.json` (shard names + sample counts + the skip summary) is written
last. Arguments are Hydra overrides of `configs/to_wds.yaml` (`--help`, `--cfg job` work).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from PIL import Image
from webdataset import TarWriter

from deco.data.llava_json import open_image, read_json_records, record_id
from deco.data.skips import SkipCounter, SkipSample
from deco.data.wds_index import INDEX_FORMAT, INDEX_NAME
from deco.utils.io import atomic_write_text
from deco.utils.progress import track

# key -> type of the config keys (configs/to_wds.yaml); Hydra parses `key=value`, this checks the types.
ARG_TYPES: dict[str, type] = {
    "input": str, "image_root": str, "out_dir": str, "shard_size": int, "prefix": str, "num_samples": int,
    "seed": int, "tasks": str, "image_size": int, "quality": int, "overwrite": bool, "index_only": bool,
    "progress": bool,
}


def check_args(args: dict) -> dict:
    """The composed config's values -> convert()'s keyword arguments; ValueError naming a mistyped value."""
    out = {}
    for key, kind in ARG_TYPES.items():
        value = args.get(key)
        if key == "tasks" and isinstance(value, (list, tuple)):  # tasks=[caption,grounding] as well as 'a,b'
            value = ",".join(map(str, value))
        elif kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # prefix=2024 is a string here
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise ValueError(f"{key} must be {kind.__name__}, got {value!r}")
        out[key] = value
    return out


def image_bytes(source: str | os.PathLike | Image.Image, quality: int = 95) -> bytes:
    """JPEG bytes of an image file (kept as is if already JPEG) or a PIL image; SkipSample if unusable."""
    if isinstance(source, Image.Image):
        img = source
        raw = None
    else:
        img = open_image(source)  # missing_image / corrupt_image
        raw = Path(source).read_bytes()
    if raw is not None and img.format == "JPEG":
        return raw
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def llava_samples(input_path: str, image_root: str | None, skips: SkipCounter, quality: int) -> Iterator[tuple]:
    """(record, jpeg bytes | None) for every usable record of a LLaVA .json / .jsonl file."""
    root = Path(image_root).expanduser() if image_root else Path(input_path).expanduser().parent
    if not root.is_dir():
        raise FileNotFoundError(f"image_root is not a directory: {str(root)!r}")
    for pos, record in read_json_records(input_path, skips):
        data = None
        if record.get("image") is not None:
            try:
                data = image_bytes(root / record["image"], quality)
            except SkipSample as error:
                skips.skip(error, record_id(record, pos))
                continue
        yield {**record, "id": record_id(record, pos)}, data


def shapes_samples(num_samples: int, seed: int, tasks: str, image_size: int, quality: int) -> Iterator[tuple]:
    """(record, jpeg bytes) of the shapes world (deco.data.shapes), e.g. for tests and examples."""
    from deco.data.shapes import check_tasks, make_sample

    task_list = check_tasks([t.strip() for t in tasks.split(",") if t.strip()])
    for i in range(num_samples):
        scene, conversations, meta = make_sample(seed, i, task_list, image_size)
        record = {"id": f"shapes-{seed}-{i}", "image": f"shapes-{seed}-{i}.jpg", "conversations": conversations,
                  "task": meta["task"]}
        if "box" in meta:
            record["box"] = list(meta["box"])
        yield record, image_bytes(scene.image, quality)


def write_shards(samples: Iterable[tuple], out: Path, shard_size: int, prefix: str = "shard") -> list[dict]:
    """Write (record, image bytes | None) samples into tar shards of `shard_size`; returns the shard list."""
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict] = []
    writer, tmp, count, key = None, None, 0, 0

    def close() -> None:
        writer.close()
        name = f"{prefix}-{len(shards):06d}.tar"
        os.replace(tmp, out / name)
        shards.append({"name": name, "num_samples": count})

    for record, data in samples:
        if writer is None:
            tmp = out / f".{prefix}-{len(shards):06d}.tar.tmp"
            writer, count = TarWriter(str(tmp), encoder=False, mtime=0), 0
        sample = {"__key__": f"{key:09d}", "json": json.dumps(record, ensure_ascii=False).encode()}
        if data is not None:
            sample["jpg"] = data
        writer.write(sample)
        count, key = count + 1, key + 1
        if count == shard_size:
            close()
            writer = None
    if writer is not None:
        close()
    return shards


def write_index(out: Path, shards: list[dict], **info) -> dict:
    index = {"format": INDEX_FORMAT, "num_samples": sum(s["num_samples"] for s in shards), "shards": shards, **info}
    atomic_write_text(out / INDEX_NAME, json.dumps(index, indent=1) + "\n")
    return index


def index_existing(out: Path) -> dict:
    """Count the samples of every .tar in `out` (grouped by key, as the loader does) and write index.json."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    names = sorted(p.name for p in out.glob("*.tar"))
    if not names:
        raise FileNotFoundError(f"no .tar shards in {str(out)!r}")
    shards = []
    for name in names:
        with open(out / name, "rb") as f:
            files = ({**e, "__url__": name} for e in tar_file_iterator(f))
            shards.append({"name": name, "num_samples": sum(1 for _ in group_by_keys(files))})
    return write_index(out, shards, source="index_only")


def convert(
    input: str | None = None,
    out_dir: str | None = None,
    image_root: str | None = None,
    shard_size: int = 1000,
    prefix: str = "shard",
    num_samples: int | None = None,
    seed: int = 0,
    tasks: str = "caption,attribute,existence,grounding",
    image_size: int = 336,
    quality: int = 95,
    overwrite: bool = False,
    index_only: bool = False,
    progress: bool = True,
) -> dict:
    """Write shards + index.json to `out_dir`; returns the index (with the skip summary)."""
    if out_dir is None:
        raise ValueError("out_dir=<folder> is required")
    out_dir = Path(out_dir).expanduser()
    if index_only:
        return index_existing(out_dir)
    if input is None:
        raise ValueError("input=<file.json|file.jsonl|shapes> is required")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{str(out_dir)!r} is not empty; pass overwrite=true to replace its shards")
    if overwrite and out_dir.is_dir():
        for old in [*out_dir.glob(f"{prefix}-*.tar"), out_dir / INDEX_NAME]:
            old.unlink(missing_ok=True)
    skips = SkipCounter("to_wds", log_first=20)
    if input == "shapes":
        if num_samples is None:
            raise ValueError("input=shapes needs num_samples=<N>")
        samples = shapes_samples(num_samples, seed, tasks, image_size, quality)
        total = num_samples
    else:
        if not Path(input).expanduser().is_file():
            raise FileNotFoundError(f"input file not found: {input!r}")
        samples = llava_samples(input, image_root, skips, quality)
        if num_samples is not None:
            samples = (s for _, s in zip(range(num_samples), samples))
        total = num_samples
    bar = track(samples, "to_wds", total=total) if progress else samples  # a bar, or a log line every 30 s
    shards = write_shards(bar, out_dir, shard_size, prefix)
    if not shards:
        raise ValueError(f"no usable samples in {input!r}: {skips.summary()}")
    counts = {k: v for k, v in skips.counts().items() if v}
    return write_index(out_dir, shards, source=str(input), skipped=counts)


def run(args: dict) -> dict:
    """Convert as the composed config says, print what was written; SystemExit with the reason on bad input."""
    try:
        index = convert(**check_args(args))
    except (ValueError, FileNotFoundError, FileExistsError, tarfile.TarError) as error:
        raise SystemExit(f"to_wds: {error}") from None
    skipped = index.get("skipped", {})
    reasons = f" ({', '.join(f'{k}={v}' for k, v in skipped.items())})" if skipped else ""
    print(f"wrote {index['num_samples']} samples in {len(index['shards'])} shards to {args['out_dir']}; "
          f"skipped {sum(skipped.values())}{reasons}")
    return index


def main() -> None:
    """`python -m deco.data.to_wds key=value ...`: a Hydra app on configs/to_wds.yaml (Hydra is imported
    only here, so deco.data stays importable without it)."""
    import hydra
    from omegaconf import OmegaConf

    @hydra.main(version_base="1.3", config_path="../../configs", config_name="to_wds")
    def app(cfg) -> None:
        run(OmegaConf.to_container(cfg, resolve=True))

    app()


if __name__ == "__main__":
    main()
