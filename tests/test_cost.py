"""`python -m ddflow cost` (ddflow.report.cost): its jobs are the DAG's (compared with a Snakemake dry run of the same
table) and its hours are workflow/costs.yaml's per-cell estimates times the iterations of workflow/hparams."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ddflow.errors import DdflowError
from ddflow.report.cost import estimate, load_config, table_jobs

ROOT = Path(__file__).resolve().parents[1]
HP, PAPERS = ROOT / "workflow" / "hparams", ROOT / "workflow" / "papers"
COSTS = yaml.safe_load((ROOT / "workflow" / "costs.yaml").read_text())
SMALL = ["preset=paper", 'datasets=["mnist","cifar10"]', "seeds=[0]", "ipcs=[1]"]


def test_one_dm_cell_costs_its_iterations_times_the_measured_rate():
    jobs = [("distill", ("dm", "cifar10", 10, 0)), ("evaluate", ("dc", "dm", "cifar10", 10, 0))]
    est = estimate(jobs, COSTS, "paper", HP)
    assert est["gpu_hours"]["distill"] == pytest.approx(0.068 * 20000 / 3600)       # DM: 20,000 iterations
    assert est["gpu_hours"]["evaluate"] == pytest.approx(20 * 8.3 / 3600)           # 20 models x 8.3 s
    assert est["longest"][1] == "distill dm cifar10 10 0" and est["bases"] == {"measured": 2}


def test_dream_cells_are_longer_than_an_eight_hour_limit():
    jobs = [("distill", ("dream", "cifar10", 10, 0))]
    hours = estimate(jobs, COSTS, "paper", HP)["longest"][0]
    assert hours == pytest.approx(2000 * 30 / 3600) and hours > 8                   # DREAM supp. Table 2


def test_every_implemented_method_and_table_dataset_has_an_estimate():
    from ddflow.methods import REGISTRY
    missing = [m for m in REGISTRY if m not in COSTS["distill"] and not m.startswith("frepo-drop")]
    assert not missing, f"workflow/costs.yaml distill: no entry for {missing}"
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert set(config["grid"]["paper"]["datasets"]) <= set(COSTS["datasets"])


def test_bad_table_and_override_are_clear_errors():
    with pytest.raises(DdflowError, match="KEY=VALUE"):
        load_config(ROOT / "config.yaml", ["preset"])
    proc = subprocess.run([sys.executable, "-m", "ddflow", "cost", "--table", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "workflow/papers/nope.yaml" in proc.stderr


@pytest.mark.workflow
def test_job_counts_equal_a_snakemake_dry_run(tmp_path):
    config = load_config(ROOT / "config.yaml", SMALL)
    ours = {}
    for rule, _ in table_jobs(config, ["dream_t1"], HP, PAPERS):
        ours[rule] = ours.get(rule, 0) + 1
    proc = subprocess.run([sys.executable, "-m", "snakemake", "results/tables/dream_t1.md", "-n", "--quiet", "rules",
                           "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
                           str(ROOT / "config.yaml"), "--config", *SMALL], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = proc.stdout.split("Job stats:")[-1]
    theirs = {r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M) if r != "total"}
    assert ours == theirs and theirs["distill"] > 10 and "experts" in theirs


@pytest.mark.workflow
def test_a_paper_distillation_asks_slurm_for_its_estimate(tmp_path):
    """The distill rule's runtime at the paper preset is 1.5 x the cell's estimate (workflow/rules/common.smk,
    job_runtime): DREAM's 17-h CIFAR-10 cell asks for 25 h, a 23-min DM cell for the one-hour floor."""
    out = {}
    for method in ("dream", "dm"):
        proc = subprocess.run([sys.executable, "-m", "snakemake", f"results/distilled/{method}/cifar10/ipc10/s0.pt",
                               "-n", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
                               str(ROOT / "config.yaml"), "--config", "preset=paper", 'datasets=["cifar10"]',
                               f'methods=["{method}"]', "ipcs=[10]", "seeds=[0]"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        block = proc.stdout[proc.stdout.index("rule distill:"):]
        out[method] = int(re.search(r"runtime=(\d+)", block).group(1))
    assert out == {"dream": 1500, "dm": 60}


def test_a_jobs_memory_is_its_groups_base_plus_its_existing_inputs(tmp_path):
    """mem_mb = the rule group's base at the preset (quick: 4,000) + the MiB of the inputs that exist (as Snakemake's
    input.size_mb; workflow/rules/common.smk, job_mem_mb): a 3.5-MiB data file adds 3."""
    data = tmp_path / "results/data/mnist5k.npz"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"\0" * (7 * 2**19))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "results/distilled/dm/mnist5k/ipc1/s0.pt", "-n", "-s",
                           str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
                           str(ROOT / "config.yaml"), "--config", 'methods=["dm"]', "ipcs=[1]", "seeds=[0]"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    block = proc.stdout[proc.stdout.index("rule distill:"):]
    assert "rule data:" not in proc.stdout and int(re.search(r"mem_mb=(\d+)", block).group(1)) == 4003, block
