"""A default run prints what a user needs: Lightning's tips and inapplicable warnings are dropped, the rest kept."""

from __future__ import annotations

import logging
import warnings

from deco.lit.module import parameter_line
from deco.utils.quiet import quiet_lightning, quiet_weight_loading


def test_lightning_noise_is_dropped_and_the_rest_kept(caplog):
    quiet_lightning()
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        rank_zero.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        rank_zero.info("TPU available: False, using: 0 TPU cores")
        rank_zero.info("GPU available: False, used: False")
        rank_zero.info("`Trainer.fit` stopped: `max_steps=2` reached.")
    assert [r.getMessage() for r in caplog.records] == [
        "GPU available: False, used: False",
        "`Trainer.fit` stopped: `max_steps=2` reached.",
    ]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        quiet_lightning()
        warnings.warn("Found 77 module(s) in eval mode at the start of training. This may lead to unexpected")
        warnings.warn("Checkpoint directory /r/checkpoints exists and is not empty.")  # resume=auto, on purpose
        warnings.warn("something else")
    assert [str(w.message) for w in seen] == ["something else"]


def test_parameter_lines_say_what_is_frozen_and_why():
    assert (
        parameter_line("vision", 0, 224_832)
        == "   vision:      224,832 parameters, frozen (eval mode: no dropout, fixed statistics)"
    )
    assert parameter_line("llm", 557_696, 557_696) == "      llm:      557,696 parameters, all trainable"
    assert parameter_line("llm", 1_000, 557_696).endswith("1,000 trainable (LoRA adapters or a partly frozen part)")


def test_weight_loading_bar_is_off_while_loading_and_restored():
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    with quiet_weight_loading():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
