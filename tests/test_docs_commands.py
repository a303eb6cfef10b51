"""Every `python -m deco.<job> ...` command in README.md and docs/*.md parses and composes as typed.

The commands are read out of the Markdown (fenced and indented code), split as bash would (quotes,
comments, `\\` continuations, `$RUN`-style variables set to example paths), and composed with Hydra's
compose API against the job's primary config, sweeps by their first value, `deco.explain`'s free text
quoted as its `__main__` does. `--help` runs for every entry point; a slow test runs the README's
"first 15 minutes" commands, each with `debug=fast`, one after the other (their outputs feed the next).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIG_DIR
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
JOBS = {"deco.train": "train", "deco.plan": "train", "deco.evaluate": "evaluate", "deco.explain": "explain",
        "deco.export": "export",
        "deco.report": "report", "deco.data.to_wds": "to_wds", "deco.app": "app", "deco.zoo": "zoo"}
# the six: the app needs gradio; deco.plan answers with train's config
HELP_JOBS = [m for m in JOBS if m not in ("deco.app", "deco.zoo", "deco.plan")]
# What the docs' shell variables stand for (README: "Set RUN to that folder").
VARIABLES = {"RUN": "outputs/train/2026-12-01_09-00-00", "SWEEP": "multirun/train/2026-12-01_09-00-00",
             "LORA_DIR": "checkpoints/llava-lora", "VICUNA_DIR": "checkpoints/vicuna-7b"}
COMMAND = re.compile(r"^(?:\$ )?(?:\.venv/bin/)?python -m (deco(?:\.\w+)+)\b(.*)$")


def doc_commands(path: Path) -> list[tuple[int, str, str]]:
    """(line number, module, argument text) of each `python -m deco...` line in a code block of `path`."""
    found, lines, fenced = [], path.read_text().splitlines(), False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
        code = fenced or line.startswith("    ")
        match = COMMAND.match(line.strip()) if code else None
        if match:
            text, start = match.group(2), i
            while text.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text.rstrip()[:-1] + " " + lines[i].strip()
            found.append((start + 1, match.group(1), text))
        i += 1
    return found


def shell_words(text: str) -> list[str]:
    """Split as bash does, after setting the docs' variables; `...` (elided arguments) is dropped."""
    for name, value in VARIABLES.items():
        text = text.replace(f"${name}", value)
    text = re.sub(r"<[^<>]+>", "placeholder", text)  # `<run dir>`-style placeholders, where docs still use them
    return [w for w in shlex.split(text, comments=True) if w != "..."]


def overrides_of(module: str, words: list[str]) -> tuple[list[str], bool, list[str]]:
    """(overrides, multirun, other flags) of a command's words, sweeps reduced to their first value."""
    multirun = any(w in ("-m", "--multirun") for w in words)
    flags = [w for w in words if w.startswith("--")]
    overrides = [w for w in words if w not in ("-m", "--multirun") and not w.startswith("--")]
    if module == "deco.explain":
        from deco.explain.__main__ import FREE_TEXT_KEYS
        from deco.utils.overrides import quote_free_text

        overrides = quote_free_text(overrides, FREE_TEXT_KEYS)
    if multirun:
        parser, first = OverridesParser.create(), []
        for override in parser.parse_overrides(overrides):
            if override.is_sweep_override():
                value = next(iter(override.sweep_string_iterator()))
                first.append(f"{override.get_key_element()}={value}")
            else:
                first.append(override.input_line)
        overrides = first
    return overrides, multirun, flags


def missing_keys(cfg, prefix: str = "") -> list[str]:
    """Keys left `???`, found without resolving interpolations (those need a running Hydra job)."""
    found = []
    keys = range(len(cfg)) if isinstance(cfg, ListConfig) else list(cfg.keys())
    for key in keys:
        node = cfg._get_node(key)
        name = f"{prefix}{key}"
        if node._is_missing():
            found.append(name)
        elif isinstance(node, (DictConfig, ListConfig)) and not node._is_interpolation() and not node._is_none():
            found += missing_keys(node, name + ".")
    return found


ALL = [(path.name, line, module, text) for path in DOCS for line, module, text in doc_commands(path)]


def test_the_docs_have_commands_for_every_job():
    modules = {module for _, _, module, _ in ALL}
    assert set(JOBS) <= modules, f"no documented command for {set(JOBS) - modules}"
    assert len(ALL) > 40


@pytest.mark.parametrize("doc,line,module,text", ALL, ids=[f"{d}:{n}" for d, n, _, _ in ALL])
def test_documented_command_composes(doc, line, module, text):
    assert module in JOBS, f"{doc}:{line}: python -m {module} is not an entry point"
    overrides, _, flags = overrides_of(module, shell_words(text))
    assert set(flags) <= {"--help", "--cfg"}, flags
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=JOBS[module], overrides=overrides, return_hydra_config=True)
    assert cfg.task_name  # composed: every key exists, every group option resolves
    missing = [k for k in missing_keys(cfg) if not k.startswith("hydra.")]
    assert not missing, f"{doc}:{line}: the command leaves required keys unset: {missing}"
    if module == "deco.explain":  # prose arrives as typed, commas and all
        for word in shell_words(text):
            key, _, value = word.partition("=")
            if key in ("text", "question"):
                assert cfg[key] == value


def test_help_of_every_entry_point(tmp_path):
    """`python -m <job> --help` for the six batch jobs through Hydra's help (runpy, one interpreter): deco's text."""
    script = (
        "import runpy, sys\n"
        f"for module in {HELP_JOBS!r}:\n"
        "    sys.argv = [module, '--help']\n"
        "    try:\n"
        "        runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), (module, e.code)\n"
        "    print('=== end', module, flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    for module in HELP_JOBS:
        section = re.split(r"=== end \S+\n", result.stdout.split(f"=== end {module}\n")[0])[-1]
        assert section.strip().startswith(f"python -m {module}: "), section[:300]  # what it does, first
        assert "Required keys" in section and "Examples:\n  python -m " + module in section, module
        assert "powered by Hydra" not in section and "== Config ==" not in section, module


def test_help_answers_before_torch_is_imported():
    """`python -m deco.<job> --help` is answered at `import deco` (deco/utils/job_help.py): torch, Lightning
    and transformers are never imported, and the text is the one Hydra's help template prints."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "deco.train", "projector=qformer", "--help"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "lightning", "transformers"}, sorted(imported & {"torch", "lightning"})
    assert result.stdout.startswith("python -m deco.train: pretrain or finetune")
    assert "  projector       avgpool, cabstractor" in result.stdout and "qformer*" in result.stdout  # the override
    assert "  benchmark" not in result.stdout and "  model           llava15_7b, tiny*, tiny_scratch" in result.stdout


def first_15_minutes() -> list[tuple[str, list[str]]]:
    """The README's "first 15 minutes" commands (module, words), in order."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## The first 15 minutes"):]
    block = block[block.index("```bash"):]
    block = block[: block.index("```", 7)]
    return [(m.group(1), m.group(2)) for m in map(COMMAND.match, block.splitlines()) if m]


@pytest.mark.slow
def test_first_15_minutes_run_as_typed_with_debug_fast(tmp_path):
    """Each command of the README's path, as typed plus debug=fast and a run dir under tmp_path; RUN and
    SWEEP are set to the dirs the training commands made, as a reader would from their last lines."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    dirs: dict[str, Path] = {}
    steps = first_15_minutes()
    assert [m for m, _ in steps] == ["deco.train", "deco.train", "deco.evaluate", "deco.explain", "deco.train",
                                     "deco.explain", "deco.report"]
    outputs = []
    for k, (module, text) in enumerate(steps):
        for name, path in dirs.items():
            text = text.replace(f"${name}", str(path))
        words = [w for w in shlex.split(text, comments=True) if w != "debug=fast"]
        multirun = "-m" in words
        out = tmp_path / f"{k}-{module}"
        where = f"hydra.sweep.dir={out}" if multirun else f"hydra.run.dir={out}"
        if module == "deco.train" and not multirun:
            dirs["RUN"] = out
        if multirun:
            dirs["SWEEP"] = out
        extra = ["logger=none"] if module == "deco.train" else []
        result = subprocess.run([sys.executable, "-m", module, *words, "debug=fast", where, *extra], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, env=env)
        assert result.returncode == 0, f"{module} {text}\n{result.stdout[-3000:]}"
        last = result.stdout.strip().splitlines()[-1]
        assert "outputs in" in last or "sweep done" in last, last
        outputs.append(out)
    assert (outputs[3] / "R_t2i-rgae-Red-avgpool2_64.png").is_file()
    assert (outputs[5] / "comparison-rgae-Red.png").is_file()
    summary = (dirs["SWEEP"] / "report" / "summary.md").read_text()
    assert "shapes_attribute/accuracy" in summary and "| finetune | linear-576 |" in summary, summary
