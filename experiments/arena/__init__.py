"""The projector arena (issue 24): every projector, LLaVA's two stages, 3 seeds, the same data per seed.

`python -m experiments.arena.run` runs it (resumable, parallel over lanes), `python -m experiments.arena.table`
turns its run dirs into the table, `python -m experiments.arena.select` picks each projector's setting from the
tuning runs (validation split) and writes `configs/arena/<projector>.yaml`. experiments/arena/README.md.
"""
