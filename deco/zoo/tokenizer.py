"""Train the zoo's tiny byte-level BPE (once, by `python -m deco.zoo`; deco then loads the shipped files).

A BPE (the `tokenizers` library) on a fixed corpus: every text the shapes world can produce, the
conversation templates' fixed strings, digits and punctuation. Byte level without a prefix space, so
decode(encode(x)) == x for any string; digits split one by one like Llama's, so the small vocabulary goes
to words, not numbers. The same corpus and settings give the same ids on every machine.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from deco.data.conversation import TEMPLATES
from deco.data.shapes import corpus_texts
from deco.data.tokenizer import BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, UNK_TOKEN


def _corpus() -> list[str]:
    """Deterministic training corpus: shapes-world texts, template strings, digits, boxes."""
    texts = list(corpus_texts())
    # Every vicuna sample carries the template strings: weight them so they merge into few tokens.
    seen = set()
    for tpl in TEMPLATES.values():  # variants that share their strings (vicuna_v1_qfirst) count once
        if (key := (tpl.system, tpl.roles, tpl.sep)) in seen:
            continue
        seen.add(key)
        texts.extend([tpl.system, f"{tpl.roles[0]}: ", f" {tpl.roles[1]}:", tpl.sep] * 20)
    texts.append(string.ascii_letters + string.digits + string.punctuation)
    # Box strings ("[0.12, 0.34, ...]"); digits stay single tokens (as in Llama).
    texts.extend(f"[{i / 100:.2f}, {(i + 7) % 101 / 100:.2f}]" for i in range(101))
    return texts


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


def train_tiny_tokenizer(vocab_size: int = 512, model_max_length: int = 2048) -> PreTrainedTokenizerFast:
    """A freshly trained byte-level BPE for the shapes world; same ids on every call."""
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
