"""The lmms-eval adapter end to end: `python -m lmms_eval --model deco` on a local task and a tiny checkpoint.

The task (a YAML + utils.py written here, lmms-eval's `--include_path`) holds 6 shapes-world yes/no
questions in a JSON-lines file; nothing is downloaded. The model is found through the `lmms_eval.models`
entry point that setup.cfg declares (made visible to the subprocess with a stub dist-info built from
setup.cfg itself, since the venv's deco may be installed from another checkout).
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (make install-lmms)")

ROOT = Path(__file__).resolve().parents[2]

TASK_YAML = """task: deco_shapes_existence
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 6
  until: ["\\n"]
process_results: !function utils.process_results
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
"""

TASK_UTILS = '''from PIL import Image

from deco.eval.parsing import parse_yes_no_pope


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc):
    return doc["question"]


def process_results(doc, results):
    return {"accuracy": float(parse_yes_no_pope(results[0])[0] == doc["answer"])}
'''


def _entry_point_dist(where: Path) -> Path:
    """A stub dist-info carrying setup.cfg's [options.entry_points], so importlib.metadata finds them."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in cfg["options.entry_points"]["lmms_eval.models"].splitlines() if line.strip()]
    dist = where / "deco_lmms_entry-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: deco-lmms-entry\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[lmms_eval.models]\n" + "\n".join(lines) + "\n")
    return where


@pytest.mark.parametrize(
    "extra_args, reduction",
    [
        pytest.param("", None, id="unreduced"),
        # slow: a second lmms-eval subprocess (~1 min); the adapter's parsing of reduction_* is a fast test elsewhere
        pytest.param(
            ",reduction=fastv,reduction_keep=4,reduction_layer=1",
            {"name": "fastv", "keep": 4, "layer": 1},
            id="fastv-4",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_lmms_eval_cli_runs_a_deco_checkpoint_on_a_local_task(tiny_ckpt, tmp_path, extra_args, reduction):
    """The real lmms-eval CLI, unreduced and with a training-free reducer passed as model_args (FastV: 16 -> 4 tokens after layer 1; the tiny model pools, so the pre-LLM reducers do not apply)."""
    from deco.eval.benchmarks import ShapesBenchmark, load_image
    from deco.eval.parsing import parse_yes_no_pope

    bench = ShapesBenchmark("existence", num_samples=6)
    rows = []
    for k, sample in enumerate(bench.samples()):
        image = tmp_path / "images" / f"{k}.png"
        image.parent.mkdir(exist_ok=True)
        load_image(sample.image).save(image)
        rows.append({"id": k, "image": str(image), "question": sample.question, "answer": sample.reference})
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    (task_dir / "deco_shapes_existence.yaml").write_text(TASK_YAML.format(data=data))
    (task_dir / "utils.py").write_text(TASK_UTILS)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(_entry_point_dist(tmp_path / "dist"))]),
               HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "deco",
           "--model_args", f"ckpt={tiny_ckpt},device=cpu,max_new_tokens=6{extra_args}", "--tasks", "deco_shapes_existence",
           "--include_path", str(task_dir), "--batch_size", "4", "--output_path", str(out), "--log_samples"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in out.rglob("*_results.json")]
    assert results, (list(out.rglob("*")), proc.stdout[-3000:], proc.stderr[-3000:])
    task = results[0]["results"]["deco_shapes_existence"]
    accuracy = next(v for k, v in task.items() if k.startswith("accuracy") and "stderr" not in k)
    # the same checkpoint answering the same questions through deco's own runner scores the same
    from deco.eval.runner import PromptDataset, generate_answers
    from deco.models.loading import load_model

    loaded = load_model(tiny_ckpt)
    samples = bench.samples()
    dataset = PromptDataset(samples, [s.question for s in samples], loaded.tokenizer, loaded.image_processor)
    from deco.models.attention import set_attention

    set_attention(loaded.model, "sdpa")
    if reduction:
        from deco.models.reduction import reducer_from_config

        loaded.model.set_reduction(reducer_from_config(reduction))
    answers = generate_answers(loaded.model, loaded.tokenizer, dataset, batch_size=4, max_new_tokens=6,
                               progress=False)
    expected = sum(parse_yes_no_pope(a.split("\n")[0])[0] == s.reference for a, s in zip(answers, samples)) / 6
    assert accuracy == pytest.approx(expected)
    logged = [json.loads(line) for p in out.rglob("*samples_deco_shapes_existence.jsonl")
              for line in p.read_text().splitlines()]
    assert len(logged) == 6  # --log_samples: one record per question


def test_loglikelihood_matches_the_model_loss_and_greedy_flag(tiny_ckpt):
    from types import SimpleNamespace

    import torch

    from deco.data.conversation import tokenize_prompt
    from deco.data.image import process_image
    from deco.eval.benchmarks import ShapesBenchmark, load_image
    from deco.integrations.lmms_eval import DecoLMM

    lm = DecoLMM(ckpt=str(tiny_ckpt), device="cpu", attn_implementation=None)
    sample = ShapesBenchmark("existence", num_samples=1).samples()[0]
    image = load_image(sample.image)
    lm.task_dict = {"t": {"test": [{"image": image}]}}
    prompt = tokenize_prompt(sample.question, lm.tokenizer, lm.template, with_image=True)
    pixels = process_image(image, lm.image_processor, lm.image_aspect)[None]
    with torch.no_grad():  # the greedy next token after the prompt, as text that tokenises back to it
        first = lm.model(prompt[None], torch.ones(1, len(prompt), dtype=torch.long), pixels).logits[0, -1].argmax()
    greedy = lm.tokenizer.decode([int(first)])
    assert lm.tokenizer(greedy, add_special_tokens=False)["input_ids"] == [int(first)]
    requests = [SimpleNamespace(args=(sample.question, cont, lambda doc: [doc["image"]], 0, "t", "test"))
                for cont in (" Yes", greedy)]
    (logprob, _), (_, is_greedy) = lm.loglikelihood(requests)
    # the same number from the model's own loss: mean NLL over the continuation tokens, prompt masked
    cont = torch.tensor(lm.tokenizer(" Yes", add_special_tokens=False)["input_ids"])
    ids = torch.cat([prompt, cont])[None]
    labels = torch.cat([torch.full_like(prompt, -100), cont])[None]
    with torch.no_grad():
        loss = lm.model(ids, torch.ones_like(ids), pixels, labels=labels).loss
    assert logprob == pytest.approx(-loss.item() * len(cont), rel=1e-4)
    assert is_greedy
