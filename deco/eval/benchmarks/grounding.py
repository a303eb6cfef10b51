"""Visual localization: RefCOCO / RefCOCO+ / RefCOCOg in MDETR's COCO-style files, Acc@IoU>=0.5.

`final_<dataset>_<split>.json` holds one image entry per referring expression (with `caption`); its
annotation holds the box `[x, y, w, h]` in pixels. The reference box is compared in the frame of the
image the model sees, which the runner tells the benchmark (`use_image_aspect`) once the checkpoint's
preprocessing is known, so reading the files never needs it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchmetrics import Metric

from deco.eval.benchmarks.base import Benchmark, EvalSample, key, read_json
from deco.eval.metrics import GroundingAccuracy
from deco.eval.parsing import BOX_RULES

GROUNDING_PROMPT = "Please provide the bounding box coordinate of the region this sentence describes: {}."
BOX_ASPECTS = ("pad", "resize")


def normalise_box(box_xywh: Sequence[float], width: int, height: int, aspect: str = "pad") -> tuple[float, ...]:
    """A COCO pixel box [x, y, w, h] -> (x1, y1, x2, y2) in [0, 1] of the image the model sees.

    "pad": LLaVA-1.5's expand-to-square canvas (side max(w, h), image pasted at the integer centre offset);
    "resize": the image stretched to a square (lmms-eval's refcoco frame). ("crop" cuts objects off.)
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
    """RefCOCO / RefCOCO+ / RefCOCOg; Acc@IoU>=0.5 of the printed box.

    `image_aspect`: null (the default) takes the preprocessing the evaluation runs with; a value
    must agree with it (the box frame is the frame of the image the model saw).
    """

    family = "localization"

    def __init__(self, annotation_file: str, image_folder: str, image_aspect: str | None = None,
                 name: str = "refcoco", split: str | None = None, prompt: str = GROUNDING_PROMPT,
                 prompt_suffix: str = "", max_new_tokens: int = 32, iou_threshold: float = 0.5,
                 limit: int | None = None, parser: str = "reference"):
        super().__init__(name, prompt_suffix, max_new_tokens, limit)
        if image_aspect is not None and image_aspect not in BOX_ASPECTS:
            raise ValueError(f"benchmark {name}: grounding boxes need image_aspect 'pad' or 'resize' (or null), "
                             f"got {image_aspect!r}")
        if parser not in BOX_RULES:
            raise ValueError(f"benchmark {name}: parser must be one of {', '.join(BOX_RULES)}, got {parser!r}")
        self.annotation_file, self.image_folder, self.image_aspect = annotation_file, image_folder, image_aspect
        self.prompt_template, self.iou_threshold, self.split, self.parser = prompt, iou_threshold, split, parser

    def scoring(self) -> dict:
        rule = "lmms-eval refcoco utils_rec.py" if self.parser == "reference" else "deco lenient (parsing.py)"
        return {"parser": self.parser, "parser_rule": rule, "box_frame": self.image_aspect or "pad"}

    def use_image_aspect(self, aspect: str) -> None:
        if aspect not in BOX_ASPECTS:
            raise ValueError(f"benchmark {self.name}: grounding boxes need image_aspect 'pad' or 'resize', but the "
                             f"model sees {aspect!r} images; set image_aspect=pad (LLaVA-1.5) or resize")
        if self.image_aspect is not None and self.image_aspect != aspect:
            raise ValueError(f"benchmark {self.name}: benchmark.image_aspect={self.image_aspect} but the model sees "
                             f"{aspect!r} images; drop benchmark.image_aspect or set image_aspect={self.image_aspect}")
        self.image_aspect = aspect
        for sample in self.samples():
            sample.reference = list(normalise_box(sample.meta["box_xywh"], *sample.meta["size"], aspect))

    def read(self) -> list[EvalSample]:
        apath = self._config_path("annotation_file")
        folder = self._config_path("image_folder")
        data = read_json(apath)
        boxes = {}
        for k, ann in enumerate(key(data, "annotations", str(apath))):
            where = f"{apath} annotations[{k}]"
            box = key(ann, "bbox", where)
            if not isinstance(box, list) or len(box) != 4:
                raise ValueError(f"{where}: bbox must be [x, y, w, h], got {box!r}")
            boxes[key(ann, "image_id", where)] = box
        samples = []
        for k, entry in enumerate(key(data, "images", str(apath))):
            where = f"{apath} images[{k}]"
            expression = key(entry, "id", where)
            if expression not in boxes:
                raise ValueError(f"{where}: expression {expression} has no annotation box")
            size = (int(key(entry, "width", where)), int(key(entry, "height", where)))
            phrase = key(entry, "caption", where).strip().rstrip(".")
            box = list(normalise_box(boxes[expression], *size, self.image_aspect or "pad"))
            samples.append(EvalSample(expression, self.prompt_template.format(phrase), box,
                                      folder / key(entry, "file_name", where),
                                      {"phrase": phrase, "box_xywh": boxes[expression], "size": list(size)},
                                      where=where))
        return samples

    def build_metric(self) -> Metric:
        return GroundingAccuracy(self.iou_threshold, rule=self.parser)
