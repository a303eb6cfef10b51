"""A deeply nested .jsonl line is one counted skip, never the end of training (issue 29, item 8)."""

from __future__ import annotations

import json

import pytest

from deco.data.llava_json import MAX_NESTING, LlavaJsonDataset

GOOD = {"id": "good", "conversations": [{"from": "human", "value": "What colour is it?"},
                                        {"from": "gpt", "value": "Red."}]}


def _deep(record_id: str, depth: int) -> str:
    extra = "[" * depth + "]" * depth
    return ('{"id": "%s", "conversations": [{"from": "human", "value": "Q?", "x": %s}, '
            '{"from": "gpt", "value": "A."}]}' % (record_id, extra))


def test_deeply_nested_lines_are_skipped_and_counted(tmp_path, tok, proc):
    # 100000 levels: json's own recursion limit (RecursionError, which used to end the run); 100: parses,
    # but deeper than any LLaVA record, so it is refused before anything re-reads it on a deeper stack
    lines = [json.dumps(GOOD), _deep("very-deep", 100_000), _deep("deep", 100), json.dumps({**GOOD, "id": "g2"})]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    data = LlavaJsonDataset(str(tmp_path / "data.jsonl"), str(tmp_path), tokenizer=tok, image_processor=proc,
                            max_length=128)
    assert len(data) == 2 and {k: v for k, v in data.skips.counts().items() if v} == {"malformed_json": 2}
    assert [data.record(i)["id"] for i in range(2)] == ["good", "g2"]
    assert MAX_NESTING == 32
    (tmp_path / "data.json").write_text("[" + _deep("x", 100_000) + "]")
    with pytest.raises(ValueError, match=r"data.json is not valid JSON \(maximum recursion depth"):
        LlavaJsonDataset(str(tmp_path / "data.json"), str(tmp_path), tokenizer=tok, image_processor=proc)
