"""Vision-to-language projectors and their registry.

Importing this package registers every built-in projector (`linear`, `mlp2x_gelu`, `avgpool`, `maxpool`,
`qformer`, and the zoo: `cabstractor`, `dabstractor`, `pixelshuffle`, `ldp`, `ldpv2`, `tokenpacker`,
`resampler`); `build_projector(name, in_dim, out_dim, num_patches, **kwargs)` builds one by config name.
A new projector is one module with a `@register_projector("name")` class, imported here.
"""

from deco.models.projectors.base import PROJECTORS, Projector, build_projector, register_projector
from deco.models.projectors.linear import LinearProjector, MLPProjector
from deco.models.projectors.pooling import AvgPoolProjector, MaxPoolProjector, PoolingProjector
from deco.models.projectors.qformer import QFormerProjector
from deco.models.projectors.cabstractor import CAbstractorProjector
from deco.models.projectors.compressor import CompressorProjector
from deco.models.projectors.dabstractor import DAbstractorProjector
from deco.models.projectors.ldp import LDPProjector, LDPv2Projector
from deco.models.projectors.pixelshuffle import PixelShuffleProjector
from deco.models.projectors.resampler import ResamplerProjector
from deco.models.projectors.tokenpacker import TokenPackerProjector

__all__ = [
    "PROJECTORS",
    "AvgPoolProjector",
    "CAbstractorProjector",
    "CompressorProjector",
    "DAbstractorProjector",
    "LDPProjector",
    "LDPv2Projector",
    "LinearProjector",
    "MLPProjector",
    "MaxPoolProjector",
    "PixelShuffleProjector",
    "PoolingProjector",
    "Projector",
    "QFormerProjector",
    "ResamplerProjector",
    "TokenPackerProjector",
    "build_projector",
    "register_projector",
]
