"""Entry point: export a model to a shareable directory.

    python -m deco.export ckpt=<run>/checkpoints/last.ckpt out=exported/ format=deco
    python -m deco.export ckpt=<dir> out=hf/ format=llava_hf      # mlp2x_gelu models only
    python -m deco.export ckpt=<lora dir> model.base=<vicuna dir> out=merged/ format=deco

`ckpt=` takes anything `deco.models.loading.load_model` reads (deco .ckpt, deco directory, LLaVA original,
LLaVA/DeCo LoRA, llava-hf, hub name). `format=deco` writes deco's `save_pretrained` directory (safetensors,
config, tokenizer, image processor; any projector); `format=llava_hf` writes a directory that transformers'
`LlavaForConditionalGeneration.from_pretrained` and `LlavaProcessor.from_pretrained` load (only a 2-layer
mlp2x_gelu projector fits that class). A LoRA adapter is merged on export. Arguments are `key=value` pairs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("deco", "llava_hf")
KEYS = {"ckpt": "ckpt", "out": "out", "format": "format", "model.base": "base", "base": "base",
        "model.vision_tower": "vision_tower", "vision_tower": "vision_tower", "dtype": "dtype"}
USAGE = "usage: python -m deco.export ckpt=PATH out=DIR [format=deco|llava_hf] [model.base=PATH] [dtype=float32|bfloat16|float16]"


def parse_args(argv: list[str]) -> dict[str, str]:
    args: dict[str, str] = {"format": "deco"}
    for item in argv:
        if "=" not in item:
            raise ValueError(f"argument '{item}' is not key=value\n{USAGE}")
        key, value = item.split("=", 1)
        key = key.lstrip("+")
        if key not in KEYS:
            raise ValueError(f"unknown argument '{key}'; known: {', '.join(sorted(KEYS))}\n{USAGE}")
        args[KEYS[key]] = value
    for required in ("ckpt", "out"):
        if not args.get(required):
            raise ValueError(f"missing {required}=...\n{USAGE}")
    if args["format"] not in EXPORT_FORMATS:
        raise ValueError(f"format='{args['format']}' is unknown; choose one of: {', '.join(EXPORT_FORMATS)}")
    return args


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


def main(argv: list[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = export(**args)
    log.info("exported %s to %s (format=%s)", args["ckpt"], out, args["format"])
    print(out)
    return out


if __name__ == "__main__":
    main()
