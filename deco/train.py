"""Entry point: train an MLLM (`stage=pretrain` or `stage=finetune`) from a Hydra config.

    python -m deco.train projector=avgpool query_num=144
    python -m deco.train -m projector=linear,qformer,avgpool

Composes the config, validates it before anything is built, builds tokenizer / image
processor / model / data from it, and hands over to Lightning. Returns the final val/loss so
sweepers can optimise it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from deco.lit.launch import register_resolvers
from deco.utils.config import ConfigError, validate_train_config
from deco.utils.run_info import write_run_info

log = logging.getLogger(__name__)
register_resolvers()
# configs/hydra/launcher/submitit_*.yaml share their names with the plugin's schemas on purpose
# (Hydra validates them against it); the deprecation notice about that would print on every run.
warnings.filterwarnings("ignore", message=".*is validated against ConfigStore schema with the same name")
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what schedulers expect from a terminated job


def load_model_weights(model: torch.nn.Module, ckpt_path: str) -> None:
    """Initialise `model` from a deco Lightning checkpoint (weights only, no optimizer state)."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        log.warning("init_from %s: %d missing keys, e.g. %s", ckpt_path, len(result.missing_keys), result.missing_keys[:3])
    if result.unexpected_keys:
        log.warning("init_from %s: %d unexpected keys, e.g. %s", ckpt_path, len(result.unexpected_keys),
                    result.unexpected_keys[:3])


def train(cfg: DictConfig) -> float | None:
    from deco.data.image import load_image_processor
    from deco.data.tokenizer import load_tokenizer
    from deco.lit.datamodule import MLLMDataModule
    from deco.lit.loggers import finish_runs
    from deco.lit.checkpointing import resolve_ckpt_path
    from deco.lit.module import MLLMModule, NonFiniteLossError
    from deco.lit.sampling import accumulation_for
    from deco.models.build import build_mllm

    try:
        validate_train_config(cfg)
    except ConfigError as error:
        raise SystemExit(f"Config error: {error}") from None

    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if rank_zero_only.rank == 0:
        info = write_run_info(output_dir, resolved, OmegaConf.to_yaml(cfg, resolve=True))
        log.info("run dir %s (config %s, commit %s)", output_dir, info["config_hash"], info["git_commit"])

    tokenizer = load_tokenizer(**resolved["model"]["tokenizer"])
    image_processor = load_image_processor(**resolved["model"]["image_processor"])
    model = build_mllm(resolved["model"], resolved["projector"], tokenizer)
    if cfg.init_from:
        load_model_weights(model, cfg.init_from)
    module = MLLMModule(model, resolved["stage"], build_config={k: resolved[k] for k in ("model", "projector")},
                        on_nan=cfg.fault.on_nan)

    datamodule = MLLMDataModule.from_config(
        instantiate(cfg.data), tokenizer=tokenizer, image_processor=image_processor,
        template=cfg.stage.template, seed=cfg.seed,
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if cfg.data.get("global_batch_size"):
        try:
            trainer.accumulate_grad_batches = accumulation_for(cfg.data.global_batch_size, cfg.data.batch_size,
                                                               trainer.world_size)
        except ValueError as error:
            raise SystemExit(f"Config error: {error}") from None
    ckpt_path = resolve_ckpt_path(cfg.get("resume"), cfg.get("ckpt_path"), output_dir)

    if trainer.is_global_zero:
        tokenizer.save_pretrained(output_dir / "tokenizer")
        image_processor.save_pretrained(output_dir / "image_processor")
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        if cfg.get("validate_after_fit"):
            trainer.validate(module, datamodule=datamodule)
    except NonFiniteLossError as error:
        raise SystemExit(f"Training stopped: {error}") from None
    except SIGTERMException as error:  # preemption: last.ckpt was saved (deco.lit.fault)
        log.error("Training interrupted: %s", error or "SIGTERM")
        raise SystemExit(PREEMPTED_EXIT_CODE) from None
    finally:
        finish_runs(loggers)
    val_loss = trainer.callback_metrics.get("val/loss")
    return float(val_loss) if val_loss is not None else None


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
