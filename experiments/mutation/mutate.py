"""A small mutation tester for deco's relevance code: do the tests notice when the code is subtly wrong?

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python experiments/mutation/mutate.py            # every target below
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python experiments/mutation/mutate.py deco/explain/score.py --list

Each mutant changes one site of one target file (operators as mutmut's: + <-> -, * <-> /, < <-> <=,
> <-> >=, == <-> !=, is <-> is not, in <-> not in, and <-> or, unary - and `not` dropped, an int
constant n -> n + 1, a float x -> x + 1, True <-> False, a slice bound b -> b + 1). Strings, docstrings,
annotations and the arguments of `raise` / logging calls are not mutated. The tests named for the file in
`TARGETS` run once unmutated in this process (building the cached tiny models); then per mutant a forked
child executes the mutated module source into the live module, rebinds every name other modules imported
from it, and runs the same tests with `-x`. A mutant is killed when a test fails or errors, or the child
runs past `--timeout`; it survives when all pass. Prints one line per surviving mutant and the score;
`--json` writes every result.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXPLAIN = "tests/explain/"
TARGETS = {
    "deco/relevance/gae.py": ["test_explain_gae.py", "test_explain_independent.py", "test_explain_vit.py"],
    "deco/relevance/vit.py": ["test_explain_vit.py"],
    "deco/explain/llm_relevance.py": ["test_explain_trace.py", "test_explain_independent.py", "test_explain_reduction.py",
                                      "test_explain_methods.py", "test_explain_attention.py"],
    "deco/explain/methods.py": ["test_explain_trace.py", "test_explain_independent.py", "test_explain_reduction.py",
                                "test_explain_methods.py", "test_explain_vit.py", "test_explain_new_methods.py"],
    "deco/explain/score.py": ["test_explain_score_rules.py", "test_explain_score.py", "test_explain_faithfulness.py",
                              "test_explain_tam_iou.py"],
    "deco/explain/summary.py": ["test_explain_score_rules.py", "test_explain_score.py", "test_explain_faithfulness.py",
                                "test_explain_tam_iou.py"],
    "deco/explain/tam_iou.py": ["test_explain_tam_iou.py"],
    "deco/explain/attnlrp.py": ["test_explain_attnlrp.py"],
}

_BINOPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
           ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv}
_CMPOPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
           ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}


def _skipped(node: ast.AST) -> bool:
    """Nodes whose subtree carries messages or types, not behaviour."""
    if isinstance(node, (ast.Raise, ast.JoinedStr, ast.arg)):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
        return node.func.value.id in ("log", "logging", "warnings")
    return False


class _Mutator(ast.NodeTransformer):
    """Counts mutation sites in a fixed order; mutates site `target` (None: only count and describe)."""

    def __init__(self, target: int | None = None):
        self.target, self.count, self.sites = target, 0, []

    def _site(self, node: ast.AST, what: str) -> bool:
        hit = self.count == self.target
        self.sites.append((getattr(node, "lineno", 0), what))
        self.count += 1
        return hit

    def generic_visit(self, node):
        if _skipped(node):
            return node
        return super().generic_visit(node)

    def visit_AnnAssign(self, node):
        node.value = self.visit(node.value) if node.value is not None else None
        return node

    def visit_FunctionDef(self, node):  # defaults, body and decorators; not the annotations
        node.args = self._visit_defaults(node.args)
        node.body = [self.visit(stmt) for stmt in node.body]
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        return node

    def _visit_defaults(self, args: ast.arguments) -> ast.arguments:
        args.defaults = [self.visit(d) for d in args.defaults]
        args.kw_defaults = [self.visit(d) if d is not None else None for d in args.kw_defaults]
        return args

    def visit_Expr(self, node):  # docstrings and bare strings
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return node
        return self.generic_visit(node)

    def visit_BinOp(self, node):
        self.generic_visit(node)
        new = _BINOPS.get(type(node.op))
        if new is not None and self._site(node, f"{type(node.op).__name__} -> {new.__name__}"):
            node.op = new()
        return node

    def visit_AugAssign(self, node):
        self.generic_visit(node)
        new = _BINOPS.get(type(node.op))
        if new is not None and self._site(node, f"{type(node.op).__name__}= -> {new.__name__}="):
            node.op = new()
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        for i, op in enumerate(node.ops):
            new = _CMPOPS.get(type(op))
            if new is not None and self._site(node, f"{type(op).__name__} -> {new.__name__}"):
                node.ops[i] = new()
        return node

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        if self._site(node, f"{type(node.op).__name__} -> {new.__name__}"):
            node.op = new()
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, (ast.USub, ast.Not)) and self._site(node, f"drop {type(node.op).__name__}"):
            return node.operand
        return node

    def visit_Constant(self, node):
        value = node.value
        if isinstance(value, bool):
            if self._site(node, f"{value} -> {not value}"):
                return ast.copy_location(ast.Constant(not value), node)
        elif isinstance(value, (int, float)) and not isinstance(value, complex):
            if self._site(node, f"{value!r} -> {value + 1!r}"):
                return ast.copy_location(ast.Constant(value + 1), node)
        return node

    def visit_Slice(self, node):
        self.generic_visit(node)
        for side in ("lower", "upper"):
            bound = getattr(node, side)
            if bound is not None and self._site(bound, f"slice {side} + 1"):
                setattr(node, side, ast.BinOp(left=bound, op=ast.Add(), right=ast.Constant(1)))
        return node


def mutants(source: str) -> list[tuple[int, str]]:
    counter = _Mutator()
    counter.visit(ast.parse(source))
    return counter.sites


def mutated_source(source: str, index: int) -> str:
    tree = _Mutator(index).visit(ast.parse(source))
    return ast.unparse(ast.fix_missing_locations(tree))


def _install(module_name: str, path: Path, source: str) -> None:
    """Execute `source` into the live module and point every other module's imported names at the new objects."""
    module = sys.modules[module_name]
    old = dict(vars(module))
    exec(compile(source, str(path), "exec"), vars(module))
    swap = {id(value): vars(module)[name] for name, value in old.items()
            if name in vars(module) and vars(module)[name] is not value
            and isinstance(value, (types.FunctionType, type, dict, tuple))}
    for other in list(sys.modules.values()):
        if other is module or not isinstance(other, types.ModuleType):
            continue
        try:
            items = list(vars(other).items())
        except TypeError:
            continue
        for name, value in items:
            if id(value) in swap:
                setattr(other, name, swap[id(value)])


def _run_tests(tests: list[str]) -> int:
    import pytest

    args = ["-q", "-x", "-m", "not slow", "-p", "no:cacheprovider", "--no-header", "-W", "ignore", *tests]
    with open(os.devnull, "w") as sink:
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = sink
        try:
            return int(pytest.main(args))
        finally:
            sys.stdout, sys.stderr = stdout, stderr


def start_mutant(module_name: str, path: Path, source: str, tests: list[str]) -> int:
    """Fork a child that installs the mutant and runs the tests; exit 0 = all passed (survived)."""
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 3
        try:
            _install(module_name, path, source)
            code = 0 if _run_tests(tests) == 0 else 1
        except BaseException:  # the mutant does not even import: killed
            code = 2
        os._exit(code)
    return pid


def run_mutants(module_name: str, path: Path, sources: list[str], tests: list[str], timeout: float,
                jobs: int) -> list[str]:
    """Outcome per mutant ("killed", "survived", "timeout"), at most `jobs` children at a time."""
    outcomes: list[str | None] = [None] * len(sources)
    running: dict[int, tuple[int, float]] = {}  # pid -> (mutant index, deadline)
    queue = list(range(len(sources)))
    while queue or running:
        while queue and len(running) < jobs:
            i = queue.pop(0)
            running[start_mutant(module_name, path, sources[i], tests)] = (i, time.monotonic() + timeout)
        for pid, (i, deadline) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                outcomes[i] = "survived" if os.waitstatus_to_exitcode(status) == 0 else "killed"
            elif time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                outcomes[i] = "timeout"
            else:
                continue
            del running[pid]
        time.sleep(0.05)
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", default=list(TARGETS), help="target files (default: all of TARGETS)")
    parser.add_argument("--list", action="store_true", help="list the mutation sites and exit")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per mutant before it counts as killed")
    parser.add_argument("--json", type=Path, default=None, help="write every mutant's result here")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (forked children)")
    args = parser.parse_args()
    os.chdir(ROOT)
    sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "explain")]
    results, killed, total = [], 0, 0
    for file in args.files:
        if file not in TARGETS:
            raise SystemExit(f"{file}: not a mutation target; choose among: {', '.join(TARGETS)}")
        path = ROOT / file
        source = path.read_text()
        sites = mutants(source)
        if args.list:
            for i, (line, what) in enumerate(sites):
                print(f"{file}:{line} #{i} {what}")
            continue
        tests = [EXPLAIN + t for t in TARGETS[file] if (ROOT / EXPLAIN / t).exists()]
        module_name = file[:-3].replace("/", ".")
        __import__(module_name)
        if _run_tests(tests) != 0:
            raise SystemExit(f"{file}: the unmutated tests {tests} fail; fix them first")
        outcomes = run_mutants(module_name, path, [mutated_source(source, i) for i in range(len(sites))], tests,
                               args.timeout, args.jobs)
        for i, ((line, what), outcome) in enumerate(zip(sites, outcomes)):
            results.append({"file": file, "line": line, "index": i, "mutation": what, "outcome": outcome})
            total += 1
            killed += outcome != "survived"
            if outcome == "survived":
                print(f"SURVIVED {file}:{line} #{i} {what}", flush=True)
        print(f"{file}: {sum(r['outcome'] != 'survived' for r in results if r['file'] == file)} of "
              f"{sum(r['file'] == file for r in results)} killed", flush=True)
    if args.list:
        return 0
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"mutation score: {killed} of {total} killed ({100.0 * killed / max(total, 1):.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
