"""deco: train, sweep, evaluate and explain LLaVA-style MLLMs that differ only in their projector."""

__version__ = "0.1.0"


def _init() -> None:
    from omegaconf import OmegaConf

    from deco.utils.job_help import fast_help_if_asked, hydra_template
    from deco.utils.names import projector_name_resolver
    from deco.utils.renamed import rename_overrides_if_run

    if not OmegaConf.has_resolver("deco_help"):
        OmegaConf.register_new_resolver("deco_help", hydra_template)
    if not OmegaConf.has_resolver("projector_name"):  # sweep dirs and W&B names: avgpool + pooling=max -> maxpool
        OmegaConf.register_new_resolver("projector_name", projector_name_resolver)
    rename_overrides_if_run()  # `python -m deco.<job> model.base=...`: an old spelling, said and passed on anew
    fast_help_if_asked()  # `python -m deco.<job> --help`: answered before torch is imported


_init()
