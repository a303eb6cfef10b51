"""Open-ended descriptions: reference-based captioning (COCO / Flickr30k / NoCaps layouts), headline CIDEr.

Layouts: the COCO caption JSON (`images` + `annotations`) or a list of `{"image": ..., "caption": [...]}`
records (the Karpathy-split files). Scored with pycocoevalcap (see `deco.eval.metrics.caption`).
"""

from __future__ import annotations

from torchmetrics import Metric

from deco.eval.benchmarks.base import Benchmark, EvalSample, key, read_json
from deco.eval.metrics import CaptionMetrics


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
        data = read_json(apath)
        if isinstance(data, list):  # Karpathy-split records: {"image": path, "caption": [...]}
            samples = []
            for k, row in enumerate(data):
                where = f"{apath}[{k}]"
                caption, image = key(row, "caption", where), key(row, "image", where)
                refs = [caption] if isinstance(caption, str) else list(caption)
                if not refs:
                    raise ValueError(f"{where}: no caption")
                samples.append(EvalSample(image, self.question, refs, folder / image, where=where))
            return samples
        captions: dict = {}
        for k, ann in enumerate(key(data, "annotations", str(apath))):
            where = f"{apath} annotations[{k}]"
            captions.setdefault(key(ann, "image_id", where), []).append(key(ann, "caption", where))
        samples = []
        for k, image in enumerate(key(data, "images", str(apath))):
            where = f"{apath} images[{k}]"
            if key(image, "id", where) not in captions:
                raise ValueError(f"{where}: image {image['id']} has no caption")
            samples.append(EvalSample(image["id"], self.question, captions[image["id"]],
                                      folder / key(image, "file_name", where), where=where))
        return samples

    def build_metric(self) -> Metric:
        return CaptionMetrics()
