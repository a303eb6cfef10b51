"""Caption metrics as pycocoevalcap's COCO caption evaluation computes them.

pycocoevalcap's eval.py: every caption through the Stanford PTBTokenizer (Java; lower-cased, PTB
tokens, punctuation tokens dropped), then Bleu(4) (corpus BLEU, "closest" reference length), Rouge
(ROUGE-L, best LCS F-measure with beta 1.2) and Cider (CIDEr-D, document frequencies from the
references of the evaluated corpus, so it needs many images to mean anything). The texts themselves
are the metric state (UTF-8 bytes, gathered across ranks), since all three need corpus statistics.

When `java` is missing, `fallback_tokenize` (a regex approximation of PTB tokenisation) is used instead,
said once in the log, and compute() reports `tokenizer: fallback` so the numbers are not quoted as COCO's.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
from collections.abc import Sequence

import torch
from torchmetrics import Metric

from deco.eval.metrics.base import cat_state, check_lengths

log = logging.getLogger(__name__)

# pycocoevalcap/tokenizer/ptbtokenizer.py: tokens removed after tokenisation.
PTB_PUNCTUATIONS = ("''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
                    "...", ";")
_FALLBACK_TOKEN = re.compile(r"n't|'\w*|\w+(?:[-.]\w+)*|\.\.\.|--|\S")
# PTB writes brackets as -LRB- ...; with -lowerCase they become "-lrb-", which the (upper-case) list above
# does not remove, so COCO scores keep them as tokens.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", "[": "-lsb-", "]": "-rsb-"}
_warned_fallback = False


def java_available() -> bool:
    return shutil.which("java") is not None


def fallback_tokenize(text: str) -> str:
    """Lower-case, split words and punctuation as PTB does ("dog's" -> "dog 's", "don't" -> "do n't",
    "(" -> "-lrb-"), drop the punctuation tokens pycocoevalcap drops."""
    text = str(text).replace("\n", " ").lower()
    text = re.sub(r"(\w)n't\b", r"\1 n't", text)
    tokens = [_BRACKETS.get(t, t) for t in _FALLBACK_TOKEN.findall(text)]
    return " ".join(t for t in tokens if t not in PTB_PUNCTUATIONS)


def tokenize(captions: dict[int, list[str]], use_ptb: bool) -> dict[int, list[str]]:
    """{id: [caption, ...]} -> {id: [tokenised caption, ...]} with the PTB tokenizer or the fallback."""
    if use_ptb:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    return {k: [fallback_tokenize(c) for c in v] for k, v in captions.items()}


def coco_caption_scores(preds: Sequence[str], references: Sequence[Sequence[str]],
                        use_ptb: bool | None = None) -> dict[str, float | str]:
    """{"bleu4", "rougeL", "cider"} in percent and {"tokenizer": "ptb" | "fallback"}."""
    global _warned_fallback
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if use_ptb is None:
        use_ptb = java_available()
        if not use_ptb and not _warned_fallback:
            log.warning("java not found: captions are tokenised with deco's fallback, not the PTB tokenizer "
                        "(metrics.json says tokenizer: fallback; install a JRE for COCO's numbers)")
            _warned_fallback = True
    gts = tokenize({i: list(refs) for i, refs in enumerate(references)}, use_ptb)
    res = tokenize({i: [pred] for i, pred in enumerate(preds)}, use_ptb)
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its counts
        bleu, _ = Bleu(4).compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": 100.0 * float(bleu[3]), "rougeL": 100.0 * float(rouge), "cider": 100.0 * float(cider),
            "tokenizer": "ptb" if use_ptb else "fallback"}


class CaptionMetrics(Metric):
    """BLEU-4, ROUGE-L and CIDEr of answers against reference texts, as the COCO caption evaluation
    computes them; update(preds, references). compute() adds `tokenizer` ("ptb" or "fallback")."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("text_bytes", default=[], dist_reduce_fx="cat")  # utf-8 of one JSON record per item
        self.add_state("text_lengths", default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[str], references: Sequence[Sequence[str] | str]) -> None:
        check_lengths(preds, references)
        chunks, lengths = [], []
        for pred, refs in zip(preds, references):
            refs = [refs] if isinstance(refs, str) else list(refs)
            if not refs:
                raise ValueError("every caption needs at least one reference text")
            blob = json.dumps([str(pred), [str(r) for r in refs]]).encode("utf-8")
            chunks.append(torch.tensor(list(blob), dtype=torch.long, device=self.device))
            lengths.append(len(blob))
        self.text_bytes.append(torch.cat(chunks))
        self.text_lengths.append(torch.tensor(lengths, dtype=torch.long, device=self.device))

    def records(self) -> list[tuple[str, list[str]]]:
        """The (prediction, references) pairs held (after compute(): gathered from all ranks)."""
        data, lengths = cat_state(self.text_bytes), cat_state(self.text_lengths)
        out, start = [], 0
        raw = bytes(data.tolist())
        for length in lengths.tolist():
            pred, refs = json.loads(raw[start:start + length].decode("utf-8"))
            out.append((pred, refs))
            start += length
        return out

    def compute(self) -> dict:
        records = self.records()
        if not records:
            return {"n": torch.tensor(0)}
        scores = coco_caption_scores([p for p, _ in records], [refs for _, refs in records])
        out: dict = {k: torch.tensor(v, dtype=torch.float64) for k, v in scores.items() if k != "tokenizer"}
        out["n"] = torch.tensor(len(records))
        out["tokenizer"] = scores["tokenizer"]
        return out
