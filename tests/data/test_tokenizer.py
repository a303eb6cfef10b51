"""Tiny tokenizer: determinism, exact round trip, special tokens, and load_tokenizer paths."""

import json
import subprocess
import sys

import pytest

from deco.data import tokenizer as tk
from deco.data.shapes import corpus_texts, format_box
from deco.zoo import tokenizer as zoo_tk

TEXTS = ["A small red circle and a large blue square.", "What colour is the triangle?", "[0.12, 0.34, 0.56, 0.78]"]


def _vocab_json(vocab_size=512):
    return json.loads(zoo_tk._tiny_tokenizer_json(vocab_size))["model"]


def test_two_trainings_same_vocab_and_ids_as_the_shipped_tokenizer():
    assert _vocab_json() == _vocab_json()
    trained, shipped = zoo_tk.train_tiny_tokenizer(), tk.build_tiny_tokenizer()
    assert trained.get_vocab() == shipped.get_vocab()
    for t in TEXTS + list(corpus_texts()):
        assert trained.encode(t) == shipped.encode(t)
    a, b = tk.build_tiny_tokenizer(), tk.build_tiny_tokenizer()
    assert a is not b
    for t in TEXTS:
        assert a.encode(t) == b.encode(t)


def test_same_ids_in_a_fresh_process():
    code = "from deco.data.tokenizer import build_tiny_tokenizer as b; print(b().encode(%r))" % TEXTS[0]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == tk.build_tiny_tokenizer().encode(TEXTS[0])


def test_round_trip_and_bos():
    tok = tk.build_tiny_tokenizer()
    for t in list(corpus_texts()) + TEXTS + ["unseen words: zebra Ω 42\n"]:
        ids = tok.encode(t, add_special_tokens=False)
        assert tok.decode(ids) == t
    assert tok.encode("Yes.")[0] == tok.bos_token_id
    assert tok.padding_side == "right"
    # words of the shapes world are single tokens
    assert len(tok.encode(" triangle", add_special_tokens=False)) == 1
    box = format_box((0.1, 0.2, 0.3, 1.0))
    assert box == "[0.10, 0.20, 0.30, 1.00]"
    assert tok.decode(tok.encode(box, add_special_tokens=False)) == box


def test_special_tokens():
    tok = tk.build_tiny_tokenizer(model_max_length=77)
    assert tok.model_max_length == 77
    ids = [tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.convert_tokens_to_ids("<image>")]
    assert ids == [0, 1, 2, 3, 4]
    assert tok.encode("a <image>\nb", add_special_tokens=False).count(4) == 1
    assert tok.convert_ids_to_tokens(tok.encode("<image>", add_special_tokens=False)) == ["<image>"]
    assert len(tok) == 512


def test_too_small_vocab_and_other_sizes_than_the_shipped_one():
    with pytest.raises(ValueError, match="vocab_size"):
        zoo_tk.train_tiny_tokenizer(vocab_size=100)
    with pytest.raises(ValueError, match="train_tiny_tokenizer"):
        tk.build_tiny_tokenizer(vocab_size=600)


def test_load_tokenizer_none_and_missing_dir(tmp_path):
    assert tk.load_tokenizer(None, model_max_length=64).model_max_length == 64
    with pytest.raises(FileNotFoundError, match="nope"):
        tk.load_tokenizer(str(tmp_path / "nope"))


def test_load_tokenizer_adds_image_and_pad(tmp_path):
    # A saved tokenizer without <image> and without pad (like Vicuna's): load adds <image>, pad = unk.
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2, "x": 3, "y": 4}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    plain = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    plain.save_pretrained(tmp_path)
    tok = tk.load_tokenizer(str(tmp_path), model_max_length=99)
    assert tok.pad_token == "<unk>" and tok.pad_token_id == 0
    assert tok.convert_tokens_to_ids("<image>") == 5 and len(tok) == 6
    assert tok.encode("x <image> y", add_special_tokens=False) == [3, 5, 4]
    assert tok.model_max_length == 99 and tok.padding_side == "right"
