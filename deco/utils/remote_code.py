"""Whether transformers may run Python code shipped with a model, tokenizer or image processor.

Code-loading options (`trust_remote_code`, `code_revision`) come only from the user's own command line
(`trust_remote_code=true` of deco.train / evaluate / explain / export / app, or the lmms-eval model arg),
never from a checkpoint's stored settings or a run dir: a `last.ckpt` whose hyper-parameters say
`trust_remote_code: true` must not turn a `.py` file next to it into code that runs. `allowed(flag)` sets
the policy for the loads inside it; `load_tokenizer`, `build_llm` and `load_image_processor` pass
`trust_remote_code=current()` to transformers explicitly (False by default, so transformers refuses custom
code instead of prompting) and `strip_code_options` drops any such key from stored settings, with a warning.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging

log = logging.getLogger(__name__)

CODE_OPTIONS = ("trust_remote_code", "code_revision")
_TRUST: contextvars.ContextVar[bool] = contextvars.ContextVar("deco_trust_remote_code", default=False)


def current() -> bool:
    """The policy in force: False unless an `allowed(True)` block encloses this call."""
    return _TRUST.get()


@contextlib.contextmanager
def allowed(flag: bool, source: str = "trust_remote_code=true"):
    """Loads inside this block may run model code when `flag` (the user's own setting) is true."""
    flag = bool(flag)
    if flag:
        log.warning("%s: transformers may run Python code shipped with the model, tokenizer or image processor "
                    "being loaded; use it only for files you trust", source)
    token = _TRUST.set(flag)
    try:
        yield flag
    finally:
        _TRUST.reset(token)


def strip_code_options(settings: dict, where: str) -> dict:
    """`settings` without code-loading keys; a warning names each one dropped (they never come from files)."""
    dropped = sorted(k for k in settings if k in CODE_OPTIONS)
    for key in dropped:
        log.warning("%s: ignoring stored %s=%r; code-loading options come only from the command line "
                    "(trust_remote_code=true)", where, key, settings[key])
    return {k: v for k, v in settings.items() if k not in CODE_OPTIONS}
