"""Yes/no benchmarks: POPE (three splits of object questions) and MME (14 subtasks, two questions per image).

Layouts read:

* POPE: `coco_pope_{random,popular,adversarial}.json` (JSON lines with `image`, `text`, `label`).
* MME: the release folder, one folder per subtask with image + `.txt` pairs (`question\\tYes`) either side by
  side or under `images/` and `questions_answers_YN/`. LLaVA-1.5 appends its short-answer suffix after the
  question's own "Please answer yes or no." (its llava_mme.jsonl; convert_answer_to_mme.py strips it again).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torchmetrics import Metric

from deco.eval.benchmarks.base import SHORT_ANSWER, Benchmark, EvalSample, jsonl_rows, key, require_path
from deco.eval.metrics import MME_COGNITION, MME_PERCEPTION, MMEScore, YesNoMetrics


def _yes_no(value, where: str) -> str:
    label = str(value).strip().lower().rstrip(".")
    if label not in ("yes", "no"):
        raise ValueError(f"{where}: label must be yes or no, got {value!r}")
    return label


class POPE(Benchmark):
    """POPE (yes/no object hallucination) over its three splits; headline: F1 averaged over splits."""

    headline = "f1"

    def __init__(self, question_dir: str, image_folder: str,
                 splits: Sequence[str] = ("random", "popular", "adversarial"),
                 file_pattern: str = "coco_pope_{split}.json", name: str = "pope",
                 prompt_suffix: str = SHORT_ANSWER, max_new_tokens: int = 8, limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.question_dir, self.image_folder = question_dir, image_folder
        self.splits, self.file_pattern = list(splits), file_pattern

    def read(self) -> list[EvalSample]:
        qdir = self._config_path("question_dir")
        folder = self._config_path("image_folder")
        samples = []
        for split in self.splits:
            path = require_path(qdir / self.file_pattern.format(split=split), f"{self.name} {split} question file")
            for where, row in jsonl_rows(path):
                samples.append(EvalSample(f"{split}-{key(row, 'question_id', where)}", key(row, "text", where),
                                          _yes_no(key(row, "label", where), where), folder / key(row, "image", where),
                                          {"split": split}, where=where))
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
                 prompt_suffix: str = SHORT_ANSWER, max_new_tokens: int = 8, limit: int | None = None):
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
            folder = require_path(root / category, f"{self.name} subtask folder")
            for txt, image in self._pairs(folder):
                for number, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), 1):
                    if not line.strip():
                        continue
                    where = f"{txt}:{number}"
                    parts = line.rsplit("\t", 1)
                    if len(parts) != 2:
                        raise ValueError(f"{where}: expected 'question<TAB>answer', got {line!r}")
                    samples.append(EvalSample(f"{category}/{txt.stem}/{number}", parts[0], _yes_no(parts[1], where),
                                              image, {"category": category, "image_id": image_id}, where=where))
                image_id += 1
        return samples

    def build_metric(self) -> Metric:
        return MMEScore(self.categories)

    def update(self, metric, preds, samples) -> None:
        metric.update(list(preds), [s.reference for s in samples], [s.meta["category"] for s in samples],
                      [s.meta["image_id"] for s in samples])
