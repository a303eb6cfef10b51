"""Fixtures shared by the data tests: the tiny tokenizer and a small (28 px) CLIP image processor."""

import pytest

from deco.data.image import build_image_processor
from deco.data.tokenizer import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def proc():
    return build_image_processor(image_size=28)
