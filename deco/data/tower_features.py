"""Frozen vision tower outputs made in the data pipeline: in the DataLoader workers, from a shared cache.

With a frozen tower (finetune and pretrain stages), the tower's output for a sample is a function of the
sample's image alone, so it can be computed where the data is made, in the DataLoader workers (on a CPU
machine the core the training step leaves idle), and kept in a `FeatureCache` on disk for the next run of a
study (another projector, another seed: same scenes). Training then starts from `vision_features`
(b n d) instead of `pixel_values` and runs only projector + LLM.

`TowerFeatures` ties it together for a DataModule:
* `wrap(dataset)`: a map-style dataset with `feature_key(i)` (the identity of sample i's image: data seed
  and index for the shapes world) reads hits from the cache and then skips image preprocessing (a dataset
  with `item(i, pixels=False)` skips it; others preprocess and the pixels are dropped);
* `collator(collate)`: runs the tower (a CPU copy, eval mode, no autograd) on the batch's misses, writes
  them to the cache, and hands the model `vision_features` with `pixel_values=None`.
Cache keys: the tower fingerprint (class, selected layer and feature, every weight's bytes) and the
preprocessing (the image processor's settings, `image_aspect`) name the namespace; `feature_key` the entry.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from deco.data.feature_cache import FeatureCache


def tower_fingerprint(tower: nn.Module) -> dict:
    """What the tower's outputs depend on: class, layer/feature selection and a digest of every weight."""
    h = hashlib.sha256()
    for name, tensor in tower.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return {
        "class": f"{type(tower).__module__}.{type(tower).__qualname__}",
        "select_layer": getattr(tower, "select_layer", None),
        "select_feature": getattr(tower, "select_feature", None),
        "weights_sha256": h.hexdigest(),
    }


def preprocessing(image_processor, image_aspect: str) -> dict:
    """The image preprocessing settings that change pixels (processor config + aspect mode)."""
    settings = image_processor.to_dict() if hasattr(image_processor, "to_dict") else repr(image_processor)
    if isinstance(settings, dict):
        settings = {k: v for k, v in settings.items() if k not in ("processor_class", "_processor_class")}
    return {"image_processor": settings, "image_aspect": image_aspect}


ENABLED_CHOICES = (True, False, "auto")


def resolve_enabled(enabled, *, train_vision: bool, accelerator: str, cuda_available: bool) -> bool:
    """`tower_features.enabled` as a decision: true / false as given; `auto` = on where it pays as measured.

    `auto` turns the features on for a frozen tower (`train_vision` false) trained on CPU (`accelerator` "cpu",
    or "auto" with no CUDA device): there the tower runs on the core the step leaves idle and the cache makes
    it free on the next runs (experiments/perf/README.md, figures 8 and 10). On an accelerator the workers' CPU
    copy of the tower would be the slow part, so `auto` leaves it off there.
    """
    if enabled not in ENABLED_CHOICES or isinstance(enabled, int) and not isinstance(enabled, bool):
        raise ValueError(f"tower_features.enabled={enabled!r} is not one of: true, false, auto")
    if enabled != "auto":
        return bool(enabled)
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not cuda_available)
    return on_cpu and not train_vision


class CachedFeatureDataset(Dataset):
    """A map-style dataset whose items carry `vision_features` on a cache hit, else a `feature_key`."""

    def __init__(self, dataset: Dataset, cache: FeatureCache | None):
        self.dataset = dataset
        self.cache = cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):  # skips, set_distributed, ... of the wrapped dataset
        if name in ("dataset", "cache"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, i: int) -> dict:
        key = self.dataset.feature_key(i)
        feats = self.cache.get(key) if self.cache is not None else None
        if feats is None:
            return {**self.dataset[i], "feature_key": key}
        if hasattr(self.dataset, "item"):
            item = self.dataset.item(i, pixels=False)
        else:
            item = {k: v for k, v in self.dataset[i].items() if k != "pixel_values"}
        return {**item, "vision_features": feats}


class FeatureCollator:
    """Collate, then give every image row its tower features: from the item (a hit) or the tower (a miss)."""

    def __init__(self, collate, tower: nn.Module, cache: FeatureCache | None):
        self.collate, self.tower, self.cache = collate, tower, cache

    def __call__(self, samples: list[dict]) -> dict:
        samples = [dict(s) for s in samples]
        feats = [s.pop("vision_features", None) for s in samples]
        keys = [s.pop("feature_key", None) for s in samples]
        miss = [k for k, f in enumerate(feats) if f is None and samples[k].get("pixel_values") is not None]
        if miss:
            pixels = torch.stack([torch.as_tensor(samples[k]["pixel_values"]) for k in miss])
            with torch.no_grad():
                out = self.tower(pixels)  # m n d
            for j, k in enumerate(miss):
                feats[k] = out[j]
                if self.cache is not None and keys[k] is not None:
                    self.cache.put(keys[k], out[j])
        for s in samples:
            s["pixel_values"] = None
        batch = self.collate(samples)
        ref = next((f for f in feats if f is not None), None)
        batch["pixel_values"] = None
        batch["vision_features"] = (
            None
            if ref is None
            else torch.stack([torch.zeros_like(ref) if f is None else f.to(ref.dtype) for f in feats])
        )  # text-only rows: zeros
        batch["tower_cache_hits"] = len(samples) - len(miss)
        return batch


class TowerFeatures:
    """Frozen-tower features in the data pipeline, with an optional on-disk cache (`cache_dir`).

    Args:
        tower: the model's vision tower; a CPU copy in eval mode runs in the workers (the model itself
            may move to an accelerator later).
        image_processor, image_aspect: the preprocessing (part of the cache namespace).
        cache_dir: the shared cache directory, or None (compute in the workers, store nothing).
        max_gb: the bound on everything under `cache_dir` (least recently used entries go first).
        dtype: "float32" (exact) or "float16" / "bfloat16" (half the disk).
    """

    def __init__(
        self,
        tower: nn.Module,
        image_processor,
        image_aspect: str,
        cache_dir: str | Path | None = None,
        max_gb: float = 8.0,
        dtype: str = "float32",
    ):
        if any(p.requires_grad for p in tower.parameters()):
            raise ValueError("tower_features.enabled=true needs a frozen vision tower (stage.train_vision=false)")
        self.tower = copy.deepcopy(tower).to("cpu").eval()
        self.cache = None
        if cache_dir is not None:
            torch_dtype = getattr(torch, str(dtype), None)
            if not isinstance(torch_dtype, torch.dtype):
                raise ValueError(f"tower_features.dtype={dtype} is not a torch dtype (float32, float16, bfloat16)")
            namespace = {
                "tower": tower_fingerprint(self.tower),
                "preprocessing": preprocessing(image_processor, image_aspect),
            }
            self.cache = FeatureCache(Path(cache_dir), namespace, int(float(max_gb) * 2**30), torch_dtype)

    def wrap(self, dataset: Dataset) -> Dataset:
        """Cache lookups for map-style datasets that name their images (`feature_key`); others unchanged."""
        if self.cache is None or not callable(getattr(dataset, "feature_key", None)):
            return dataset
        return CachedFeatureDataset(dataset, self.cache)

    def collator(self, collate) -> FeatureCollator:
        return FeatureCollator(collate, self.tower, self.cache)
