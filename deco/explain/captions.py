"""Caption probes: shapes scenes explained while the model is made to say their full caption, with object masks.

Scene `index` of world `seed` (the shapes world's own scenes, `deco.data.shapes.render_scene`) and its caption
("A small red circle and a large blue square."): asked with the captioning question under a template that asks
questions, or as the plain pretraining text. Each probe carries a ground-truth mask per shape noun (the union
of that shape's objects, drawn exactly as the scene draws them; empty for shapes the scene lacks), so TAM's
Obj-IoU / Func-IoU (`deco.explain.tam_iou`) can score every caption token's map, and the box that bounds all
objects, for the box metrics.
"""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw

from deco.data.shapes import CAPTION_Q, SHAPES, _caption, draw_object, render_scene


def shape_masks(objects, image_size: int) -> dict[str, torch.Tensor]:
    """{shape: bool image_size x image_size}: the pixels of that shape's objects (the category mask)."""
    masks = {}
    for shape in SHAPES:
        canvas = Image.new("L", (image_size, image_size), 0)
        draw = ImageDraw.Draw(canvas)
        for obj in objects:
            if obj.shape == shape:
                draw_object(draw, obj, fill=255)
        masks[shape] = (
            torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8).reshape(image_size, image_size) > 0
        )
    return masks


def caption_probes(
    tokenizer, image_processor, seed: int, num_samples: int, template: str = "vicuna_v1", start: int = 0
) -> list:
    """Scored inputs (`deco.explain.score.Probe` with `masks`) for scenes start .. start + num_samples."""
    from deco.explain.inputs import build_input
    from deco.explain.score import Probe

    probes = []
    for index in range(start, start + num_samples):
        scene = render_scene(seed, index)
        size = scene.image.size[0]
        text = _caption(scene.objects)
        box = (
            min(o.box[0] for o in scene.objects) / size,
            min(o.box[1] for o in scene.objects) / size,
            max(o.box[2] for o in scene.objects) / size,
            max(o.box[3] for o in scene.objects) / size,
        )
        question = None if template == "plain" else CAPTION_Q
        inp = build_input(tokenizer, image_processor, scene.image, text, question=question, template=template)
        phrase = " and ".join(o.phrase for o in scene.objects)
        inp.meta.update(index=index, task="caption", phrase=phrase, box=box)
        probes.append(
            Probe(
                inp=inp,
                box=box,
                index=index,
                task="caption",
                phrase=phrase,
                probe_set="captions",
                masks=shape_masks(scene.objects, size),
            )
        )
    return probes
