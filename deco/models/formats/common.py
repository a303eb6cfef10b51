"""Shared pieces of the checkpoint readers and writers: the loaded-model record, safe tensor I/O, key checks.

Every reader returns a `LoadedModel` (model, tokenizer, image processor, config) so `deco.evaluate` and
`deco.explain` work the same whatever the user pointed `ckpt=` at. Tensors are read only with safetensors
or `torch.load(weights_only=True)`: a pickle that needs arbitrary code is refused with `UnsafeCheckpointError`
before anything in it runs. `load_part` copies a state dict into one part of the model and reports unused
and missing keys by name; a shape mismatch is an error that names the key and both shapes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


class UnsafeCheckpointError(ValueError):
    """The file is a pickle that would run arbitrary code when loaded; it was not loaded."""


@dataclass
class LoadedModel:
    """A ready-to-use model and what is needed to feed it.

    config holds plain dicts: "model" (vision / llm / tokenizer / image_processor sections), "projector"
    (name, query_num, mlp_depth, ...), "stage" (at least "template"), and where known "image_aspect"
    (pad | crop | resize) and "source" ({"format", "path"}).
    """

    model: nn.Module
    tokenizer: Any
    image_processor: Any
    config: dict
    report: dict = field(default_factory=dict)  # {"unused": [...], "missing": [...]} from the weight copy

    @property
    def projector_tag(self) -> str:
        """Paper-style projector name, e.g. `avgpool2_144`, `qformer2_64`, `linear`, `mlp2x_gelu`."""
        projector = self.config["projector"]
        from deco.models.formats.projector_type import paper_depth
        from deco.utils.names import projector_name

        name = projector_name(projector)
        if "query_num" in projector and projector["query_num"] is not None:
            return f"{name}{paper_depth(projector)}_{projector['query_num']}"
        return name

    @property
    def format(self) -> str:
        return (self.config.get("source") or {}).get("format", "unknown")


# ---------------------------------------------------------------- safe tensor I/O


def safe_torch_load(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)`, turning a refusal into a message that says what happened.

    weights_only is passed explicitly, which torch honours whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
    says (the opt-out only applies to calls that leave it unset). mmap: map the tensors instead of
    reading them (a cheap check of a large checkpoint; needs torch's zip format, else a full read).
    """
    path = Path(path)
    try:
        if mmap and zipfile.is_zipfile(path):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "Weights only load failed" not in str(err) and "Unsupported" not in str(err):
            raise ValueError(f"{path}: not a readable checkpoint ({first})") from None
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it is a pickle that needs arbitrary code to load (only tensors, "
            f"numbers, strings and containers are allowed with weights_only=True). Nothing in it was run. "
            f"If you trust the file, convert it to safetensors yourself. Detail: {_unsafe_detail(err)}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as err:  # truncated or not a torch file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path}: not a readable checkpoint, truncated or corrupt? ({first})") from None


def _unsafe_detail(err: Exception) -> str:
    """The line of torch's refusal that names what the pickle wanted to call."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines or [type(err).__name__])[0].split(". Please")[0]


def load_state_file(path: str | Path, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """Tensors of one weight file (.safetensors, or a pickle loaded with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError) as err:  # safetensors' own message names no file
            raise ValueError(f"{path}: not a readable safetensors file, truncated or corrupt? ({err})") from None
    state = safe_torch_load(path, map_location)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a flat {{name: tensor}} state dict")
    return state


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def weight_files(directory: str | Path) -> list[Path]:
    """The model weight files of a transformers-style directory (single file or sharded with an index)."""
    directory = Path(directory)
    for index_name in WEIGHT_INDEXES:
        index = directory / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [s for s in shards if not (directory / s).is_file()]
            if missing:
                raise FileNotFoundError(f"{index} lists shards that are not in {directory}: {missing}")
            return [directory / s for s in shards]
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return [directory / name]
    return []


def load_weights_dir(directory: str | Path, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a transformers-style directory, merged over shards."""
    files = weight_files(directory)
    if not files:
        raise FileNotFoundError(
            f"no weights in {directory}: expected one of {', '.join(WEIGHT_FILES + WEIGHT_INDEXES)}"
        )
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_state_file(file, map_location))
    return state


def save_state_file(state: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> None:
    """Write tensors as safetensors (contiguous, shared storage broken up)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    save_file(tensors, str(path), metadata={"format": "pt", **(metadata or {})})


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


# ---------------------------------------------------------------- copying weights into a model


def load_part(
    module: nn.Module, state: dict[str, torch.Tensor], part: str, *, allow_missing: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    """Copy `state` into `module` (keys relative to it); returns {"unused": [...], "missing": [...]}.

    Missing keys are an error unless listed in `allow_missing` (tied weights): a model that silently keeps
    random weights is worse than one that does not load. Unused keys are logged and returned.
    """
    own = module.state_dict()
    mismatched = [
        f"{part}.{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched:
        raise ValueError("shape mismatch while loading " + part + ": " + "; ".join(mismatched))
    unused = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in state and k not in allow_missing)
    if missing:
        raise ValueError(
            f"the checkpoint has no weights for {len(missing)} {part} parameters: "
            + ", ".join(f"{part}.{k}" for k in missing[:20])
            + (" ..." if len(missing) > 20 else "")
        )
    with torch.no_grad():
        for key, value in state.items():
            if key in own:
                own[key].copy_(value.to(dtype=own[key].dtype))
    if unused:
        log.warning("%d checkpoint keys were not used by %s: %s", len(unused), part, ", ".join(unused))
    return {"unused": [f"{part}:{k}" for k in unused], "missing": []}


def merge_reports(*reports: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"unused": [], "missing": []}
    for report in reports:
        for key in out:
            out[key].extend(report.get(key, []))
    return out


@contextlib.contextmanager
def skip_weight_init():
    """Build modules without random initialisation (their weights are overwritten by a checkpoint next)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            no_init_weights = None
    if no_init_weights is None:
        yield
        return
    with no_init_weights():
        yield


def clean_hf_config(cfg: dict) -> dict:
    """A transformers config dict minus the bookkeeping keys that must not go back into a constructor."""
    drop = {
        "transformers_version",
        "architectures",
        "_name_or_path",
        "_attn_implementation_autoset",
        "attn_implementation",
        "_attn_implementation",
        "torch_dtype",
        "dtype",
        "model_type",
    }
    return {k: v for k, v in cfg.items() if k not in drop}
