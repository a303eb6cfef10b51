"""What every benchmark shares: the sample record, file helpers that name file and row, and the base class.

A `Benchmark` reads its files into `EvalSample`s (id, question, reference, image, meta, where), turns a
sample into the question text of the prompt (LLaVA-1.5 appends its answer-format suffix after a
newline), builds its metric and feeds it a batch of answers. `samples()` checks every image file
exists before any model is loaded, so a bad row stops the run at once with its file and row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from torchmetrics import Metric

SHORT_ANSWER = "Answer the question using a single word or phrase."
MULTIPLE_CHOICE = "Answer with the option's letter from the given choices directly."
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
FAMILIES = ("mllm", "localization", "open_vqa")

ImageSource = str | Path | Image.Image | Callable[[], Image.Image] | None


@dataclass
class EvalSample:
    """One question. `image`: a file path, a PIL image, a zero-argument callable returning one, or None.
    `where`: the file and row it came from ("q.jsonl:12"), for error messages."""

    id: Any
    question: str
    reference: Any
    image: ImageSource = None
    meta: dict = field(default_factory=dict)
    where: str = ""


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


def require_path(path: str | Path | None, what: str) -> Path:
    if path is None:
        raise ValueError(f"{what} is not set in the benchmark config")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def jsonl_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """("file:line", record) for each non-blank line of a JSON-lines file."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error})") from None


def key(row: dict, name: str, where: str):
    """row[name], or an error naming the file and row that lack it."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
    if name not in row or row[name] is None:
        raise ValueError(f"{where}: missing {name!r} (keys: {sorted(row)})")
    return row[name]


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

    def _config_path(self, name: str) -> Path:
        """The existing path configured as `name` (e.g. "question_file"); errors name the benchmark and key."""
        return require_path(getattr(self, name), f"{self.name} {name}")

    def samples(self) -> list[EvalSample]:
        """The questions (read once); raises before any model work if an image file is missing."""
        if self._samples is None:
            samples = self.read()
            if not samples:
                raise ValueError(f"benchmark {self.name}: the files hold no questions")
            samples = samples[: self.limit] if self.limit else samples
            _check_images(self.name, samples)
            self._samples = samples
        return self._samples

    def prompt(self, sample: EvalSample) -> str:
        question = sample.question.strip()
        if self.prompt_suffix and not question.endswith(self.prompt_suffix):
            question = f"{question}\n{self.prompt_suffix}"
        return question

    def use_image_aspect(self, aspect: str) -> None:
        """Called by the runner with the preprocessing the model will see (grounding boxes depend on it)."""

    @property
    def has_references(self) -> bool:
        return True

    def scoring(self) -> dict:
        """How answers are read, written into metrics.json (e.g. {"parser": "reference"})."""
        return {}

    def build_metric(self) -> Metric:
        raise NotImplementedError

    def update(self, metric: Metric, preds: Sequence[str], samples: Sequence[EvalSample]) -> None:
        metric.update(list(preds), [s.reference for s in samples])


def _check_images(name: str, samples: Sequence[EvalSample]) -> None:
    missing = [s for s in samples if isinstance(s.image, (str, Path)) and not Path(s.image).is_file()]
    if missing:
        shown = "; ".join(f"{s.where or s.id}: {s.image}" for s in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise FileNotFoundError(f"benchmark {name}: {len(missing)} of {len(samples)} images not found: {shown}{more}")
