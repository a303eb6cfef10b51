"""Image preprocessing: LLaVA 'pad', the three aspect modes, and the numpy fast path."""

import numpy as np
import pytest
import torch
from PIL import Image

from deco.data.image import (
    build_image_processor,
    expand_to_square,
    load_image_processor,
    mean_fill,
    process_image,
)


def test_expand_to_square_20x10():
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    fill = (122, 116, 104)
    sq = np.asarray(expand_to_square(img, fill))
    assert sq.shape == (20, 20, 3)
    # image pasted at rows 5..14, border rows filled with the mean colour
    assert (sq[5:15] == (255, 0, 0)).all()
    assert (sq[:5] == fill).all() and (sq[15:] == fill).all()
    same = Image.new("RGB", (7, 7))
    assert expand_to_square(same, fill) is same


def test_mean_fill_is_llava_colour(proc):
    assert mean_fill(proc) == (122, 116, 104)  # int(0.48145466*255), int(0.4578275*255), int(0.40821073*255)


def test_process_image_modes(proc):
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    white = (1 - torch.tensor(proc.image_mean)) / torch.tensor(proc.image_std)
    for aspect in ("pad", "resize", "crop"):
        out = process_image(img, proc, aspect)
        assert out.shape == (3, 28, 28) and out.dtype == torch.float32
    # resize/crop of an all-white image are white everywhere; pad has a mean-coloured (~0) band.
    assert torch.allclose(process_image(img, proc, "crop"), white[:, None, None].expand(3, 28, 28), atol=1e-5)
    assert torch.allclose(process_image(img, proc, "resize"), white[:, None, None].expand(3, 28, 28), atol=1e-5)
    pad = process_image(img, proc, "pad")
    assert pad[:, 0].abs().max() < 0.02  # top rows: mean colour -> ~0 after normalisation
    assert torch.allclose(pad[:, 14], white[:, None].expand(3, 28), atol=1e-5)
    with pytest.raises(ValueError, match="resize"):
        process_image(img, proc, "square")


def test_fast_path_equals_processor(proc):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8))
    ref = proc(images=img, return_tensors="pt")["pixel_values"][0]
    assert torch.allclose(process_image(img, proc, "pad"), ref, atol=1e-5)
    assert torch.allclose(process_image(img, proc, "crop"), ref, atol=1e-5)


def test_load_image_processor(tmp_path):
    assert load_image_processor(None, image_size=56).crop_size["height"] == 56
    with pytest.raises(FileNotFoundError, match="missing"):
        load_image_processor(str(tmp_path / "missing"))
    build_image_processor(image_size=42).save_pretrained(tmp_path)
    loaded = load_image_processor(str(tmp_path))
    img = Image.new("RGB", (50, 30), (10, 200, 30))
    assert torch.allclose(process_image(img, loaded), process_image(img, build_image_processor(42)), atol=1e-6)
