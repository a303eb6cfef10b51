"""`make bench` code paths at smoke sizes: results JSON shape and sane values, FLOP counts against hand counts.

Nothing here asserts a speed (timings on a shared machine prove nothing); it checks that every figure runs,
that times are positive and that the FLOP ratios the compression figure relies on are the ones a hand count
of the shapes gives.
"""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from experiments.perf import gpu, run
from experiments.perf.profile_ops import op_category
from experiments.perf.common import SMOKE_OVERRIDES, Bench, projector_configs
from experiments.perf.counting import PeakMemory, count_flops, llama_forward_flops, parts_train_flops, train_step_flops


SUBPROCESS_FIGURES = {"time_to_accuracy", "llava_scale", "train_transformers"}  # tests/test_perf_study.py


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    # the figures that start deco.train subprocesses (and figure 11) have their own slow smoke test
    status = run.main(["--smoke", "--out", str(out), "--only", *[f for f in run.FIGURES if f not in SUBPROCESS_FIGURES]])
    data = json.loads(out.read_text())
    assert status == 0, {k: v.get("error") for k, v in data["figures"].items() if isinstance(v, dict)}
    return data


@pytest.fixture(scope="module")
def bench():
    return Bench("smoke")


def _positive_times(node):
    """Every *_s value in the tree (step times, medians, ...) is a positive number."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("_s") and key != "seconds" and isinstance(value, (int, float)):
                assert value > 0, key
            _positive_times(value)
    elif isinstance(node, list):
        for value in node:
            _positive_times(value)


def test_results_have_every_figure(results):
    figs = results["figures"]
    assert set(figs) == set(run.FIGURES) - SUBPROCESS_FIGURES
    assert all("error" not in f for f in figs.values() if isinstance(f, dict))
    _positive_times(figs)
    assert results["machine"]["torch_threads"] == 1


def test_overhead_figure(results):
    f = results["figures"]["overhead"]
    assert f["lightning_step_s"] > 0 and f["bare_step_s"] > 0
    assert f["ratio"] > 0 and f["meets_goal"] == (f["ratio"] <= 1.03)
    assert f["gradient_clip_val"] == 1.0  # the bare loop clips like trainer=cpu does


def test_compression_flop_ratios_are_consistent(results):
    block = results["figures"]["compression"]["figure2"]["smoke"]
    rows = block["projectors"]
    base = rows[block["baseline"]]["flops"]
    assert set(rows) == {"linear_16", "avgpool_4", "qformer_4"}
    for label, row in rows.items():
        assert row["flops"] > 0 and row["step"]["median_s"] > 0
        if label != "linear_16":
            assert row["flop_ratio"] == pytest.approx(row["flops"] / base)
            assert row["rel_diff"] == pytest.approx(row["time_ratio"] / row["flop_ratio"] - 1)
    assert rows["avgpool_4"]["visual_tokens"] == 4 and rows["linear_16"]["visual_tokens"] == 16
    # the profile split: categories add up to the total; the like-with-like ratio is the paired median
    for label, row in rows.items():
        parts = {k: v for k, v in row["profile_ms"].items() if k != "total"}
        assert set(parts) == {"counted", "dropout", "softmax", "layer_norm", "optimizer", "other"}
        assert sum(parts.values()) == pytest.approx(row["profile_ms"]["total"]) and parts["counted"] > 0
        if label != "linear_16":
            assert row["counted_time_ratio"] == pytest.approx(statistics.median(row["counted_ratio_rounds"]))
            assert row["counted_meets_goal"] == (abs(row["counted_rel_diff"]) <= 0.10)
    # only the Q-Former has dropout (BLIP-2's 0.1 on attention probabilities and hidden states)
    assert rows["qformer_4"]["profile_ms"]["dropout"] > 0
    assert rows["avgpool_4"]["profile_ms"]["dropout"] == rows["linear_16"]["profile_ms"]["dropout"] == 0


def test_op_categories():
    assert op_category("aten::mm") == op_category("aten::_scaled_dot_product_flash_attention_for_cpu") == "counted"
    assert op_category("aten::bernoulli_") == "dropout" and op_category("aten::_softmax_backward_data") == "softmax"
    assert op_category("aten::native_layer_norm_backward") == "layer_norm" and op_category("aten::mul") == "other"


def test_params_and_memory(results, bench):
    rows = results["figures"]["compression"]["figure3"]["projectors"]
    for label, cfg in projector_configs("smoke").items():
        model = bench.model(cfg)
        assert rows[label]["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
        # peak >= parameters + gradients + two AdamW moments of the trainable part
        assert rows[label]["peak_bytes"] >= rows[label]["static_bytes"] + 3 * 4 * rows[label]["trainable_params"]
    # the linear projector is one d_vision x d_llm matrix + bias
    d_in, d_out = SMOKE_OVERRIDES["vision"]["hidden_size"], SMOKE_OVERRIDES["llm"]["hidden_size"]
    assert rows["linear_16"]["projector_params"] == d_in * d_out + d_out


def test_generation_and_relevance(results):
    for variant in results["figures"]["generation"].values():
        assert variant["batched_matches_one_by_one"] is True
        assert variant["ratio"] > 0 and variant["batched_samples_per_s"] > 0
    rel = results["figures"]["relevance"]
    if "skipped" not in rel:
        assert set(rel["projectors"]) == {"linear_16", "avgpool_4", "qformer_4"}
        assert all(r["ratio"] > 0 for r in rel["projectors"].values())


def test_transformers_peer(results):
    row = results["figures"]["transformers"]["sizes"]["smoke"]
    # same weights through the llava-hf export: transformers decodes deco's tokens, old path and new path agree
    # the fair peer (static cache, tower cut at the selected layer) and stock generate decode the same tokens
    assert row["tokens_equal"] == {"deco_vs_transformers": True, "deco_vs_transformers_dynamic": True,
                                   "deco_vs_before": True}
    assert row["over_stock_generate"] > 0
    assert row["visual_tokens"] == 16 and row["ratio"] > 0 and row["meets_goal"] == (row["ratio"] <= 0.80)
    assert row["ratio"] == pytest.approx(statistics.median(row["ratio_rounds"]))


def test_gpu_smoke(results):
    f = results["figures"]["gpu"]
    assert f["smoke"] is True and f["dtype"] == "bfloat16"
    for label, row in f["projectors"].items():
        assert row["samples_per_s"] > 0 and row["peak_memory_bytes"] > 0
        assert row["tokens_per_s"] == pytest.approx(row["samples_per_s"] * row["seq_len"])
        assert row["seq_len"] == f["text_len"] - 1 + row["visual_tokens"]
        assert row["flops_per_step"] > 0
    assert f["projectors"]["avgpool_4"]["flops_per_step"] < f["projectors"]["linear_16"]["flops_per_step"]
    # the Lightning part: trainer=cpu fitted (trainer=gpu on a GPU), the FSDP strategy composed from its config
    light = f["lightning"]
    assert light["cpu"]["fitted"] and light["cpu"]["steps_timed"] >= 1 and light["cpu"]["samples_per_s"] > 0
    assert light["fsdp"] == {"trainer": "fsdp", "strategy": "FSDPStrategy", "precision": "bf16-mixed", "fitted": False}
    for label in ("linear_16", "avgpool_4"):
        assert f["generation"][label]["same_tokens"] is True
        assert f["generation"][label]["now_new_tokens_per_s"] > 0


def test_bf16_peaks():
    assert gpu.bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu.bf16_peak("NVIDIA H100 PCIe") == 756e12
    assert gpu.bf16_peak("NVIDIA H200") == 989e12
    assert gpu.bf16_peak("Some Future GPU") is None


def _clip_forward(b, n, d, inter, layers, patch):
    t = n + 1  # CLS + patches
    per_layer = 4 * 2 * b * t * d * d + 2 * 2 * b * t * t * d + 2 * 2 * b * t * d * inter
    return 2 * b * n * 3 * patch * patch * d + layers * per_layer


def test_llama_formula_matches_flop_counter(bench):
    model = bench.model(projector_configs("smoke")["linear_16"])
    cfg = model.llm.config
    b, t = 2, 9
    counted = count_flops(lambda: model.llm(inputs_embeds=torch.zeros(b, t, cfg.hidden_size)), model.llm)
    assert counted == llama_forward_flops(cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers,
                                          cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size, b, t)


def test_train_step_flops_equal_hand_count(bench):
    """FLOPs of a finetune step = frozen vision forward + projector (weight grads only for the first
    Linear, whose input needs no grad) + 3 x the LLM forward (backward = 2 x forward)."""
    batch = bench.train_batch(2)
    b, t = batch["input_ids"].shape
    v, m = SMOKE_OVERRIDES["vision"], SMOKE_OVERRIDES["llm"]
    n, d_in, d = 16, v["hidden_size"], m["hidden_size"]
    vocab = len(bench.tokenizer)
    # select_layer -2: the tower stops after the penultimate layer (the last one would feed nothing)
    vision = _clip_forward(b, n, d_in, v["intermediate_size"], v["num_hidden_layers"] - 1, 14)

    def llm(q):
        return 3 * llama_forward_flops(d, m["intermediate_size"], m["num_hidden_layers"], m["num_attention_heads"],
                                       m["num_key_value_heads"], vocab, b, t - 1 + q)

    linear = vision + 2 * (2 * b * n * d_in * d) + llm(16)
    q = 4  # avgpool: Linear(d_in, d) GELU Linear(d, d) on 4 pooled tokens
    avgpool = vision + 2 * (2 * b * q * d_in * d) + 3 * (2 * b * q * d * d) + llm(q)
    configs = projector_configs("smoke")
    counted = {label: train_step_flops(bench.model(configs[label]), batch) for label in ("linear_16", "avgpool_4")}
    assert counted == {"linear_16": linear, "avgpool_4": avgpool}
    # the meta-device count from shapes alone agrees with the real step
    with torch.device("meta"):
        meta_model = bench.model(configs["avgpool_4"])
    assert parts_train_flops(meta_model, b, t - 1) == avgpool


def test_peak_memory_tracks_alloc_and_free():
    tracker = PeakMemory()
    with tracker:
        a = torch.ones(1000)  # 4000 B
        b = a * 2  # 8000 live
        del a  # 4000 live
        c = b + 1  # 8000 live
        c.add_(1)  # in place: nothing new
    assert tracker.peak == 8000 and tracker.current == 8000
    del b, c
    assert tracker.current == 0
