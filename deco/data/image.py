"""Image preprocessing for LLaVA-style models: a locally built CLIP processor and the three aspect modes.

`build_image_processor` makes the CLIP preprocessing (bicubic resize of the shortest edge
to S, centre crop S x S, rescale 1/255, normalise with the OpenAI CLIP mean/std) from
arguments, with no download. `process_image` implements LLaVA-1.5's `image_aspect_ratio`
choices: "pad" (expand2square: centre the image on a square canvas filled with the mean
colour, then the processor — LLaVA-1.5 finetuning), "crop" (the processor alone:
shortest-edge resize + centre crop — LLaVA's default 'square') and "resize" (stretch to
S x S, ignoring aspect). Images that are already S x S RGB skip the processor and are
normalised with numpy (same values, several times faster). "pad" first shrinks an image whose
longer side exceeds 2 S to 2 S (the square canvas of a 10000 x 50 strip alone is 300 MB); smaller
images take LLaVA's exact path.

The checks every image source shares (LLaVA JSON datasets, shards, `to_wds`): `image_path_problem`
refuses names that leave the image root (`../x.jpg`; absolute paths unless allowed) and
`image_size_problem` reads the header's size before decoding, so a decompression bomb (a few
hundred bytes that decode to gigabytes) or an extreme aspect ratio is a counted skip.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

try:  # transformers 5 without torchvision: the PIL backend (avoids a fallback warning)
    from transformers import CLIPImageProcessorPil as _CLIPProcessor
except ImportError:  # older transformers
    from transformers import CLIPImageProcessor as _CLIPProcessor
from transformers import AutoImageProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from deco.data.image_paths import image_path_problem  # noqa: F401 (re-exported: the shared path rule)
from deco.utils import remote_code

ASPECTS = ("pad", "resize", "crop")
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # PIL's own decompression-bomb warning threshold
MAX_ASPECT_RATIO = 50  # longer side / shorter side; LLaVA-style data stays far below


def image_size_problem(size: tuple[int, int]) -> tuple[str, str] | None:
    """(skip reason, detail) when an image of `size` (w, h) must not be decoded, else None."""
    w, h = size
    if w <= 0 or h <= 0:
        return "corrupt_image", f"image size {w}x{h}"
    if w * h > MAX_PIXELS:
        return "oversized_image", f"{w}x{h} = {w * h:,} pixels > {MAX_PIXELS:,} (a decompression bomb?)"
    if max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
        return "extreme_aspect", f"{w}x{h}: aspect ratio {max(w, h) / min(w, h):.0f}:1 > {MAX_ASPECT_RATIO}:1"
    return None


def build_image_processor(
    image_size: int = 336,
    image_mean: tuple[float, ...] = tuple(OPENAI_CLIP_MEAN),
    image_std: tuple[float, ...] = tuple(OPENAI_CLIP_STD),
):
    """CLIP image processor (resize shortest edge, centre crop, rescale, normalise) built locally."""
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return _CLIPProcessor(
        do_resize=True,
        size={"shortest_edge": image_size},
        resample=Image.BICUBIC,
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(image_mean),
        image_std=list(image_std),
        do_convert_rgb=True,
    )


def load_image_processor(name_or_path: str | None, image_size: int = 336):
    """Local CLIP processor for None, else `AutoImageProcessor.from_pretrained` (local dir or hub id)."""
    if name_or_path is None:
        return build_image_processor(image_size)
    path = os.path.expanduser(str(name_or_path))
    if (os.path.isabs(path) or path.startswith(".") or os.path.exists(path)) and not os.path.isdir(path):
        raise FileNotFoundError(f"image processor directory not found: {path!r}")
    return AutoImageProcessor.from_pretrained(path, trust_remote_code=remote_code.current())


def _as_dict(size) -> dict:
    """Plain dict of the set fields of a size (dict, transformers SizeDict or None)."""
    if size is None:
        return {}
    return {k: v for k, v in dict(size).items() if v is not None}


def processor_size(processor) -> int:
    """Output side S of a CLIP-style processor (its crop size, else its resize size)."""
    crop = _as_dict(getattr(processor, "crop_size", None))
    if getattr(processor, "do_center_crop", False) and "height" in crop:
        return int(crop["height"])
    size = _as_dict(getattr(processor, "size", None))
    if "shortest_edge" in size or "height" in size:
        return int(size.get("shortest_edge") or size["height"])
    raise ValueError(f"cannot read the output size of image processor {type(processor).__name__}")


def mean_fill(processor) -> tuple[int, ...]:
    """LLaVA's padding colour: tuple(int(m * 255) for m in image_mean)."""
    return tuple(int(m * 255) for m in processor.image_mean)


def expand_to_square(img: Image.Image, fill: tuple) -> Image.Image:
    """Centre `img` on a square canvas of side max(w, h) filled with `fill` (LLaVA expand2square)."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    canvas = Image.new(img.mode, (side, side), fill)
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def _is_plain_clip(processor, size: int) -> bool:
    """True when the processor on an S x S RGB image is exactly rescale + normalise."""
    p = processor
    same_size = ({"shortest_edge": size}, {"height": size, "width": size})
    return (
        getattr(p, "do_rescale", False)
        and abs(getattr(p, "rescale_factor", 0) - 1 / 255) < 1e-12
        and getattr(p, "do_normalize", False)
        and getattr(p, "image_mean", None) is not None
        and getattr(p, "image_std", None) is not None
        and (not getattr(p, "do_center_crop", False) or processor_size(p) == size)
        and (not getattr(p, "do_resize", False) or _as_dict(getattr(p, "size", None)) in same_size)
    )


def _normalise(img: Image.Image, processor) -> torch.Tensor:
    """(x / 255 - mean) / std for an RGB image -> 3 x H x W float32."""
    arr = np.asarray(img, dtype=np.float32) * np.float32(processor.rescale_factor)  # H W 3
    mean = np.asarray(processor.image_mean, dtype=np.float32)
    std = np.asarray(processor.image_std, dtype=np.float32)
    arr = (arr - mean) / std
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def process_image(img: Image.Image, processor, aspect: str = "pad") -> torch.Tensor:
    """One PIL image -> FloatTensor 3 x S x S, S = the processor's crop size."""
    if aspect not in ASPECTS:
        raise ValueError(f"unknown image aspect {aspect!r}; allowed: {list(ASPECTS)}")
    size = processor_size(processor)
    img = img.convert("RGB")
    if aspect == "pad":
        w, h = img.size
        if max(w, h) > 2 * size:  # resize before padding: the canvas is then at most 2S x 2S
            scale = 2 * size / max(w, h)
            img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
        img = expand_to_square(img, mean_fill(processor))
    elif aspect == "resize":
        img = img.resize((size, size), Image.BICUBIC)
    if img.size == (size, size) and _is_plain_clip(processor, size):
        return _normalise(img, processor)
    out = processor(images=img, return_tensors="pt")["pixel_values"]  # 1 3 S S
    return out[0].float()
