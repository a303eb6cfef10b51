"""Benchmarks: a reader for each published file layout, the prompt it asks, and the metric it is scored with.

A `Benchmark` reads its files into `EvalSample`s (id, question, reference, image, meta), turns a
sample into the question text of the prompt (LLaVA-1.5 appends its answer-format suffix after a
newline), builds its metric and feeds it a batch of answers. Configs in `configs/benchmark/` name
a class here with `_target_` and give its paths, so adding a benchmark is one class and one YAML.

Layouts read (the files as their authors publish them):

* VQAv2: official questions JSON (`{"questions": [...]}`) or a LLaVA question JSONL, plus the official
  annotations JSON; images `COCO_<split>_<image_id:012d>.jpg`.
* TextVQA: `TextVQA_0.5.1_val.json` (`{"data": [...]}` with 10 answers), images `<image_id>.jpg`;
  optionally LLaVA's question JSONL with OCR tokens in the prompt.
* VizWiz: `val.json` (a list with `image`, `question`, `answers`).
* GQA: `testdev_balanced_questions.json` (`{qid: {imageId, question, answer}}`), images `<imageId>.jpg`.
* POPE: `coco_pope_{random,popular,adversarial}.json` (JSON lines with `image`, `text`, `label`).
* MME: the release folder, one folder per subtask with image + `.txt` pairs (`question\\tYes`) either side by
  side or under `images/` and `questions_answers_YN/`.
* MMBench: the TSV (`index, question, hint, A..D, answer, category, image` as base64).
* SEED-Bench: `SEED-Bench.json` (`{"questions": [...]}`), image questions (`data_type == "image"`).
* ScienceQA: `problems.json` (+ optional `pid_splits.json`), images `<split>/<pid>/image.png`.
* RefCOCO / RefCOCO+ / RefCOCOg: MDETR's COCO-style `final_<dataset>_<split>.json` (one image entry per
  referring expression, with `caption`; its annotation holds the box `[x, y, w, h]` in pixels).
* Captions (COCO / Flickr30k / NoCaps): COCO caption JSON (`images` + `annotations`) or a list of
  `{"image": ..., "caption": [...]}` records (the Karpathy-split files).
* Shapes world: rendered on the fly from held-out seeds with `deco.data.shapes.make_sample`.
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from torchmetrics import Metric

from deco.eval.metrics import (
    CaptionMetrics,
    ExactMatch,
    GroundingAccuracy,
    MMEScore,
    MME_COGNITION,
    MME_PERCEPTION,
    MultipleChoiceAccuracy,
    VQAAccuracy,
    YesNoMetrics,
)
from deco.utils.io import read_jsonl

SHORT_ANSWER = "Answer the question using a single word or phrase."
MULTIPLE_CHOICE = "Answer with the option's letter from the given choices directly."
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
FAMILIES = ("mllm", "localization", "open_vqa")

ImageSource = str | Path | Image.Image | Callable[[], Image.Image] | None


@dataclass
class EvalSample:
    """One question. `image`: a file path, a PIL image, a zero-argument callable returning one, or None."""

    id: Any
    question: str
    reference: Any
    image: ImageSource = None
    meta: dict = field(default_factory=dict)


def load_image(source: ImageSource) -> Image.Image | None:
    """The sample's image as an RGB PIL image (FileNotFoundError naming the path when it is missing)."""
    if source is None:
        return None
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if callable(source):
        return source().convert("RGB")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark image not found: {path}")
    with Image.open(path) as img:
        return img.convert("RGB")


def _require(path: str | Path | None, what: str) -> Path:
    if path is None:
        raise ValueError(f"{what} is not set in the benchmark config")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def _key(row: dict, key: str, where: str):
    if key not in row:
        raise ValueError(f"{where}: missing key {key!r} (keys: {sorted(row)})")
    return row[key]


def format_options(options: Sequence[str]) -> str:
    """"A. first\\nB. second" (LLaVA's MMBench / SEED / ScienceQA layout)."""
    return "\n".join(f"{LETTERS[k]}. {opt}" for k, opt in enumerate(options))


class Benchmark:
    """Base class: subclasses implement `read`, `build_metric` and, when the metric needs more than
    (answers, references), `update`.

    Args:
        name: the name written into results.
        prompt_suffix: appended after a newline to every question (LLaVA-1.5's answer-format hint).
        max_new_tokens: generation budget per answer.
        limit: score only the first `limit` samples (quick checks).
    """

    family = "mllm"  # mllm | localization | open_vqa: the paper's three task families
    headline = "accuracy"  # the metric key a sweep reports

    def __init__(self, name: str, prompt_suffix: str = "", max_new_tokens: int = 16, limit: int | None = None):
        if max_new_tokens < 1:
            raise ValueError(f"benchmark {name}: max_new_tokens must be >= 1, got {max_new_tokens}")
        if limit is not None and limit < 1:
            raise ValueError(f"benchmark {name}: limit must be >= 1 or null, got {limit}")
        self.name = name
        self.prompt_suffix = prompt_suffix or ""
        self.max_new_tokens = max_new_tokens
        self.limit = limit
        self._samples: list[EvalSample] | None = None

    def read(self) -> list[EvalSample]:
        raise NotImplementedError

    def _config_path(self, key: str) -> Path:
        """The existing path configured as `key` (e.g. "question_file"); errors name the benchmark and key."""
        return _require(getattr(self, key), f"{self.name} {key}")

    def samples(self) -> list[EvalSample]:
        if self._samples is None:
            samples = self.read()
            if not samples:
                raise ValueError(f"benchmark {self.name}: the files hold no questions")
            self._samples = samples[: self.limit] if self.limit else samples
        return self._samples

    def prompt(self, sample: EvalSample) -> str:
        question = sample.question.strip()
        if self.prompt_suffix and not question.endswith(self.prompt_suffix):
            question = f"{question}\n{self.prompt_suffix}"
        return question

    @property
    def has_references(self) -> bool:
        return True

    def build_metric(self) -> Metric:
        raise NotImplementedError

    def update(self, metric: Metric, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        metric.update(list(preds), [s.reference for s in samples])


# ---------------------------------------------------------------- VQA family


class VQAv2(Benchmark):
    """VQAv2 (soft VQA accuracy). Without `annotation_file` (test-dev) only predictions are written."""

    def __init__(self, question_file: str, image_folder: str, annotation_file: str | None = None,
                 image_pattern: str = "COCO_val2014_{image_id:012d}.jpg", name: str = "vqav2",
                 prompt_suffix: str = SHORT_ANSWER, max_new_tokens: int = 16, limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.question_file, self.image_folder = question_file, image_folder
        self.annotation_file, self.image_pattern = annotation_file, image_pattern

    @property
    def has_references(self) -> bool:
        return self.annotation_file is not None

    def read(self) -> list[EvalSample]:
        qpath = self._config_path("question_file")
        folder = self._config_path("image_folder")
        answers: dict = {}
        if self.annotation_file is not None:
            apath = self._config_path("annotation_file")
            for ann in _key(_read_json(apath), "annotations", str(apath)):
                answers[ann["question_id"]] = [a["answer"] for a in ann["answers"]]
        samples = []
        if qpath.suffix == ".jsonl":  # LLaVA question file: {question_id, image, text}
            for row in read_jsonl(qpath):
                qid = _key(row, "question_id", str(qpath))
                samples.append(EvalSample(qid, row["text"], answers.get(qid), folder / row["image"]))
        else:
            for row in _key(_read_json(qpath), "questions", str(qpath)):
                qid = row["question_id"]
                image = folder / self.image_pattern.format(image_id=row["image_id"])
                samples.append(EvalSample(qid, row["question"], answers.get(qid), image))
        if self.annotation_file is not None:
            missing = [s.id for s in samples if s.reference is None]
            if missing:
                raise ValueError(f"{self.annotation_file}: no answers for {len(missing)} questions, e.g. {missing[:3]}")
        return samples

    def build_metric(self) -> Metric:
        return VQAAccuracy()


class TextVQA(Benchmark):
    """TextVQA val (soft VQA accuracy); `question_file` (LLaVA JSONL with OCR tokens) replaces the prompts."""

    def __init__(self, annotation_file: str, image_folder: str, question_file: str | None = None,
                 name: str = "textvqa", prompt_suffix: str = SHORT_ANSWER, max_new_tokens: int = 16,
                 limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.annotation_file, self.image_folder, self.question_file = annotation_file, image_folder, question_file

    def read(self) -> list[EvalSample]:
        apath = self._config_path("annotation_file")
        folder = self._config_path("image_folder")
        data = _key(_read_json(apath), "data", str(apath))
        if self.question_file is None:
            return [EvalSample(r["question_id"], r["question"], list(r["answers"]), folder / f"{r['image_id']}.jpg")
                    for r in data]
        # LLaVA's eval_textvqa matches a prompt to its annotation by (image id, lower-cased question).
        by_key = {(r["image_id"], r["question"].lower()): r for r in data}
        qpath = self._config_path("question_file")
        samples = []
        for row in read_jsonl(qpath):
            image_id = Path(row["image"]).stem
            question = row["text"].split("\n")[0]
            ann = by_key.get((image_id, question.lower()))
            if ann is None:
                raise ValueError(f"{qpath}: question {row.get('question_id')!r} ({question!r}) not in {apath}")
            samples.append(EvalSample(row.get("question_id", ann["question_id"]), row["text"], list(ann["answers"]),
                                      folder / row["image"]))
        return samples

    def build_metric(self) -> Metric:
        return VQAAccuracy()


class VizWiz(Benchmark):
    """VizWiz-VQA val (soft VQA accuracy, "unanswerable" is an answer like any other)."""

    def __init__(self, annotation_file: str, image_folder: str, name: str = "vizwiz",
                 prompt_suffix: str = ("When the provided information is insufficient, respond with 'Unanswerable'.\n"
                                       + SHORT_ANSWER),
                 max_new_tokens: int = 16, limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.annotation_file, self.image_folder = annotation_file, image_folder

    @property
    def has_references(self) -> bool:
        return all(s.reference is not None for s in self.samples())

    def read(self) -> list[EvalSample]:
        apath = self._config_path("annotation_file")
        folder = self._config_path("image_folder")
        rows = _read_json(apath)
        if not isinstance(rows, list):
            raise ValueError(f"{apath}: expected a list of questions (VizWiz layout)")
        samples = []
        for row in rows:
            answers = [a["answer"] for a in row["answers"]] if row.get("answers") else None
            samples.append(EvalSample(row["image"], row["question"], answers, folder / row["image"]))
        return samples

    def build_metric(self) -> Metric:
        return VQAAccuracy()


class GQA(Benchmark):
    """GQA testdev-balanced (exact match after LLaVA's normalisation)."""

    def __init__(self, question_file: str, image_folder: str, name: str = "gqa",
                 prompt_suffix: str = SHORT_ANSWER, max_new_tokens: int = 16, limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.question_file, self.image_folder = question_file, image_folder

    def read(self) -> list[EvalSample]:
        qpath = self._config_path("question_file")
        folder = self._config_path("image_folder")
        data = _read_json(qpath)
        if not isinstance(data, dict):
            raise ValueError(f"{qpath}: expected {{question_id: question}} (GQA layout)")
        return [EvalSample(qid, q["question"], q["answer"], folder / f"{q['imageId']}.jpg") for qid, q in data.items()]

    def build_metric(self) -> Metric:
        return ExactMatch()


# ---------------------------------------------------------------- yes / no


class POPE(Benchmark):
    """POPE (yes/no object hallucination) over its three splits; headline: F1 averaged over splits."""

    headline = "f1"

    def __init__(self, question_dir: str, image_folder: str,
                 splits: Sequence[str] = ("random", "popular", "adversarial"), file_pattern: str = "coco_pope_{split}.json", name: str = "pope",
                 prompt_suffix: str = SHORT_ANSWER, max_new_tokens: int = 8, limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.question_dir, self.image_folder = question_dir, image_folder
        self.splits, self.file_pattern = list(splits), file_pattern

    def read(self) -> list[EvalSample]:
        qdir = self._config_path("question_dir")
        folder = self._config_path("image_folder")
        samples = []
        for split in self.splits:
            path = _require(qdir / self.file_pattern.format(split=split), f"{self.name} {split} question file")
            for row in read_jsonl(path):
                samples.append(EvalSample(f"{split}-{row['question_id']}", row["text"], row["label"],
                                          folder / row["image"], {"split": split}))
        return samples

    def build_metric(self) -> Metric:
        return YesNoMetrics(self.splits)

    def update(self, metric, preds, samples) -> None:
        metric.update(list(preds), [s.reference for s in samples], [s.meta["split"] for s in samples])


class MME(Benchmark):
    """MME: 14 yes/no subtasks, two questions per image; headline: perception score (max 2000)."""

    headline = "perception"
    IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")

    def __init__(self, root: str, categories: Sequence[str] = MME_PERCEPTION + MME_COGNITION, name: str = "mme",
                 prompt_suffix: str = "", max_new_tokens: int = 8, limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.root, self.categories = root, list(categories)

    def _pairs(self, folder: Path) -> list[tuple[Path, Path]]:
        """(question txt, image) pairs of one subtask folder, either layout."""
        if (folder / "questions_answers_YN").is_dir():
            txt_dir, image_dir = folder / "questions_answers_YN", folder / "images"
        else:
            txt_dir = image_dir = folder
        pairs = []
        for txt in sorted(txt_dir.glob("*.txt")):
            candidates = [image_dir / (txt.stem + suffix) for suffix in self.IMAGE_SUFFIXES]
            image = next((c for c in candidates if c.is_file()), None)
            if image is None:
                raise FileNotFoundError(f"MME: no image for {txt} in {image_dir} (tried {self.IMAGE_SUFFIXES})")
            pairs.append((txt, image))
        return pairs

    def read(self) -> list[EvalSample]:
        root = self._config_path("root")
        samples, image_id = [], 0
        for category in self.categories:
            folder = _require(root / category, f"{self.name} subtask folder")
            for txt, image in self._pairs(folder):
                for number, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), 1):
                    if not line.strip():
                        continue
                    parts = line.rsplit("\t", 1)
                    if len(parts) != 2:
                        raise ValueError(f"{txt}:{number}: expected 'question<TAB>answer', got {line!r}")
                    samples.append(EvalSample(f"{category}/{txt.stem}/{number}", parts[0], parts[1].strip(), image,
                                              {"category": category, "image_id": image_id}))
                image_id += 1
        return samples

    def build_metric(self) -> Metric:
        return MMEScore(self.categories)

    def update(self, metric, preds, samples) -> None:
        metric.update(list(preds), [s.reference for s in samples], [s.meta["category"] for s in samples],
                      [s.meta["image_id"] for s in samples])


# ---------------------------------------------------------------- multiple choice


class _MultipleChoice(Benchmark):
    def prompt(self, sample: EvalSample) -> str:
        body = f"{sample.question.strip()}\n{format_options(sample.meta['options'])}"
        return f"{body}\n{self.prompt_suffix}" if self.prompt_suffix else body

    def build_metric(self) -> Metric:
        return MultipleChoiceAccuracy()

    def update(self, metric, preds, samples) -> None:
        metric.update(list(preds), [s.reference for s in samples], [s.meta["options"] for s in samples],
                      [s.meta.get("question_index", k) for k, s in enumerate(samples)])


def _base64_image(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def _cell(value: str | None) -> str:
    value = (value or "").strip()
    return "" if value.lower() == "nan" else value


class MMBench(_MultipleChoice):
    """MMBench dev TSV. With `circular`, each question is asked once per rotation of its options
    (LLaVA's --all-rounds) and counts only if every rotation is right; headline: circular accuracy."""

    def __init__(self, tsv_file: str, circular: bool = True, name: str = "mmbench",
                 prompt_suffix: str = MULTIPLE_CHOICE, max_new_tokens: int = 8, limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.tsv_file, self.circular = tsv_file, circular
        self.headline = "circular_accuracy" if circular else "accuracy"

    def read(self) -> list[EvalSample]:
        path = self._config_path("tsv_file")
        csv.field_size_limit(sys.maxsize)  # base64 images are long fields
        samples = []
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            for number, row in enumerate(reader, 2):
                for key in ("index", "question", "A", "B", "answer", "image"):
                    if key not in row:
                        raise ValueError(f"{path}: missing column {key!r} (columns: {reader.fieldnames})")
                options = [_cell(row.get(letter)) for letter in "ABCDEFGHI" if _cell(row.get(letter))]
                answer = _cell(row["answer"])
                if answer not in LETTERS[: len(options)]:
                    raise ValueError(f"{path}:{number}: answer {answer!r} is not one of {LETTERS[:len(options)]}")
                hint = _cell(row.get("hint"))
                question = f"{hint}\n{row['question']}" if hint else row["question"]
                image = functools.partial(_base64_image, row["image"])
                rounds = len(options) if self.circular else 1
                for r in range(rounds):
                    rotated = options[r:] + options[:r]
                    letter = LETTERS[(LETTERS.index(answer) - r) % len(options)]
                    meta = {"options": rotated, "question_index": int(row["index"]), "round": r,
                            "category": _cell(row.get("category"))}
                    samples.append(EvalSample(f"{row['index']}-{r}", question, letter, image, meta))
        return samples

    def build_metric(self) -> Metric:
        return MultipleChoiceAccuracy(circular=self.circular)


class SEEDBench(_MultipleChoice):
    """SEED-Bench image questions (`data_type == "image"`; video questions need extracted frames)."""

    def __init__(self, question_file: str, image_folder: str, name: str = "seed",
                 prompt_suffix: str = MULTIPLE_CHOICE, max_new_tokens: int = 8, limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.question_file, self.image_folder = question_file, image_folder

    def read(self) -> list[EvalSample]:
        qpath = self._config_path("question_file")
        folder = self._config_path("image_folder")
        samples = []
        for row in _key(_read_json(qpath), "questions", str(qpath)):
            if row.get("data_type", "image") != "image":
                continue
            options = [row[f"choice_{c}"] for c in "abcd"]
            data_id = str(row["data_id"])
            image = folder / data_id
            if not Path(data_id).suffix:
                image = next((folder / (data_id + s) for s in (".jpg", ".png") if (folder / (data_id + s)).is_file()),
                             folder / (data_id + ".jpg"))
            samples.append(EvalSample(row["question_id"], row["question"], row["answer"], image,
                                      {"options": options, "question_type": row.get("question_type_id")}))
        return samples


class ScienceQA(_MultipleChoice):
    """ScienceQA; with `image_only` (SQA-IMG, the number LLaVA reports) only questions with an image."""

    def __init__(self, problems_file: str, image_folder: str, split: str = "test", image_only: bool = True,
                 pid_splits_file: str | None = None, name: str = "scienceqa",
                 prompt_suffix: str = MULTIPLE_CHOICE, max_new_tokens: int = 8, limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.problems_file, self.image_folder, self.split = problems_file, image_folder, split
        self.image_only, self.pid_splits_file = image_only, pid_splits_file

    def read(self) -> list[EvalSample]:
        ppath = self._config_path("problems_file")
        folder = self._config_path("image_folder")
        problems = _read_json(ppath)
        if self.pid_splits_file is not None:
            splits = _read_json(self._config_path("pid_splits_file"))
            if self.split not in splits:
                raise ValueError(f"{self.pid_splits_file}: no split {self.split!r} (has {sorted(splits)})")
            pids = [str(p) for p in splits[self.split]]
        else:
            pids = [pid for pid, p in problems.items() if p.get("split") == self.split]
        samples = []
        for pid in pids:
            p = problems[pid]
            if self.image_only and not p.get("image"):
                continue
            hint = (p.get("hint") or "").strip()
            question = f"Context: {hint}\n{p['question']}" if hint else p["question"]
            image = folder / self.split / pid / p["image"] if p.get("image") else None
            samples.append(EvalSample(pid, question, LETTERS[int(p["answer"])], image,
                                      {"options": list(p["choices"]), "subject": p.get("subject")}))
        return samples


# ---------------------------------------------------------------- localization


GROUNDING_PROMPT = "Please provide the bounding box coordinate of the region this sentence describes: {}."


def normalise_box(box_xywh: Sequence[float], width: int, height: int, aspect: str = "pad") -> tuple[float, ...]:
    """A COCO pixel box [x, y, w, h] -> (x1, y1, x2, y2) in [0, 1] of the image the model sees.

    "pad": LLaVA-1.5's expand-to-square canvas (side max(w, h), image pasted at the integer centre offset);
    "resize": the image stretched to a square. ("crop" cuts objects off, so boxes are undefined.)
    """
    x, y, w, h = (float(v) for v in box_xywh)
    if aspect == "pad":
        side = max(width, height)
        ox, oy = (side - width) // 2, (side - height) // 2
        return ((x + ox) / side, (y + oy) / side, (x + w + ox) / side, (y + h + oy) / side)
    if aspect == "resize":
        return (x / width, y / height, (x + w) / width, (y + h) / height)
    raise ValueError(f"grounding boxes need image_aspect 'pad' or 'resize', got {aspect!r}")


class RefCOCO(Benchmark):
    """RefCOCO / RefCOCO+ / RefCOCOg in MDETR's COCO-style files; Acc@IoU>=0.5 of the printed box."""

    family = "localization"

    def __init__(self, annotation_file: str, image_folder: str, image_aspect: str = "pad", name: str = "refcoco",
                 split: str | None = None, prompt: str = GROUNDING_PROMPT, prompt_suffix: str = "",
                 max_new_tokens: int = 32,
                 iou_threshold: float = 0.5, limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.annotation_file, self.image_folder, self.image_aspect = annotation_file, image_folder, image_aspect
        self.prompt_template, self.iou_threshold, self.split = prompt, iou_threshold, split

    def read(self) -> list[EvalSample]:
        apath = self._config_path("annotation_file")
        folder = self._config_path("image_folder")
        data = _read_json(apath)
        boxes = {ann["image_id"]: ann["bbox"] for ann in _key(data, "annotations", str(apath))}
        samples = []
        for entry in _key(data, "images", str(apath)):
            if entry["id"] not in boxes:
                raise ValueError(f"{apath}: expression {entry['id']} has no annotation box")
            box = normalise_box(boxes[entry["id"]], entry["width"], entry["height"], self.image_aspect)
            phrase = entry["caption"].strip().rstrip(".")
            samples.append(EvalSample(entry["id"], self.prompt_template.format(phrase), list(box),
                                      folder / entry["file_name"], {"phrase": phrase}))
        return samples

    def build_metric(self) -> Metric:
        return GroundingAccuracy(self.iou_threshold)


# ---------------------------------------------------------------- open-ended text


class Captioning(Benchmark):
    """Reference-based captioning (COCO / Flickr30k / NoCaps layouts); headline: CIDEr."""

    family = "open_vqa"
    headline = "cider"

    def __init__(self, annotation_file: str, image_folder: str, name: str = "coco_caption",
                 question: str = "Provide a one-sentence caption for the provided image.", prompt_suffix: str = "",
                 max_new_tokens: int = 48, limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.annotation_file, self.image_folder, self.question = annotation_file, image_folder, question

    def read(self) -> list[EvalSample]:
        apath = self._config_path("annotation_file")
        folder = self._config_path("image_folder")
        data = _read_json(apath)
        if isinstance(data, list):  # Karpathy-split records: {"image": path, "caption": [...]}
            return [EvalSample(row["image"], self.question,
                               [row["caption"]] if isinstance(row["caption"], str) else list(row["caption"]),
                               folder / row["image"]) for row in data]
        captions: dict = {}
        for ann in _key(data, "annotations", str(apath)):
            captions.setdefault(ann["image_id"], []).append(ann["caption"])
        samples = []
        for image in _key(data, "images", str(apath)):
            if image["id"] not in captions:
                raise ValueError(f"{apath}: image {image['id']} has no caption")
            samples.append(EvalSample(image["id"], self.question, captions[image["id"]], folder / image["file_name"]))
        return samples

    def build_metric(self) -> Metric:
        return CaptionMetrics()


# ---------------------------------------------------------------- shapes world


class ShapesBenchmark(Benchmark):
    """A shapes-world split rendered from held-out seeds: every trained tiny model can be scored offline.

    Tasks: `attribute` (exact match, open-ended short answers), `existence` (POPE metrics),
    `grounding` (Acc@IoU>=0.5) and `caption` (BLEU / ROUGE / CIDEr). Training uses seeds 0 and 1000;
    the default seed 50_000 is never trained on. No prompt suffix: the training questions have none.
    """

    TASK_FAMILY = {"attribute": "mllm", "existence": "mllm", "grounding": "localization", "caption": "open_vqa"}
    TASK_HEADLINE = {"attribute": "accuracy", "existence": "accuracy", "grounding": "accuracy", "caption": "cider"}

    def __init__(self, task: str, seed: int = 50_000, num_samples: int = 200, image_size: int = 336,
                 name: str | None = None, prompt_suffix: str = "", max_new_tokens: int = 32, limit: int | None = None):
        if task not in self.TASK_FAMILY:
            raise ValueError(f"unknown shapes task {task!r}; allowed: {sorted(self.TASK_FAMILY)}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        super().__init__(name or f"shapes_{task}", prompt_suffix, max_new_tokens, limit)
        self.task, self.seed, self.num_samples, self.image_size = task, seed, num_samples, image_size
        self.family, self.headline = self.TASK_FAMILY[task], self.TASK_HEADLINE[task]

    def read(self) -> list[EvalSample]:
        from deco.data.shapes import make_sample

        samples = []
        for index in range(self.num_samples):
            _, _, meta = make_sample(self.seed, index, (self.task,), self.image_size)
            reference: Any = meta["answer"]
            if self.task == "existence":
                reference = meta["answer"].rstrip(".").lower()
            elif self.task == "grounding":
                reference = list(meta["box"])
            elif self.task == "caption":
                reference = [meta["answer"]]

            # Rendered when the batch is built (not all held in memory); a partial pickles into workers.
            image = functools.partial(_shapes_image, self.seed, index, self.image_size)
            samples.append(EvalSample(f"{self.seed}-{index}", meta["question"], reference, image, {"task": self.task}))
        return samples

    def build_metric(self) -> Metric:
        if self.task == "attribute":
            return ExactMatch()
        if self.task == "existence":
            return YesNoMetrics(["shapes"])
        if self.task == "grounding":
            return GroundingAccuracy()
        return CaptionMetrics()


def _shapes_image(seed: int, index: int, image_size: int) -> Image.Image:
    from deco.data.shapes import render_scene

    return render_scene(seed, index, image_size).image
