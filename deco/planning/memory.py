"""Per-GPU bytes of a training run, by strategy: parameters, gradients, optimizer state, activations.

Rules (what PyTorch and Lightning allocate; AdamW, the optimizer of deco.lit.module):
- `single` (one process), `ddp`: every process holds all parameters in their own dtype (fp32 under
  `32-true` and `bf16-mixed`, whose autocast casts per op; bf16 under `bf16-true`, or a part given
  `torch_dtype`), a gradient per trainable parameter (same dtype) and AdamW's two moments per trainable
  parameter (same dtype). DDP adds its gradient buckets, one more gradient-sized copy (Lightning's DDP
  keeps `gradient_as_bucket_view` off).
- `fsdp` (FULL_SHARD over N GPUs, units = the decoder / ViT layers, the rest in the root unit): 1/N of
  every parameter, gradient and moment, plus the units gathered in the mixed-precision dtype (bf16 under
  `bf16-mixed`): the root unit for the whole step and two layer units (the running one and the
  prefetched one), plus one layer unit's unsharded gradient being reduce-scattered. With
  `use_orig_params` (Lightning's default) a unit that trains any parameter has a gradient for all of its
  flat parameter (LoRA: the whole frozen base layer too); moments exist only for trainable parameters.
- activations: deco.planning.activations on the composed batch (worst case: every sample
  `plan.seq_len` positions long), profiled with the parameter dtype the strategy computes with.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from deco.planning.activations import ActivationProfile
from deco.planning.arch import checkpoint_layer_classes

STRATEGIES = ("single", "ddp", "fsdp")
GIB = 1024**3


def parse_bytes(value) -> int:
    """`80GB` / `80GiB` / `80 GB` / `81920MiB` / a number of bytes -> bytes (GB means GiB: what a GPU's
    '80GB' holds as torch reports it)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip().replace(" ", "")
    units = {"tib": 1024**4, "tb": 1024**4, "gib": GIB, "gb": GIB, "g": GIB, "mib": 1024**2, "mb": 1024**2,
             "m": 1024**2, "kib": 1024, "kb": 1024, "b": 1}
    for unit, factor in units.items():
        if text.lower().endswith(unit):
            number = text[: -len(unit)]
            break
    else:
        number, factor = text, 1
    try:
        return int(float(number) * factor)
    except ValueError:
        raise ValueError(f"plan.gpu_memory={value!r}: give a size such as 80GB, 40GiB or 24000MiB") from None


@dataclass
class MemoryPlan:
    """Per-GPU bytes of one strategy."""

    strategy: str
    devices: int
    parameters: int
    gradients: int
    optimizer: int
    communication: int  # DDP buckets; FSDP gathered units and one unsharded gradient
    activations: int
    activations_no_checkpointing: int
    activations_checkpointing: int
    checkpointing: bool

    @property
    def states(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.communication

    @property
    def total(self) -> int:
        return self.states + self.activations


def _units(model: nn.Module) -> tuple[list[list[nn.Parameter]], list[nn.Parameter]]:
    """FSDP units: the parameters of each checkpoint layer (decoder / ViT layer), and the rest (root)."""
    layers = [m for m in model.modules() if isinstance(m, checkpoint_layer_classes())]
    inside = {id(p) for layer in layers for p in layer.parameters()}
    return [list(layer.parameters()) for layer in layers], [p for p in model.parameters() if id(p) not in inside]


def _bytes(params, dtype_bytes: int | None = None) -> int:
    return sum(p.numel() * (dtype_bytes or p.element_size()) for p in params)


def plan_memory(model: nn.Module, strategy: str, devices: int, precision: str, profile: ActivationProfile,
                checkpointing: bool) -> MemoryPlan:
    """The per-GPU plan of `model` (fake tensors, stage applied) under `strategy` on `devices` GPUs."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is unknown; choose one of: {', '.join(STRATEGIES)}")
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    weights, trained = _bytes(params), _bytes(trainable)
    acts = dict(activations_no_checkpointing=profile.total(False), activations_checkpointing=profile.total(True))
    active = acts["activations_checkpointing" if checkpointing else "activations_no_checkpointing"]
    if strategy in ("single", "ddp"):
        return MemoryPlan(strategy, devices if strategy == "ddp" else 1, weights, trained, 2 * trained,
                          trained if strategy == "ddp" else 0, active, checkpointing=checkpointing, **acts)
    n = max(int(devices), 1)
    gathered = 2 if "16" in precision else 4  # FSDP MixedPrecision param_dtype (Lightning: bf16 for bf16-mixed)
    layers, root = _units(model)
    trained_units = [unit for unit in layers if any(p.requires_grad for p in unit)]
    root_trains = any(p.requires_grad for p in root)
    grad_numel = sum(p.numel() for unit in trained_units for p in unit)
    grad_numel += sum(p.numel() for p in root) if root_trains else 0
    largest_layer = max((sum(p.numel() for p in unit) for unit in layers), default=0)
    largest_trained = max((sum(p.numel() for p in unit) for unit in trained_units), default=0)
    communication = (_bytes(root, gathered) + 2 * largest_layer * gathered  # gathered: root + running + prefetched
                     + largest_trained * gathered)  # one unit's unsharded gradient before its reduce-scatter
    return MemoryPlan("fsdp", n, weights // n, grad_numel * 4 // n, 2 * trained // n, communication, active,
                      checkpointing=checkpointing, **acts)


def fits(plan: MemoryPlan, gpu_memory: int, reserve: float) -> bool:
    """Whether the plan's total fits `gpu_memory` less the `reserve` fraction (CUDA context, allocator
    fragmentation, communication buffers)."""
    return plan.total <= gpu_memory * (1.0 - reserve)
