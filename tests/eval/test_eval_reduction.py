"""Reduction through the entry points: evaluate writes the reduction and its measured cost into metrics.json,
bad budgets are config errors naming the key, the sweep table gets a row per reduction, the app and the
lmms-eval adapter pass the option through; the FLOPs formula against a hand computation."""

import json
import sys
import types
from types import SimpleNamespace

import pytest
from conftest import compose_config

from deco.models.reduction.efficiency import kv_cache_bytes, layer_tokens, prefill_flops


def test_prefill_flops_by_hand():
    config = SimpleNamespace(hidden_size=4, num_attention_heads=2, head_dim=2, num_key_value_heads=1,
                             intermediate_size=6, vocab_size=10, num_hidden_layers=2)
    # n=3: 2*3*4*(4+2*2) + 2*3*4*4 + 4*9*4 + 6*3*4*6 = 192 + 96 + 144 + 432 = 864
    # n=2: 128 + 64 + 64 + 288 = 544; LM head on the last token: 2*4*10 = 80
    assert prefill_flops(config, [3, 2]) == 864 + 544 + 80
    fastv = SimpleNamespace(stage="llm", keep=1, layer=1)
    assert layer_tokens(config, 3, fastv, visual_tokens=2) == [3, 2]  # one of two image tokens dropped after layer 1
    assert kv_cache_bytes(config, [3, 2], 2) == 2 * 5 * 2 * 2


def test_evaluate_records_reduction_and_cost(tiny_ckpt, tmp_path):
    from deco.evaluate import evaluate

    runs = {}
    for name, extra in [("none", []), ("fastv", ["reduction=fastv", "reduction.keep=4", "reduction.layer=1"])]:
        out = tmp_path / name
        cfg = compose_config("evaluate", [f"ckpt={tiny_ckpt}", "benchmark=shapes_existence", "benchmark.num_samples=2",
                                          "batch_size=2", "logger=none", "progress=false", "efficiency.repeats=1",
                                          *extra], out)
        evaluate(cfg)
        runs[name] = json.loads((out / "metrics.json").read_text())
    full, cut = runs["none"]["efficiency"], runs["fastv"]["efficiency"]
    assert runs["fastv"]["reduction"] == {"name": "fastv", "keep": 4, "layer": 1}
    assert runs["none"]["reduction"] == {"name": "none"}
    assert (full["visual_tokens"], full["kept_visual_tokens"], cut["kept_visual_tokens"]) == (16, 16, 4)
    n = full["prompt_tokens_per_layer"][0]
    assert full["prompt_tokens_per_layer"] == [n, n] and cut["prompt_tokens_per_layer"] == [n, n - 12]
    assert cut["kv_cache_bytes"] == full["kv_cache_bytes"] * (2 * n - 12) // (2 * n)
    assert cut["prefill_flops"] < full["prefill_flops"]
    assert cut["ttft_ms"] > 0 and cut["decode_ms_per_token"] > 0 and cut["peak_memory_bytes"] > 0


@pytest.mark.parametrize("overrides,message", [
    (["reduction=pool", "reduction.keep=10"], "reduction.keep=10 must be a perfect square"),
    (["reduction=divprune", "reduction.keep=0"], "reduction.keep=0 must be >= 1"),
    (["reduction=fastv", "reduction.keep=17", "reduction.layer=1"], "reduction.keep=17 must be between 1 and the 16"),
    (["reduction=fastv", "reduction.keep=4", "reduction.layer=2"], "reduction.layer=2 must be between 1 and 1"),
    (["reduction=visionzip", "reduction.keep=4"], "mixes patches: use reduction=fastv"),
])
def test_bad_reduction_is_a_config_error(tiny_ckpt, tmp_path, overrides, message):
    from deco.evaluate import evaluate

    cfg = compose_config("evaluate", [f"ckpt={tiny_ckpt}", "benchmark.num_samples=2", "logger=none", *overrides], tmp_path)
    with pytest.raises(SystemExit, match=f"Config error: .*{message}"):
        evaluate(cfg)


def test_sweep_table_has_a_row_per_reduction(tmp_path):
    from deco.eval.tables import joint_table

    runs = [({"name": "none"}, 90.0, 3.2e9, 12.5), ({"name": "fastv", "keep": 64, "layer": 2}, 80.0, 1.1e9, 7.25)]
    summaries = [{"benchmark": "pope", "headline": "f1", "ckpt": "a/checkpoints/last.ckpt", "projector": "linear",
                  "metrics": {"f1": f1}, "reduction": red,
                  "efficiency": {"kept_visual_tokens": red.get("keep", 576), "prefill_flops": flops, "ttft_ms": ttft,
                                 "decode_ms_per_token": 1.5}} for red, f1, flops, ttft in runs]
    markdown, table = joint_table(summaries)
    lines = markdown.splitlines()
    assert lines[0] == ("| checkpoint | projector | reduction | pope (f1) | kept tokens | prefill GFLOPs | TTFT ms "
                        "| decode ms/token |")
    assert lines[2] == "| a-last | linear | none | 90.00 | 576 | 3.2 | 12.5 | 1.50 |"
    assert lines[3] == "| a-last | linear | fastv 64 layer=2 | 80.00 | 64 | 1.1 | 7.2 | 1.50 |"


def test_app_passes_the_reduction_to_every_model(tmp_path):
    from deco.app.__main__ import load_slots, validate

    cfg = compose_config("app", ["reduction=fastv", "reduction.keep=8", "reduction.layer=1", "query_num=16"], tmp_path)
    slots = load_slots(cfg)
    assert slots[0].loaded.model.reducer.describe() == {"name": "fastv", "keep": 8, "layer": 1}
    bad = compose_config("app", ["reduction=pool", "reduction.keep=8"], tmp_path)
    with pytest.raises(SystemExit, match="reduction.keep=8 must be a perfect square"):
        validate(bad)


def test_lmms_adapter_reads_reduction_model_args(tiny_ckpt, monkeypatch):
    """lmms-eval passes model_args as strings; the adapter builds the reducer from them (lmms-eval stubbed)."""
    api = types.ModuleType("lmms_eval.api")
    model_mod, inst_mod = types.ModuleType("lmms_eval.api.model"), types.ModuleType("lmms_eval.api.instance")
    model_mod.lmms = type("lmms", (), {"__init__": lambda self: None})
    inst_mod.Instance = object
    for name, mod in [("lmms_eval", types.ModuleType("lmms_eval")), ("lmms_eval.api", api),
                      ("lmms_eval.api.model", model_mod), ("lmms_eval.api.instance", inst_mod)]:
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delitem(sys.modules, "deco.integrations.lmms_eval", raising=False)
    try:
        from deco.integrations.lmms_eval import DecoLMM

        lmm = DecoLMM(ckpt=str(tiny_ckpt), device="cpu", reduction="fastv", reduction_keep="4", reduction_layer="1")
        assert lmm.model.reducer.describe() == {"name": "fastv", "keep": 4, "layer": 1}
        assert DecoLMM(ckpt=str(tiny_ckpt), device="cpu").model.reducer is None
    finally:
        sys.modules.pop("deco.integrations.lmms_eval", None)  # built on the stubs: not for later imports
