"""Entry point: export a model to a shareable directory (Hydra config `configs/export.yaml`).

    python -m deco.export ckpt=<run>/checkpoints/last.ckpt out=exported/ format=deco
    python -m deco.export ckpt=<dir> out=hf/ format=llava_hf      # mlp2x_gelu models only
    python -m deco.export ckpt=<lora dir> model.base=<vicuna dir> out=merged/ format=deco
    python -m deco.export ckpt=<run>/checkpoints/last.ckpt out=exported/ push_to=me/deco-avgpool144

`ckpt=` takes anything `deco.models.loading.load_model` reads (deco .ckpt, deco directory, LLaVA original,
LLaVA/DeCo LoRA, llava-hf, hub name). `format=deco` writes deco's `save_pretrained` directory (safetensors,
config, tokenizer, image processor; any projector); `format=llava_hf` writes a directory that transformers'
`LlavaForConditionalGeneration.from_pretrained` and `LlavaProcessor.from_pretrained` load (only a 2-layer
mlp2x_gelu projector fits that class). A LoRA adapter is merged on export.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("deco", "llava_hf")


def export(ckpt: str, out: str, format: str = "deco", base: str | None = None, vision_tower: str | None = None,
           dtype: str | None = None) -> Path:
    """Load `ckpt` and write it to `out` in `format`; returns the output directory."""
    from deco.models.loading import load_model

    if format not in EXPORT_FORMATS:
        raise ValueError(f"format='{format}' is unknown; choose one of: {', '.join(EXPORT_FORMATS)}")
    out_dir = Path(out).expanduser()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"out={out_dir} exists and is not empty; choose a new directory")
    loaded = load_model(ckpt, base=base, vision_tower=vision_tower, dtype=dtype)
    if format == "llava_hf":
        from deco.models.formats.llava_hf import save_llava_hf

        return save_llava_hf(loaded.model, loaded.tokenizer, loaded.image_processor, out_dir)
    from deco.models.formats.deco_pretrained import save_deco_pretrained

    return save_deco_pretrained(loaded, out_dir)


def run(cfg: DictConfig) -> Path:
    """Validate the composed config and export; config mistakes exit with a message, not a traceback."""
    for key in ("ckpt", "out"):
        if OmegaConf.is_missing(cfg, key) or not cfg[key]:
            raise SystemExit(f"Config error: {key}=... is required, e.g. python -m deco.export "
                             f"ckpt=<run>/checkpoints/last.ckpt out=exported format=deco")
    if cfg.format not in EXPORT_FORMATS:
        raise SystemExit(f"Config error: format={cfg.format} is unknown; choose one of: {', '.join(EXPORT_FORMATS)}")
    model = cfg.get("model") or {}
    try:
        out = export(str(cfg.ckpt), str(cfg.out), cfg.format, base=model.get("base"),
                     vision_tower=model.get("vision_tower"), dtype=cfg.get("dtype"))
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
