"""Checkpoint formats deco reads and writes.

Readers: deco Lightning checkpoints (in `deco.models.loading`), deco `save_pretrained` directories
(`deco_pretrained`), LLaVA-1.5 original directories (`llava_original`), LLaVA / DeCo LoRA directories
(`llava_lora`) and transformers' llava-hf layout (`llava_hf`). Writers: `save_deco_pretrained` and
`save_llava_hf`. `projector_type` parses LLaVA-style `mm_projector_type` names (`avgpool2_144`, ...).
`deco.models.loading.load_model` detects the format and is the one entry point users need.
"""

from deco.models.formats.common import LoadedModel, UnsafeCheckpointError, load_state_file, safe_torch_load
from deco.models.formats.projector_type import parse_projector_type, projector_type_of

__all__ = [
    "LoadedModel",
    "UnsafeCheckpointError",
    "load_state_file",
    "parse_projector_type",
    "projector_type_of",
    "safe_torch_load",
]
