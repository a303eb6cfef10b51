"""Entry point: train an MLLM (`stage=pretrain` or `stage=finetune`) from a Hydra config.

    python -m deco.train projector=avgpool query_num=144
    python -m deco.train -m projector=linear,qformer,avgpool

Composes the config, validates it before anything is built, builds tokenizer / image
processor / model / data from it, and hands over to Lightning. Returns the final val/loss so
sweepers can optimise it.
"""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
import warnings
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from deco.data.llava_prefetch import prefetching
from deco.lit.launch import register_resolvers
from deco.utils import remote_code
from deco.utils.config import ConfigError, validate_train_config
from deco.utils.startup import paused_gc

# torch, Lightning and the rest of deco are imported inside `train`: `python -m deco.train` reads its config
# before paying for them, and pays for them with the garbage collector off (deco.utils.startup)

log = logging.getLogger(__name__)
register_resolvers()
# configs/hydra/launcher/submitit_*.yaml share their names with the plugin's schemas on purpose
# (Hydra validates them against it); the deprecation notice about that would print on every run.
warnings.filterwarnings("ignore", message=".*is validated against ConfigStore schema with the same name")
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what schedulers expect from a terminated job


def _checked_resume(cfg: DictConfig, resolved: dict, output_dir: Path) -> str | None:
    """The checkpoint to resume, opened safely and matched against this command's model (SystemExit if not)."""
    from deco.lit.checkpointing import resolve_ckpt_path
    from deco.lit.resume import check_checkpoint, check_same_model

    try:
        ckpt_path = resolve_ckpt_path(cfg.get("resume"), cfg.get("ckpt_path"), output_dir)
        if ckpt_path is not None:
            check_same_model(resolved, check_checkpoint(ckpt_path), ckpt_path, output_dir)
        if cfg.get("init_from"):
            check_checkpoint(cfg.init_from)
    except (ValueError, FileNotFoundError) as error:  # UnsafeCheckpointError is a ValueError
        raise SystemExit(str(error)) from None
    return ckpt_path


def checkpoint_build_config(resolved: dict) -> dict:
    """What a checkpoint must hold to be rebuilt and fed as it was trained: the model and projector configs,
    and every preprocessing choice (image aspect, conversation template, image size) that loaders
    (`deco.models.loading`) then use by default in evaluate, explain, export, the app and lmms-eval."""
    data, stage, model = resolved.get("data") or {}, resolved.get("stage") or {}, resolved["model"]
    preprocessing = {
        "image_aspect": data.get("image_aspect") or "pad",
        "template": stage.get("template"),
        "image_size": (model.get("image_processor") or {}).get("image_size"),
    }
    return {"model": model, "projector": resolved["projector"], "preprocessing": preprocessing}


def run_settings(resolved: dict) -> dict:
    """What a dashboard needs to tell runs apart besides the model (which the module logs): seed, visual
    tokens, data mix and batch sizes, trainer settings, the stage's recipe."""
    data = resolved.get("data") or {}
    train_data = {k: v for k, v in (data.get("train") or {}).items() if not str(k).startswith("_")}
    return {
        "seed": resolved.get("seed"),
        "query_num": resolved.get("query_num"),
        "data": {
            "name": data.get("name"),
            "train": train_data,
            "batch_size": data.get("batch_size"),
            "global_batch_size": data.get("global_batch_size"),
            "image_aspect": data.get("image_aspect"),
        },
        "trainer": {
            k: v
            for k, v in (resolved.get("trainer") or {}).items()
            if not str(k).startswith("_") and k not in ("plugins", "default_root_dir")
        },
        "recipe": {
            k: (resolved.get("stage") or {}).get(k)
            for k in ("lr", "projector_lr", "weight_decay", "warmup_ratio", "loss_reduction")
        },
    }


def warn_without_checkpoints(callbacks: list, output_dir: Path) -> bool:
    """Say so loudly when no callback saves checkpoints (e.g. a `callbacks=` list without `default`): the run
    would end with an empty checkpoints/ and nothing for evaluate / explain to load. True when it warned."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    if any(isinstance(c, ModelCheckpoint) for c in callbacks):
        return False
    log.warning(
        "no checkpoint callback in `callbacks`: this run saves no checkpoint in %s/checkpoints. "
        "callbacks=default (or callbacks=relevance, which includes it) saves last.ckpt and best.ckpt",
        output_dir,
    )
    return True


def _writable(directory: Path) -> None:
    """Fail at start, not at the first save, when checkpoints cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise SystemExit(f"cannot write checkpoints to {directory}: {error.strerror or error}") from None


def _tower_features(cfg: DictConfig, model, image_processor):
    """The `tower_features` setting as a TowerFeatures (None when disabled)."""
    import torch

    from deco.data.tower_features import TowerFeatures, resolve_enabled

    tf = cfg.get("tower_features") or {}
    if not resolve_enabled(
        tf.get("enabled", False),
        train_vision=bool(cfg.stage.get("train_vision")),
        accelerator=str(cfg.trainer.get("accelerator", "auto")),
        cuda_available=torch.cuda.is_available(),
    ):
        return None

    try:
        features = TowerFeatures(
            model.vision,
            image_processor,
            cfg.data.get("image_aspect", "pad"),
            cache_dir=tf.get("cache_dir"),
            max_gb=tf.get("max_gb", 8),
            dtype=tf.get("dtype", "float32"),
        )
    except ValueError as error:
        raise SystemExit(f"Config error: {error}") from None
    if features.cache is not None:
        log.info(
            "tower features: computed in the data workers, cached in %s (tower_features.enabled=%s)",
            features.cache.dir,
            tf.get("enabled"),
        )
    return features


def train(cfg: DictConfig) -> float | None:
    # the collector is back on once the trainer starts; a data=llava_json file is read meanwhile in a forked reader
    with prefetching(cfg.get("data")), paused_gc() as start_training:
        try:
            validate_train_config(cfg)  # imports torch and transformers (the projector registry)
        except ConfigError as error:
            raise SystemExit(f"Config error: {error}") from None
        from lightning.pytorch.utilities import rank_zero_only

        from deco.lit.resume import RunDirBusy, RunDirLock

        output_dir = Path(cfg.paths.output_dir)
        lock = RunDirLock(output_dir)
        if rank_zero_only.rank == 0:  # one lock per run, held by rank 0 for the whole run
            try:
                lock.acquire()
            except RunDirBusy as error:
                raise SystemExit(str(error)) from None
        try:
            with remote_code.allowed(bool(cfg.get("trust_remote_code", False))):
                return _train(cfg, output_dir, start_training)
        finally:
            lock.release()


def _on_sigterm(handler):
    """Install `handler` for SIGTERM (main thread only); returns the one it replaces."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _train(cfg: DictConfig, output_dir: Path, start_training=lambda: None) -> float | None:
    """Build everything and fit; `start_training()` is called right before `fit` (deco.utils.startup)."""
    import lightning as L
    from lightning.pytorch.utilities import rank_zero_only
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from deco.data.image import load_image_processor
    from deco.data.tokenizer import load_tokenizer
    from deco.lit.checkpointing import NonFiniteWeightsError
    from deco.lit.datamodule import MLLMDataModule, text_budget
    from deco.lit.fault import NonFiniteGradientError, _exit_preempted
    from deco.lit.init_from import load_model_weights
    from deco.lit.loggers import finish_runs
    from deco.lit.memory import setup_gradient_checkpointing, warn_if_plan_unfit
    from deco.lit.module import MLLMModule, NonFiniteLossError
    from deco.lit.resume import clean_orphan_tmps
    from deco.lit.sampling import accumulation_for
    from deco.models.build import build_mllm
    from deco.utils.io import DiskWriteError
    from deco.utils.quiet import quiet_lightning
    from deco.utils.run_info import write_run_info

    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if rank_zero_only.rank == 0:
        _writable(output_dir / "checkpoints")
        clean_orphan_tmps(output_dir / "checkpoints")  # safe: the run dir lock is ours
    ckpt_path = _checked_resume(cfg, resolved, output_dir)
    if rank_zero_only.rank == 0:
        info = write_run_info(output_dir, resolved, OmegaConf.to_yaml(cfg, resolve=True))
        log.info("run dir %s (config %s, commit %s)", output_dir, info["config_hash"], info["git_commit"])

    tokenizer = load_tokenizer(**resolved["model"]["tokenizer"])
    image_processor = load_image_processor(**resolved["model"]["image_processor"])
    model = build_mllm(resolved["model"], resolved["projector"], tokenizer)
    if cfg.init_from:
        try:
            load_model_weights(model, cfg.init_from, strict=cfg.get("init_from_strict", True))
        except ValueError as error:
            raise SystemExit(str(error)) from None
    module = MLLMModule(
        model, resolved["stage"], build_config=checkpoint_build_config(resolved), on_nan=cfg.fault.on_nan
    )

    try:
        max_length = text_budget(cfg.data.max_length, tokenizer, model)
    except ValueError as error:
        raise SystemExit(f"Config error: {error}") from None
    datamodule = MLLMDataModule.from_config(
        instantiate(cfg.data),
        tokenizer=tokenizer,
        image_processor=image_processor,
        template=cfg.stage.template,
        seed=cfg.seed,
        max_length=max_length,
        tower_features=_tower_features(cfg, model, image_processor),
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if cfg.trainer.get("enable_progress_bar") is False:  # Lightning refuses a bar callback then
        from lightning.pytorch.callbacks import ProgressBar

        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    warn_without_checkpoints(callbacks, output_dir)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    for experiment_logger in loggers:  # the run's settings in W&B's config panel / the CSV's hparams.yaml
        experiment_logger.log_hyperparams(run_settings(resolved))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    setup_gradient_checkpointing(model, trainer, bool(cfg.model.get("gradient_checkpointing")))
    warn_if_plan_unfit(resolved, trainer)
    if cfg.data.get("global_batch_size"):
        try:
            trainer.accumulate_grad_batches = accumulation_for(
                cfg.data.global_batch_size, cfg.data.batch_size, trainer.world_size
            )
        except ValueError as error:
            raise SystemExit(f"Config error: {error}") from None

    if trainer.is_global_zero:
        tokenizer.save_pretrained(output_dir / "tokenizer")
        image_processor.save_pretrained(output_dir / "image_processor")
    # SIGTERM before training starts or after a preemption checkpoint: exit 143 at once (during training
    # PreemptionCheckpoint handles it; Lightning puts this handler back when fit ends)
    previous = _on_sigterm(_exit_preempted)
    start_training()
    try:
        # weights_only passed explicitly: torch honours it whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says.
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if cfg.get("validate_after_fit"):
            trainer.validate(module, datamodule=datamodule)
    except (NonFiniteLossError, NonFiniteGradientError, NonFiniteWeightsError, DiskWriteError) as error:
        raise SystemExit(f"Training stopped: {error}") from None
    except SIGTERMException as error:  # preemption: last.ckpt was saved (deco.lit.fault)
        log.error("Training interrupted: %s", error or "SIGTERM")
        raise SystemExit(PREEMPTED_EXIT_CODE) from None
    finally:
        _on_sigterm(previous)
        finish_runs(loggers)
    skipped = getattr(module, "_nonfinite_skips", 0)
    if skipped:
        log.warning("%d optimizer steps were skipped for a non-finite gradient (fault.on_nan=skip)", skipped)
    val_loss = trainer.callback_metrics.get("val/loss")
    return float(val_loss) if val_loss is not None else None


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except SystemExit as stop:
        if stop.code == PREEMPTED_EXIT_CODE:  # checkpoint saved: a SIGTERM that arrives now must not turn
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # exit 143 into a kill (another rank's, a late one)
        raise


if __name__ == "__main__":
    main()
