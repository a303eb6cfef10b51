"""README.md and docs/*.md say only what a machine can confirm: paths that exist, links that stay in the
repository, and defaults that equal the composed configs. (`tests/test_docs_commands.py` composes their commands.)

- every repository path they name (`deco/...`, `configs/...`, `docs/...`, `experiments/...`, `notebooks/...`,
  `tests/...`, in prose, code or links) exists;
- every Markdown link is a web address or a file inside the repository, and no `../` path leaves it;
- every `| key | default | ... |` table row, every `` `key=value` (default) `` / `` `key=value` is the default ``
  phrase and every "(default)" in README's config-group table equals what Hydra composes;
- README's config-group table names every option each group has.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import yaml
from conftest import CONFIG_DIR
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PATH = re.compile(r"(?<![\w/.$<>{-])((?:deco|configs|docs|experiments|notebooks|tests|\.ci)/[\w./*-]*[\w/*])")
# Paths that runs create (not in a fresh clone); a doc may name them.
CREATED = ("experiments/projector_study/runs", "experiments/perf/results_smoke.json")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Which composed config a `| key | default |` table documents, by its first key.
TABLE_CONFIGS = {
    "data.json_path": ("train", ["data=llava_json"]),
    "data.path": ("train", ["data=wds"]),
    "ckpt": ("evaluate", []),
}
JOBS = ("train", "evaluate", "explain", "export", "report", "to_wds", "zoo")


@functools.lru_cache(maxsize=None)  # read only: one composition per (job, overrides) for the whole file
def composed(job: str, overrides: tuple[str, ...] = ()):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=job, overrides=list(overrides), return_hydra_config=True)


def lines_of(path: Path):
    return list(enumerate(path.read_text().splitlines(), 1))


def named_paths() -> list[tuple[str, int, str]]:
    found = []
    for doc in DOCS:
        for n, line in lines_of(doc):
            for match in PATH.finditer(line):
                found.append((doc.name, n, match.group(1).rstrip(".")))
    return found


PATHS = named_paths()


def test_the_docs_name_repository_paths():
    assert len(PATHS) > 50  # the extractor finds them


@pytest.mark.parametrize("doc,line,path", PATHS, ids=[f"{d}:{n}:{p}" for d, n, p in PATHS])
def test_every_named_path_exists(doc, line, path):
    if path.startswith(CREATED):
        return
    exists = any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()
    assert exists, f"{doc}:{line}: {path} does not exist in the repository"


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_no_link_leaves_the_repository(doc):
    bad = []
    for n, line in lines_of(doc):
        for target in LINK.findall(line):
            if re.match(r"(https?|mailto):", target) or target.startswith("#"):
                continue
            where = (doc.parent / target.split("#")[0]).resolve()
            if not where.is_relative_to(ROOT) or not where.exists():
                bad.append(f"{doc.name}:{n}: link {target}")
        for up in re.findall(r"(?<![\w/])(?:\.\./)+[\w./-]+", line):
            if not (doc.parent / up).resolve().is_relative_to(ROOT):
                bad.append(f"{doc.name}:{n}: {up} is outside the repository")
        if "/work/" in line or "/home/" in line:
            bad.append(f"{doc.name}:{n}: a machine path")
    assert not bad, "\n".join(bad)


def literal(text: str):
    """A table cell or `key=value` value as YAML reads it; None when it is prose (not checkable)."""
    text = text.strip().strip("`").strip()
    if text == "required":
        return "???"
    if not re.fullmatch(r"[\w.+-]+", text):
        return None
    return yaml.safe_load(text) if text != "null" else "null"


def config_value(cfg, key: str):
    if (
        key in cfg.hydra.runtime.choices
        and OmegaConf.select(cfg, key) is not None
        and OmegaConf.is_dict(OmegaConf.select(cfg, key))
    ):
        return cfg.hydra.runtime.choices[key]  # a config group: its chosen option
    node = OmegaConf.select(cfg, key, throw_on_missing=False, throw_on_resolution_failure=False)
    parent, _, leaf = key.rpartition(".")
    holder = OmegaConf.select(cfg, parent) if parent else cfg
    if holder is not None and OmegaConf.is_dict(holder) and OmegaConf.is_missing(holder, leaf):
        return "???"
    return "null" if node is None else node


def default_tables() -> list[tuple[str, int, str, str, str]]:
    rows, table_key = [], None
    for doc in DOCS:
        for n, line in lines_of(doc):
            cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
            if not cells:
                table_key = None
            elif cells[:2] == ["key", "default"]:
                table_key = ""
            elif table_key is not None and not set(cells[0]) <= set("-: "):
                table_key = table_key or cells[0].strip("`")
                rows.append((doc.name, n, table_key, cells[0], cells[1]))
    return rows


TABLE_ROWS = default_tables()


@pytest.mark.parametrize("doc,line,first,keys,default", TABLE_ROWS, ids=[f"{r[0]}:{r[1]}" for r in TABLE_ROWS])
def test_table_defaults_equal_the_config(doc, line, first, keys, default):
    assert first in TABLE_CONFIGS, f"{doc}:{line}: a default table starting with {first}: add it to TABLE_CONFIGS"
    job, overrides = TABLE_CONFIGS[first]
    cfg = composed(job, tuple(overrides))
    names = [k.strip().strip("`") for k in keys.split(",")]
    values = [v for v in default.split(",")] if len(names) > 1 else [default]
    for name, value in zip(names, values):
        expected = literal(value)
        if expected is None:
            continue  # prose ("the JSON's folder")
        assert str(config_value(cfg, name)) == str(expected), f"{doc}:{line}: {name} default {value.strip()}"


INLINE = re.compile(r"`([\w.]+)=([\w.-]+)` (?:\(default|is the default)")


def inline_defaults() -> list[tuple[str, int, str, str]]:
    return [
        (doc.name, n, m.group(1), m.group(2))
        for doc in DOCS
        for n, line in lines_of(doc)
        for m in INLINE.finditer(line)
    ]


INLINE_ROWS = inline_defaults()


def test_inline_defaults_are_found():
    assert {(k, v) for _, _, k, v in INLINE_ROWS} >= {("resume", "auto"), ("fault.on_nan", "stop")}


@pytest.mark.parametrize("doc,line,key,value", INLINE_ROWS, ids=[f"{r[0]}:{r[1]}" for r in INLINE_ROWS])
def test_inline_defaults_equal_the_config(doc, line, key, value):
    seen = {}
    for job in JOBS:
        cfg = composed(job)
        if OmegaConf.select(cfg, key, throw_on_missing=False, throw_on_resolution_failure=False) is not None:
            seen[job] = str(config_value(cfg, key))
    text = dict(lines_of(ROOT / "docs" / doc if doc != "README.md" else ROOT / doc))[line]
    for projector in re.findall(r"`(\w+)`", text):  # a projector's own key, in that projector's row
        if not seen and (Path(CONFIG_DIR) / "projector" / f"{projector}.yaml").is_file():
            cfg = composed("train", (f"projector={projector}",))
            if OmegaConf.select(cfg, f"projector.{key}") is not None:
                seen[f"projector={projector}"] = str(cfg.projector[key])
    assert seen, f"{doc}:{line}: no job has the key {key}"
    assert value in seen.values(), f"{doc}:{line}: {key}={value} is called the default; the configs say {seen}"


def group_table() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `([\w/]+)`(?: \(\w+\))? \| (.*) \|$", text, re.M)}


def test_readme_group_table_names_every_option_and_the_right_default():
    table, cfg = group_table(), composed("train")
    assert {"model", "projector", "data", "stage", "trainer", "logger", "callbacks", "experiment"} <= set(table)
    for group, row in table.items():
        folder = Path(CONFIG_DIR) / group
        if group == "benchmark" or not folder.is_dir():
            continue  # benchmark names are abbreviated (refcoco(_plus, g)); test_docs_commands composes them
        options = {p.stem for p in folder.glob("*.yaml")}
        named = set(re.findall(r"`(\w+)`", row))
        assert options <= named, f"README's `{group}` row misses {sorted(options - named)}"
        marked = re.findall(r"`(\w+)` \(default", row)
        if marked:
            assert marked == [cfg.hydra.runtime.choices[group]], f"README calls {marked} the default {group}"


def test_documented_outputs_in_the_repository_are_ignored_and_cleaned():
    """Every relative `out_dir=` folder of a documented command is git-ignored and removed by `make clean`."""
    import subprocess

    outs = {
        m.group(1).strip("/").split("/")[0]
        for doc in DOCS
        for m in re.finditer(r"\bout(?:_dir)?=([\w.-][\w./-]*)", doc.read_text())
    }
    assert {"exported", "hf", "shards"} <= outs
    make = (ROOT / "Makefile").read_text()
    cleaned = set(re.search(r"^DOC_OUTPUTS := (.*)$", make, re.M).group(1).split())
    assert outs <= cleaned, f"make clean leaves {sorted(outs - cleaned)}"
    ignored = subprocess.run(
        ["git", "check-ignore", *[f"{o}/x" for o in sorted(outs)]], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    assert len(ignored) == len(outs), f"not git-ignored: {sorted(outs - {i.split('/')[0] for i in ignored})}"
