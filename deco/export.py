"""Entry point: export a model to a shareable directory (Hydra config `configs/export.yaml`).

    python -m deco.export ckpt=<run>/checkpoints/last.ckpt out_dir=exported/ format=deco
    python -m deco.export ckpt=<dir> out_dir=hf/ format=llava_hf      # mlp2x_gelu models only
    python -m deco.export ckpt=<lora dir> load.base=<vicuna dir> out_dir=merged/ format=deco
    python -m deco.export ckpt=<run>/checkpoints/last.ckpt out_dir=exported/ push_to=me/deco-avgpool144

`ckpt=` takes anything `deco.models.loading.load_model` reads (deco .ckpt, deco directory, LLaVA original,
LLaVA/DeCo LoRA, llava-hf, hub name). `format=deco` writes deco's `save_pretrained` directory (safetensors,
config, tokenizer, image processor; any projector); `format=llava_hf` writes a directory that transformers'
`LlavaForConditionalGeneration.from_pretrained` and `LlavaProcessor.from_pretrained` load (only a 2-layer
mlp2x_gelu projector fits that class). A LoRA adapter is merged on export. The directory is written under a
temporary name beside `out_dir` and renamed when complete (a killed export leaves no half-written `out_dir`), with
file modes that follow the umask.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from deco.utils.io import current_umask

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("deco", "llava_hf")


def export(ckpt: str, out: str, format: str = "deco", base: str | None = None, vision_tower: str | None = None,
           dtype: str | None = None, trust_remote_code: bool = False) -> Path:
    """Load `ckpt` and write it to `out` in `format`; returns the output directory."""
    from deco.models.loading import load_model

    if format not in EXPORT_FORMATS:
        raise ValueError(f"format='{format}' is unknown; choose one of: {', '.join(EXPORT_FORMATS)}")
    out_dir = Path(out).expanduser()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"out_dir={out_dir} exists and is not empty; choose a new directory")
    loaded = load_model(ckpt, base=base, vision_tower=vision_tower, dtype=dtype, trust_remote_code=trust_remote_code)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # written next to out and renamed when complete: a killed export leaves no half directory named out
    work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".partial"))
    try:
        if format == "llava_hf":
            from deco.models.formats.llava_hf import save_llava_hf

            save_llava_hf(loaded.model, loaded.tokenizer, loaded.image_processor, work)
        else:
            from deco.models.formats.deco_pretrained import save_deco_pretrained

            save_deco_pretrained(loaded, work)
        _umask_modes(work)
        os.replace(work, out_dir)  # onto a missing or empty directory
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out_dir


def _umask_modes(root: Path) -> None:
    """Modes as any other tool would make them: mkdtemp makes 0700 and safetensors 0600 whatever the umask."""
    mask = current_umask()
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def run(cfg: DictConfig) -> Path:
    """Validate the composed config and export; config mistakes exit with a message, not a traceback."""
    for key in ("ckpt", "out_dir"):
        if OmegaConf.is_missing(cfg, key) or not cfg[key]:
            raise SystemExit(f"Config error: {key}=... is required, e.g. python -m deco.export "
                             f"ckpt=<run>/checkpoints/last.ckpt out_dir=exported format=deco")
    if cfg.format not in EXPORT_FORMATS:
        raise SystemExit(f"Config error: format={cfg.format} is unknown; choose one of: {', '.join(EXPORT_FORMATS)}")
    load = cfg.get("load") or {}
    try:
        out = export(str(cfg.ckpt), str(cfg.out_dir), cfg.format, base=load.get("base"),
                     vision_tower=load.get("vision_tower"), dtype=cfg.get("dtype"),
                     trust_remote_code=bool(cfg.get("trust_remote_code", False)))
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        raise SystemExit(f"deco.export: {error}") from None
    log.info("exported %s to %s (format=%s)", cfg.ckpt, out, cfg.format)
    if cfg.get("push_to"):
        from deco.models.formats.push import push_folder

        try:
            url = push_folder(out, str(cfg.push_to), private=bool(cfg.get("push_private", True)))
        except (ValueError, FileNotFoundError) as error:
            raise SystemExit(f"deco.export: {error}") from None
        log.info("pushed %s to %s", out, url)
    return out


@hydra.main(version_base="1.3", config_path="../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
