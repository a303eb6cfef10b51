"""Write a `Relevance` to disk: three PNGs and one tensor file, named after what they show.

Names follow `{kind}-{method}-{text slug}-{projector tag}`, e.g.
`R_t2i-rgae-A-pot-of-green-plants-avgpool2_144.png`, `R_t2q-...png`, `R_q2i-...png` and
`relevance-rgae-A-pot-of-green-plants-avgpool2_144.pt` (or `.npz`). The tensor file holds
r_t2i (g g), r_t2q (q), r_q2i (q n), r_t2q_tokens (k q), r_t2i_tokens (k g g) and the metadata
(method, vision_relevance, text, tag, target_tokens, score, log_prob); `.pt` loads with `torch.load(weights_only=True)`,
`.npz` with `numpy.load` (no pickle). Every file is written atomically.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import torch

from deco.explain.inputs import ExplainInput
from deco.explain.methods import Relevance
from deco.explain.render import png_bytes, render_q2i, render_t2i, render_t2q
from deco.utils.io import atomic_write_bytes

KINDS = ("R_t2i", "R_t2q", "R_q2i")
TENSOR_FORMATS = ("pt", "npz")


def slugify(text: str, max_len: int = 60) -> str:
    """'A pot of green plants.' -> 'A-pot-of-green-plants' (letters, digits, '-' and '_' only)."""
    slug = re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-")
    return (slug[:max_len].rstrip("-") or "text")


def ckpt_label(ckpt: str) -> str:
    """A short name for a checkpoint path: its run dir for `<run>/checkpoints/<x>.ckpt` (plus the file stem
    unless last/best), else the file or directory name; for telling two checkpoints of one projector apart."""
    path = Path(str(ckpt).rstrip("/"))
    if path.parent.name == "checkpoints":
        run = path.parent.parent.name or "run"
        return slugify(run if path.stem in ("last", "best") else f"{run}-{path.stem}", 40)
    return slugify(path.stem if path.suffix == ".ckpt" else path.name, 40)


def unique_tag(tag: str, ckpt: str, used: set[str]) -> str:
    """The file-name tag of a checkpoint: its projector tag, or, when an earlier checkpoint of the run took
    that (two seeds, pretrain vs finetune of one projector), the tag plus the checkpoint's label (then a
    number), so no checkpoint overwrites another's files. Adds the result to `used`."""
    candidates = [tag, f"{tag}-{ckpt_label(ckpt)}"] + [f"{tag}-{ckpt_label(ckpt)}-{i}" for i in range(2, 1000)]
    chosen = next(c for c in candidates if c not in used)
    used.add(chosen)
    return chosen


def file_stem(kind: str, method: str, name: str, tag: str) -> str:
    """`{kind}-{method}-{name}-{tag}`; `name` is already a slug."""
    return f"{kind}-{method}-{name}-{tag}"


def tensor_dict(rel: Relevance, text: str, tag: str) -> dict:
    return {
        "r_t2i": rel.r_t2i.contiguous(),
        "r_t2q": rel.r_t2q.contiguous(),
        "r_q2i": rel.r_q2i.contiguous(),
        "r_t2q_tokens": rel.r_t2q_tokens.contiguous(),
        "r_t2i_tokens": rel.r_t2i_tokens.contiguous(),
        "method": rel.method,
        "vision_relevance": rel.vision_relevance,
        "spatial_queries": bool(rel.spatial_queries),
        "text": text,
        "tag": tag,
        "target_tokens": list(rel.target_tokens),
        "score": float(rel.score),
        "log_prob": float(rel.log_prob),
    }


def _tensor_bytes(data: dict, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "pt":
        torch.save(data, buf)
    else:
        arrays = {k: (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in data.items()}
        np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def render_all(rel: Relevance, inp: ExplainInput, title: str = "", max_queries: int = 64) -> dict:
    """{"R_t2i", "R_t2q", "R_q2i"} -> PIL image."""
    return {
        "R_t2i": render_t2i(inp.image, rel.r_t2i, title, question=inp.question),
        "R_t2q": render_t2q(rel.r_t2q, rel.r_t2q_tokens, rel.target_tokens, title, spatial=rel.spatial_queries),
        "R_q2i": render_q2i(rel.r_q2i, inp.image, order=rel.r_t2q, max_queries=max_queries,
                            title=f"R_q2i: where each query looks, most text-relevant first | {title}"),
    }


def export_relevance(
    rel: Relevance,
    inp: ExplainInput,
    out_dir: str | Path,
    tag: str,
    name: str | None = None,
    tensor_format: str = "pt",
    images: bool = True,
    max_queries: int = 64,
    pictures: dict | None = None,
) -> dict[str, Path]:
    """Write the PNGs (unless images=False) and the tensor file; returns {kind or 'tensors': path}.

    `name`: the slug in the file names (default: slugify(inp.text)); dataset mode prefixes the sample index.
    `pictures`: already rendered images (from `render_all`) to write instead of rendering again.
    """
    if tensor_format not in TENSOR_FORMATS:
        raise ValueError(f"tensor_format='{tensor_format}' is unknown; choose one of: {', '.join(TENSOR_FORMATS)}")
    out_dir = Path(out_dir)
    name = name or slugify(inp.text)
    written: dict[str, Path] = {}
    if images:
        if pictures is None:
            pictures = render_all(rel, inp, f"{rel.method} | {inp.text!r} | {tag}", max_queries)
        for kind, picture in pictures.items():
            path = out_dir / f"{file_stem(kind, rel.method, name, tag)}.png"
            atomic_write_bytes(path, png_bytes(picture))
            written[kind] = path
    path = out_dir / f"{file_stem('relevance', rel.method, name, tag)}.{tensor_format}"
    atomic_write_bytes(path, _tensor_bytes(tensor_dict(rel, inp.text, tag), tensor_format))
    written["tensors"] = path
    return written


def load_relevance(path: str | Path) -> dict:
    """Read a tensor file written by `export_relevance` (.pt or .npz) into a dict of tensors and metadata."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"relevance file not found: {path}")
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            out = {}
            for key in data.files:
                value = data[key]
                if value.ndim == 0:
                    out[key] = value.item()
                elif value.dtype.kind in "fiu":
                    out[key] = torch.from_numpy(value)
                else:
                    out[key] = value.tolist()
            return out
    raise ValueError(f"{path}: unknown relevance file type (expected .pt or .npz)")
