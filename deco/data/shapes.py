"""The "shapes world": a procedural, offline stand-in for LLaVA data with all three DeCo task families.

Each scene is a light background with 1-3 non-overlapping objects (circle / square /
triangle, six colours, three sizes), drawn with PIL and fully determined by
(seed, index). No two objects share both colour and shape, so "the red circle" always
names one object. Four tasks turn a scene into a LLaVA-style conversation:
`caption` (captioning / pretraining text), `attribute` (open-ended VQA: colour of a
shape, shape of a colour), `existence` (POPE-style yes/no with 50% negatives drawn from
absent colour-shape combinations; `negatives="adversarial"` draws them, as POPE's adversarial split does, among
the absent pairs that share a colour or a shape with a present object) and `grounding` (RefCOCO-style: a referring phrase ->
"[x1, y1, x2, y2]" normalised to [0, 1] with 2 decimals, as LLaVA-1.5 prints boxes).
Questions are only asked when their answer is unique. `ShapesDataset` renders, tokenizes
and preprocesses samples on the fly.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw

from deco.data.conversation import get_template, tokenize_conversation
from deco.data.image import process_image
from deco.data.tokenizer import IMAGE_TOKEN

TASKS = ("caption", "attribute", "existence", "grounding")
# Opt-in tasks (not in the default mix): `grounded_caption` lists every object with its box, left to right, as
# grounded captions do in Kosmos-2 / Shikra pretraining; a stage-1 alignment target with no token layout in it.
EXTRA_TASKS = ("grounded_caption",)
CAPTION_TASKS = ("caption", "grounded_caption")
NEGATIVES = ("random", "adversarial")  # existence negatives (POPE's random / adversarial splits)
SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 20),
}
BACKGROUNDS = ((245, 245, 245), (235, 240, 250), (250, 245, 230), (240, 250, 240))
# Object side as a fraction of the image side (336 px -> 50 / 84 / 124 px).
SIZES: dict[str, float] = {"small": 0.15, "medium": 0.25, "large": 0.37}
MAX_OBJECTS = 3
_GAP = 4  # pixels kept free between objects (so boxes never touch)

CAPTION_Q = "Describe the image briefly."
GROUNDED_CAPTION_Q = "Describe every object with its bounding box."
COLOUR_Q = "What colour is the {shape}?"
SHAPE_Q = "What shape is the {colour} object?"
EXIST_Q = "Is there a {colour} {shape} in the image?"
GROUND_Q = "Please provide the bounding box coordinate of the region this sentence describes: the {colour} {shape}."


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]  # pixels (x1, y1, x2, y2), x2/y2 exclusive
    image_size: int

    @property
    def box_norm(self) -> tuple[float, float, float, float]:
        """Box divided by the image side, rounded to 2 decimals."""
        return tuple(round(v / self.image_size, 2) for v in self.box)

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class Scene:
    image: Image.Image
    objects: list[ShapeObject]


def _rng(seed: int, index: int, stream: int = 0) -> random.Random:
    # Integer seed mix (no hash(), which is salted per process for str).
    return random.Random((seed * 1_000_003 + index) * 4 + stream)


def _place(rng: random.Random, side: int, taken: list[tuple[int, int, int, int]], image_size: int):
    for _ in range(200):
        x1 = rng.randrange(0, image_size - side + 1)
        y1 = rng.randrange(0, image_size - side + 1)
        box = (x1, y1, x1 + side, y1 + side)
        if all(
            box[0] >= t[2] + _GAP or t[0] >= box[2] + _GAP or box[1] >= t[3] + _GAP or t[1] >= box[3] + _GAP
            for t in taken
        ):
            return box
    return None


def draw_object(draw: ImageDraw.ImageDraw, obj: ShapeObject, fill=None) -> None:
    """Draw `obj` in its colour (or `fill`, e.g. a class id on a label mask)."""
    x1, y1, x2, y2 = obj.box
    fill = COLOURS[obj.colour] if fill is None else fill
    # PIL coordinates are inclusive: the last pixel is x2 - 1.
    if obj.shape == "square":
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
    elif obj.shape == "circle":
        draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
    else:  # triangle: apex at top centre, base along the bottom edge
        draw.polygon([((x1 + x2 - 1) / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=fill)


def render_scene(seed: int, index: int, image_size: int = 336) -> Scene:
    """Scene number `index` of world `seed`: the same pixels and objects on every call."""
    rng = _rng(seed, index)
    background = rng.choice(BACKGROUNDS)
    n = rng.randint(1, MAX_OBJECTS)
    combos = rng.sample(list(itertools.product(SHAPES, COLOURS)), n)  # distinct (shape, colour)
    objects: list[ShapeObject] = []
    for shape, colour in combos:
        size = rng.choice(list(SIZES))
        box = _place(rng, max(8, round(SIZES[size] * image_size)), [o.box for o in objects], image_size)
        if box is None:  # no room: drop the object (rare, deterministic)
            continue
        objects.append(ShapeObject(shape, colour, size, box, image_size))
    image = Image.new("RGB", (image_size, image_size), background)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        draw_object(draw, obj)
    return Scene(image=image, objects=objects)


def format_box(box: Sequence[float]) -> str:
    """LLaVA's box text: "[0.12, 0.34, 0.56, 0.78]"."""
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"


def parse_box(text: str) -> tuple[float, ...]:
    """Inverse of format_box (tolerates surrounding text); ValueError if no 4-number box."""
    import re

    m = re.search(r"\[\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*\]", text)
    if m is None:
        raise ValueError(f"no box '[x1, y1, x2, y2]' in {text!r}")
    return tuple(float(g) for g in m.groups())


def _left_to_right(objects: Sequence[ShapeObject]) -> list[ShapeObject]:
    """The captions' fixed order: left to right, then top to bottom."""
    return sorted(objects, key=lambda o: (o.box[0], o.box[1]))


def object_with_box(o: ShapeObject) -> str:
    """'a medium red square at [0.10, 0.20, 0.35, 0.45]': an object and its box as grounding answers print it."""
    return f"a {o.size} {o.colour} {o.shape} at {format_box(o.box_norm)}"


def _caption(objects: Sequence[ShapeObject]) -> str:
    parts = [f"a {o.size} {o.colour} {o.shape}" for o in _left_to_right(objects)]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text[0].upper() + text[1:] + "."


def _grounded_caption(objects: Sequence[ShapeObject]) -> str:
    text = "; ".join(object_with_box(o) for o in _left_to_right(objects))
    return text[0].upper() + text[1:] + "."


def _attribute(rng: random.Random, objects: Sequence[ShapeObject]) -> tuple[str, str]:
    shapes = Counter(o.shape for o in objects)
    colours = Counter(o.colour for o in objects)
    options = [(COLOUR_Q.format(shape=o.shape), o.colour) for o in objects if shapes[o.shape] == 1]
    options += [(SHAPE_Q.format(colour=o.colour), o.shape) for o in objects if colours[o.colour] == 1]
    question, answer = rng.choice(options)  # never empty: distinct combos keep one attribute unique
    return question, answer.capitalize() + "."


def _existence(rng: random.Random, objects: Sequence[ShapeObject], negatives: str = "random") -> tuple[str, str]:
    present = [(o.colour, o.shape) for o in objects]
    if rng.random() < 0.5:
        colour, shape = rng.choice(present)
        return EXIST_Q.format(colour=colour, shape=shape), "Yes."
    absent = [(c, s) for s in SHAPES for c in COLOURS if (c, s) not in present]
    if negatives == "adversarial":  # one attribute right, one wrong: never empty (a shape has 6 colours, <= 3 present)
        absent = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)]
    colour, shape = rng.choice(absent)
    return EXIST_Q.format(colour=colour, shape=shape), "No."


def check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    """Tuple of task names; ValueError naming unknown ones (or an empty list)."""
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    bad = [t for t in tasks if t not in TASKS + EXTRA_TASKS]
    if not tasks or bad:
        raise ValueError(f"unknown shapes task(s) {bad or list(tasks)!r}; allowed: {list(TASKS + EXTRA_TASKS)}")
    return tasks


def check_negatives(negatives: str) -> str:
    if negatives not in NEGATIVES:
        raise ValueError(f"unknown existence negatives {negatives!r}; allowed: {list(NEGATIVES)}")
    return negatives


def make_sample(seed: int, index: int, tasks: Sequence[str] = TASKS, image_size: int = 336, negatives: str = "random"):
    """(Scene, conversations, meta) for sample `index`; the task is tasks[index % len(tasks)]."""
    tasks, negatives = check_tasks(tasks), check_negatives(negatives)
    task = tasks[index % len(tasks)]
    scene = render_scene(seed, index, image_size)
    rng = _rng(seed, index, stream=1)  # separate stream: the scene does not depend on the task
    objs = scene.objects
    meta: dict = {"task": task}
    if task == "caption":
        question, answer = CAPTION_Q, _caption(objs)
    elif task == "grounded_caption":
        question, answer = GROUNDED_CAPTION_Q, _grounded_caption(objs)
    elif task == "attribute":
        question, answer = _attribute(rng, objs)
    elif task == "existence":
        question, answer = _existence(rng, objs, negatives)
    else:
        obj = rng.choice(objs)
        question, answer = GROUND_Q.format(colour=obj.colour, shape=obj.shape), format_box(obj.box_norm)
        meta["box"] = obj.box_norm
        meta["box_pixels"] = obj.box
    meta.update(question=question, answer=answer)
    conversations = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"}, {"from": "gpt", "value": answer}]
    return scene, conversations, meta


def corpus_texts() -> list[str]:
    """Every question/answer phrase the shapes world can produce (tokenizer training corpus)."""
    texts = [CAPTION_Q, "Yes.", "No."]
    for shape in SHAPES:
        texts += [COLOUR_Q.format(shape=shape), shape.capitalize() + "."]
    for colour in COLOURS:
        texts += [SHAPE_Q.format(colour=colour), colour.capitalize() + "."]
    for colour, shape in itertools.product(COLOURS, SHAPES):
        texts += [EXIST_Q.format(colour=colour, shape=shape), GROUND_Q.format(colour=colour, shape=shape)]
        for size in SIZES:
            texts += [f"A {size} {colour} {shape}.", f"a {size} {colour} {shape}, ", f" and a {size} {colour} {shape}."]
    return texts


def _plain_tasks(tasks: tuple[str, ...]) -> tuple[str, ...]:
    """The caption tasks of `tasks`, in order (`caption` when it names none)."""
    return tuple(t for t in tasks if t in CAPTION_TASKS) or ("caption",)


class ShapesDataset(torch.utils.data.Dataset):
    """`num_samples` shapes-world samples, rendered, tokenized and preprocessed on access.

    For template "plain" (projector pretraining) every sample is a caption (`caption`, or `grounded_caption` where
    `tasks` names it: the plain template has no question, so only caption tasks apply). `negatives`: how existence
    questions pick their "No." pairs (random, as the benchmark does, or adversarial: sharing an attribute).
    Items: input_ids (t), labels (t), pixel_values (3 S S float), task, index.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int,
        tasks: Sequence[str] = TASKS,
        *,
        tokenizer,
        image_processor,
        template: str = "vicuna_v1",
        max_length: int = 256,
        image_aspect: str = "pad",
        image_size: int = 336,
        negatives: str = "random",
    ):
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        get_template(template)  # fail early on an unknown template
        self.tasks = _plain_tasks(check_tasks(tasks)) if template == "plain" else check_tasks(tasks)
        self.negatives = check_negatives(negatives)
        self.num_samples, self.seed = num_samples, seed
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.template, self.max_length = template, max_length
        self.image_aspect, self.image_size = image_aspect, image_size

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> dict:
        return self.item(i)

    def item(self, i: int, pixels: bool = True) -> dict:
        """Sample i; `pixels=False` leaves out pixel_values (its tower features come from a cache)."""
        if not 0 <= i < self.num_samples:
            raise IndexError(f"index {i} out of range for ShapesDataset of length {self.num_samples}")
        scene, conv, meta = make_sample(self.seed, i, self.tasks, self.image_size, self.negatives)
        tok = tokenize_conversation(conv, self.tokenizer, self.template, self.max_length)
        out = {**tok, "task": meta["task"], "index": i}
        if pixels:
            out["pixel_values"] = process_image(scene.image, self.image_processor, self.image_aspect)
        return out

    def feature_key(self, i: int) -> str:
        """The identity of sample i's image (world seed, size, index): the scene depends on nothing else."""
        return f"shapes:seed={self.seed}:size={self.image_size}:index={i}"
