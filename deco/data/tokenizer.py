"""Tokenizers for deco: the zoo's tiny byte-level BPE (shipped, fixed) and real ones.

The embedded default model needs a tokenizer without network access. The zoo ships one
(`deco/zoo/tiny/tokenizer/`, made by `deco.zoo.tokenizer.train_tiny_tokenizer`): a byte-level BPE
trained on every text the shapes world can produce, the conversation templates' fixed strings, digits
and punctuation, so it round-trips any text exactly (byte level) and keeps box strings such as
"[0.12, 0.34, 0.56, 0.78]" short. Its special tokens follow Llama / llava-hf: `<unk>`, `<s>` (BOS),
`</s>` (EOS), `<pad>` and a single `<image>` placeholder token. `load_tokenizer` returns that tiny
tokenizer for `None` (or `zoo:tiny/tokenizer`) and otherwise loads a real one with
`AutoTokenizer.from_pretrained`, adding `<image>` and a pad token where missing (LLaVA sets pad = unk;
llava-hf adds `<image>` as a special token).
"""

from __future__ import annotations

import os

from transformers import AddedToken, AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from deco.utils import remote_code
from deco.utils.remote_code import strip_code_options
from deco.zoo import resolve

from deco.data.tokens import (  # noqa: F401 (re-exported)
    BOS_TOKEN,
    EOS_TOKEN,
    IGNORE_INDEX,
    IMAGE_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    UNK_TOKEN,
)

TINY_TOKENIZER = "zoo:tiny/tokenizer"
TINY_VOCAB_SIZE = 512


def build_tiny_tokenizer(vocab_size: int = TINY_VOCAB_SIZE, model_max_length: int = 2048) -> PreTrainedTokenizerFast:
    """The zoo's shipped shapes-world tokenizer (same ids everywhere, no training, no download)."""
    if vocab_size != TINY_VOCAB_SIZE:
        raise ValueError(
            f"the zoo ships a {TINY_VOCAB_SIZE}-token tokenizer, not vocab_size={vocab_size}; train another with "
            "deco.zoo.tokenizer.train_tiny_tokenizer(vocab_size)"
        )
    return PreTrainedTokenizerFast.from_pretrained(
        resolve(TINY_TOKENIZER), model_max_length=model_max_length, padding_side="right"
    )


def _looks_local(name_or_path: str) -> bool:
    return os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")) or os.path.exists(name_or_path)


def load_tokenizer(name_or_path: str | None, model_max_length: int = 2048, **kwargs) -> PreTrainedTokenizerBase:
    """Tiny tokenizer for None, else `AutoTokenizer.from_pretrained` with `<image>` and a pad token ensured.

    Code-loading options in `kwargs` (stored settings) are dropped: see deco.utils.remote_code.
    Adding `<image>` (or `<pad>`) grows the vocabulary: size the embeddings with `len(tokenizer)`.
    """
    if name_or_path is None or name_or_path == TINY_TOKENIZER:
        return build_tiny_tokenizer(model_max_length=model_max_length, **kwargs)
    path = os.path.expanduser(str(resolve(name_or_path)))
    if _looks_local(path) and not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer directory not found: {path!r}")
    kwargs = strip_code_options(kwargs, f"tokenizer {path}")
    tok = AutoTokenizer.from_pretrained(
        path, model_max_length=model_max_length, padding_side="right", trust_remote_code=remote_code.current(), **kwargs
    )
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    if tok.pad_token is None:
        if tok.unk_token is not None:
            tok.pad_token = tok.unk_token  # LLaVA-1.5 (train.py): pad = unk
        else:
            tok.add_special_tokens({"pad_token": PAD_TOKEN})
    return tok
