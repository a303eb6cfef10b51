"""The probe sets `mode=score` scores: shapes scenes, distractor scenes, or a grounding benchmark's real images.

`collect_probes` turns the score settings into `deco.explain.score.Probe`s: `shapes` (one asked object per
scene, `deco.explain.score.shapes_probes`), `distractors` (the asked object shares colour or shape with another
one, `deco.explain.distractors`), `captions` (full scene captions with object masks, scored by TAM's
Obj-IoU / Func-IoU too, `deco.explain.captions`) or, when a benchmark is given, its referring expressions with their images and
boxes (`deco.explain.benchmark_probes`), which replace the shapes-world sets.
"""

from __future__ import annotations

from collections.abc import Sequence

# today's probes, the shared-attribute distractor scenes, and full scene captions (TAM's Obj-/Func-IoU)
PROBE_SETS = ("shapes", "distractors", "captions")


def collect_probes(
    loaded,
    template: str,
    sets: Sequence[str],
    seed: int,
    num_samples: int,
    tasks: Sequence[str],
    num_distractors: int,
    benchmark=None,
    image_aspect: str = "pad",
) -> list:
    """Probes of `loaded` (a deco.models.loading result): the named `sets`, or `benchmark`'s when one is given."""
    from deco.explain.benchmark_probes import benchmark_probes
    from deco.explain.captions import caption_probes
    from deco.explain.distractors import distractor_probes
    from deco.explain.score import shapes_probes

    if benchmark is not None:
        return benchmark_probes(
            benchmark, loaded.tokenizer, loaded.image_processor, template, image_aspect, num_samples
        )
    bad = [s for s in sets if s not in PROBE_SETS]
    if bad or not sets:
        raise ValueError(f"score.probes={list(bad or sets)} is unknown; choose among: {', '.join(PROBE_SETS)}")
    probes = []
    if "shapes" in sets:
        probes += shapes_probes(loaded.tokenizer, loaded.image_processor, seed, num_samples, template, tasks=tasks)
    if "distractors" in sets:
        probes += distractor_probes(loaded.tokenizer, loaded.image_processor, seed, num_distractors, template)
    if "captions" in sets:
        probes += caption_probes(loaded.tokenizer, loaded.image_processor, seed, num_samples, template)
    return probes
