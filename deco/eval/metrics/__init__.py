"""Benchmark metrics as torchmetrics `Metric`s, one module per kind of answer (see each module's rule).

* `VQAAccuracy`, `ExactMatch` (vqa.py) — VQAv2 / VizWiz / TextVQA soft accuracy, GQA exact match.
* `YesNoMetrics`, `MMEScore` (yesno.py) — POPE and MME.
* `MultipleChoiceAccuracy` (choice.py) — option letters, MMBench's circular rule.
* `GroundingAccuracy` (grounding.py) — RefCOCO Acc@IoU>=0.5.
* `CaptionMetrics` (caption.py) — BLEU-4 / ROUGE-L / CIDEr via pycocoevalcap.
"""

from deco.eval.metrics.caption import CaptionMetrics, coco_caption_scores
from deco.eval.metrics.choice import MultipleChoiceAccuracy
from deco.eval.metrics.grounding import GroundingAccuracy
from deco.eval.metrics.vqa import ExactMatch, VQAAccuracy, vqa_accuracy
from deco.eval.metrics.yesno import MME_COGNITION, MME_PERCEPTION, MMEScore, YesNoMetrics

__all__ = ["CaptionMetrics", "ExactMatch", "GroundingAccuracy", "MME_COGNITION", "MME_PERCEPTION", "MMEScore",
           "MultipleChoiceAccuracy", "VQAAccuracy", "YesNoMetrics", "coco_caption_scores", "vqa_accuracy"]
