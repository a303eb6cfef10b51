"""Multiple-choice benchmarks: MMBench (circular), SEED-Bench (image questions) and ScienceQA (SQA-IMG).

Layouts read:

* MMBench: the TSV (`index, question, hint, A..D, answer, category, image` as base64). The released
  dev/test TSVs already hold the circular copies: row `index + k * 1e6` is question `index` with its
  options rotated k times (and an image cell may name the index of the row holding the image). Such
  rows are asked as they are and grouped by `index mod 1e6`; a TSV without copies is rotated here, one
  round per option (LLaVA's --all-rounds).
* SEED-Bench: `SEED-Bench.json` (`{"questions": [...]}`), image questions (`data_type == "image"`).
* ScienceQA: `problems.json` (+ optional `pid_splits.json`), images `<split>/<pid>/image.png`.

`parser: reference` reads answers with the benchmark's reference rule (ScienceQA / MMBench:
eval_science_qa.py; SEED-Bench: convert_seed_for_submission.py's exact letter); `parser: lenient` is
deco's wider reader. metrics.json names both.
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import sys
from pathlib import Path

from PIL import Image
from torchmetrics import Metric

from deco.eval.benchmarks.base import (
    LETTERS,
    MULTIPLE_CHOICE,
    Benchmark,
    EvalSample,
    format_options,
    key,
    read_json,
)
from deco.eval.metrics import MultipleChoiceAccuracy

PARSERS = ("reference", "lenient")
CIRCULAR_STRIDE = 1_000_000


class _MultipleChoice(Benchmark):
    REFERENCE_RULE = ("reference", "eval_science_qa.py")  # (parse_option rule, the script it transcribes)

    def __init__(self, name, prompt_suffix, max_new_tokens, limit, parser: str = "reference"):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        if parser not in PARSERS:
            raise ValueError(f"benchmark {name}: parser must be one of {', '.join(PARSERS)}, got {parser!r}")
        self.parser = parser

    @property
    def rule(self) -> str:
        return self.REFERENCE_RULE[0] if self.parser == "reference" else "lenient"

    def scoring(self) -> dict:
        source = self.REFERENCE_RULE[1] if self.parser == "reference" else "deco lenient (parsing.py)"
        return {"parser": self.parser, "parser_rule": source}

    def prompt(self, sample: EvalSample) -> str:
        body = f"{sample.question.strip()}\n{format_options(sample.meta['options'])}"
        return f"{body}\n{self.prompt_suffix}" if self.prompt_suffix else body

    def build_metric(self) -> Metric:
        return MultipleChoiceAccuracy(rule=self.rule)

    def update(self, metric, preds, samples) -> None:
        metric.update(list(preds), [s.reference for s in samples], [s.meta["options"] for s in samples],
                      [s.meta.get("question_index", k) for k, s in enumerate(samples)])


def _check_answer(answer: str, options: list[str], where: str) -> str:
    if answer not in LETTERS[: len(options)] or not answer:
        raise ValueError(f"{where}: answer {answer!r} is not one of {LETTERS[:len(options)]}")
    return answer


def _base64_image(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def _cell(value: str | None) -> str:
    value = (value or "").strip()
    return "" if value.lower() == "nan" else value


class MMBench(_MultipleChoice):
    """MMBench dev TSV; with `circular` a question counts only if all its circular copies are right
    (headline: circular accuracy over questions). A test TSV (no `answer` column) gives predictions only."""

    def __init__(self, tsv_file: str, circular: bool = True, name: str = "mmbench",
                 prompt_suffix: str = MULTIPLE_CHOICE, max_new_tokens: int = 8, limit: int | None = None,
                 parser: str = "reference"):
        super().__init__(name, prompt_suffix, max_new_tokens, limit, parser)
        self.tsv_file, self.circular, self._has_answers = tsv_file, circular, True
        self.headline = "circular_accuracy" if circular else "accuracy"

    def _rows(self, path: Path) -> list[tuple[str, dict]]:
        csv.field_size_limit(sys.maxsize)  # base64 images are long fields
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            for column in ("index", "question", "A", "B", "image"):
                if column not in (reader.fieldnames or []):
                    raise ValueError(f"{path}: missing column {column!r} (columns: {reader.fieldnames})")
            self._has_answers = "answer" in (reader.fieldnames or [])  # the test TSVs have none (server-scored)
            return [(f"{path}:{number}", row) for number, row in enumerate(reader, 2)]

    def read(self) -> list[EvalSample]:
        path = self._config_path("tsv_file")
        rows = self._rows(path)
        indices = []
        for where, row in rows:
            try:
                indices.append(int(_cell(row["index"])))
            except ValueError:
                raise ValueError(f"{where}: index {row['index']!r} is not an integer") from None
        has_copies = any(i >= CIRCULAR_STRIDE for i in indices)
        images = {i: _cell(row["image"]) for i, (_, row) in zip(indices, rows)}
        samples = []
        for index, (where, row) in zip(indices, rows):
            options = [_cell(row.get(letter)) for letter in "ABCDEFGHI" if _cell(row.get(letter))]
            answer = _check_answer(_cell(row["answer"]), options, where) if self._has_answers else None
            image = images[index]
            if image.isdigit() and int(image) in images:  # a copy pointing at the row that holds the image
                image = images[int(image)]
            if not image:
                raise ValueError(f"{where}: empty image cell")
            hint = _cell(row.get("hint"))
            question = f"{hint}\n{row['question']}" if hint else row["question"]
            load = functools.partial(_base64_image, image)
            rounds = len(options) if self.circular and not has_copies else 1
            for r in range(rounds):
                rotated = options[r:] + options[:r]
                letter = LETTERS[(LETTERS.index(answer) - r) % len(options)] if answer else None
                meta = {"options": rotated, "question_index": index % CIRCULAR_STRIDE, "round": r,
                        "category": _cell(row.get("category"))}
                sample_id = f"{index}-{r}" if rounds > 1 else index
                samples.append(EvalSample(sample_id, question, letter, load, meta, where=where))
        return samples

    @property
    def has_references(self) -> bool:
        return all(s.reference is not None for s in self.samples())

    def build_metric(self) -> Metric:
        return MultipleChoiceAccuracy(circular=self.circular, rule=self.rule)


class SEEDBench(_MultipleChoice):
    """SEED-Bench image questions (`data_type == "image"`; video questions need extracted frames)."""

    REFERENCE_RULE = ("exact", "convert_seed_for_submission.py")

    def __init__(self, question_file: str, image_folder: str, name: str = "seed",
                 prompt_suffix: str = MULTIPLE_CHOICE, max_new_tokens: int = 8, limit: int | None = None,
                 parser: str = "reference"):
        super().__init__(name, prompt_suffix, max_new_tokens, limit, parser)
        self.question_file, self.image_folder = question_file, image_folder

    def read(self) -> list[EvalSample]:
        qpath = self._config_path("question_file")
        folder = self._config_path("image_folder")
        samples = []
        for k, row in enumerate(key(read_json(qpath), "questions", str(qpath))):
            where = f"{qpath} questions[{k}]"
            if row.get("data_type", "image") != "image":
                continue
            options = [key(row, f"choice_{c}", where) for c in "abcd"]
            data_id = str(key(row, "data_id", where))
            image = folder / data_id
            if not Path(data_id).suffix:
                image = next((folder / (data_id + s) for s in (".jpg", ".png") if (folder / (data_id + s)).is_file()),
                             folder / (data_id + ".jpg"))
            samples.append(EvalSample(key(row, "question_id", where), key(row, "question", where),
                                      _check_answer(str(key(row, "answer", where)), options, where), image,
                                      {"options": options, "question_type": row.get("question_type_id")},
                                      where=where))
        return samples


class ScienceQA(_MultipleChoice):
    """ScienceQA; with `image_only` (SQA-IMG, the number LLaVA reports) only questions with an image."""

    def __init__(self, problems_file: str, image_folder: str, split: str = "test", image_only: bool = True,
                 pid_splits_file: str | None = None, name: str = "scienceqa",
                 prompt_suffix: str = MULTIPLE_CHOICE, max_new_tokens: int = 8, limit: int | None = None,
                 parser: str = "reference"):
        super().__init__(name, prompt_suffix, max_new_tokens, limit, parser)
        self.problems_file, self.image_folder, self.split = problems_file, image_folder, split
        self.image_only, self.pid_splits_file = image_only, pid_splits_file

    def read(self) -> list[EvalSample]:
        ppath = self._config_path("problems_file")
        folder = self._config_path("image_folder")
        problems = read_json(ppath)
        if self.pid_splits_file is not None:
            splits = read_json(self._config_path("pid_splits_file"))
            if self.split not in splits:
                raise ValueError(f"{self.pid_splits_file}: no split {self.split!r} (has {sorted(splits)})")
            pids = [str(p) for p in splits[self.split]]
        else:
            pids = [pid for pid, p in problems.items() if p.get("split") == self.split]
        samples = []
        for pid in pids:
            where = f"{ppath} [{pid!r}]"
            p = problems.get(pid)
            if p is None:
                raise ValueError(f"{where}: problem listed in {self.pid_splits_file} is not in {ppath}")
            if self.image_only and not p.get("image"):
                continue
            hint = (p.get("hint") or "").strip()
            question = f"Context: {hint}\n{key(p, 'question', where)}" if hint else key(p, "question", where)
            image = folder / self.split / pid / p["image"] if p.get("image") else None
            options = list(key(p, "choices", where))
            answer = key(p, "answer", where)
            if not isinstance(answer, int) or not 0 <= answer < len(options):
                raise ValueError(f"{where}: answer {answer!r} is not an index into its {len(options)} choices")
            samples.append(EvalSample(pid, question, LETTERS[answer], image,
                                      {"options": options, "subject": p.get("subject")}, where=where))
        return samples
