"""The library's shape (one house by role): no import cycle among ddflow's modules, no module over 400 lines, and
imports only go down the floors:

  stages/ (one runner per rule file) and the tools above it (cli, smoke, interop, report, ...)
  ------------------------------------------------------------------------------------------- STAGES_FLOOR
  methods/ -> protocols/ -> records/ (file formats) -> nets, ops, augment, data, train, io, errors, ...

`methods/` and `protocols/` never import `stages/` (a method reads a stage's output through `records/`),
`protocols/` never imports `methods/` (the evaluation runner hands in what a protocol needs of a method), and no
module below `stages/` imports it, however indirectly. The import graph is read from the source (every `import` /
`from ... import`, at any depth, resolved to ddflow modules), so a lazy import inside a function counts too."""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "ddflow").rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            mod = node.module or ""
            base = (f"{base}.{mod}" if mod else base) if node.level else mod
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # `from .x import name`: name is an attribute, its module is x
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name and not name.startswith(t + "."):  # a package's own parents are not an edge
                found.add(t)
    return found


# the modules below stages/: packages (the package and everything in it) and top-level modules
BELOW_STAGES = ("data", "ops", "nets", "records", "methods", "protocols", "augment", "io", "errors",
                "hparams", "seeding", "progress", "runtime", "train", "gpu_slots")
# stages/ and what drives it: the command line, the workflow's parse-time checks, tools, reports
AT_OR_ABOVE_STAGES = ("stages", "cli", "commands", "__main__", "config", "settings", "distill", "whole", "smoke",
                      "speed", "interop", "report")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _within(module: str, package: str) -> bool:
    return module == f"ddflow.{package}" or module.startswith(f"ddflow.{package}.")


def _reaches(graph: dict[str, set[str]], start: str, package: str) -> list[str] | None:
    """The shortest import chain from `start` to a module of `package`, or None."""
    paths, seen = [[start]], {start}
    while paths:
        nxt = []
        for path in paths:
            for n in sorted(graph[path[-1]]):
                if _within(n, package):
                    return path + [n]
                if n not in seen:
                    seen.add(n)
                    nxt.append(path + [n])
        paths = nxt
    return None


def _violations(graph: dict[str, set[str]], floor: tuple[str, ...], target: str) -> list[str]:
    return [" -> ".join(chain) for m in sorted(graph) if any(_within(m, f) for f in floor)
            and (chain := _reaches(graph, m, target))]


def test_every_module_has_a_floor():
    """A new module is placed below stages/ or at/above it here, so that the floor rules cover it."""
    floors = BELOW_STAGES + AT_OR_ABOVE_STAGES
    assert not [m for m in _modules() if m != "ddflow" and not any(_within(m, f) for f in floors)]


def test_the_stages_package_exists_with_a_runner_per_stage():
    modules = _modules()
    for stage in ("featnet", "experts", "sampling"):
        assert f"ddflow.stages.{stage}" in modules
        assert "run" in {n.name for n in ast.parse(modules[f"ddflow.stages.{stage}"].read_text()).body
                         if isinstance(n, ast.FunctionDef)}, stage


@pytest.mark.parametrize("floor", [("methods",), ("protocols",), BELOW_STAGES], ids=["methods", "protocols", "below"])
def test_nothing_below_stages_imports_stages(floor):
    assert not _violations(_graph(), floor, "stages")


def test_protocols_never_import_methods():
    assert not _violations(_graph(), ("protocols",), "methods")


def test_the_floor_rules_see_an_import_that_climbs_back_up():
    graph = {"ddflow.methods.mtt": {"ddflow.records.experts"}, "ddflow.records.experts": {"ddflow.stages.experts"},
             "ddflow.stages.experts": set(), "ddflow.protocols.cell": {"ddflow.methods.mtt"}}
    assert _violations(graph, ("methods",), "stages") == [
        "ddflow.methods.mtt -> ddflow.records.experts -> ddflow.stages.experts"]
    assert _violations(graph, ("protocols",), "methods") == ["ddflow.protocols.cell -> ddflow.methods.mtt"]
    assert not _violations(graph, ("stages",), "methods")


def test_no_import_cycle_among_library_modules():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_library_module_is_over_400_lines():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


# The commands that read only JSON, YAML and npz files (ddflow.cli.WITHOUT_TORCH) and the modules their handlers in
# ddflow.commands import (`table` of a cells spec: a timing or xarch spec imports torch, reading .pt records or the
# protocols): each job of theirs is a fresh process, and `import torch` costs about two CPU-seconds of it.
TORCH_FREE = {"data": ("ddflow.data",), "validation-split": ("ddflow.data.validation",),
              "table": ("ddflow.report.tables",), "results-matrix": ("ddflow.report.matrix",),
              "acc-vs-ipc": ("ddflow.report.figures",)}
_TORCH_FREE_SCRIPT = """
import json, sys
from pathlib import Path
from ddflow.cli import build_parser, main
from ddflow.runtime import setup, versions
build_parser()
setup()
versions(None, uses_torch=False)
commands, tmp = json.loads(sys.argv[1]), Path(sys.argv[2])
loaded = {}
for command, modules in commands.items():
    for m in modules:
        __import__(m)
    loaded[command] = "torch" in sys.modules
cells = []
for i, (method, accs) in enumerate((("random", [60.0, 62.0]), ("dm", [80.0, 81.0]))):
    cells.append(str(tmp / f"c{i}.json"))
    Path(cells[-1]).write_text(json.dumps({"protocol": "dc", "method": method, "dataset": "mnist5k", "ipc": 1,
                                           "seed": 0, "accuracies": accs}))
runs = {"table": ["--spec", "workflow/papers/dream_t1.yaml", "--datasets", "mnist5k", "--ipcs", "1",
                  "--out-prefix", str(tmp / "t"), *cells],
        "acc-vs-ipc": ["--dataset", "mnist5k", "--out", str(tmp / "f.png"), *cells],
        "results-matrix": ["--results", str(tmp / "none"), "--out", str(tmp / "m.md")]}
for command, args in runs.items():
    assert main([command, *args]) == 0, command
    loaded[command + " (run)"] = "torch" in sys.modules
assert '"torch": null, "torch_threads": null' in (tmp / "t.md").read_text()  # made by: no torch (runtime.provenance)
print(json.dumps(loaded))
"""


def test_the_commands_that_read_only_files_start_without_torch(tmp_path):
    """The jobs of these commands (tables, the accuracy-vs-IPC figure, the data and its validation split) never
    import torch: imported through the command line's modules and their handlers' imports, then three of them run
    on two cells, in a fresh process, torch is not among its modules after any of them (in command order: the first
    marked true brought it in)."""
    import json
    import os
    import subprocess
    import sys

    from ddflow.cli import WITHOUT_TORCH
    assert set(WITHOUT_TORCH) == set(TORCH_FREE)
    env = {k: v for k, v in os.environ.items() if k != "SNAKEMAKE_THREADS"}  # it would set torch's threads
    proc = subprocess.run([sys.executable, "-c", _TORCH_FREE_SCRIPT, json.dumps(TORCH_FREE), str(tmp_path)],
                          cwd=SRC.parent, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.splitlines()[-1])
    assert list(loaded) == [*TORCH_FREE, "table (run)", "acc-vs-ipc (run)", "results-matrix (run)"]
    assert not any(loaded.values()), loaded
