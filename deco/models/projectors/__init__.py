"""Vision-to-language projectors and their registry.

Importing this package registers every built-in projector (`linear`, `mlp2x_gelu`, `avgpool`, `maxpool`,
`qformer`); `build_projector(name, in_dim, out_dim, num_patches, **kwargs)` builds one by config name.
A new projector is one module with a `@register_projector("name")` class, imported here.
"""

from deco.models.projectors.base import PROJECTORS, Projector, build_projector, register_projector
from deco.models.projectors.linear import LinearProjector, MLPProjector
from deco.models.projectors.pooling import AvgPoolProjector, MaxPoolProjector, PoolingProjector
from deco.models.projectors.qformer import QFormerProjector

__all__ = [
    "PROJECTORS",
    "AvgPoolProjector",
    "LinearProjector",
    "MLPProjector",
    "MaxPoolProjector",
    "PoolingProjector",
    "Projector",
    "QFormerProjector",
    "build_projector",
    "register_projector",
]
