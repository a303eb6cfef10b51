"""Benchmark metrics as torchmetrics `Metric`s, so that scores reduce correctly across DDP ranks.

Every metric takes the model's raw answer strings plus the references in `update`, keeps only
sums or per-question tensors as state (`dist_reduce_fx` "sum" or "cat"), and returns a dict of
scalar tensors from `compute`: accuracies in percent (as papers report them), counts as counts.
Answers a parser cannot read count as wrong and are tallied under `unparsed`.

* `VQAAccuracy` — VQAv2 / TextVQA / VizWiz: per question, the mean over the 10 leave-one-out subsets
  of the human answers of min(#matches / 3, 1), after official normalisation.
* `ExactMatch` — GQA and the shapes attribute questions.
* `YesNoMetrics` — POPE: accuracy, precision, recall, F1 (positive class "yes") and yes-ratio per split.
* `MMEScore` — MME: per subtask acc + acc+ (both questions of an image right), perception and cognition sums.
* `MultipleChoiceAccuracy` — option letters, optionally MMBench's circular rule (a question counts only if
  every rotation of its options is answered right).
* `GroundingAccuracy` — RefCOCO-style Acc@IoU>=0.5 of a parsed "[x1, y1, x2, y2]" and the mean IoU.
* `CaptionMetrics` — BLEU-4 and ROUGE-L (torchmetrics) and CIDEr-D (pycocoevalcap) on whole corpora; the
  texts themselves are the state (UTF-8 bytes, gathered across ranks), since CIDEr needs corpus statistics.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from deco.eval.normalize import normalize_gqa, normalize_text, normalize_vqa
from deco.eval.parsing import box_iou, parse_box, parse_option, parse_yes_no_mme, parse_yes_no_pope


def _check_lengths(preds: Sequence, *others: Sequence) -> None:
    for other in others:
        if len(other) != len(preds):
            raise ValueError(f"got {len(preds)} predictions but {len(other)} references / labels")


def _cat(state) -> torch.Tensor:
    """A "cat" list state as one long tensor (empty when nothing was added)."""
    if isinstance(state, list):
        return dim_zero_cat(state).long() if state else torch.zeros(0, dtype=torch.long)
    return state.long().flatten()


def _pct(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return 100.0 * num.double() / den.double() if float(den) > 0 else torch.tensor(0.0, dtype=torch.float64)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official VQA accuracy of one answer against the human answers (fraction in [0, 1])."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one reference answer")
    pred = normalize_vqa(prediction)
    gts = [normalize_vqa(a) for a in answers]
    if len(gts) == 1:
        return float(pred == gts[0])
    scores = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1:]
        scores.append(min(1.0, sum(g == pred for g in others) / 3.0))
    return sum(scores) / len(scores)


class _CountingMetric(Metric):
    """Base: a float score sum, a question count and an unparsed count."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("score", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("unparsed", default=torch.tensor(0), dist_reduce_fx="sum")

    def _add(self, scores: list[float], unparsed: int = 0) -> None:
        self.score += float(sum(scores))
        self.total += len(scores)
        self.unparsed += unparsed

    def compute(self) -> dict[str, torch.Tensor]:
        return {"accuracy": _pct(self.score, self.total), "n": self.total.clone(), "unparsed": self.unparsed.clone()}


class VQAAccuracy(_CountingMetric):
    """Soft VQA accuracy (VQAv2, TextVQA, VizWiz); update(preds, answers) with answers a list of lists."""

    def update(self, preds: Sequence[str], answers: Sequence[Sequence[str]]) -> None:
        _check_lengths(preds, answers)
        self._add([vqa_accuracy(p, a) for p, a in zip(preds, answers)])


class ExactMatch(_CountingMetric):
    """Exact match after a normalisation (default: LLaVA's GQA rule)."""

    def __init__(self, normalize: Callable[[str], str] = normalize_gqa, **kwargs):
        super().__init__(**kwargs)
        self.normalize = normalize

    def update(self, preds: Sequence[str], answers: Sequence[str]) -> None:
        _check_lengths(preds, answers)
        self._add([float(self.normalize(p) == self.normalize(a)) for p, a in zip(preds, answers)])


class YesNoMetrics(Metric):
    """POPE metrics per split; update(preds, labels, splits) with labels "yes"/"no".

    compute(): `<split>/accuracy|precision|recall|f1|yes_ratio` (percent) for every split with data,
    their means over splits (`f1` is the POPE number papers report), `n` and `unclear` (answers that
    never said yes or no; LLaVA's rule counts them as "yes").
    """

    full_state_update = False

    def __init__(self, splits: Sequence[str] = ("random", "popular", "adversarial"), **kwargs):
        super().__init__(**kwargs)
        if not splits:
            raise ValueError("YesNoMetrics needs at least one split name")
        self.splits = list(splits)
        # columns: tp, fp, tn, fn, unclear
        self.add_state("counts", default=torch.zeros(len(self.splits), 5, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], labels: Sequence[str], splits: Sequence[str] | None = None) -> None:
        splits = [self.splits[0]] * len(preds) if splits is None else splits
        _check_lengths(preds, labels, splits)
        for pred, label, split in zip(preds, labels, splits):
            if split not in self.splits:
                raise ValueError(f"unknown split {split!r}; this metric has {self.splits}")
            label = str(label).strip().lower().rstrip(".")
            if label not in ("yes", "no"):
                raise ValueError(f"yes/no label must be 'yes' or 'no', got {label!r}")
            answer, explicit = parse_yes_no_pope(pred)
            row = self.splits.index(split)
            col = {("yes", "yes"): 0, ("yes", "no"): 1, ("no", "no"): 2, ("no", "yes"): 3}[(answer, label)]
            self.counts[row, col] += 1
            if answer == "yes" and not explicit:
                self.counts[row, 4] += 1

    def compute(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        means = defaultdict(list)
        for row, split in enumerate(self.splits):
            tp, fp, tn, fn, _ = (self.counts[row, k].double() for k in range(5))
            n = tp + fp + tn + fn
            if n == 0:
                continue
            precision = tp / (tp + fp) if tp + fp > 0 else torch.tensor(0.0, dtype=torch.float64)
            recall = tp / (tp + fn) if tp + fn > 0 else torch.tensor(0.0, dtype=torch.float64)
            f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else precision * 0
            values = {"accuracy": (tp + tn) / n, "precision": precision, "recall": recall, "f1": f1,
                      "yes_ratio": (tp + fp) / n}
            for key, value in values.items():
                out[f"{split}/{key}"] = 100.0 * value
                means[key].append(100.0 * value)
        for key, values in means.items():
            out[key] = torch.stack(values).mean()
        out["n"] = self.counts[:, :4].sum()
        out["unclear"] = self.counts[:, 4].sum()
        return out


MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


class MMEScore(Metric):
    """MME: update(preds, answers, categories, image_ids); every image has (usually) two yes/no questions.

    Per subtask: acc = % questions right, acc+ = % images with all their questions right, score = acc + acc+.
    `perception` / `cognition` sum the subtask scores of each group (max 2000 / 800).
    """

    full_state_update = False

    def __init__(self, categories: Sequence[str] = MME_PERCEPTION + MME_COGNITION, **kwargs):
        super().__init__(**kwargs)
        self.categories = list(categories)
        for name in ("category", "image", "correct", "parsed"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[str], answers: Sequence[str], categories: Sequence[str],
               image_ids: Sequence[int]) -> None:
        _check_lengths(preds, answers, categories, image_ids)
        cats, correct, parsed = [], [], []
        for pred, answer, category in zip(preds, answers, categories):
            if category not in self.categories:
                raise ValueError(f"unknown MME category {category!r}; known: {self.categories}")
            label = parse_yes_no_mme(pred)
            cats.append(self.categories.index(category))
            parsed.append(label is not None)
            correct.append(label is not None and label == str(answer).strip().lower().rstrip("."))
        self.category.append(torch.tensor(cats, dtype=torch.long, device=self.device))
        self.image.append(torch.tensor([int(i) for i in image_ids], dtype=torch.long, device=self.device))
        self.correct.append(torch.tensor(correct, dtype=torch.long, device=self.device))
        self.parsed.append(torch.tensor(parsed, dtype=torch.long, device=self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        category, image, correct, parsed = (_cat(s) for s in (self.category, self.image, self.correct, self.parsed))
        out: dict[str, torch.Tensor] = {}
        groups = {"perception": 0.0, "cognition": 0.0}
        for index, name in enumerate(self.categories):
            sel = category == index
            if not bool(sel.any()):
                continue
            acc = 100.0 * correct[sel].double().mean()
            per_image: dict[int, bool] = {}
            for img, ok in zip(image[sel].tolist(), correct[sel].tolist()):
                per_image[img] = per_image.get(img, True) and bool(ok)
            acc_plus = 100.0 * sum(per_image.values()) / len(per_image)
            score = acc + acc_plus
            out[f"{name}/acc"], out[f"{name}/acc_plus"], out[f"{name}/score"] = acc, torch.tensor(acc_plus), score
            group = "cognition" if name in MME_COGNITION else "perception"
            groups[group] += float(score)
        out["perception"] = torch.tensor(groups["perception"], dtype=torch.float64)
        out["cognition"] = torch.tensor(groups["cognition"], dtype=torch.float64)
        out["total"] = out["perception"] + out["cognition"]
        out["n"] = torch.tensor(len(correct))
        out["unparsed"] = (1 - parsed).sum() if len(parsed) else torch.tensor(0)
        return out


class MultipleChoiceAccuracy(Metric):
    """Option-letter accuracy; update(preds, answers, options, question_ids=None).

    answers: the right letters; options: per question the option texts in letter order (A, B, ...).
    With `circular=True` (MMBench), rows sharing a question id are the rotations of one question: it is
    right only when all of them are. compute(): `accuracy` (per row), `circular_accuracy` when circular,
    `n`, `unparsed`.
    """

    full_state_update = False

    def __init__(self, circular: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.circular = circular
        for name in ("question", "correct", "parsed"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[str], answers: Sequence[str], options: Sequence[Sequence[str]],
               question_ids: Sequence[int] | None = None) -> None:
        question_ids = list(range(len(preds))) if question_ids is None else question_ids
        _check_lengths(preds, answers, options, question_ids)
        correct, parsed = [], []
        for pred, answer, opts in zip(preds, answers, options):
            letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(opts)]
            if answer not in letters:
                raise ValueError(f"answer {answer!r} is not one of the option letters {letters!r}")
            choice = parse_option(pred, letters, opts)
            parsed.append(choice is not None)
            correct.append(choice == answer)
        self.question.append(torch.tensor([int(q) for q in question_ids], dtype=torch.long, device=self.device))
        self.correct.append(torch.tensor(correct, dtype=torch.long, device=self.device))
        self.parsed.append(torch.tensor(parsed, dtype=torch.long, device=self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        question, correct, parsed = (_cat(s) for s in (self.question, self.correct, self.parsed))
        n = torch.tensor(len(correct))
        out = {"accuracy": _pct(correct.sum(), n), "n": n, "unparsed": (1 - parsed).sum()}
        if self.circular:
            per_question: dict[int, bool] = {}
            for q, ok in zip(question.tolist(), correct.tolist()):
                per_question[q] = per_question.get(q, True) and bool(ok)
            out["circular_accuracy"] = _pct(torch.tensor(sum(per_question.values())), torch.tensor(len(per_question)))
            out["questions"] = torch.tensor(len(per_question))
        return out


class GroundingAccuracy(Metric):
    """Acc@IoU>=threshold for "[x1, y1, x2, y2]" answers; update(preds, boxes) with boxes in the answer's frame."""

    full_state_update = False

    def __init__(self, iou_threshold: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.iou_threshold = iou_threshold
        self.add_state("hits", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("iou_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("unparsed", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], boxes: Sequence[Sequence[float]]) -> None:
        _check_lengths(preds, boxes)
        for pred, box in zip(preds, boxes):
            if len(box) != 4:
                raise ValueError(f"reference box must have 4 numbers (x1, y1, x2, y2), got {box!r}")
            guess = parse_box(pred)
            self.total += 1
            if guess is None:
                self.unparsed += 1
                continue
            iou = box_iou(guess, box)
            self.iou_sum += iou
            self.hits += int(iou >= self.iou_threshold)

    def compute(self) -> dict[str, torch.Tensor]:
        return {"accuracy": _pct(self.hits, self.total), "mean_iou": _pct(self.iou_sum, self.total),
                "n": self.total.clone(), "unparsed": self.unparsed.clone()}


class CaptionMetrics(Metric):
    """BLEU-4, ROUGE-L (F) and CIDEr-D of answers against reference texts; update(preds, references).

    Texts are normalised with `normalize_text` (lower-case, no punctuation) before scoring. CIDEr's
    document frequencies come from the references of the whole (gathered) corpus, so it is only
    meaningful over many images; it is omitted when pycocoevalcap is not installed.
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("text_bytes", default=[], dist_reduce_fx="cat")  # utf-8 of one JSON record per item
        self.add_state("text_lengths", default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[str], references: Sequence[Sequence[str] | str]) -> None:
        _check_lengths(preds, references)
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
        data, lengths = _cat(self.text_bytes), _cat(self.text_lengths)
        out, start = [], 0
        raw = bytes(data.tolist())
        for length in lengths.tolist():
            pred, refs = json.loads(raw[start:start + length].decode("utf-8"))
            out.append((pred, refs))
            start += length
        return out

    def compute(self) -> dict[str, torch.Tensor]:
        from torchmetrics.functional.text import bleu_score, rouge_score

        records = self.records()
        if not records:
            return {"n": torch.tensor(0)}
        preds = [normalize_text(p) for p, _ in records]
        refs = [[normalize_text(r) for r in rs] for _, rs in records]
        out = {
            "bleu4": 100.0 * bleu_score(preds, refs, n_gram=4).double(),
            "rougeL": 100.0 * rouge_score(preds, refs, rouge_keys="rougeL",
                                          accumulate="best")["rougeL_fmeasure"].double(),
        }
        cider = cider_d(preds, refs)
        if cider is not None:
            out["cider"] = torch.tensor(100.0 * cider, dtype=torch.float64)
        out["n"] = torch.tensor(len(records))
        return out


def cider_d(preds: Sequence[str], references: Sequence[Sequence[str]]) -> float | None:
    """Corpus CIDEr-D (pycocoevalcap's scorer, on already tokenised lower-case text); None if unavailable."""
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        return None
    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [pred] for i, pred in enumerate(preds)}
    score, _ = Cider().compute_score(gts, res)
    return float(score)
