"""The conda environments of `snakemake --sdm conda` (envs/*.yaml) and how the jobs find ddflow.

A real `conda env create` cannot run here (conda-forge is unreachable, and neither conda nor micromamba installs from
PyPI or Debian), so these tests check what makes the conda path work: Snakemake 9 copies an env file to
.snakemake/conda/<hash>.yaml and runs `conda env create --file` on that copy (snakemake/deployment/conda.py,
Env.create -> create_env: copy_permission_safe(env_file, target_env_file)), and conda runs pip from the copy's
folder, so the envs must name no local path; they hold ddflow's dependencies at the pinned versions, and every job
puts the checkout's src/ first on PYTHONPATH (workflow/rules/common.smk), which the last test runs for real."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))
IMPORT_NAME = {"pyyaml": "yaml", "pillow": "PIL", "scikit-learn": "sklearn"}   # distribution -> module
JOB_FREE = {"snakemake", "snakemake-executor-plugin-slurm"}   # Snakemake runs outside the env, only jobs inside


def pip_requirements(env: dict) -> list[Requirement]:
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    return [Requirement(r) for block in pips for r in block]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def constraints() -> dict[str, str]:
    pins = [line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    return {name.lower(): version for name, version in pins}


def rule_envs() -> dict[str, Path]:
    """Each rule with a `conda:` directive -> the env file it names, resolved as Snakemake does (relative to the
    rule file), through the constants common.smk defines."""
    common = (ROOT / "workflow/rules/common.smk").read_text()
    consts = dict(re.findall(r'^(\w*ENV) = "([^"]+)"', common, re.M))
    out = {}
    for smk in sorted((ROOT / "workflow/rules").glob("*.smk")):
        for name, body in re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", smk.read_text(), re.M | re.S):
            m = re.search(r"^    conda:\n\s+(\S+)", body, re.M)
            if m:
                out[name] = (smk.parent / consts.get(m.group(1), m.group(1).strip('"'))).resolve()
    return out


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_file_parses_and_names_no_local_path(path):
    env = yaml.safe_load(path.read_text())
    assert env["channels"] and env["dependencies"], path
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"]), "the Python that CI tests"
    for line in [str(d) for d in env["dependencies"]] + [str(r) for b in env["dependencies"] if isinstance(b, dict)
                                                           for r in b.get("pip", [])]:
        # `-e ..` resolves against .snakemake/conda/ (the copy), never against the checkout
        assert not re.search(r"(^-e\b|^\.|^/|file:|\.\./|\s\.$)", line), f"{path.name}: local path {line!r}"


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_requirements_match_pyproject_and_constraints(path):
    deps = {Requirement(d).name.lower(): Requirement(d) for d in pyproject()["dependencies"]}
    pins = constraints()
    reqs = pip_requirements(yaml.safe_load(path.read_text()))
    assert reqs
    for r in reqs:
        name = r.name.lower()
        assert name in deps, f"{path.name}: {name} is not a dependency of pyproject.toml"
        (version,) = [s.version for s in r.specifier]
        assert deps[name].specifier.contains(version), f"{path.name}: {r} outside pyproject's {deps[name]}"
        assert pins.get(name) == version, f"{path.name}: {r} differs from constraints.txt ({pins.get(name)})"


def test_full_env_has_every_runtime_dependency_but_snakemake():
    full = {r.name.lower() for r in pip_requirements(yaml.safe_load((ROOT / "envs/ddflow.yaml").read_text()))}
    wanted = {Requirement(d).name.lower() for d in pyproject()["dependencies"]} - JOB_FREE
    assert full == wanted
    for py in (ROOT / "src/ddflow").rglob("*.py"):   # which is why the jobs can do without Snakemake
        assert not re.search(r"^\s*(import|from) snakemake", py.read_text(), re.M), py


def test_every_rule_names_an_existing_env():
    envs = rule_envs()
    assert {"distill", "evaluate", "table", "data"} <= set(envs)
    assert all(p.exists() and p.parent == ROOT / "envs" for p in envs.values()), envs
    assert envs["table"].name == "report.yaml" and envs["distill"].name == "ddflow.yaml"


def test_report_env_rules_import_nothing_outside_it():
    """Each rule on envs/report.yaml: the ddflow modules its CLI command imports load with every package of the full
    env that the report env lacks made unimportable."""
    full = {r.name.lower() for r in pip_requirements(yaml.safe_load((ROOT / "envs/ddflow.yaml").read_text()))}
    small = {r.name.lower() for r in pip_requirements(yaml.safe_load((ROOT / "envs/report.yaml").read_text()))}
    blocked = sorted(IMPORT_NAME.get(n, n) for n in full - small) + ["sklearn", "snakemake"]
    assert "torchvision" in blocked and "mlxtend" in blocked
    cli = (ROOT / "src/ddflow/cli.py").read_text()
    handlers = (ROOT / "src/ddflow/commands.py").read_text()  # the parsers' handlers (ddflow.commands)
    rules = [n for n, p in rule_envs().items() if p.name == "report.yaml"]
    modules = {"ddflow.cli", "ddflow.runtime"}
    for smk in (ROOT / "workflow/rules").glob("*.smk"):
        for name, body in re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", smk.read_text(), re.M | re.S):
            if name in rules:
                (cmd,) = re.findall(r"python -m ddflow ([\w-]+)", body)
                fn = re.search(rf'add_parser\("{cmd}".*?set_defaults\(fn=(\w+)\)', cli, re.S)
                fn = fn.group(1) if fn else "cmd_" + cmd.replace("-", "_")
                src = re.search(rf"^def {fn}\(.*?(?=^def |\Z)", handlers, re.M | re.S)
                if src:
                    modules |= {"ddflow" + m for m in re.findall(r"from (\.[\w.]+) import", src.group(0))}
                    continue
                # a command that its own module registers (cli.py: `from .report.fair import add_parser`)
                owners = [m for m in re.findall(r"from (\.[\w.]+) import add_parser", cli)
                          if f'"{cmd}"' in (ROOT / "src/ddflow" / (m[1:].replace(".", "/") + ".py")).read_text()]
                assert owners, f"rule {name}: no module of cli.py registers the command {cmd!r}"
                modules |= {"ddflow" + m for m in owners}
    code = (f"import sys, importlib, importlib.abc\nblocked = {blocked!r}\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in blocked:\n"
            "            raise ImportError('not in envs/report.yaml: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            f"for m in {sorted(modules)!r}:\n    importlib.import_module(m)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(rules) >= 5 and "ddflow.report.tables" in modules


@pytest.mark.workflow
def test_jobs_run_the_checkouts_src_first(tmp_path):
    """A job imports ddflow from this checkout's src/ even when PYTHONPATH names another ddflow first (as a conda
    env that lacks ddflow, or an installed older copy, would): here a decoy whose every command fails."""
    decoy = tmp_path / "decoy" / "ddflow"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("")
    (decoy / "__main__.py").write_text("raise SystemExit('decoy ddflow ran')\n")
    import os
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'decoy'}:{ROOT / 'src'}"}
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(work),
                           "--configfile", str(ROOT / "config.yaml"), "--cores", "1", "results/data/mnist5k.npz"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "results/data/mnist5k.npz").exists()
