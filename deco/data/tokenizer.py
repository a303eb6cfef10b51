"""Tokenizers for deco: a tiny byte-level BPE trained offline on the shapes world, and real ones.

The embedded default model needs a tokenizer without network access. `build_tiny_tokenizer`
trains a byte-level BPE (the `tokenizers` library) on a fixed corpus — every text the
shapes world can produce, the conversation templates' fixed strings, digits and
punctuation — so it is deterministic, round-trips any text exactly (byte level) and keeps
box strings such as "[0.12, 0.34, 0.56, 0.78]" short. Its special tokens follow Llama /
llava-hf: `<unk>`, `<s>` (BOS), `</s>` (EOS), `<pad>` and a single `<image>` placeholder
token. `load_tokenizer` returns that tiny tokenizer for `None` and otherwise loads a real
one with `AutoTokenizer.from_pretrained`, adding `<image>` and a pad token where missing
(LLaVA sets pad = unk; llava-hf adds `<image>` as a special token).
"""

from __future__ import annotations

import functools
import os
import string

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AddedToken, AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

IMAGE_TOKEN = "<image>"
IGNORE_INDEX = -100

UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = "<unk>", "<s>", "</s>", "<pad>"
# Order fixes the ids: <unk>=0, <s>=1, </s>=2 (as in Llama), <pad>=3, <image>=4.
SPECIAL_TOKENS = (UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, IMAGE_TOKEN)


def _corpus() -> list[str]:
    """Deterministic training corpus: shapes-world texts, template strings, digits, boxes."""
    # Imported here: shapes imports conversation which imports this module.
    from deco.data.conversation import TEMPLATES
    from deco.data.shapes import corpus_texts

    texts = list(corpus_texts())
    # Every vicuna sample carries the template strings: weight them so they merge into few tokens.
    for tpl in TEMPLATES.values():
        texts.extend([tpl.system, f"{tpl.roles[0]}: ", f" {tpl.roles[1]}:", tpl.sep] * 20)
    texts.append(string.ascii_letters + string.digits + string.punctuation)
    # Box strings ("[0.12, 0.34, ...]"); digits stay single tokens (as in Llama).
    texts.extend(f"[{i / 100:.2f}, {(i + 7) % 101 / 100:.2f}]" for i in range(101))
    return texts


@functools.lru_cache(maxsize=8)
def _tiny_tokenizer_json(vocab_size: int) -> str:
    """Train the BPE once per vocab size and keep its serialised form (immutable, copy-safe)."""
    tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    # Byte level without a prefix space: decode(encode(x)) == x for any string. Digits are
    # split one by one like Llama's, so the small vocabulary goes to words, not numbers.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=1,
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    bos_id = tok.token_to_id(BOS_TOKEN)
    # Like Llama: BOS prepended when add_special_tokens=True, no EOS.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return tok.to_str()


def build_tiny_tokenizer(vocab_size: int = 512, model_max_length: int = 2048) -> PreTrainedTokenizerFast:
    """A fresh byte-level BPE tokenizer for the shapes world; same ids on every call, no download."""
    min_size = 256 + len(SPECIAL_TOKENS)
    if vocab_size < min_size:
        raise ValueError(f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least {min_size}")
    tok = Tokenizer.from_str(_tiny_tokenizer_json(vocab_size))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IMAGE_TOKEN],
        padding_side="right",
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def _looks_local(name_or_path: str) -> bool:
    return os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")) or os.path.exists(name_or_path)


def load_tokenizer(
    name_or_path: str | None, model_max_length: int = 2048, **kwargs
) -> PreTrainedTokenizerBase:
    """Tiny tokenizer for None, else `AutoTokenizer.from_pretrained` with `<image>` and a pad token ensured.

    Adding `<image>` (or `<pad>`) grows the vocabulary: size the embeddings with `len(tokenizer)`.
    """
    if name_or_path is None:
        return build_tiny_tokenizer(model_max_length=model_max_length, **kwargs)
    path = os.path.expanduser(str(name_or_path))
    if _looks_local(path) and not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer directory not found: {path!r}")
    tok = AutoTokenizer.from_pretrained(path, model_max_length=model_max_length, padding_side="right", **kwargs)
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    if tok.pad_token is None:
        if tok.unk_token is not None:
            tok.pad_token = tok.unk_token  # LLaVA-1.5 (train.py): pad = unk
        else:
            tok.add_special_tokens({"pad_token": PAD_TOKEN})
    return tok
