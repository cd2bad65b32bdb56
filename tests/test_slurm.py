"""The SLURM profile on a real one-node cluster (tests/slurm/cluster.sh; .ci/run brings it up): a tiny config runs
through `--profile profiles/slurm` to the table, a distillation killed by `scancel` resumes from its state file on
the rerun and ends with the same distilled set as an uninterrupted run. Skipped where SLURM is not installed."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from ddflow.records import load_distilled
from tiny_workflow import ROOT, tiny_workdir
from tiny_workflow import snakemake as _snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
ITERATIONS = 100  # DM iterations: long enough to cancel one after its first state file (save_every 10)
TINY = {"dm.yaml": {"iterations": ITERATIONS, "batch_real": 4, "snapshots": [],
                    "eval": {"dc": {"epochs": 2, "models": 2}}}}
# the profile as shipped, with a 2 s first status check instead of 40 s, two jobs at a time and one thread per job
# (a 2-core machine; the same thread count as the reference run, so that the results can be compared bit for bit)
PROFILE = ["--profile", str(ROOT / "profiles" / "slurm"), "--jobs", "2", "--slurm-init-seconds-before-status-checks",
           "2", "--set-threads", "distill=1", "evaluate=1"]
DISTILLED = "results/distilled/dm/mnist5k/ipc1/s0.pt"
RESUME = "results/resume/dm/mnist5k/ipc1/s0.pt"
# the run's target: the table and what it reads (DM's distillation and cell, the whole-dataset cell), 5 jobs instead
# of the default target's 17 (its figures, fair-comparison tables and their variant cells add only more jobs of the
# same rules); each SLURM job costs seconds of submission and status checks
TABLE = "results/tables/dream_t1.md"


def _sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def cluster():
    """A running SLURM cluster: the one .ci/run started, or one brought up here (and torn down after)."""
    missing = [c for c in ("slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scancel") if not shutil.which(c)]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} not found): apt-get install -y slurm-wlm munge")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.skip("snakemake-executor-plugin-slurm is not installed: pip install -e '.[slurm]'")
    started = False
    if _sh("sinfo", "-h", "-o", "%T").returncode != 0:
        if os.geteuid() != 0:
            pytest.skip("no SLURM cluster answers, and bringing one up needs root: sudo tests/slurm/cluster.sh up")
        up = _sh("bash", str(CLUSTER), "up")
        assert up.returncode == 0, f"tests/slurm/cluster.sh up failed:\n{up.stdout}\n{up.stderr}"
        started = True
    yield
    if started:
        _sh("bash", str(CLUSTER), "down")


# the rules that ask for a GPU when the device is cuda or auto (workflow/rules: resources gpu=gpu_count)
GPU_RULES = {"rule_distill", "rule_evaluate", "rule_evaluate_paper_rule", "rule_evaluate_snapshot",
             "rule_whole_dataset_cell", "rule_featnet", "rule_experts", "rule_isa_fig6", "rule_isa_table"}


def _jobs():
    """Every job the cluster still knows (finished ones for MinJobAge, 300 s): (id, partition, GPUs asked, state,
    comment = the plugin's rule_<rule>_wildcards_<values>)."""
    out = _sh("squeue", "-h", "-t", "all", "-O", "JobID:|,Partition:|,tres-per-job:|,State:|,Comment:200").stdout
    return [tuple(f.strip() for f in line.split("|", 4)) for line in out.splitlines()]


def _snakemake_bg(work, *args):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(work / "config.yaml"), "--cores", "2", *args]
    with open(work / "snakemake.out", "w") as out:  # a file, not a pipe: nobody reads while it runs
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)


def _finish(proc, work, timeout=300):
    proc.wait(timeout=timeout)
    return (work / "snakemake.out").read_text()[-3000:]


def _distilled(path):
    d = load_distilled(path)
    return d.images, d.labels


def test_slurm_profile_runs_to_the_table_and_a_cancelled_distillation_resumes(cluster, tmp_path, mnist5k_path):
    gpu_run = tiny_workdir(tmp_path / "auto", TINY, tiny_data=mnist5k_path, methods=["dm"], ipcs=[1],
                           tables=["dream_t1"], figures=[], device="auto", save_every=10)
    cpu_run = tiny_workdir(tmp_path / "cpu", TINY, tiny_data=mnist5k_path, methods=["dm"], ipcs=[1], device="cpu",
                           save_every=10)
    before = {job[0] for job in _jobs()}
    # 1. device auto under the SLURM executor: the GPU rules ask for a GPU on the gpu partition (the test node's
    #    GPU is /dev/null, torch sees none: the job runs on the CPU); killed by scancel once its state file exists.
    #    Meanwhile the uninterrupted reference, device cpu, through SLURM as well (the cpu partition, no GPU).
    first = _snakemake_bg(gpu_run, TABLE, *PROFILE, "--retries", "0")
    reference = _snakemake_bg(cpu_run, DISTILLED, *PROFILE)  # the target first: --set-threads takes all that follows
    deadline = time.time() + 240
    while not (gpu_run / RESUME).exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert (gpu_run / RESUME).exists(), "no state file appeared:\n" + (gpu_run / "snakemake.out").read_text()
    running = [job for job in _jobs() if job[0] not in before and job[4].startswith("rule_distill_wildcards_dm_")
               and job[3] in ("RUNNING", "PENDING")]   # DM's, of this run and the reference's
    cancelled = next(job for job in running if job[1] == "gpu")  # the reference's job is on the cpu partition
    assert cancelled[2].endswith("gpu:1"), running  # one GPU asked (gres:gpu:1)
    assert _sh("scancel", cancelled[0]).returncode == 0
    log = _finish(first, gpu_run)
    assert first.returncode != 0, log
    state = torch.load(gpu_run / RESUME, map_location="cpu", weights_only=False)
    assert 0 < state["iteration"] < ITERATIONS and not (gpu_run / DISTILLED).exists()
    log = _finish(reference, cpu_run)
    assert reference.returncode == 0, log

    # 2. the rerun resumes from the state file and goes on to the table
    _snakemake(gpu_run, TABLE, *PROFILE)
    distill_log = (gpu_run / "results/logs/distill/dm/mnist5k/ipc1/s0.log").read_text()
    assert f"resuming dm from iteration {state['iteration']}" in distill_log, distill_log[-2000:]
    assert not (gpu_run / RESUME).exists()
    table = (gpu_run / "results/tables/dream_t1.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| DM "))
    cell = json.loads((gpu_run / "results/eval/dc/dm/mnist5k/ipc1/s0.json").read_text())
    assert f"{cell['mean']:.1f}" in row, row

    # 3. the same distilled set as the uninterrupted run, bit for bit
    resumed, reference = _distilled(gpu_run / DISTILLED), _distilled(cpu_run / DISTILLED)
    assert torch.equal(resumed[0], reference[0]) and torch.equal(resumed[1], reference[1])

    # 4. where the other jobs went (a cancelled job leaves squeue after MinJobAge: checked above): the resumed
    #    distillation, the evaluation and every other job of a GPU rule (device auto: the whole-dataset cell) to the
    #    gpu partition with one GPU each, the reference's
    #    distillation (device cpu) to the cpu partition without (job comments: rule_<rule>_wildcards_<values>)
    jobs = [job for job in _jobs() if job[0] not in before | {cancelled[0]}]
    gpu_jobs = [job for job in jobs if job[1] == "gpu"]
    assert gpu_jobs and all(job[2].endswith("gpu:1") for job in gpu_jobs), jobs
    on_gpu = {job[4].split("_wildcards")[0] for job in gpu_jobs}
    assert {"rule_distill", "rule_evaluate"} <= on_gpu <= GPU_RULES, jobs
    assert any(job[4].startswith("rule_distill_wildcards_dm_mnist5k_1_0") for job in gpu_jobs), jobs
    assert any(job[4].startswith("rule_evaluate_wildcards_dc_dm_mnist5k_1_0") for job in gpu_jobs), jobs
    on_cpu = [job[4].split("_wildcards")[0] for job in jobs if job[1] == "cpu" and job[2] in ("N/A", "")]
    assert on_cpu == ["rule_distill"] and len(jobs) == len(gpu_jobs) + 1, jobs
