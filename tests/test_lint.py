"""The workflow and the code are lint-clean: `snakemake --lint`, `snakefmt --check` (line length 120, from
pyproject.toml) and `ruff check` (pyproject.toml's rules) on src/, tests/ and benchmarks/. Fast (seconds)."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    """The console script of a [test] dependency: beside this interpreter, else on PATH."""
    here = Path(sys.executable).parent / name
    path = str(here) if here.exists() else shutil.which(name)
    assert path, f"{name} is not installed: pip install -e '.[test]'"
    return path


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def test_snakemake_lint_passes():
    proc = _run(sys.executable, "-m", "snakemake", "--lint")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations" in out, out[-4000:]


def test_snakefmt_leaves_every_rule_file_unchanged():
    proc = _run(_tool("snakefmt"), "--check", "Snakefile", "workflow")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_ruff_is_clean():
    proc = _run(_tool("ruff"), "check", "src", "tests", "benchmarks")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
