"""End to end through Snakemake on a tiny config: data -> featnet -> distill -> evaluate -> table and figures."""
import json
import re

import pytest
import yaml

from browser import CHROMIUM, NO_BROWSER, file_url, rendered_text
from ddflow.report.tables import load_spec
from tiny_workflow import ROOT, tiny_workdir
from tiny_workflow import snakemake as _snakemake

pytestmark = pytest.mark.workflow

EVAL = {"eval": {"dc": {"epochs": 4, "models": 2}}}
TINY_QUICK = {  # the quick preset shrunk to seconds per job; the code paths are those of the quick preset
    "dm.yaml": {"iterations": 3, "batch_real": 4, "snapshots": [0, 1], **EVAL},
    "dc.yaml": {"iterations": 2, "batch_real": 4, "snapshots": [0, 1], **EVAL},
    "random.yaml": EVAL,
    "herding.yaml": EVAL,
    "featnet.yaml": {"epochs": 1},
    "regimes.yaml": {"cell_settings": {"models": 1, "epochs": 2}},   # the robust scores' variant cells (DM's)
}
METHODS = ["random", "herding", "dm", "dc", "dsa", "dm-dream"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist5k_path):
    work = tiny_workdir(tmp_path_factory.mktemp("wf"), TINY_QUICK, tiny_data=mnist5k_path, methods=METHODS, ipcs=[1],
                        figures=["dream_fig1"])
    _snakemake(work)
    return work


def test_workflow_produces_cells_table_and_figures(tiny_run):
    for method in METHODS:
        for ipc in (1,):
            cell = json.loads((tiny_run / f"results/eval/dc/{method}/mnist5k/ipc{ipc}/s0.json").read_text())
            assert cell["n_models"] == 2 and len(cell["accuracies"]) == 2
            assert 0.0 <= cell["mean"] <= 100.0 and cell["settings"]["epochs"] == 4
            assert cell["seconds"] > 0 and cell["peak_rss_mb"] > 0
            assert (tiny_run / f"results/figures/grids/{method}/mnist5k/ipc{ipc}/s0.png").stat().st_size > 1000
            assert (tiny_run / f"results/logs/distill/{method}/mnist5k/ipc{ipc}/s0.log").exists()
    md = (tiny_run / "results/tables/dream_t1.md").read_text()
    for label, paper in (("DM", "89.7"), ("DC", "91.7"), ("DSA", "88.7"), ("DM + DREAM sampling", "—")):
        line = next(line for line in md.splitlines() if line.startswith(f"| {label} "))
        assert re.search(r"\d+\.\d ± \d+\.\d", line) and paper in line, line
    # the paired difference to Random (docs/fair.md): same seed, model k against model k, 2 pairs, DM starts from
    # Random's images; Random has no such row
    line = next(line for line in md.splitlines() if line.startswith("| DM — vs Random "))
    assert re.search(r"\| [+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\] +\|", line) and "init" not in line, line
    assert "| Random — vs Random" not in md
    assert (tiny_run / "results/tables/dream_t1.csv").exists() and (tiny_run / "results/tables/dream_t1.tex").exists()
    assert (tiny_run / "results/figures/acc_vs_ipc/mnist5k.png").stat().st_size > 1000
    # the fair-comparison outputs (docs/fair.md): a row per method with its label regime, HLR against the
    # whole-dataset cell and IOR against Random under dc; LRS and ARS for DM, whose variant cells the quick preset
    # makes (analyses.yaml robust_scores.variant_methods: the dc-aug / dc-noaug cells of DM and Random); storage
    robust = (tiny_run / "results/tables/fair/robust_scores.md").read_text()
    cost = (tiny_run / "results/tables/fair/cost_storage.md").read_text()
    num = r"[+-]\d\.\d{3}"
    for method in METHODS:
        assert re.search(rf"^\| {method} +\| dc · hard +\| mnist5k +\| 1 +\| {num} +\| {num} ", robust, re.M), robust
        assert re.search(rf"^\| {method} +\| mnist5k +\| +1 \| images +\| +7,840 ", cost, re.M), cost
    assert re.search(rf"^\| dm +\| dc · hard +\| mnist5k +\| 1 +\| {num} +\| {num} +\| \d\.\d{{3}} +\| \d\.\d{{3}} ",
                     robust, re.M), robust
    for protocol in ("dc-aug", "dc-noaug"):
        for method in ("dm", "random"):
            cell = json.loads((tiny_run / f"results/eval/{protocol}/{method}/mnist5k/ipc1/s0.json").read_text())
            assert cell["n_models"] == 1 and cell["settings"]["augment"] == ("dsa" if protocol == "dc-aug" else "none")
            assert cell["labels_used"] == {"regime": "hard"}
    assert (tiny_run / "results/figures/acc_vs_storage/mnist5k.png").stat().st_size > 1000
    # accuracy vs iteration (DREAM supp. Fig. 1): snapshots 0 and 1 and the final set of every DREAM-pair method
    for method in ("dm", "dc", "dsa", "dm-dream"):
        for it in (0, 1):
            snap = json.loads((tiny_run / f"results/eval/dc/{method}/mnist5k/ipc1/s0/it{it}.json").read_text())
            assert snap["iterations"] == it and snap["n_models"] == 2
    assert (tiny_run / "results/figures/dream/fig1_mnist5k_ipc1.png").stat().st_size > 1000
    assert not list((tiny_run / "results").rglob("*.tmp*")), "no temporary files left behind"
    assert not (tiny_run / "results/resume").exists() or not list((tiny_run / "results/resume").rglob("*.pt"))


# clicks through the report as a reader does: the "Tables" menu entry, then the eye button of one table's row
OPEN_TABLE = """
const sleep = ms => new Promise(r => setTimeout(r, ms));
const until = async (f, what) => { for (let i = 0; i < 100; i++) { const x = f(); if (x) return x; await sleep(100); }
                                   throw new Error("report: no " + what); };
(await until(() => [...document.querySelectorAll("a")].find(a => a.textContent.trim() === "Tables"), "Tables")).click();
const row = await until(() => [...document.querySelectorAll("tr")].find(tr => tr.textContent.includes("TABLE")), "row");
row.querySelector("a").click();
const frame = await until(() => document.querySelector("iframe"), "iframe");
await new Promise(r => { frame.addEventListener("load", r); setTimeout(r, 5000); });
"""


@pytest.mark.skipif(CHROMIUM is None, reason=NO_BROWSER)
def test_report_shows_each_table_with_caption_and_notes_in_a_real_browser(tiny_run):
    report = tiny_run / "report.html"
    _snakemake(tiny_run, "--report", str(report))
    landing = rendered_text(file_url(report))["page"]
    assert "ddflow regenerates the tables of dataset-distillation papers" in landing  # the workflow description
    shown = rendered_text(file_url(report), OPEN_TABLE.replace("TABLE", "dream_t1"),
                          screenshot=tiny_run / "report_dream_t1.png")
    tables = yaml.safe_load((tiny_run / "config.yaml").read_text())["grid"]["quick"]["tables"]
    assert all(t in shown["page"] for t in tables), shown["page"]         # every table of the run is listed
    (frame,) = [text for url, text in shown.items() if url != "page"]    # the table, shown in place
    assert frame.startswith("DREAM (ICCV 2023) supp. Table 1") and "preset quick" in frame   # caption
    assert re.search(r"DM\t\d+\.\d ± \d+\.\d \(89\.7; [+-]\d+\.\d\)", frame), frame  # a cell: ours (paper; Δ)
    assert "Source of paper values: DREAM (ICCV 2023) supplementary Table 1" in frame            # the notes
    assert "Quick preset: reduced iterations" in frame


def test_deleting_a_cell_rebuilds_exactly_that_cell_and_its_consumers(tiny_run):
    assert "Nothing to be done" in _snakemake(tiny_run, "-n").stdout + _snakemake(tiny_run, "-n").stderr
    (tiny_run / "results/eval/dc/dm/mnist5k/ipc1/s0.json").unlink()
    out = _snakemake(tiny_run, "-n", "--quiet", "rules").stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    # the tables of the grid with a DM row: dream_t1, ead_baselines, isa_t8
    tables = [t for t in yaml.safe_load((tiny_run / "config.yaml").read_text())["grid"]["quick"]["tables"]
              if any(r.get("method") == "dm" for r in load_spec(ROOT / "workflow" / "papers" / f"{t}.yaml")["rows"])]
    fair = {"robust_scores": "1", "cost_storage": "1", "acc_vs_storage": "1"}   # read every cell of the grid
    assert jobs == {"evaluate": "1", "table": str(len(tables)), "acc_vs_ipc": "1", "dream_fig1": "1", "all": "1",
                    **fair, "total": str(7 + len(tables))}, out


def test_bad_config_fails_before_any_job(tmp_path):
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    for override, message in ((['methods=["dsa9"]'], "unknown method 'dsa9'"),
                              (["ipcs=[1000]"], "larger than the smallest class"),
                              (["preset=fast"], "fast"),
                              (['datasets=["Cifar10"]'], "['Cifar10'] is not valid")):
        proc = _snakemake(tmp_path, "--config", *override, check=False)
        assert proc.returncode != 0
        assert message in proc.stdout + proc.stderr, (override, proc.stderr[-2000:])
        assert not (tmp_path / "results").exists()


def test_paper_preset_dry_runs_the_full_p1_grid_on_slurm_with_one_gpu_per_gpu_job(tmp_path):
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    proc = _snakemake(tmp_path, "-n", "--profile", str(ROOT / "profiles" / "slurm"), "--config", "preset=paper",
                    "device=cuda")  # a dry run does not know the executor: auto would follow this machine
    out = proc.stdout + proc.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    # the paper grid's 30 methods (config.yaml) x 4 datasets (mnist, svhn, cifar10, cifar100) x 3 IPCs x 5 seeds;
    # frepo and isa are evaluated under two protocols (frepo, krr), dd under two (dd, and dc as a row of ours), kip
    # under two (kip-nn, krr-inf): 1800 + 4 x 60 evaluations; one whole-dataset cell per dataset; the validation
    # split (LD, RFAD, kip-nn) once per dataset. The robust scores' variant cells (docs/fair.md; analyses.yaml
    # robust_scores.variant_methods null = all) add 3,240: `-aug` and `-noaug` of every set whose protocol admits them
    # (dc 12 methods, mtt 3, frepo 3 with Random, soft 2, haba 1: 21 x 2 x 60 = 2,520), `-hard` of the learned-label
    # methods (soft 2, frepo 2, rcig 2, rfad-nn 2, mtt 1, ld 1, kip-nn 1: 11 x 60 = 660) and Random under frepo (60)
    methods = yaml.safe_load((ROOT / "config.yaml").read_text())["grid"]["paper"]["methods"]
    assert len(methods) == 30 and jobs["distill"] == str(len(methods) * 60), jobs
    assert jobs["validation_split"] == "4", jobs
    assert jobs["evaluate"] == str(2040 + 3240) and jobs["featnet"] == "4" and jobs["whole_dataset_cell"] == "4", jobs
    assert jobs["dream_fig1"] == "4", jobs  # IPC 10 on each dataset
    # experts: mnist and svhn raw, cifar10 and cifar100 raw and kornia ZCA (MTT's per dataset x IPC choice), each in
    # 10 blocks of the one `experts` rule, and the same five again for HaBa (`<prep>-batchstd`: every batch
    # standardised, as HaBa's buffer.py)
    assert jobs["experts"] == "110", jobs
    batchstd = r"^rule experts:\n(?:    .*\n)*?    output: results/experts/\w+/\w+-batchstd/"
    assert len(re.findall(batchstd, out, re.M)) == 50
    for rule in ("distill", "evaluate", "featnet", "evaluate_snapshot", "experts"):
        blocks = re.findall(rf"^rule {rule}:\n(?:    .*\n)+", out, re.M)
        assert blocks and all("gpu=1" in b for b in blocks), rule
    # runtime by rule and preset (workflow/rules/common.smk JOB_SIZES), not one blanket value; a paper distillation
    # asks for 1.5 x its cell's estimate, at least 1 h (job_runtime, workflow/costs.yaml; tests/test_cost.py pins it)
    for rule, minutes in (("evaluate", 120), ("experts", 240)):
        blocks = re.findall(rf"^rule {rule}:\n(?:    .*\n)+", out, re.M)
        assert all(f"runtime={minutes}" in b for b in blocks), (rule, blocks[0])
    blocks = re.findall(r"^rule distill:\n(?:    .*\n)+", out, re.M)
    runtimes = {int(re.search(r"runtime=(\d+)", b).group(1)) for b in blocks}
    assert min(runtimes) >= 60 and len(runtimes) > 1, runtimes
    assert "results/distilled/dm/cifar100/ipc50/s4.pt" in out
    assert "--preset paper" in out
