"""A 7B-shaped rehearsal on CPU: LLaVA-1.5's presets end to end with the model shrunk.

`experiment=llava15_pretrain` then `experiment=llava15_finetune` (init_from the pretrain run), each with
`model=tiny_scratch` (the same layer types as LLaVA-1.5-7B: a CLIP ViT and a Llama decoder, tiny widths)
on a small LLaVA-format corpus (images and text-only records, so modality-length grouping has both
modalities), gradient checkpointing on (the presets' setting), global batch 4 of micro-batches of 2.
The finetune runs in one process (2 accumulation steps), under `trainer=ddp_cpu` with 2 processes and
under FSDP full shard on CPU (gloo) with 2 processes where the installed Lightning allows it (2.6 does not:
its FSDPStrategy requires a GPU accelerator, which the test asserts); every micro-batch loss must agree. The DDP run is
then repeated, preempted after 2 steps (SIGUSR2) and resumed from its run dir (resume=auto), and its losses must equal
the uninterrupted run's; the result is evaluated with `python -m deco.evaluate`.

Precision is 32-true here (bf16 autocast on CPU is slow, and FSDP's bf16 mixed precision computes norms
and residuals in bf16 where autocast keeps fp32, so bf16 losses legitimately differ by ~1%).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_llava_corpus

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["model=tiny_scratch", "data.global_batch_size=4", "data.batch_size=2", "data.num_workers=0",
          "data.max_length=256", "data.eval_batch_size=2", "trainer.precision=32-true", "trainer.log_every_n_steps=1",
          "logger=csv", "callbacks.last_checkpoint.every_n_train_steps=1", "query_num=16",
          "projector=avgpool"]  # 16 visual tokens keep the tiny run fast; the preset's own projector is mlp2x_gelu
FSDP_CPU = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2"]


def deco(module: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1",
           "PYTHONPATH": f"{ROOT / 'tests' / 'lit'}{os.pathsep}{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def losses(run: Path, ranks: int) -> list[list[float]]:
    """Per optimizer step, the micro-batch losses in global order (rank r's micro-batches after rank r-1's).
    The global batch is 4 micro-batches of 2, so each rank takes 2 // ranks micro-batches per step."""
    accumulate = 2 // ranks
    per_rank = [[loss for _, _, loss in torch.load(run / "probe" / f"rank{r}.pt", weights_only=True)["losses"]]
                for r in range(ranks)]
    steps = len(per_rank[0]) // accumulate
    return [[per_rank[r][s * accumulate + a] for r in range(ranks) for a in range(accumulate)] for s in range(steps)]


def probe(run: Path) -> list[str]:
    return ["+callbacks.probe._target_=probes.LossProbe", f"+callbacks.probe.path={run / 'probe'}",
            f"hydra.run.dir={run}"]


@pytest.mark.slow
def test_llava15_presets_rehearsal_on_cpu(tmp_path):
    data = tmp_path / "data"
    records = write_llava_corpus(data, n_images=14)  # 14 image records + 2 text-only
    captions = [{"id": r["id"], "image": r["image"], "conversations": [
        {"from": "human", "value": "<image>"}, {"from": "gpt", "value": r["conversations"][1]["value"]}]}
        for r in records if "image" in r]
    (data / "pretrain.json").write_text(json.dumps(captions))

    pretrain = tmp_path / "pretrain"
    deco("deco.train", "experiment=llava15_pretrain", *COMMON, f"data.json_path={data / 'pretrain.json'}",
         "trainer=cpu", f"hydra.run.dir={pretrain}")
    init = f"init_from={pretrain / 'checkpoints' / 'last.ckpt'}"
    finetune = ["experiment=llava15_finetune", *COMMON, f"data.json_path={data / 'data.json'}", init]

    single, ddp = tmp_path / "single", tmp_path / "ddp"
    deco("deco.train", *finetune, "trainer=cpu", *probe(single))
    run = deco("deco.train", *finetune, "trainer=ddp_cpu", "trainer.devices=2", *probe(ddp))
    log = run.stdout + run.stderr
    assert "gradient checkpointing on in CLIPVisionModel, LlamaForCausalLM" in log
    one, two = losses(single, 1), losses(ddp, 2)
    assert len(one) == 3 and all(len(step) == 2 for step in one)  # 15 train records // 4 = 3 steps of 2 micro-batches
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-5, atol=1e-6)

    fsdp = tmp_path / "fsdp"
    result = deco("deco.train", *finetune, *FSDP_CPU, *probe(fsdp), check=False)
    if result.returncode == 0:
        torch.testing.assert_close(torch.tensor(losses(fsdp, 2)), torch.tensor(one), rtol=1e-4, atol=1e-5)
    else:  # Lightning 2.6's FSDPStrategy refuses the CPU accelerator: FSDP is rehearsed only where it runs
        assert "The strategy `fsdp` requires a GPU accelerator" in result.stderr, result.stderr[-3000:]
        print("FSDP on CPU: not supported by the installed Lightning (needs a GPU accelerator)")

    # Preempted after 2 steps (SIGUSR2, as submitit sends before a time limit), then resumed from the run dir
    # (resume=auto): the same losses as the uninterrupted run.
    resumed = tmp_path / "resumed"
    run = deco("deco.train", *finetune, "trainer=ddp_cpu", "trainer.devices=2", *probe(resumed),
               "+callbacks.stop._target_=probes.SignalAtStep", "+callbacks.stop.step=2", check=False)
    assert "SIGUSR2 received: saved" in run.stdout + run.stderr, run.stderr[-3000:]
    first = losses(resumed, 2)
    assert len(first) == 2
    deco("deco.train", *finetune, "trainer=ddp_cpu", "trainer.devices=2", *probe(resumed))
    second = losses(resumed, 2)
    assert len(second) == 1
    torch.testing.assert_close(torch.tensor(first + second), torch.tensor(one), rtol=1e-5, atol=1e-6)

    evaluation = tmp_path / "eval"
    deco("deco.evaluate", f"ckpt={resumed / 'checkpoints' / 'last.ckpt'}", "benchmark=shapes_existence",
         "benchmark.limit=8", "batch_size=4", "logger=none", "progress=false", f"hydra.run.dir={evaluation}")
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["num_questions"] == 8 and 0.0 <= metrics["metrics"]["accuracy"] <= 100.0  # percent
