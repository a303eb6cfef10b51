"""Distractor probes: shapes scenes where the asked object shares its colour or its shape with another one.

A map can look right for the wrong reason: asked "What colour is the circle?" with a small green circle
and a large green triangle in the scene, a model may answer "Green." while its relevance sits on the
triangle. These probes make that visible. Scene `index` of world `seed` (seeded, regenerable, the same
pixels on every call) holds the asked object, a distractor that shares exactly one attribute with it
(drawn at least as large, so it is the easier place to find the answer), and with probability 1/2 a third
object sharing neither. Question families cycle with the index (`FAMILIES`):

* `colour`: "What colour is the {shape}?" -- the distractor has the asked colour and another shape;
* `shape`: "What shape is the {colour} object?" -- the distractor has the asked shape and another colour;
* `existence`: "Is there a {colour} {shape} in the image?" (answer "Yes.") -- it shares one of the two;
* `grounding`: the box of "the {colour} {shape}" -- it shares one of the two.

With the `plain` (pretraining) template the target is the asked object's own caption. Each probe carries
the asked box and the distractor's box, so a score can say how much relevance lands on each.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from deco.data.shapes import (
    BACKGROUNDS,
    COLOUR_Q,
    COLOURS,
    EXIST_Q,
    GROUND_Q,
    SHAPE_Q,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    _place,
    draw_object,
    format_box,
)

FAMILIES = ("colour", "shape", "existence", "grounding")
_SIZE_ORDER = list(SIZES)  # small, medium, large


def _objects(rng: random.Random, family: str, image_size: int) -> tuple[ShapeObject, ShapeObject, list[ShapeObject]]:
    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    shares = {"colour": "colour", "shape": "shape"}.get(family) or rng.choice(("colour", "shape"))
    if shares == "colour":
        other = (rng.choice([s for s in SHAPES if s != shape]), colour)
    else:
        other = (shape, rng.choice([c for c in COLOURS if c != colour]))
    asked_size = rng.choice(_SIZE_ORDER[:2])
    other_size = rng.choice(_SIZE_ORDER[_SIZE_ORDER.index(asked_size):])
    specs = [(shape, colour, asked_size), (*other, other_size)]
    if rng.random() < 0.5:  # a bystander sharing neither attribute
        specs.append((rng.choice([s for s in SHAPES if s not in (shape, other[0])]),
                      rng.choice([c for c in COLOURS if c not in (colour, other[1])]), rng.choice(_SIZE_ORDER)))
    placed: list[ShapeObject] = []
    for spec_shape, spec_colour, size in specs:
        box = _place(rng, round(SIZES[size] * image_size), [o.box for o in placed], image_size)
        if box is None:
            if len(placed) >= 2:
                break  # the bystander is optional
            raise _NoRoom
        placed.append(ShapeObject(spec_shape, spec_colour, size, box, image_size))
    return placed[0], placed[1], placed


class _NoRoom(Exception):
    pass


def distractor_scene(seed: int, index: int, image_size: int = 336):
    """(Scene, asked object, distractor, family, question, answer) of distractor scene `index`."""
    family = FAMILIES[index % len(FAMILIES)]
    for attempt in range(100):
        rng = random.Random((seed * 1_000_003 + index) * 8 + 5 + 1_000 * attempt)
        try:
            asked, distractor, objects = _objects(rng, family, image_size)
            break
        except _NoRoom:
            continue
    else:  # pragma: no cover - three objects of at most 37 % of the side always fit within 100 tries
        raise RuntimeError(f"distractor scene {index} of seed {seed}: no room for its objects")
    image = Image.new("RGB", (image_size, image_size), rng.choice(BACKGROUNDS))
    draw = ImageDraw.Draw(image)
    for obj in objects:
        draw_object(draw, obj)
    if family == "colour":
        question, answer = COLOUR_Q.format(shape=asked.shape), asked.colour.capitalize() + "."
    elif family == "shape":
        question, answer = SHAPE_Q.format(colour=asked.colour), asked.shape.capitalize() + "."
    elif family == "existence":
        question, answer = EXIST_Q.format(colour=asked.colour, shape=asked.shape), "Yes."
    else:
        question, answer = GROUND_Q.format(colour=asked.colour, shape=asked.shape), format_box(asked.box_norm)
    return Scene(image=image, objects=objects), asked, distractor, family, question, answer


def distractor_probes(tokenizer, image_processor, seed: int, num_samples: int, template: str = "vicuna_v1",
                      start: int = 0) -> list:
    """Scored inputs (`deco.explain.score.Probe`, with `distractor` set) for distractor scenes start.. start+n."""
    from deco.explain.inputs import build_input
    from deco.explain.score import Probe

    probes = []
    for index in range(start, start + num_samples):
        scene, asked, distractor, family, question, answer = distractor_scene(seed, index)
        if template == "plain":
            question, answer, family = None, f"A {asked.size} {asked.colour} {asked.shape}.", "caption"
        box = tuple(v / asked.image_size for v in asked.box)
        other = tuple(v / distractor.image_size for v in distractor.box)
        inp = build_input(tokenizer, image_processor, scene.image, answer, question=question, template=template)
        inp.meta.update(index=index, task=family, phrase=asked.phrase, box=box, distractor=other)
        probes.append(Probe(inp=inp, box=box, index=index, task=family, phrase=asked.phrase, distractor=other,
                            probe_set="distractors"))
    return probes
