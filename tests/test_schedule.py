"""The default run's job graph as scheduled (dry runs): one image-grid job per dataset at the quick preset (one per
set at the paper preset), and the priorities that put the expert chain, the distillations' inputs and the
distillations before the evaluations (workflow/rules/common.smk PRIORITY)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dry_run(tmp_path: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", *args, "--directory",
                           str(tmp_path), "-s", str(ROOT / "Snakefile"), "--configfile", str(ROOT / "config.yaml")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


def _jobs(out: str) -> list[tuple[str, str, int]]:
    """(rule, wildcards line, priority) of every job a dry run lists (a job without a priority line has 0)."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", out):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if m:
            wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            pr = re.search(r"^\s+priority: (\d+)$", block, re.M)
            jobs.append((m.group(1), wc.group(1) if wc else "", int(pr.group(1)) if pr else 0))
    return jobs


def test_default_run_draws_its_grids_in_one_job_and_runs_the_longest_chains_first(tmp_path):
    # the default target, and a grid outside the configured grid (IPC 50): that one has its own job
    jobs = _jobs(_dry_run(tmp_path, "all", "results/figures/grids/dm/mnist5k/ipc50/s0.png"))
    rules = [r for r, _, _ in jobs]
    assert rules.count("grid_figures") == 1 and rules.count("grid_figure") == 1
    assert [wc for r, wc, _ in jobs if r == "grid_figure"] == ["method=dm, dataset=mnist5k, ipc=50, seed=0"]
    prio = {}
    for rule, wc, p in jobs:
        method = re.search(r"method=([\w-]+)", wc)
        prio.setdefault(f"{rule} {method.group(1)}" if rule == "distill" else rule, set()).add(p)
    assert prio["experts"] == prio["mtt_windows"] == prio["ead_pool"] == {40}
    assert prio["featnet"] == prio["validation_split"] == {30}
    assert prio["distill mtt"] == prio["distill ead"] == prio["distill haba"] == {20}
    assert prio["distill dm"] == prio["distill random"] == {10}
    assert prio["evaluate"] == prio["table"] == prio["grid_figures"] == {0}


def test_at_the_paper_preset_each_grid_follows_its_own_set(tmp_path):
    jobs = _jobs(_dry_run(tmp_path, "--config", "preset=paper", "datasets=[mnist]", "methods=[dm]", "ipcs=[1]",
                          "seeds=[0]", "tables=[dream_t1]", "figures=[]", "device=cpu"))
    assert [r for r, _, _ in jobs].count("grid_figure") == 1 and "grid_figures" not in [r for r, _, _ in jobs]
