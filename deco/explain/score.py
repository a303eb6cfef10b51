"""Scores for relevance maps against ground truth: energy in the box, pointing game, perturbation AUC.

On data with object boxes (the shapes world), a good text-to-image map puts its mass on the object the
target text is about. Per map (R_t2i, g x g patches) and box (x1, y1, x2, y2 normalised to [0, 1]):

* `energy_in_box` (energy-based pointing game, Wang et al., Score-CAM CVPR-W 2020): the map, min-max
  normalised, upsampled with each patch constant, summed inside the box over its total; computed exactly
  from each patch's area inside the box. A flat map scores the box's area fraction (`box_area`).
* `pointing_hit` (Zhang et al., ECCV 2016): 1 if the argmax patch touches the box (a tolerance of up to one
  14-px patch, close to the original 15 px), else 0; a flat map scores the chance level.
* `perturbation_curve` (Chefer et al.): patches are removed in order of relevance (set to the processor's
  mean colour, i.e. 0 after normalisation) at the fractions `STEPS`, and the target's mean per-token
  log-probability is recorded; `positive` removes the most relevant first (lower AUC is better),
  negative the least relevant first (higher AUC is better). AUC = trapezoid over the removed fraction.
* `top_query_energy` (the paper's Q-Former figure, as a number): the mean energy in the box of the R_q2i rows
  of the `TOP_QUERIES` visual tokens with the largest R_t2q, i.e. do the tokens the text relies on look at the
  asked object, or has the projector's abstraction spread the asked attribute over the whole image?
* `obj_iou` / `func_iou` (caption probes, `deco.explain.captions`): TAM's plausibility of the per-token maps,
  `deco.explain.tam_iou`.
`shapes_probes` builds the scored inputs: for each scene, one object and a target text about it (an
attribute answer or its box for the vicuna template, its own caption for the plain template).
The pseudo-method `random` (a seeded noise map) is the chance baseline in `score_model`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from deco.data.tokenizer import IGNORE_INDEX
from deco.explain.inputs import ExplainInput, build_input
from deco.explain.llm_relevance import eval_mode
from deco.explain.summary import METRICS, comparison_table, summarize  # noqa: F401  (the tables' home)
from deco.models.mllm import position_ids_from_mask

# Fractions of patches removed, as in Chefer's bi-modal perturbation test (LXMERT perturbation.py).
STEPS = (0.0, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
TOP_QUERIES = 3

Box = tuple[float, float, float, float]


def _check_box(box: Sequence[float]) -> Box:
    if len(box) != 4:
        raise ValueError(f"box must be (x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise ValueError(f"box {box!r} must be normalised to [0, 1] with x1 < x2 and y1 < y2")
    return x1, y1, x2, y2


def box_patch_fraction(box: Sequence[float], grid: int) -> torch.Tensor:
    """g x g: the fraction of each patch's area inside `box` (normalised x1, y1, x2, y2)."""
    x1, y1, x2, y2 = _check_box(box)
    edges = torch.arange(grid + 1, dtype=torch.float64) / grid
    lo, hi = edges[:-1], edges[1:]
    fx = (torch.minimum(hi, torch.tensor(x2)) - torch.maximum(lo, torch.tensor(x1))).clamp(min=0) * grid
    fy = (torch.minimum(hi, torch.tensor(y2)) - torch.maximum(lo, torch.tensor(y1))).clamp(min=0) * grid
    return (fy[:, None] * fx[None, :]).float()  # rows = y, columns = x (row-major patches)


def _as_grid(rel: torch.Tensor) -> torch.Tensor:
    rel = rel.detach().float().cpu()
    if rel.dim() == 1:
        side = math.isqrt(rel.numel())
        if side * side != rel.numel():
            raise ValueError(f"a relevance vector of {rel.numel()} patches is not a square grid")
        rel = rel.reshape(side, side)
    if rel.dim() != 2 or rel.shape[0] != rel.shape[1]:
        raise ValueError(f"relevance map must be g x g, got {tuple(rel.shape)}")
    return rel


def energy_in_box(rel: torch.Tensor, box: Sequence[float]) -> float:
    """Share of the min-max normalised map's mass inside the box (flat map: the box's area fraction)."""
    rel = _as_grid(rel)
    frac = box_patch_fraction(box, len(rel))
    span = float(rel.max() - rel.min())
    if span <= 0:
        return float(frac.mean())
    norm = rel - rel.min()  # min-max normalised up to the factor 1 / span, which the share cancels
    return float((norm * frac).sum() / norm.sum())


def top_query_energy(r_t2q: torch.Tensor, r_q2i: torch.Tensor, box: Sequence[float], k: int = TOP_QUERIES) -> float:
    """Mean energy in the box of R_q2i (q n) over the k tokens with the largest R_t2q (q)."""
    top = r_t2q.detach().float().topk(min(k, r_t2q.numel())).indices
    return sum(energy_in_box(r_q2i[i], box) for i in top.tolist()) / len(top)


def pointing_hit(rel: torch.Tensor, box: Sequence[float]) -> float:
    """1.0 if the map's argmax patch overlaps the box, else 0.0.

    A flat map points nowhere: it scores the chance of a uniformly drawn patch touching the box.
    """
    rel = _as_grid(rel)
    touches = box_patch_fraction(box, len(rel)).flatten() > 0
    if float(rel.max() - rel.min()) <= 0:
        return float(touches.float().mean())
    return float(touches[int(rel.flatten().argmax())])


def auc(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Trapezoid area under ys over xs."""
    return float(torch.trapezoid(torch.tensor(ys, dtype=torch.float64), torch.tensor(xs, dtype=torch.float64)))


def patch_keep_masks(rel: torch.Tensor, steps: Sequence[float], positive: bool) -> torch.Tensor:
    """s x g x g bool: patches kept at each step (positive: most relevant removed first)."""
    if any(not 0 <= step <= 1 for step in steps):
        raise ValueError(f"perturbation steps must be fractions in [0, 1], got {list(steps)}")
    rel = _as_grid(rel).flatten()
    n = rel.numel()
    values = rel.tolist()  # removal order; ties in patch order (Python's sort is stable)
    order = torch.tensor(sorted(range(n), key=lambda i: -values[i] if positive else values[i]), dtype=torch.long)
    keep = torch.ones(len(steps), n, dtype=torch.bool)
    for i, step in enumerate(steps):
        keep[i, order[: int(round(step * n))]] = False
    side = math.isqrt(n)
    return keep.reshape(len(steps), side, side)


@torch.no_grad()
def target_log_probs(model: nn.Module, inp: ExplainInput, pixel_values: torch.Tensor) -> torch.Tensor:
    """Mean per-token log-probability of inp's target tokens for each image in `pixel_values` (b 3 S S) -> b."""
    device = next(model.parameters()).device
    b = pixel_values.shape[0]
    input_ids = inp.input_ids.to(device)[None].expand(b, -1)
    labels = torch.where(inp.target_mask.to(device), inp.input_ids.to(device), IGNORE_INDEX)[None].expand(b, -1)
    embeds, mask, merged, _ = model.prepare_inputs_embeds(input_ids, None, pixel_values.to(device), labels)
    logits = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    positions = (merged[0] != IGNORE_INDEX).nonzero().flatten()
    logp = torch.log_softmax(logits[:, positions - 1].float(), dim=-1)  # b k V
    return logp.gather(2, merged[:, positions, None])[..., 0].mean(1)


def perturbation_curve(
    model: nn.Module,
    inp: ExplainInput,
    rel: torch.Tensor,
    positive: bool,
    steps: Sequence[float] = STEPS,
    insertion: bool = False,
) -> list[float]:
    """Target mean log-prob after removing each fraction of patches (in relevance order) from the image.

    `insertion`: the reverse protocol (Petsiuk et al., RISE, 2018): start from the blank image (every patch
    at the mean colour) and put back the given fraction of patches, most relevant first (`positive`).
    """
    pixels = inp.pixel_values.float()
    keep = patch_keep_masks(rel, steps, positive)  # s g g
    keep = (~keep if insertion else keep).float()
    keep = torch.nn.functional.interpolate(keep[:, None], size=tuple(pixels.shape[1:]), mode="nearest")  # s 1 S S
    batch = pixels[None] * keep  # removed patches -> 0 = the mean colour after normalisation
    with eval_mode(model):
        return target_log_probs(model, inp, batch).tolist()


# ----------------------------------------------------------------------------------------------------------
# Shapes-world probes

_COLOUR_Q = re.compile(r"What colour is the (\w+)\?")
_SHAPE_Q = re.compile(r"What shape is the (\w+) object\?")


@dataclass
class Probe:
    inp: ExplainInput
    box: Box
    index: int
    task: str
    phrase: str  # "green triangle": the object the target is about
    distractor: Box | None = None  # an object sharing colour or shape with it (deco.explain.distractors)
    probe_set: str = "shapes"
    masks: dict | None = None  # captions: a bool H x W mask per noun, for TAM's Obj-/Func-IoU (deco.explain.captions)


def _attribute_object(question: str, objects):
    if m := _COLOUR_Q.fullmatch(question):
        return next(o for o in objects if o.shape == m.group(1))
    if m := _SHAPE_Q.fullmatch(question):
        return next(o for o in objects if o.colour == m.group(1))
    raise ValueError(f"unrecognised attribute question {question!r}")


def shapes_probes(
    tokenizer,
    image_processor,
    seed: int,
    num_samples: int,
    template: str = "vicuna_v1",
    tasks: Sequence[str] = ("attribute", "grounding"),
    start: int = 0,
) -> list[Probe]:
    """Scored inputs from the shapes world (val seed): one object per scene and a target text about it."""
    from deco.data.shapes import _caption, make_sample, render_scene

    probes = []
    for index in range(start, start + num_samples):
        if template == "plain":
            scene = render_scene(seed, index)
            obj = scene.objects[index % len(scene.objects)]
            text, question, task = _caption([obj]), None, "caption"
        else:
            scene, _, meta = make_sample(seed, index, tasks)
            task, question, text = meta["task"], meta["question"], meta["answer"]
            if task == "attribute":
                obj = _attribute_object(question, scene.objects)
            elif task == "grounding":
                obj = next(o for o in scene.objects if o.box_norm == tuple(meta["box"]))
            else:
                raise ValueError(f"shapes task '{task}' names no single object; score with attribute or grounding")
        box = tuple(v / obj.image_size for v in obj.box)
        inp = build_input(tokenizer, image_processor, scene.image, text, question=question, template=template)
        inp.meta.update(index=index, task=task, phrase=obj.phrase, box=box)
        probes.append(Probe(inp=inp, box=box, index=index, task=task, phrase=obj.phrase))
    return probes


# ----------------------------------------------------------------------------------------------------------
# Scoring runs and tables


def random_map(grid: int, index: int) -> torch.Tensor:
    """Seeded noise map: the chance baseline."""
    return torch.rand(grid, grid, generator=torch.Generator().manual_seed(1234 + index))


def score_map(
    model: nn.Module, probe: Probe, rel: torch.Tensor, perturbation: bool = True, steps: Sequence[float] = STEPS
) -> dict:
    """All metrics of one map for one probe."""
    rel = _as_grid(rel)
    row = {
        "energy": energy_in_box(rel, probe.box),
        "box_area": float(box_patch_fraction(probe.box, len(rel)).mean()),
        "pointing": pointing_hit(rel, probe.box),
    }
    if probe.distractor is not None:
        row["distractor_energy"] = energy_in_box(rel, probe.distractor)
    if perturbation:
        row["auc_positive"] = auc(steps, perturbation_curve(model, probe.inp, rel, True, steps))
        row["auc_negative"] = auc(steps, perturbation_curve(model, probe.inp, rel, False, steps))
        row["auc_insertion"] = auc(steps, perturbation_curve(model, probe.inp, rel, True, steps, insertion=True))
    return row


def score_model(
    model: nn.Module,
    tokenizer,
    probes: Iterable[Probe],
    methods: Sequence[str],
    tag: str,
    perturbation: bool = True,
    steps: Sequence[float] = STEPS,
    progress=None,
    vision_relevance: str = "none",
    checkpoint: str = "",
    causal: float = 0.0,
    reference: Sequence[ExplainInput] | None = None,
) -> list[dict]:
    """One row per (probe, method), plus the `random` baseline; `progress` wraps the probe iterable (e.g. tqdm).

    `vision_relevance="gae"` scores the maps carried through the vision tower (over the input patches).
    `checkpoint`: the checkpoint's label, a column of every row, so two checkpoints of one projector stay apart.
    `causal` > 0: also the causal test (`deco.explain.causal`), mean-ablating that fraction of the visual tokens
    with their means over `reference` (default: the probes' own inputs; a sharded run passes every rank's).
    """
    from deco.explain.causal import causal_test, visual_token_means
    from deco.explain.methods import explain_all
    from deco.explain.tam_iou import caption_scores

    rows = []
    probes = list(probes)
    reference = [p.inp for p in probes] if reference is None else list(reference)
    means = visual_token_means(model, reference) if causal > 0 and reference else None
    for probe in progress(probes) if progress else probes:
        results = explain_all(model, probe.inp, list(methods), tokenizer, vision_relevance=vision_relevance)
        maps = {m: r.r_t2i for m, r in results.items()}
        grid = len(next(iter(maps.values()))) if maps else 24  # the methods' g x g grid (the tiny default's)
        maps["random"] = random_map(grid, probe.index)
        log_prob = next(iter(results.values())).log_prob if results else float("nan")
        for method, rel in maps.items():
            row = {
                "probes": probe.probe_set,
                "projector": tag,
                "checkpoint": checkpoint,
                "method": method,
                "index": probe.index,
                "task": probe.task,
                "phrase": probe.phrase,
                "text": probe.inp.text,
                "log_prob": log_prob,
            }
            row.update(score_map(model, probe, rel, perturbation, steps))
            if method in results:
                r_t2q, r_q2i = results[method].r_t2q, results[method].r_q2i
                row["top_query_energy"] = top_query_energy(r_t2q, r_q2i, probe.box)
                if probe.distractor is not None:
                    row["top_query_distractor"] = top_query_energy(r_t2q, r_q2i, probe.distractor)
                    row["top_query_margin"] = row["top_query_energy"] - row["top_query_distractor"]
                if means is not None:
                    row.update(causal_test(model, probe.inp, r_t2q, means, causal, seed=probe.index))
                if probe.masks is not None and tokenizer is not None:
                    row.update(caption_scores(results[method].r_t2i_tokens, probe.inp, tokenizer, probe.masks))
            rows.append(row)
    return rows
