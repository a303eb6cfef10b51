"""The notebooks execute top to bottom (nbclient, the current interpreter's kernel) so they never
rot, and are committed with their (small) outputs. 01 and 02 train a tiny model for a few steps (about a minute on a busy 2-core machine) and are
marked slow; 03 only reads the committed study report."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def execute(name: str, **env: str):
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(NOTEBOOKS)}})
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return book


def outputs_text(book) -> str:
    parts = []
    for cell in book.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_relevance.ipynb", "03_compare_projectors.ipynb"])
def test_committed_with_small_outputs(name):
    """Committed executed, so the pictures show on the repository page; small, so the repo stays light."""
    path = NOTEBOOKS / name
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), f"{name}: execute it before committing"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"], f"{name}: committed with an error"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}: no figure rendered (a forced backend?)"
    assert path.stat().st_size < 400_000, f"{name}: outputs too large to commit ({path.stat().st_size} bytes)"
    # clean: no warnings or log streams, no terminal colour codes, no path of the machine that ran it
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], f"{name}: stderr committed"
    text = outputs_text(book)
    assert "\x1b[" not in text and "site-packages" not in text and not re.search(r"/(work|home|tmp)/", text), name


@pytest.mark.slow
def test_quickstart_runs():
    text = outputs_text(execute("01_quickstart.ipynb"))
    assert "val/loss after 4 steps" in text and "visual tokens: 16" in text and "A:" in text


@pytest.mark.slow
def test_relevance_runs():
    text = outputs_text(execute("02_relevance.ipynb"))
    assert "R_t2q (16,)" in text and "R_q2i (16, 64)" in text and "R_t2i (8, 8)" in text


def test_compare_projectors_runs(tmp_path):
    from test_report import ACC, VAL, write_run  # a synthetic sweep, so the test needs no study run

    from deco import report

    for projector in ("avgpool", "qformer"):
        for i, seed in enumerate((1, 2, 3)):
            write_run(tmp_path / "sweep", projector, 4, seed, VAL[projector][i], ACC[projector][i])
    report.build_report(tmp_path / "sweep", tmp_path / "report")
    text = outputs_text(execute("03_compare_projectors.ipynb", DECO_REPORT=str(tmp_path / "report")))
    assert "avgpool-4" in text and "0.600 ± 0.248" in text  # attribute accuracy 0.5, 0.7, 0.6: mean ± t CI


def test_compare_projectors_reads_the_current_study_by_default():
    """Without DECO_REPORT: the zoo v3 study the README quotes (avgpool-64 grounding 54.8 ± 6.8 %), not the
    pre-zoo study in which every projector scored 0 on grounding."""
    text = outputs_text(nbformat.read(NOTEBOOKS / "03_compare_projectors.ipynb", as_version=4))  # as committed
    assert "source: zoo_results_v3.md" in text and "0.548 ± 0.068" in text and "qformer-64" in text
    assert "/work/" not in text and "\x1b[" not in text
