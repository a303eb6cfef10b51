"""Load a trained model from whatever a user points `ckpt=` at.

`load_model(ckpt)` detects the format and returns a `LoadedModel` (model, tokenizer, image processor and a
config with the projector, template and image aspect) so that `deco.evaluate` and `deco.explain` never need
the training config repeated. Formats (see docs/checkpoints.md):

* a deco Lightning checkpoint (`*.ckpt`; model/projector configs are in its hyper-parameters, the tokenizer
  is rebuilt from them or read from the run dir's `tokenizer/`);
* a deco `save_pretrained` directory (`python -m deco.export`);
* a LLaVA-1.5 original directory (`liuhaotian/llava-v1.5-7b` layout, `mm_projector_type` in config.json),
  or a pretraining-stage one (config.json + mm_projector.bin, LLM from `base=`);
* a LLaVA / DeCo LoRA directory (adapter_config.json + non_lora_trainables.bin; base model from its configs
  or `base=`);
* a llava-hf directory (`LlavaForConditionalGeneration`);
* a hub name (`org/name`) for any of the directory formats, when the machine has network.

Code shipped with a model or tokenizer runs only with `trust_remote_code=True` from the caller (the user's
command line), never because a checkpoint's stored settings ask for it. Every tensor is read with safetensors or `torch.load(weights_only=True)`: a pickle that needs arbitrary
code is refused (`UnsafeCheckpointError`) before anything in it runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from deco.models.formats.common import LoadedModel, UnsafeCheckpointError, read_json, safe_torch_load

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "LoadedModel", "UnsafeCheckpointError", "detect_format", "load_model"]

FORMATS = ("deco_ckpt", "deco", "llava_original", "llava_lora", "llava_hf")


def _run_dir_of(ckpt_path: Path) -> Path:
    # <run>/checkpoints/last.ckpt -> <run>
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent


def trained_image_aspect(build: dict, path: Path) -> str:
    """The `data.image_aspect` a checkpoint was trained with (recorded since deco records preprocessing);
    older checkpoints recorded none: pad, deco's default then, with a warning that names the override."""
    aspect = (build.get("preprocessing") or {}).get("image_aspect") or build.get("image_aspect")
    if aspect:
        return str(aspect)
    log.warning("%s records no image aspect (trained before deco recorded it): assuming pad, the default then; "
                "pass image_aspect=resize|crop if it was trained otherwise", path)
    return "pad"


def load_lightning_checkpoint(path: str | Path, map_location: str = "cpu") -> LoadedModel:
    from deco.data.image import load_image_processor
    from deco.data.tokenizer import load_tokenizer
    from deco.models.build import build_mllm
    from deco.models.projectors.base import stored_projector_config

    path = Path(path)
    checkpoint = safe_torch_load(path, map_location=map_location)
    hparams = checkpoint.get("hyper_parameters") or {}
    build = hparams.get("build")
    if not build:
        raise ValueError(f"{path}: not a deco checkpoint (no 'build' config in its hyper_parameters)")
    build = {**build, "projector": stored_projector_config(build["projector"])}  # keys renamed since it was saved
    model_cfg, stage = build["model"], hparams.get("stage") or {}
    run_dir = _run_dir_of(path)
    tokenizer_cfg = dict(model_cfg["tokenizer"])
    if tokenizer_cfg.get("name_or_path") is None and (run_dir / "tokenizer").is_dir():
        tokenizer_cfg["name_or_path"] = str(run_dir / "tokenizer")
    tokenizer = load_tokenizer(**tokenizer_cfg)
    image_processor = load_image_processor(**model_cfg["image_processor"])
    model = build_mllm(model_cfg, build["projector"], tokenizer)
    if (stage.get("lora") or {}).get("enabled"):
        from deco.models.stages import apply_stage  # LoRA weights need the adapter modules to exist

        apply_stage(model, stage)
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    config = {**build, "stage": stage, "image_aspect": trained_image_aspect(build, path),
              "source": {"format": "deco_ckpt", "path": str(path)}}
    template = (build.get("preprocessing") or {}).get("template")
    if template and not stage.get("template"):
        config["stage"] = {**stage, "template": template}
    return LoadedModel(model, tokenizer, image_processor, config)


def detect_format(path: str | Path) -> str:
    """Which of FORMATS the file or directory `path` is; a ValueError says what was looked for."""
    from deco.models.formats.deco_pretrained import is_deco_config
    from deco.models.formats.llava_hf import is_llava_hf_config
    from deco.models.formats.llava_lora import is_lora_dir
    from deco.models.formats.llava_original import is_llava_config

    path = Path(path)
    if path.is_file():
        if path.suffix == ".ckpt":
            return "deco_ckpt"
        raise ValueError(
            f"ckpt={path}: a single file must be a deco Lightning checkpoint (*.ckpt); other formats are "
            "directories (config.json + weights)"
        )
    if not path.is_dir():
        raise FileNotFoundError(f"ckpt={path}: no such file or directory")
    if is_lora_dir(path):
        return "llava_lora"
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(
            f"ckpt={path}: unrecognised checkpoint directory (no config.json and no adapter_config.json); "
            f"expected one of: deco save_pretrained, LLaVA original, LLaVA LoRA, llava-hf"
        )
    cfg = read_json(config)
    if is_deco_config(cfg):
        return "deco"
    if is_llava_hf_config(cfg):
        return "llava_hf"
    if is_llava_config(cfg):
        return "llava_original"
    raise ValueError(
        f"ckpt={path}: config.json is none of the known formats (model_type={cfg.get('model_type')!r}, "
        f"architectures={cfg.get('architectures')}); expected deco_format_version (deco), model_type 'llava' "
        "with text_config (llava-hf), or mm_projector_type / mm_vision_tower (LLaVA original)"
    )


def _resolve(ckpt: str | Path) -> Path:
    path = Path(ckpt).expanduser()
    if path.exists():
        return path
    text = str(ckpt)
    if text.count("/") == 1 and not text.startswith(("/", ".", "~")):
        from deco.models.formats.llava_original import resolve_local

        return resolve_local(text, "ckpt")
    raise FileNotFoundError(f"ckpt={ckpt}: no such file or directory")


def _dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    from deco.models.llm import DTYPES

    if dtype not in DTYPES:
        raise ValueError(f"dtype='{dtype}' is unknown; choose one of: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    ckpt: str | Path,
    map_location: str = "cpu",
    *,
    base: str | None = None,
    vision_tower: str | None = None,
    merge_lora: bool = True,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Detect the checkpoint format of `ckpt` and load it.

    Args:
        ckpt: file, directory or hub name (see the module docstring).
        base: LoRA base model (directory or hub id); default: the one the LoRA checkpoint names.
        vision_tower: CLIP checkpoint to use instead of a LLaVA config's `mm_vision_tower`.
        merge_lora: merge a LoRA adapter into the LLM weights (peft merge_and_unload) or keep it as an adapter.
        dtype: cast the model (float32, bfloat16, float16); default: as stored, float32 for configs-built parts.
        trust_remote_code: the user's own consent (never read from the checkpoint) to run Python code shipped
            with the model or tokenizer; off by default, a warning when on (deco.utils.remote_code).
    """
    from deco.utils import remote_code

    with remote_code.allowed(trust_remote_code):
        return _load(ckpt, map_location, base, vision_tower, merge_lora, dtype)


def _load(ckpt, map_location, base, vision_tower, merge_lora, dtype) -> LoadedModel:
    path = _resolve(ckpt)
    fmt = detect_format(path)
    dt = _dtype(dtype)
    log.info("loading %s as %s", path, fmt)
    if fmt == "deco_ckpt":
        loaded = load_lightning_checkpoint(path, map_location)
        if dt is not None:
            loaded.model.to(dt)
        return loaded
    if fmt == "deco":
        from deco.models.formats.deco_pretrained import load_deco_pretrained

        return load_deco_pretrained(path, map_location=map_location, dtype=dt)
    if fmt == "llava_hf":
        from deco.models.formats.llava_hf import load_llava_hf

        return load_llava_hf(path, map_location=map_location, dtype=dt)
    if fmt == "llava_lora":
        from deco.models.formats.llava_lora import load_llava_lora

        return load_llava_lora(path, base=base, vision_tower=vision_tower, merge_lora=merge_lora,
                               map_location=map_location, dtype=dt)
    from deco.models.formats.llava_original import load_llava_original

    return load_llava_original(path, base=base, vision_tower=vision_tower, map_location=map_location, dtype=dt)
