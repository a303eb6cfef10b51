"""LLaVA's mm_projector_type strings <-> deco projector configs, and the tag a loaded model reports."""

import pytest

from deco.models.loading import LoadedModel


# ---------------------------------------------------------------- mm_projector_type strings


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mlp2x_gelu", {"name": "mlp2x_gelu", "mlp_depth": 2}),
        ("linear", {"name": "linear"}),
        (None, {"name": "linear"}),  # LLaVA's default when the key is absent
        ("avgpool2_144", {"name": "avgpool", "mlp_depth": 2, "query_num": 144, "pooling": "avg"}),
        ("qformer2_144", {"name": "qformer", "layer_num": 2, "query_num": 144}),
        ("maxpool2_64", {"name": "maxpool", "mlp_depth": 2, "query_num": 64, "pooling": "max"}),
        ("mlp3x_gelu", {"name": "mlp2x_gelu", "mlp_depth": 3}),
    ],
)
def test_parse_projector_type(text, expected):
    from deco.models.formats.projector_type import parse_projector_type, projector_type_of

    assert parse_projector_type(text) == expected
    if text is not None:
        assert projector_type_of(expected) == text  # and back


@pytest.mark.parametrize(
    "text, message",
    [
        ("identity", "no identity projector"),
        ("resampler", "unknown mm_projector_type 'resampler'"),
        ("avgpool2", "unknown mm_projector_type"),
        ("qformer0_64", "must be >= 1"),
    ],
)
def test_parse_projector_type_errors(text, message):
    from deco.models.formats.projector_type import parse_projector_type

    with pytest.raises(ValueError, match=message):
        parse_projector_type(text)


def test_projector_tag_of_loaded_configs():
    tags = {
        "avgpool2_144": {"name": "avgpool", "mlp_depth": 2, "query_num": 144, "pooling": "avg"},
        "qformer2_64": {"name": "qformer", "layer_num": 2, "query_num": 64},
        "linear": {"name": "linear"},
    }
    for tag, projector in tags.items():
        assert LoadedModel(None, None, None, {"projector": projector}).projector_tag == tag
