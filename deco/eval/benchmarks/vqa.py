"""Short-answer VQA benchmarks: VQAv2, TextVQA, VizWiz (soft VQA accuracy) and GQA (exact match).

Layouts read (as their authors publish them):

* VQAv2: official questions JSON (`{"questions": [...]}`) or a LLaVA question JSONL, plus the official
  annotations JSON; images `COCO_<split>_<image_id:012d>.jpg`.
* TextVQA: `TextVQA_0.5.1_val.json` (`{"data": [...]}` with 10 answers), images `<image_id>.jpg`;
  optionally LLaVA's question JSONL with OCR tokens in the prompt.
* VizWiz: `val.json` (a list with `image`, `question`, `answers`).
* GQA: `testdev_balanced_questions.json` (`{qid: {imageId, question, answer}}`), images `<imageId>.jpg`.
"""

from __future__ import annotations

from pathlib import Path

from torchmetrics import Metric

from deco.eval.benchmarks.base import SHORT_ANSWER, Benchmark, EvalSample, jsonl_rows, key, read_json
from deco.eval.metrics import ExactMatch, VQAAccuracy


class VQAv2(Benchmark):
    """VQAv2 (soft VQA accuracy, LLaVA's m4c cleaning + vqaEval.py). Without `annotation_file` (test-dev)
    only predictions are written."""

    def __init__(self, question_file: str, image_folder: str, annotation_file: str | None = None,
                 image_pattern: str = "COCO_val2014_{image_id:012d}.jpg", name: str = "vqav2",
                 prompt_suffix: str = SHORT_ANSWER, max_new_tokens: int = 16, limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.question_file, self.image_folder = question_file, image_folder
        self.annotation_file, self.image_pattern = annotation_file, image_pattern

    @property
    def has_references(self) -> bool:
        return self.annotation_file is not None

    def scoring(self) -> dict:
        return {"answer_rule": "vqav2"}

    def read(self) -> list[EvalSample]:
        qpath = self._config_path("question_file")
        folder = self._config_path("image_folder")
        answers: dict = {}
        if self.annotation_file is not None:
            apath = self._config_path("annotation_file")
            for k, ann in enumerate(key(read_json(apath), "annotations", str(apath))):
                where = f"{apath} annotations[{k}]"
                answers[key(ann, "question_id", where)] = [key(a, "answer", where) for a in key(ann, "answers", where)]
        samples = []
        if qpath.suffix == ".jsonl":  # LLaVA question file: {question_id, image, text}
            for where, row in jsonl_rows(qpath):
                qid = key(row, "question_id", where)
                samples.append(EvalSample(qid, key(row, "text", where), answers.get(qid),
                                          folder / key(row, "image", where), where=where))
        else:
            for k, row in enumerate(key(read_json(qpath), "questions", str(qpath))):
                where = f"{qpath} questions[{k}]"
                image = folder / self.image_pattern.format(image_id=key(row, "image_id", where))
                samples.append(EvalSample(key(row, "question_id", where), key(row, "question", where),
                                          answers.get(row["question_id"]), image, where=where))
        if self.annotation_file is not None:
            missing = [s for s in samples if s.reference is None]
            if missing:
                raise ValueError(f"{self.annotation_file}: no answers for {len(missing)} questions, "
                                 f"e.g. {', '.join(f'{s.id} ({s.where})' for s in missing[:3])}")
        return samples

    def build_metric(self) -> Metric:
        return VQAAccuracy("vqav2")


class TextVQA(Benchmark):
    """TextVQA val (m4c TextVQAAccuracyEvaluator); `question_file` (LLaVA JSONL with OCR tokens) replaces
    the prompts."""

    def __init__(self, annotation_file: str, image_folder: str, question_file: str | None = None,
                 name: str = "textvqa", prompt_suffix: str = SHORT_ANSWER, max_new_tokens: int = 16,
                 limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.annotation_file, self.image_folder, self.question_file = annotation_file, image_folder, question_file

    def scoring(self) -> dict:
        return {"answer_rule": "textvqa"}

    def read(self) -> list[EvalSample]:
        apath = self._config_path("annotation_file")
        folder = self._config_path("image_folder")
        data = key(read_json(apath), "data", str(apath))
        rows = []
        for k, r in enumerate(data):
            where = f"{apath} data[{k}]"
            rows.append((where, {name: key(r, name, where) for name in ("question_id", "question", "image_id")}
                         | {"answers": list(key(r, "answers", where))}))
        if self.question_file is None:
            return [EvalSample(r["question_id"], r["question"], r["answers"], folder / f"{r['image_id']}.jpg",
                               where=where) for where, r in rows]
        # LLaVA's eval_textvqa matches a prompt to its annotation by (image id, lower-cased question).
        by_key = {(r["image_id"], r["question"].lower()): r for _, r in rows}
        qpath = self._config_path("question_file")
        samples = []
        for where, row in jsonl_rows(qpath):
            image = key(row, "image", where)
            text = key(row, "text", where)
            question = text.split("\n")[0]
            ann = by_key.get((Path(image).stem, question.lower()))
            if ann is None:
                raise ValueError(f"{where}: question {row.get('question_id')!r} ({question!r}) not in {apath}")
            samples.append(EvalSample(row.get("question_id", ann["question_id"]), text, ann["answers"],
                                      folder / image, where=where))
        return samples

    def build_metric(self) -> Metric:
        return VQAAccuracy("textvqa")


class VizWiz(Benchmark):
    """VizWiz-VQA val (soft VQA accuracy as VQAv2, "unanswerable" is an answer like any other)."""

    def __init__(self, annotation_file: str, image_folder: str, name: str = "vizwiz",
                 prompt_suffix: str = ("When the provided information is insufficient, respond with 'Unanswerable'.\n"
                                       + SHORT_ANSWER),
                 max_new_tokens: int = 16, limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.annotation_file, self.image_folder = annotation_file, image_folder

    @property
    def has_references(self) -> bool:
        return all(s.reference is not None for s in self.samples())

    def scoring(self) -> dict:
        return {"answer_rule": "vqav2"}

    def read(self) -> list[EvalSample]:
        apath = self._config_path("annotation_file")
        folder = self._config_path("image_folder")
        rows = read_json(apath)
        if not isinstance(rows, list):
            raise ValueError(f"{apath}: expected a list of questions (VizWiz layout)")
        samples = []
        for k, row in enumerate(rows):
            where = f"{apath}[{k}]"
            answers = [key(a, "answer", where) for a in row["answers"]] if row.get("answers") else None
            image = key(row, "image", where)
            samples.append(EvalSample(image, key(row, "question", where), answers, folder / image, where=where))
        return samples

    def build_metric(self) -> Metric:
        return VQAAccuracy("vqav2")


class GQA(Benchmark):
    """GQA testdev-balanced: LLaVA's convert_gqa_for_eval.py answer, equal to the annotation's answer."""

    def __init__(self, question_file: str, image_folder: str, name: str = "gqa",
                 prompt_suffix: str = SHORT_ANSWER, max_new_tokens: int = 16, limit: int | None = None):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        self.question_file, self.image_folder = question_file, image_folder

    def read(self) -> list[EvalSample]:
        qpath = self._config_path("question_file")
        folder = self._config_path("image_folder")
        data = read_json(qpath)
        if not isinstance(data, dict):
            raise ValueError(f"{qpath}: expected {{question_id: question}} (GQA layout)")
        samples = []
        for qid, q in data.items():
            where = f"{qpath} [{qid!r}]"
            samples.append(EvalSample(qid, key(q, "question", where), key(q, "answer", where),
                                      folder / f"{key(q, 'imageId', where)}.jpg", where=where))
        return samples

    def build_metric(self) -> Metric:
        return ExactMatch(normalize_reference=False)
