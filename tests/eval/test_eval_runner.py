"""The answer loop and `deco.evaluate` end to end on the tiny model: batching changes nothing, files are written."""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf
from PIL import Image

from deco.eval.benchmarks import EvalSample, ShapesBenchmark
from deco.eval.runner import PromptDataset, evaluate_benchmark, format_table, generate_answers

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loaded(tiny_ckpt):
    from deco.models.loading import load_model

    return load_model(tiny_ckpt)


def _ragged_samples() -> list[EvalSample]:
    """Questions of different lengths (grounding prompts are much longer than existence ones) and one text-only."""
    samples = []
    for task, n in (("existence", 2), ("grounding", 2), ("caption", 1)):
        samples += ShapesBenchmark(task, seed=50_000, num_samples=n).samples()
    samples.append(EvalSample("text-only", "Describe the image briefly.", ["x"], None))
    return samples


def test_prompt_dataset_builds_llava_prompts(loaded):
    samples = _ragged_samples()
    ds = PromptDataset(samples, [s.question for s in samples], loaded.tokenizer, loaded.image_processor)
    item = ds[0]
    assert ds.prompt_text(0).endswith(f"USER: <image>\n{samples[0].question} ASSISTANT:")
    assert loaded.tokenizer.decode(item["input_ids"]) == "<s>" + ds.prompt_text(0)
    assert item["pixel_values"].shape == (3, 336, 336)
    assert ds[len(ds) - 1]["pixel_values"] is None and "<image>" not in ds.prompt_text(len(ds) - 1)


def test_batched_generation_equals_batch_one(loaded):
    samples = _ragged_samples()
    ds = PromptDataset(samples, [s.question for s in samples], loaded.tokenizer, loaded.image_processor)
    lengths = {len(ds[i]["input_ids"]) for i in range(len(ds))}
    assert len(lengths) >= 3  # the batch really is ragged
    # A 3-step model says the same thing to every question; noise on the LLM makes answers depend on the
    # input, so a batch that mixed up rows, padding or order would show.
    model = copy.deepcopy(loaded.model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.llm.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    kwargs = dict(max_new_tokens=8, progress=False)
    one = generate_answers(model, loaded.tokenizer, ds, batch_size=1, **kwargs)
    batched = generate_answers(model, loaded.tokenizer, ds, batch_size=4, **kwargs)  # ragged 4 + ragged 2
    assert len(set(one)) == len(one)
    assert batched == one
    assert all(isinstance(a, str) and a == a.strip() for a in one)


@pytest.fixture(scope="module")
def existence_run(loaded, tmp_path_factory):
    """One-process evaluation of 4 held-out existence questions at batch 2: (result, predictions path)."""
    path = tmp_path_factory.mktemp("existence") / "predictions.jsonl"
    result = evaluate_benchmark(loaded.model, loaded.tokenizer, loaded.image_processor,
                                ShapesBenchmark("existence", num_samples=4), batch_size=3,
                                predictions_path=path, progress=False)
    return result, path


def test_evaluate_benchmark_writes_predictions_in_order(existence_run):
    result, path = existence_run
    bench = ShapesBenchmark("existence", num_samples=4)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == [s.id for s in bench.samples()]
    assert set(rows[0]) >= {"id", "prompt", "answer", "reference"}
    # the metric matches a recount from the written answers with LLaVA's POPE rule
    from deco.eval.parsing import parse_yes_no_pope

    right = sum(parse_yes_no_pope(r["answer"])[0] == r["reference"] for r in rows)
    assert result.metrics["accuracy"] == pytest.approx(100 * right / 4, abs=1e-3)
    assert result.metrics["n"] == 4 and result.num_questions == 4
    table = format_table([result])
    assert "shapes_existence" in table and "accuracy *" in table


def _ddp_eval_worker(rank: int, world: int, init_file: str, out_dir: str, loaded) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        result = evaluate_benchmark(loaded.model, loaded.tokenizer, loaded.image_processor,
                                    ShapesBenchmark("existence", num_samples=4), batch_size=3,
                                    predictions_path=Path(out_dir) / "ddp.jsonl", progress=False)
        (Path(out_dir) / f"metrics{rank}.json").write_text(json.dumps(result.metrics))
    finally:
        torch.distributed.destroy_process_group()


def test_evaluate_benchmark_under_ddp_matches_one_process(loaded, existence_run, tmp_path):
    """Two gloo ranks answer alternate questions; rank 0 writes them merged in order, metrics reduce."""
    import torch.multiprocessing as mp

    single, single_path = existence_run
    mp.start_processes(_ddp_eval_worker, args=(2, str(tmp_path / "init"), str(tmp_path), loaded), nprocs=2,
                       join=True, start_method="fork")
    assert (tmp_path / "ddp.jsonl").read_text() == single_path.read_text()
    for rank in (0, 1):
        assert json.loads((tmp_path / f"metrics{rank}.json").read_text()) == single.metrics


def test_evaluate_entry_point_end_to_end(tiny_ckpt, tmp_path):
    from deco.evaluate import evaluate

    cfg = compose_config("evaluate", [f"ckpt={tiny_ckpt}", "benchmark=shapes_grounding", "benchmark.num_samples=4",
                                      "batch_size=2", "max_new_tokens=12", "logger=csv", "progress=false"], tmp_path)
    headline = evaluate(cfg)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["benchmark"] == "shapes_grounding" and summary["family"] == "localization"
    assert summary["projector"] == "avgpool2_16" and summary["num_questions"] == 4
    assert headline == summary["metrics"]["accuracy"]
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["reference"]) == 4 for r in rows)
    # recompute: Acc@0.5 from the written answers (unparseable boxes count as wrong)
    from deco.eval.parsing import box_iou, parse_box

    hits = sum(parse_box(r["answer"]) is not None and box_iou(parse_box(r["answer"]), r["reference"]) >= 0.5
               for r in rows)
    assert summary["metrics"]["accuracy"] == pytest.approx(100 * hits / 4, abs=1e-3)
    assert summary["metrics"]["unparsed"] == sum(parse_box(r["answer"]) is None for r in rows)
    with (tmp_path / "csv" / "metrics.csv").open() as f:
        logged = list(csv.DictReader(f))
    assert float(logged[0]["eval/shapes_grounding/accuracy"]) == pytest.approx(summary["metrics"]["accuracy"])
    assert OmegaConf.load(tmp_path / "config.yaml").benchmark.task == "grounding"


def test_evaluate_entry_point_rejects_bad_config(tmp_path):
    from deco.evaluate import evaluate

    cfg = compose_config("evaluate", [f"ckpt={tmp_path / 'missing.ckpt'}"], tmp_path)
    with pytest.raises(SystemExit, match="missing.ckpt"):
        evaluate(cfg)
    cfg = compose_config("evaluate", [], tmp_path)
    with pytest.raises(SystemExit, match="ckpt is required"):
        evaluate(cfg)
    (tmp_path / "x.ckpt").write_bytes(b"")
    for override, message in [("image_aspect=square", "image_aspect=square is unknown"),
                              (f"resume_from={tmp_path / 'gone.jsonl'}", "gone.jsonl: no such predictions file")]:
        with pytest.raises(SystemExit, match=message):
            evaluate(compose_config("evaluate", [f"ckpt={tmp_path / 'x.ckpt'}", override], tmp_path))


def test_every_benchmark_config_composes(tmp_path):
    """Each configs/benchmark/*.yaml names a class whose constructor accepts its keys."""
    import inspect

    from hydra.utils import get_class

    names = sorted(p.stem for p in (ROOT / "configs" / "benchmark").glob("*.yaml"))
    assert {"vqav2", "textvqa", "vizwiz", "gqa", "pope", "mme", "mmbench", "seed", "scienceqa", "refcoco",
            "refcoco_plus", "refcocog", "coco_caption", "shapes_attribute", "shapes_existence", "shapes_grounding",
            "shapes_caption"} <= set(names)
    for name in names:
        cfg = compose_config("evaluate", ["ckpt=x.ckpt", f"benchmark={name}"], tmp_path)
        bench = OmegaConf.to_container(cfg.benchmark, resolve=True)
        params = inspect.signature(get_class(bench.pop("_target_")).__init__).parameters
        assert set(bench) <= set(params), (name, set(bench) - set(params))
        assert cfg.benchmark.name.startswith(name.split("_")[0])


def test_refcoco_runs_with_the_default_config(tiny_ckpt, tmp_path):
    """benchmark=refcoco with no image_aspect: the files are read before the model loads, the box frame
    comes from the checkpoint (deco: pad) once it is loaded."""
    from deco.evaluate import evaluate

    data = tmp_path / "data"
    (data / "coco" / "train2014").mkdir(parents=True)
    Image.new("RGB", (200, 100), (200, 10, 10)).save(data / "coco" / "train2014" / "a.jpg")
    (data / "refcoco").mkdir()
    (data / "refcoco" / "final_refcoco_testA.json").write_text(json.dumps({
        "images": [{"id": 0, "file_name": "a.jpg", "width": 200, "height": 100, "caption": "the red thing"}],
        "annotations": [{"id": 1, "image_id": 0, "bbox": [0, 0, 100, 100], "category_id": 1}]}))
    out = tmp_path / "run"
    cfg = compose_config("evaluate", [f"ckpt={tiny_ckpt}", "benchmark=refcoco", f"eval_data_dir={data}",
                                      "max_new_tokens=4", "logger=none", "progress=false"], out)
    assert cfg.image_aspect is None and "image_aspect" not in cfg.benchmark
    evaluate(cfg)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["benchmark"] == "refcoco_testA" and summary["image_aspect"] == "pad"
    assert summary["scoring"]["parser"] == "reference" and summary["num_questions"] == 1
    row = json.loads((out / "predictions.jsonl").read_text())
    assert row["reference"] == [0.0, 0.25, 0.5, 0.75]  # the pad frame of a 200 x 100 image


def test_resume_from_predictions_asks_only_the_rest(loaded, existence_run, tmp_path):
    """A run killed after 2 of 4 answers (and half a line) resumes: 2 answers reused, same file, same metrics."""
    single, single_path = existence_run
    lines = single_path.read_text().splitlines(keepends=True)
    path = tmp_path / "predictions.jsonl"
    path.write_text(lines[0] + lines[1] + lines[2][:20])  # torn third line
    asked = []
    bench = ShapesBenchmark("existence", num_samples=4)
    import deco.eval.runner as runner

    original = runner.generate_answers

    def counting(model, tokenizer, dataset, **kwargs):
        asked.append(len(dataset))
        return original(model, tokenizer, dataset, **kwargs)

    runner.generate_answers = counting
    try:
        result = evaluate_benchmark(loaded.model, loaded.tokenizer, loaded.image_processor, bench, batch_size=3,
                                    predictions_path=path, progress=False)
    finally:
        runner.generate_answers = original
    assert asked == [2] and result.extra["resumed"] == 2
    assert path.read_text() == single_path.read_text()
    assert result.metrics == single.metrics


def test_a_bad_image_keeps_the_finished_answers(loaded, tmp_path):
    """An unreadable image mid-run stops with its row; the answers before it stay in predictions.jsonl."""
    good = ShapesBenchmark("existence", num_samples=3).samples()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    samples = good[:2] + [EvalSample("bad", "Is there a dog?", "yes", broken, where="q.jsonl:3")]

    class Crafted(ShapesBenchmark):
        def read(self):
            return samples

    path = tmp_path / "predictions.jsonl"
    with pytest.raises(OSError, match=r"q.jsonl:3: image .*broken.jpg could not be read"):
        evaluate_benchmark(loaded.model, loaded.tokenizer, loaded.image_processor, Crafted("existence"),
                           batch_size=2, predictions_path=path, progress=False)
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [good[0].id, good[1].id]


def test_sweep_summary_table(tmp_path):
    from deco.eval.tables import checkpoint_label
    from deco.evaluate import SweepSummary

    assert checkpoint_label("outputs/train/run1/checkpoints/last.ckpt") == "run1-last"
    assert checkpoint_label("liuhaotian/llava-v1.5-7b") == "llava-v1.5-7b"
    assert checkpoint_label("/x/my model/") == "my_model"
    for ckpt, bench, headline, value in [("a/checkpoints/last.ckpt", "pope", "f1", 80.5),
                                         ("a/checkpoints/last.ckpt", "gqa", "accuracy", 50.0),
                                         ("b/checkpoints/last.ckpt", "pope", "f1", 70.25)]:
        run = tmp_path / f"{checkpoint_label(ckpt)}-{bench}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"benchmark": bench, "headline": headline, "ckpt": ckpt,
                                                      "projector": "avgpool2_16", "metrics": {headline: value}}))
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    md = (tmp_path / "summary.md").read_text().splitlines()
    assert md[0] == "| checkpoint | projector | gqa (accuracy) | pope (f1) |"
    assert md[2] == "| a-last | avgpool2_16 | 50.00 | 80.50 |" and md[3] == "| b-last | avgpool2_16 |  | 70.25 |"
    rows = list(csv.reader((tmp_path / "summary.csv").open()))
    assert rows[0] == ["checkpoint", "projector", "ckpt", "gqa", "pope"] and rows[2][-1] == "70.25"


@pytest.mark.slow
def test_cli_multirun(tiny_ckpt, tmp_path):
    cmd = [sys.executable, "-m", "deco.evaluate", "-m", f"ckpt={tiny_ckpt}",
           "benchmark=shapes_existence,shapes_attribute", "benchmark.num_samples=4", "batch_size=4", "logger=none",
           "progress=false", f"hydra.sweep.dir={tmp_path}"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    summaries = sorted(json.loads(p.read_text())["benchmark"] for p in tmp_path.glob("*/metrics.json"))
    assert summaries == ["shapes_attribute", "shapes_existence"]
    run = tiny_ckpt.parent.parent.name
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and p.name != ".hydra") == [
        f"{run}-last-shapes_attribute", f"{run}-last-shapes_existence"]
    assert "shapes_existence" in (tmp_path / "summary.md").read_text()


def test_finished_answers_keep_only_matching_questions(tmp_path):
    from deco.eval.predictions import finished_answers

    path = tmp_path / "predictions.jsonl"
    lines = [{"id": 1, "prompt": "p1", "answer": "yes", "reference": [0.0, 0.25, 0.5, 0.75]},
             {"id": 2, "prompt": "old prompt", "answer": "no", "reference": "no"},
             {"id": 3, "prompt": "p3", "answer": "no", "reference": [0, 0, 1, 1]},  # another box frame
             {"id": "1", "prompt": "p1", "answer": "x", "reference": [0.0, 0.25, 0.5, 0.75]}]  # "1" is not 1
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"id": 4, "pro')
    done = finished_answers(path, [1, 2, 3, 4], ["p1", "p2", "p3", "p4"],
                            [[0.0, 0.25, 0.5, 0.75], "no", [0.0, 0.0, 0.5, 0.5], "yes"])
    assert [r["id"] for r in done.values()] == [1] and next(iter(done.values()))["answer"] == "yes"


def test_table_prints_each_metric_once_and_explains_its_marks():
    from deco.eval.runner import EvalResult

    metrics = {"shapes/accuracy": 50.0, "shapes/f1": 20.0, "accuracy": 50.0, "f1": 20.0, "n": 16, "unclear": 3}
    table = format_table([EvalResult("shapes_existence", "mllm", "accuracy", metrics, 16, 1.0)])
    assert "shapes/accuracy" not in table and table.count("accuracy *") == 1
    assert "* the headline metric" in table and "unclear: answers that say neither yes nor no" in table
    two = {"adversarial/f1": 80.0, "random/f1": 90.0, "f1": 85.0}  # POPE's splits differ: all shown
    table = format_table([EvalResult("pope", "mllm", "f1", two, 2, 1.0)])
    assert "adversarial/f1" in table and "random/f1" in table and "unclear:" not in table
