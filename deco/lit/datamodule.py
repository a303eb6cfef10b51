"""LightningDataModule over any dataset config that follows deco's dataset contract.

A data config names a partially-instantiated dataset class for `train` and `val`
(`_target_` + `_partial_: true`); this module completes it with the tokenizer, image
processor, conversation template and length limit that the model and stage decide, and
wraps it in DataLoaders with deco's collator. Swapping `data=` therefore never touches code.
Iterable datasets (webdataset shards) get no shuffle flag or sampler: they split themselves
over ranks and workers (told the rank here) and shuffle with their own buffer; `WdsDataset`
gets a `WdsLoader` (mid-epoch resumes: deco.lit.loader_position.LoaderPosition). Datasets with a
`skips` counter (deco.data.skips) have their skip counts logged at teardown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import lightning as L
from torch.utils.data import DataLoader, Dataset, IterableDataset

from deco.data.collate import Collator
from deco.data.wds import WdsDataset
from deco.data.wds_loader import WdsLoader
from deco.lit.sampling import train_loader

log = logging.getLogger(__name__)


def text_budget(max_length: int, tokenizer, model) -> int:
    """Text tokens a sample may have so that it fits the model: data.max_length, but at most the
    tokenizer's `model_max_length` and the LLM's `max_position_embeddings`, minus the q - 1 positions
    the visual tokens add beyond their placeholder. Longer samples are skipped as `too_long`."""
    limits = []
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and tokenizer_limit < 10**8:  # "no limit" is reported as ~1e30
        limits.append(("the tokenizer's model_max_length", tokenizer_limit))
    llm = getattr(model, "llm", None)
    positions = next((getattr(m.config, "max_position_embeddings", None) for m in (llm.modules() if llm else [])
                      if getattr(getattr(m, "config", None), "max_position_embeddings", None)), None)
    if positions:
        limits.append(("the LLM's max_position_embeddings", int(positions)))
    if not limits:
        return max_length
    name, limit = min(limits, key=lambda item: item[1])
    extra = max(int(getattr(model, "num_visual_tokens", 1)) - 1, 0)
    budget = min(int(max_length), limit - extra)
    if budget <= 0:
        raise ValueError(f"the model holds {limit} tokens ({name}) but one image alone takes {extra + 1}: "
                         "lower query_num or use a model with a longer context")
    if budget < max_length:
        log.info("data.max_length=%d -> %d text tokens per sample: %s is %d and an image adds %d positions",
                 max_length, budget, name, limit, extra)
    return budget


class MLLMDataModule(L.LightningDataModule):
    def __init__(
        self,
        train: Callable[..., Dataset] | None,
        val: Callable[..., Dataset] | None,
        *,
        tokenizer,
        image_processor,
        template: str,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        max_length: int = 256,
        image_aspect: str = "pad",
        seed: int = 0,
        group_by_modality_length: bool = False,
        tower_features=None,
    ):
        """tower_features: a `deco.data.tower_features.TowerFeatures` (tower outputs made in the workers,
        from its cache when it has one), or None (the model runs its tower)."""
        super().__init__()
        self.dataset_factories = {"train": train, "val": val}
        self.dataset_kwargs = dict(
            tokenizer=tokenizer,
            image_processor=image_processor,
            template=template,
            max_length=max_length,
            image_aspect=image_aspect,
        )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.group_by_modality_length = group_by_modality_length
        self.collate = Collator(pad_token_id=tokenizer.pad_token_id, padding_side="right", max_length=max_length)
        self.tower_features = tower_features
        if tower_features is not None:
            self.collate = tower_features.collator(self.collate)
        self.datasets: dict[str, Dataset] = {}

    @classmethod
    def from_config(cls, data_cfg: Mapping, **kwargs) -> MLLMDataModule:
        """Build from a `data=` config whose `train`/`val` were instantiated as partials."""
        keys = ("batch_size", "eval_batch_size", "num_workers", "max_length", "image_aspect",
                "group_by_modality_length")
        settings = {**{k: data_cfg[k] for k in keys if k in data_cfg}, **kwargs}  # kwargs win (max_length budget)
        return cls(data_cfg.get("train"), data_cfg.get("val"), **settings)

    def setup(self, stage: str | None = None) -> None:
        for split, factory in self.dataset_factories.items():
            if factory is not None and split not in self.datasets:
                dataset = factory(**self.dataset_kwargs)
                if len(dataset) == 0:
                    raise ValueError(f"data.{split} is empty: no samples to train or validate on")
                if callable(getattr(dataset, "set_distributed", None)) and self.trainer is not None:
                    dataset.set_distributed(self.trainer.global_rank, self.trainer.world_size)
                if self.tower_features is not None:
                    dataset = self.tower_features.wrap(dataset)
                self.datasets[split] = dataset

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader | None:
        if split not in self.datasets:
            return None
        dataset = self.datasets[split]
        kwargs = dict(
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )
        if isinstance(dataset, WdsDataset):
            epoch = self.trainer.current_epoch if self.trainer is not None and split == "train" else 0
            return WdsLoader(dataset, epoch=epoch, **kwargs)
        if isinstance(dataset, IterableDataset):  # shuffles and splits itself
            return DataLoader(dataset, **kwargs)
        if shuffle:  # map-style training data: same order for any device count, resumable mid-epoch
            return train_loader(dataset, seed=self.seed, trainer=self.trainer,
                                group_by_modality_length=self.group_by_modality_length, **kwargs)
        return DataLoader(dataset, shuffle=shuffle, **kwargs)

    def skip_counts(self) -> dict[str, dict[str, int]]:
        """{split: {reason: count}} of this process's datasets that count skipped samples."""
        return {split: ds.skips.counts() for split, ds in self.datasets.items() if hasattr(ds, "skips")}

    def teardown(self, stage: str) -> None:
        for split, ds in self.datasets.items():
            if hasattr(ds, "skips") and ds.skips.total():
                log.warning("data.%s: %s", split, ds.skips.summary())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", self.eval_batch_size, shuffle=False) or []
