"""Settings that would train something other than what was meant fail before anything is built, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONFIG_DIR, compose_config
from omegaconf import OmegaConf

from deco.train import train


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["stage.lr=-1e-3"], "stage.lr=-0.001 must be a positive number"),
        (["stage.lr=0"], "stage.lr=0 must be a positive number"),
        (["stage.projector_lr=-2e-5"], "stage.projector_lr=-2e-05 must be null or a positive number"),
        (["data.batch_size=0"], "data.batch_size=0 must be a positive integer"),
        (["data.eval_batch_size=-4"], "data.eval_batch_size=-4 must be null or a positive integer"),
        (["data.max_length=0"], "data.max_length=0 must be a positive integer"),
        (["data.num_workers=-1"], "data.num_workers=-1 must be an integer >= 0"),
        (
            ["data=llava_json", "data.json_path=x.json", "data.background_read=yes"],
            "data.background_read=yes must be true, false or auto",
        ),
        (["stage.warmup_ratio=1.5"], "stage.warmup_ratio=1.5 must be in [0, 1)"),
        (["trainer.max_steps=0"], "trainer.max_steps=0 must be -1 (no limit) or positive"),
        (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 must be a positive integer"),
        (["+stage.lrr=1e-3"], "stage.lrr is not a setting deco knows (a typo?); known keys there: "),
        (["+stage.lora.rank=8"], "stage.lora.rank is not a setting deco knows"),
        (["+data.batchsize=8"], "data.batchsize is not a setting deco knows"),
        (["+fault.on_nann=skip"], "fault.on_nann is not a setting deco knows"),
        (["+seeed=1"], "seeed is not a setting deco knows"),
        (["resume=sometimes"], "resume=sometimes is not supported"),
        (["data.image_aspect=stretch"], "data.image_aspect=stretch is unknown; choose one of: pad, resize, crop"),
    ],
)
def test_bad_setting_is_a_config_error_naming_the_key(train_config, tmp_path, overrides, message):
    with pytest.raises(SystemExit, match="Config error: ") as info:
        train(train_config(*overrides))
    assert message in str(info.value)
    assert not (tmp_path / "checkpoints").exists()


def test_known_keys_lists_siblings(train_config):
    with pytest.raises(SystemExit) as info:
        train(train_config("+stage.lrr=1e-3"))
    assert "lr, " in str(info.value) and "projector_lr" in str(info.value)


def test_experiment_presets_and_other_data_configs_pass(train_config):
    from deco.utils.config_keys import unknown_keys, value_problems

    for overrides in (["experiment=projector_study"], ["data=llava_json"], ["data=wds"], ["stage=finetune_lora"]):
        cfg = train_config(*overrides)
        assert unknown_keys(cfg) == [] and value_problems(cfg) == [], overrides


def test_python_defaults_agree_with_the_yaml():
    """A projector built from Python with no arguments is the one its YAML makes; stage defaults match too."""
    import inspect

    from omegaconf import OmegaConf

    from deco.lit.module import MLLMModule
    from deco.models.projectors import PROJECTORS

    differ = []
    for path in sorted((Path(CONFIG_DIR) / "projector").glob("*.yaml")):
        cfg = OmegaConf.to_container(
            compose_config("train", [f"projector={path.stem}"], Path("/tmp")).projector, resolve=True
        )
        signature = inspect.signature(PROJECTORS.get(cfg["name"]))
        for key, value in cfg.items():
            default = signature.parameters[key].default if key in signature.parameters else inspect.Parameter.empty
            if default not in (inspect.Parameter.empty, None) and default != value:
                differ.append(f"{path.stem}.{key}: python {default!r}, yaml {value!r}")
    assert not differ, differ
    source = inspect.getsource(MLLMModule)
    stages = [OmegaConf.load(p) for p in sorted((Path(CONFIG_DIR) / "stage").glob("*.yaml"))]
    assert {s.warmup_ratio for s in stages} == {0.03} and '"warmup_ratio", 0.03)' in source
    assert {s.loss_reduction for s in stages} == {"sample"} and 'get("loss_reduction") or "sample")' in source


def test_pooling_override_names_the_projector_it_makes():
    from deco.models.formats.common import LoadedModel
    from deco.utils.names import projector_name

    assert projector_name({"name": "avgpool", "pooling": "max"}) == "maxpool"
    assert projector_name({"name": "maxpool", "pooling": "avg"}) == "avgpool"
    assert projector_name({"name": "qformer", "pooling": None}) == "qformer"
    loaded = LoadedModel(
        None, None, None, {"projector": {"name": "avgpool", "pooling": "max", "query_num": 64, "mlp_depth": 2}}
    )
    assert loaded.projector_tag == "maxpool2_64"
    cfg = compose_config("train", ["projector=avgpool", "pooling=max", "logger=wandb"], Path("/tmp"))
    assert cfg.logger.wandb.name == "maxpool-q64-s42"  # W&B run names, and the sweep subdirs likewise:
    assert "${projector_name:${projector.name}" in (Path(CONFIG_DIR) / "hydra" / "default.yaml").read_text()
    assert (
        compose_config("train", ["projector=linear", "logger=wandb"], Path("/tmp")).logger.wandb.name
        == "linear-q64-s42"
    )


def test_optimizer_and_schedule_come_from_the_stage_config(train_config):
    """lightning-hydra-template style: `stage.optimizer` / `stage.scheduler` are partials the module completes."""
    from types import SimpleNamespace

    import torch

    from deco.lit.module import MLLMModule

    def module_for(*overrides):
        cfg = OmegaConf.to_container(train_config(*overrides).stage, resolve=True)
        model = torch.nn.Module()
        model.vision, model.projector, model.llm = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        module = MLLMModule(model, cfg)
        module.trainer = SimpleNamespace(estimated_stepping_batches=100)
        return module

    default = module_for().configure_optimizers()
    assert type(default["optimizer"]).__name__ == "AdamW" and default["optimizer"].defaults["eps"] == 1e-8
    scheduler = default["lr_scheduler"]["scheduler"]
    assert [round(f(k), 4) for f in scheduler.lr_lambdas[:1] for k in (0, 3, 100)] == [0.0, 1.0, 0.0]  # warmup 3
    sgd = module_for(
        "stage.optimizer._target_=torch.optim.SGD",
        "~stage.optimizer.betas",
        "~stage.optimizer.eps",
        "+stage.optimizer.momentum=0.9",
    ).configure_optimizers()
    assert type(sgd["optimizer"]).__name__ == "SGD" and sgd["optimizer"].defaults["momentum"] == 0.9
