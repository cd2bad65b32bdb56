# Config validation, wildcard constraints, path builders, input functions and params: every function of the
# workflow lives here; the other rule files hold rules only.
import functools
import json
import math
import os
import shlex
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # a source checkout works before `pip install -e .`
from ddflow import config as ddconfig  # noqa: E402
from ddflow import hparams as ddhparams  # noqa: E402
from ddflow import runtime as ddruntime  # noqa: E402
from ddflow import settings as ddsettings  # noqa: E402
from ddflow.records import experts as ddexperts  # noqa: E402
from ddflow.records import trajectories as ddsampling  # noqa: E402
from ddflow.methods import get_method  # noqa: E402
from ddflow.protocols import registry as ddprotocol_registry  # noqa: E402
from ddflow.protocols import regimes as ddregimes  # noqa: E402
from ddflow.report import cost as ddcost  # noqa: E402
from ddflow.report import robust as ddrobust  # noqa: E402
from ddflow.report.tables import load_spec  # noqa: E402
from ddflow.report.xarch import load_xarch_spec, xarch_cells  # noqa: E402

ddruntime.set_workflow_dir(workflow.basedir)  # each job's provenance records this checkout's commit
ddconfig.coerce_cli_types(config)
validate(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")
# parameters hold no absolute path: a finished run folder copied or moved elsewhere finds its jobs' parameters
# unchanged (ddflow.config.workdir_relative)
HPARAMS = ddconfig.workdir_relative(config.get("hparams_dir") or Path(workflow.basedir) / "workflow" / "hparams")
PAPERS = ddconfig.workdir_relative(Path(workflow.basedir) / "workflow" / "papers")
COSTS = ddcost.load_costs(Path(workflow.basedir) / "workflow" / "costs.yaml")  # per-cell estimates (runtime)
GRID = ddconfig.check(config, hparams_dir=HPARAMS, papers_dir=PAPERS)  # clear errors before any job
# imported distilled sets (ddflow.interop.imports): their names act as method ids for paths, evaluation and tables
IMPORTS = ddconfig.check_imports(config, GRID, hparams_dir=HPARAMS, papers_dir=PAPERS)
PRESET = config["preset"]
# the snapshot candidates that the rows "paper's rule" and "validation rule" choose from (auto = at the quick preset)
PAPER_RULE = ddconfig.paper_rule_on(config)
# `--sdm conda`: the envs hold the dependencies, paths relative to a rule file; tables and figures need less
ENV = "../../envs/ddflow.yaml"
REPORT_ENV = "../../envs/report.yaml"
# Every job runs this checkout's src/ (the code imported above), installed or not and in a conda env or not: a conda
# env cannot install the checkout (Snakemake builds it from a copy of the env file, see envs/ddflow.yaml).
# shell.prefix formats its text: braces in the path are doubled
SRC_PATH = shlex.quote(str(Path(workflow.basedir) / "src")).replace("{", "{{").replace("}", "}}")
STRICT = "set -euo pipefail; " if str(shell.get_executable() or "").endswith("bash") else ""  # Snakemake's default
shell.prefix(f"{STRICT}export PYTHONPATH={SRC_PATH}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")
# torch's intra-op thread count of each job that computes (`--threads` of its command), fixed per rule: CPU results
# depend on it (the order of a reduction's partial sums), so it is part of the job's definition, recorded in every
# record's provenance, never the machine's (Snakemake's {threads} is capped by --cores and a profile's set-threads
# changes it per cluster). A rule's `threads:` (the CPUs it reserves) is the same number.
COMPUTING_RULES = ("featnet", "distill", "import_set", "evaluate", "evaluate_paper_rule", "evaluate_snapshot")
COMPUTING_RULES += ("whole_dataset_cell", "experts", "isa_fig6", "isa_table")
TORCH_THREADS = {name: 1 for name in COMPUTING_RULES}
logger.info(
    "torch threads of each job (fixed by its rule, recorded in each record's provenance) = "
    + ", ".join(f"{name} {n}" for name, n in TORCH_THREADS.items())
)

# Job priorities (Snakemake runs the ready job of highest priority first; 0 for the rules not named): the longest
# chains first, so that no core idles at the end waiting for one: the expert trajectories and their sampling
# (-> MTT, TESLA, EAD, HaBa distillations -> their evaluations), then the other inputs of distillations (the feature
# net -> Herding and ISA's tables; the validation split -> LD, RFAD), every distillation before the evaluations (a
# distillation unlocks an evaluation, an evaluation only tables), those that waited for experts first. Without
# them the experts of the default run started after 12 of its 22 minutes and their chain ended the run. The run's
# results do not depend on them.
PRIORITY = {"experts": 40, "inputs": 30, "distill_after_experts": 20, "distill": 10}


def distill_priority(wildcards):
    if wildcards.method in IMPORTS or "trajectories" not in get_method(wildcards.method).requires:
        return PRIORITY["distill"]
    return PRIORITY["distill_after_experts"]


wildcard_constraints:
    dataset="[a-z0-9-]+",
    method="[a-z0-9-]+",
    protocol="[a-z0-9-]+",
    net="[A-Za-z0-9]+",
    table="[a-z0-9_-]+",
    prep="(raw|kornia|frepo)(-batchstd)?",
    ipc=r"\d+",
    seed=r"\d+",
    it=r"\d+",
    block=r"\d+",
    m=r"\d+",
    t=r"\d+",
    p=r"\d+",


def gpu_count(wildcards):
    """GPU slots a GPU job declares (its `gpu` resource): only when it will run on CUDA: device cuda; or auto under a
    cluster executor (the jobs run on the cluster's nodes, whatever the submitting node has; known when jobs are
    scheduled, so a dry run shows auto as the submitting machine) or on a machine where torch sees a GPU. Locally,
    `--resources gpu=N` caps concurrent GPU jobs and each takes a GPU of its own (ddflow.gpu_slots); under
    profiles/slurm, gpu=1 asks for a GPU on a partition with GPUs."""
    if config["device"] == "cpu":
        return 0
    if config["device"] == "cuda" or workflow.non_local_exec or workflow.remote_exec:
        return 1
    return _local_gpu()


@functools.cache
def _local_gpu():
    import torch

    return int(torch.cuda.is_available())


# ---- cluster resources ---------------------------------------------------------------------------------------
# Minutes (first attempt) and MB (besides the data) a job asks for, by rule group and preset; a retry (profile
# `retries`) asks for attempt x the minutes, and a cut-off distillation or expert block resumes from its state file.
# quick: the default run's jobs take seconds to 2 minutes on one core (85 jobs in 10 min on 2 cores), 30 min / 4 GB
# leave room for a slow shared node. paper: from the smoke test's times on one H100 (docs/running.md): a CIFAR-10
# IPC-10 distillation takes 23 min (DM, 20k it.), 34 min (MTT, 5k it.), 48 min (DSA, 1k it.); IPC 50, CIFAR-100 and
# Tiny ImageNet cost 5-20x that: at the paper preset job_runtime asks for each cell's estimate instead
# (workflow/costs.yaml; IDC / DREAM 11 / 17 h), the 8 h below being the fallback of the distill group. An evaluation is 20 models x 8.3 s = 3 min at IPC 10: 2 h covers IPC 50 and Tiny ImageNet. An
# expert block is 10 experts x 50 epochs x 2.9 s = 25 min on CIFAR-10: 4 h. Memory: the networks and synthetic sets
# are small next to the data; real images stay uint8 and are memory-mapped (ddflow.data.images), so 1 MB per MB of
# input on top covers every page of the inputs being resident (page cache
# that the node can reclaim; ImageNet-64: 15.7 GB).
JOB_SIZES = {
    "quick": {"gpu_job": (30, 4000), "experts": (30, 4000), "distill": (30, 4000)},
    "paper": {"gpu_job": (120, 16000), "experts": (240, 16000), "distill": (480, 32000)},
}


def job_runtime(group):
    """The `runtime` resource (minutes) of a rule: its group's minutes at this preset x the attempt. A paper-preset
    distillation asks for 1.5 x its cell's estimate (workflow/costs.yaml, ddflow.report.cost; at least an hour)
    instead of the group's 8 h: DREAM's 17-h CIFAR-10 cells fit their first attempt and a 23-min DM cell does not
    hold an 8-h slot."""

    def runtime(wildcards, attempt):
        minutes = JOB_SIZES[PRESET][group][0]
        if group == "distill" and PRESET == "paper":
            wc = (wildcards.method, wildcards.dataset, int(wildcards.ipc), int(wildcards.seed))
            seconds = ddcost.job_cost("distill", wc, COSTS, PRESET, HPARAMS)[0]
            minutes = max(60, math.ceil(1.5 * seconds / 60))
        return minutes * attempt

    return runtime


def job_mem_mb(group):
    """The `mem_mb` resource of a rule: its group's base at this preset plus the size of its inputs (those that exist).
    Summed with os.path.getsize, not Snakemake's input.size_mb, which runs an event loop per job: 7 of the 26 s of
    a dry run of the paper grid (9,264 jobs)."""

    def mem_mb(wildcards, input):
        return JOB_SIZES[PRESET][group][1] + input_mb(input)

    return mem_mb


def input_mb(paths):
    """The size of the inputs that exist, in MiB (as Snakemake's input.size_mb: a folder counts its own entry)."""
    return int(sum(os.path.getsize(p) for p in paths if os.path.exists(p)) / 1024 / 1024)


# ---- paths -----------------------------------------------------------------------------------------------
def data_path(dataset):
    return f"results/data/{dataset}.npz"


def distilled_path(method, dataset, ipc, seed):
    return f"results/distilled/{method}/{dataset}/ipc{ipc}/s{seed}.pt"


def eval_path(protocol, method, dataset, ipc, seed):
    return f"results/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}.json"


def snapshot_eval_path(protocol, method, dataset, ipc, seed, it):
    return f"results/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}/it{it}.json"


def whole_path(dataset):
    """The whole-dataset bound's cell of a dataset (ddflow.stages.whole), reused by every table's "Whole dataset" row."""
    return f"results/eval/whole/{dataset}.json"


def whole_cells(table):
    """The whole-dataset cells a table's "Whole dataset" row reads: at the paper preset always; at the quick preset
    those the run makes for the robust scores (robust_whole_paths) and those already made (`snakemake
    whole_dataset`), so that a finished run's tables do not gain an input."""
    if not any(r.get("method") == ddconfig.WHOLE for r in spec(table)["rows"]):
        return []
    paths = [whole_path(d) for d in GRID["datasets"]]
    made = robust_whole_paths()
    return paths if PRESET == "paper" else [p for p in paths if p in made or Path(p).exists()]


def paper_rule_eval_path(protocol, method, dataset, ipc, seed, it):
    """A snapshot evaluated with the model count of the paper's selection (hparams paper_rule); the table reads
    these as the paper's periodic test evaluations (ddflow.report.paper_rule)."""
    return f"results/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}/paper_rule/it{it}.json"


def featnet_path(dataset, net):
    return f"results/nets/{dataset}/{net}-full.pt"


def spec(name):
    """A paper table's or figure's spec (workflow/papers/{name}.yaml) as data."""
    return load_spec(PAPERS / f"{name}.yaml")


def default_protocol(method):
    if method in IMPORTS:
        return IMPORTS[method].protocols[0]
    return get_method(method).protocols[0]


def settings_method(method):
    """The registered method whose evaluation settings apply (ddflow.settings.settings_method)."""
    return ddsettings.settings_method(method, IMPORTS[method].eval_as if method in IMPORTS else None)


def import_names():
    """The wildcard pattern of imported names (one that never matches when there are none)."""
    return "|".join(IMPORTS) or "(?!)"


def distilled_method_names():
    """Method wildcard of the distill rule: any name but an imported one (the import rule makes those)."""
    return f"(?!(?:{'|'.join(IMPORTS)})/)[a-z0-9-]+" if IMPORTS else "[a-z0-9-]+"


def analysis_settings(dataset, ipc=0):
    """Settings of the paper analyses (workflow/hparams/stages/analyses.yaml) at this preset."""
    return ddhparams.resolve("analyses", dataset, int(ipc), PRESET, HPARAMS)


# ---- targets ---------------------------------------------------------------------------------------------
def cells(methods=None, protocol=None):
    """Evaluation cell paths of the configured grid (optionally restricted to some methods / one protocol)."""
    out = []
    for m in methods if methods is not None else GRID["methods"]:
        for d in GRID["datasets"]:
            for i in ddconfig.method_ipcs(GRID, m):
                for s in GRID["seeds"]:
                    out.append(eval_path(protocol or default_protocol(m), m, d, i, s))
    return out


def grid_figures():
    return [p.format(dataset=d) for d in GRID["datasets"] for _, p in grid_figure_patterns("png")]


GRID_BATCHED = PRESET == "quick"  # the quick preset's image grids: one job per dataset (rule grid_figures)


def grid_cells():
    """(method, IPC, seed) of every configured set, in one order: the image grids' (rule grid_figures' outputs and
    inputs pair up by it)."""
    return [(m, i, s) for m in GRID["methods"] for i in ddconfig.method_ipcs(GRID, m) for s in GRID["seeds"]]


def grid_figure_patterns(ext):
    """(method, path pattern with a {dataset} wildcard) of the image grid of every configured set (grid_cells): the
    outputs of rule grid_figures (one job draws a dataset's grids)."""
    return [(m, f"results/figures/grids/{m}/{{dataset}}/ipc{i}/s{s}.{ext}") for m, i, s in grid_cells()]


def grid_sets(wildcards):
    """The distilled sets rule grid_figures draws, in the order of its outputs (grid_cells)."""
    return [distilled_path(m, wildcards.dataset, i, s) for m, i, s in grid_cells()]


def isa_table_paths(kind):
    """ISA's `kind` table (information | recall) for every configured dataset and IPC."""
    return [f"results/tables/isa/{kind}_{d}_ipc{i}.md" for d in GRID["datasets"] for i in GRID["ipcs"]]


def isa_side_tables():
    """ISA's information and recall tables: they join the default run when both of their methods are configured
    (they cost only feature-net features)."""
    out = []
    for name in ("isa_information", "isa_recall"):
        s = spec(name)
        if all(m in GRID["methods"] for m in s["methods"]):
            out += isa_table_paths(s["kind"])
    return out


def isa_analysis_targets():
    """Every ISA analysis for the configured datasets and IPCs (`snakemake isa_analyses`)."""
    figures = [
        f"results/figures/isa/fig{n}_{d}_ipc{i}.png" for n in (5, 6, 8) for d in GRID["datasets"] for i in GRID["ipcs"]
    ]
    return figures + isa_table_paths("information") + isa_table_paths("recall")


def all_targets():
    tables = [f"results/tables/{t}.{ext}" for t in GRID["tables"] for ext in ("csv", "md", "tex")]
    figures = [f"results/figures/acc_vs_ipc/{d}.png" for d in GRID["datasets"]]
    if "dream_fig1" in GRID["figures"]:
        # the paper's figure is CIFAR-10 at IPC 10; we draw it for every configured dataset at IPC 10 (or at the
        # configured IPCs when 10 is not among them)
        fig_ipcs = [10] if 10 in GRID["ipcs"] else GRID["ipcs"]
        figures += [f"results/figures/dream/fig1_{d}_ipc{i}.png" for d in GRID["datasets"] for i in fig_ipcs]
    return cells() + tables + figures + grid_figures() + isa_side_tables() + import_cells() + fair_targets()


def import_cells(names=None):
    """Every evaluation cell of the imported sets (each seed under each of its protocols)."""
    return [
        eval_path(p, n, e.dataset, e.ipc, s)
        for n, e in IMPORTS.items()
        if names is None or n in names
        for p in e.protocols
        for s in e.seeds
    ]


def import_rows(table):
    """Table rows of the imported sets that print in `table` (config imports.<name>.tables)."""
    rows = []
    for n, e in IMPORTS.items():
        if table in e.tables:
            for p in e.protocols:
                label = f"{n} (imported)" if len(e.protocols) == 1 else f"{n} (imported, {p})"
                note = (
                    f"imported from {e.path} (format {e.format}, {e.space} space); evaluated under protocol {p} "
                    f"with {e.eval_as}'s evaluation settings; no paper value."
                )
                rows.append({"label": label, "method": n, "protocol": p, "note": note})
    return rows


def table_extra_rows(wildcards):
    return json.dumps(import_rows(wildcards.table))


def import_entry(wildcards):
    e = IMPORTS[wildcards.name]
    if (wildcards.dataset, int(wildcards.ipc)) != (e.dataset, e.ipc) or int(wildcards.seed) not in e.seeds:
        raise ValueError(
            f"import {wildcards.name}: it is {e.dataset} IPC {e.ipc} seeds {e.seeds}, not "
            f"{wildcards.dataset} IPC {wildcards.ipc} seed {wildcards.seed}"
        )
    return e


def import_inputs(wildcards):
    e = import_entry(wildcards)
    inputs = {"source": e.path}
    if e.zca in ("kornia", "frepo"):  # a ZCA kind is fitted on the dataset's training split
        inputs["data"] = data_path(e.dataset)
    return inputs


def import_args(wildcards, input):
    e = import_entry(wildcards)
    args = ["--name", wildcards.name, "--path", e.path, "--format", e.format, "--dataset", e.dataset]
    args += ["--ipc", e.ipc, "--space", e.space, "--seed", wildcards.seed, "--preset", PRESET]
    args += ["--hparams-dir", HPARAMS, "--protocols", *e.protocols, "--eval-as", e.eval_as, "--resolved"]
    if e.lr is not None:
        args += ["--lr", e.lr]
    if e.zca is not None:
        args += ["--zca", e.zca]
    if e.normalize_as is not None:
        args += ["--normalize-as", e.normalize_as]
    if e.classes is not None:
        args += ["--classes", *e.classes]
    if "data" in input.keys():
        args += ["--data", input.data]
    return shell_args(args)


# ---- input functions and params: data, experts, sampling, distillation ----------------------------------
def check_wildcards(wildcards):
    """A job's wildcards checked when the DAG is built (ddflow.config.check_target): a target path naming IPC 0,
    an unknown dataset, method or a protocol that does not fit is refused before any job starts."""
    ddconfig.check_target(dict(wildcards.items()), config, IMPORTS)


def checked_inputs(**paths):
    """An input function: the wildcards checked (check_wildcards), then `paths` with the wildcards filled in."""

    def inputs(wildcards):
        check_wildcards(wildcards)
        return {k: v.format(**dict(wildcards.items())) for k, v in paths.items()}

    return inputs


def data_inputs(wildcards):
    """Nothing the workflow makes is an input of the data rule; only its wildcards are checked."""
    check_wildcards(wildcards)
    return []


def shell_args(args):
    """Command-line words joined for a shell command, each quoted: config strings (paths) never reach the shell
    unquoted, whatever they hold (spaces, quotes, `$(...)`)."""
    return " ".join(shlex.quote(str(a)) for a in args)


def data_args(wildcards):
    src = (config.get("data") or {}).get(wildcards.dataset) or {}
    args = []
    if src.get("npz"):
        args += ["--npz", ddconfig.workdir_relative(src["npz"])]
    if src.get("root"):
        args += ["--root", ddconfig.workdir_relative(src["root"])]
    return shell_args(args)


@functools.lru_cache(maxsize=None)
def expert_settings(dataset):
    """The expert trajectories' settings of a dataset (read-only: cached)."""
    return ddhparams.resolve("experts", dataset, 0, PRESET, HPARAMS)


def expert_blocks(dataset):
    """The expert indices of each training block of this dataset (workflow/hparams/stages/experts.yaml)."""
    s = expert_settings(dataset)
    return ddexperts.blocks(int(s["experts"]), int(s["block"]))


def expert_block_indices(wildcards):
    blocks = expert_blocks(wildcards.dataset)
    b = int(wildcards.block)
    if b >= len(blocks):
        raise ValueError(f"experts of {wildcards.dataset}: block {b} does not exist ({len(blocks)} blocks)")
    return blocks[b]


def expert_block_args(wildcards):
    """--indices and --outs of one block: the expert files it writes (results/experts/.../e{i}.pt)."""
    idx = expert_block_indices(wildcards)
    outs = [ddexperts.expert_path(wildcards.dataset, wildcards.prep, wildcards.net, i) for i in idx]
    return shell_args(["--indices", *idx, "--outs", *outs])


def expert_settings_json(wildcards):
    return json.dumps(expert_settings(wildcards.dataset), sort_keys=True)


def expert_receipts(wildcards):
    """Every block receipt of a dataset x prep x net: a block's experts are complete when its receipt exists."""
    n = len(expert_blocks(wildcards.dataset))
    return [ddexperts.receipt_path(wildcards.dataset, wildcards.prep, wildcards.net, b) for b in range(n)]


def expert_files(wildcards):
    s = expert_settings(wildcards.dataset)
    return shell_args(
        ddexperts.expert_path(wildcards.dataset, wildcards.prep, wildcards.net, i) for i in range(int(s["experts"]))
    )


# ---- settings: each cell's YAML resolved once at parse time, handed to its job as --settings ---------------------
@functools.lru_cache(maxsize=None)
def distill_cell_settings(method, dataset, ipc):
    """{hparams, snapshots} of a distillation cell (ddflow.settings.distill_settings): the paper rule's evaluation
    iterations join the snapshots when config paper_rule is on and the method has a rule. Read-only (cached)."""
    cadence = paper_rule(method, dataset, ipc)
    return ddsettings.distill_settings(method, dataset, int(ipc), PRESET, HPARAMS, paper_rule=bool(cadence))


def cell_hparams(method, dataset, ipc):
    """The resolved hyperparameters of a distillation cell (read-only: cached)."""
    return distill_cell_settings(method, dataset, str(ipc))["hparams"]


@functools.lru_cache(maxsize=None)
def eval_cell_settings(method, dataset, ipc, protocol, models=None):
    """The protocol settings of an evaluation (ddflow.settings.eval_settings) of `method`'s sets."""
    settings = ddsettings.eval_settings(settings_method(method), dataset, int(ipc), PRESET, protocol, HPARAMS, models)
    return json.dumps(settings, sort_keys=True)


def distill_inputs(wildcards):
    check_wildcards(wildcards)
    inputs = {"data": data_path(wildcards.dataset)}
    cls = get_method(wildcards.method)
    hp = cell_hparams(wildcards.method, wildcards.dataset, wildcards.ipc)
    if "feature_net" in cls.requires:
        inputs["feature_net"] = featnet_path(wildcards.dataset, hp["feature_net"])
    if "trajectories" in cls.requires:  # MTT / EAD: the checkpoint-sampling manifest (workflow/rules/sampling.smk)
        inputs["trajectories"] = ddsampling.manifest_path(wildcards.dataset, hp)
    if "validation" in cls.requires:  # distils from the training split minus the validation split (data.smk)
        inputs["validation"] = validation_path(wildcards.dataset)
    return inputs


def eval_inputs(**paths):
    """checked_inputs(**paths), plus the dataset's validation split where the cell uses it, and the teacher (the
    feature net its settings name) of a `-teacher` label regime (ddflow.protocols.regimes). A protocol that chooses
    on the split needs it, and the validation rule's candidates score their models on it (val_accuracies,
    ddflow.report.valrule), i.e. the final set and the snapshots of a method whose paper selected on the test split
    (hparams paper_rule). Other cells skip that pass (about a tenth of a quick evaluation's time)."""
    base = checked_inputs(**paths)

    def inputs(wildcards):
        out = base(wildcards)
        m = wildcards.method
        candidate = m not in IMPORTS and paper_rule(m, wildcards.dataset, wildcards.ipc) is not None
        if candidate or ddprotocol_registry.needs_validation(wildcards.protocol):
            out["validation"] = validation_path(wildcards.dataset)
        if ddregimes.VARIANT_IDS.get(wildcards.protocol, ("", ""))[1] == "teacher":
            out["teacher"] = featnet_path(wildcards.dataset, json.loads(eval_settings(wildcards))["teacher"]["net"])
        return out

    return inputs


def validation_arg(wildcards, input):
    """--validation and --teacher of an evaluation, when its inputs hold them."""
    args = ["--validation", input.validation] if "validation" in input.keys() else []
    return shell_args(args + (["--teacher", input.teacher] if "teacher" in input.keys() else []))


def validation_path(dataset):
    return f"results/splits/{dataset}.npz"


def validation_settings(wildcards):
    return json.dumps(ddhparams.resolve("validation", wildcards.dataset, 0, PRESET, HPARAMS), sort_keys=True)


def distill_extra_args(wildcards, input):
    return shell_args([w for k, v in input.items() if k != "data" for w in ("--input", f"{k}={v}")])


def distill_settings_json(wildcards):
    """The distillation's settings as a param: what the job runs with, and Snakemake reruns a cell whose
    hyperparameters or snapshot iterations changed."""
    return json.dumps(distill_cell_settings(wildcards.method, wildcards.dataset, wildcards.ipc), sort_keys=True)


def whole_settings_json(wildcards):
    """The whole-dataset bound's resolved settings as a param: a changed setting reruns the cell."""
    return json.dumps(ddsettings.whole_settings(wildcards.dataset, PRESET, HPARAMS), sort_keys=True)


def featnet_settings(wildcards):
    return json.dumps(ddhparams.resolve("featnet", wildcards.dataset, 0, PRESET, HPARAMS), sort_keys=True)


def eval_settings(wildcards):
    return eval_cell_settings(wildcards.method, wildcards.dataset, wildcards.ipc, wildcards.protocol)


# ---- input functions and params: tables and figures --------------------------------------------------------
def table_inputs(wildcards):
    """A table's inputs by its spec's kind: evaluation cells of its rows (kind cells, the default; kind xarch: at
    the spec's dataset and IPC, one protocol per architecture), or the distilled records of its rows (kind
    timing: DREAM supp. Table 2 reads each run's own timing)."""
    s = spec(wildcards.table)
    rows = [(r["method"], r.get("protocol", "dc")) for r in s["rows"] if r.get("method") in GRID["methods"]]
    if s.get("kind") == "xarch":  # one dataset x IPC (the spec's), one protocol per architecture
        return [
            eval_path(p, m, d, i, seed)
            for p, m, d, i in xarch_cells(load_xarch_spec(table_spec(wildcards)), GRID["methods"])
            for seed in GRID["seeds"]
        ]
    if s.get("kind", "cells") == "timing":
        return [
            distilled_path(m, d, i, seed)
            for m, _ in rows
            for d in GRID["datasets"]
            for i in ddconfig.method_ipcs(GRID, m)
            for seed in GRID["seeds"]
        ]
    imported = [path for r in import_rows(wildcards.table) for path in import_cells([r["method"]])]
    by_paper_rule = [path for m, p in rows for path in paper_rule_cells(m, p)]
    return [path for m, p in rows for path in cells([m], p)] + imported + whole_cells(wildcards.table) + by_paper_rule


def table_spec(wildcards):
    return str(PAPERS / f"{wildcards.table}.yaml")


def acc_vs_ipc_cells(wildcards):
    return [p for p in cells() if f"/{wildcards.dataset}/" in p]


def snapshot_iterations(method, dataset, ipc):
    """The hparams' snapshot iterations (the figures' cells; without the paper rule's)."""
    return ddsettings.snapshot_iterations(cell_hparams(method, dataset, ipc))


@functools.lru_cache(maxsize=None)
def paper_rule(method, dataset, ipc):
    """The method's paper rule at this cell when config paper_rule is on (ddflow.config.paper_rule_on; workflow/
    hparams paper_rule), else None: the snapshot candidates of the paper's rule and of the validation rule."""
    if not PAPER_RULE:
        return None
    return ddhparams.paper_rule(method, dataset, int(ipc), PRESET, HPARAMS)


def paper_rule_cells(method, protocol, dataset=None, ipc=None):
    """The snapshot candidates of a table row (every configured dataset, IPC and seed, or one dataset x IPC): the
    cells both the paper's rule and the validation rule choose from; none when config paper_rule is off or the
    method's paper reports its final set."""
    out = []
    for d in GRID["datasets"] if dataset is None else [dataset]:
        for i in ddconfig.method_ipcs(GRID, method) if ipc is None else [ipc]:
            cadence = paper_rule(method, d, i)
            if not cadence:
                continue
            hp = cell_hparams(method, d, i)
            for s in GRID["seeds"]:
                for n in ddsettings.rule_iterations(int(hp.get("iterations", 0)), cadence):
                    out.append(paper_rule_eval_path(protocol, method, d, i, s, n))
    return out


def paper_rule_models(wildcards):
    cadence = paper_rule(wildcards.method, wildcards.dataset, wildcards.ipc)
    if not cadence:
        raise ValueError(f"{wildcards.method}: no paper rule (config paper_rule is off or its hparams lack one)")
    return cadence["models"]


def paper_rule_settings(wildcards):
    """The protocol settings with the paper's model count (hparams paper_rule models)."""
    w = wildcards
    return eval_cell_settings(w.method, w.dataset, w.ipc, w.protocol, paper_rule_models(wildcards))


def snapshot_cells(methods, protocol, dataset, ipc):
    """The final cell and every snapshot cell of the first configured seed (a paper figure shows one
    distillation per method); protocol None = each method's default."""
    out = []
    for m in methods:
        p = protocol or default_protocol(m)
        for s in GRID["seeds"][:1]:
            out.append(eval_path(p, m, dataset, ipc, s))
            for n in snapshot_iterations(m, dataset, ipc):
                out.append(snapshot_eval_path(p, m, dataset, ipc, s, n))
    return out


def dream_fig1_cells(wildcards):
    methods = [m for m in spec("dream_fig1")["methods"] if m in GRID["methods"]]
    return snapshot_cells(methods, None, wildcards.dataset, wildcards.ipc)


def isa_fig8_cells(wildcards):
    s = spec("isa_fig8")
    return snapshot_cells(s["methods"], s["protocol"], wildcards.dataset, wildcards.ipc)


def isa_fig5_cells(wildcards):
    s = spec("isa_fig5")
    seed = GRID["seeds"][0]
    return [eval_path(s["protocol"], m, wildcards.dataset, wildcards.ipc, seed) for m in s["methods"]]


def figure_title(name):
    def title(wildcards):
        return spec(name)["title"].format(dataset=wildcards.dataset, ipc=wildcards.ipc)

    return title


def isa_distilled(name):
    """The first seed's distilled sets of the methods of an ISA analysis spec."""

    def inputs(wildcards):
        seed = GRID["seeds"][0]
        return [distilled_path(m, wildcards.dataset, wildcards.ipc, seed) for m in spec(name)["methods"]]

    return inputs


def isa_featnet(wildcards):
    return featnet_path(wildcards.dataset, analysis_settings(wildcards.dataset)["featnet"])


def isa_table_spec(wildcards):
    return str(PAPERS / f"isa_{wildcards.kind}.yaml")


def isa_table_distilled(wildcards):
    return isa_distilled(f"isa_{wildcards.kind}")(wildcards)


def isa_table_args(wildcards):
    s = analysis_settings(wildcards.dataset, wildcards.ipc)
    return shell_args(["--batch", s["information_batch"], "--batches", s["information_batches"], "--k", s["recall_k"]])


def existing_eval_cells():
    """The evaluation cells already under results/eval (the results matrix lists what has been run, so a new cell
    makes it out of date; it never asks for a cell to be made)."""
    cells = list(Path("results/eval").glob("*/*/*/ipc*/s*.json")) + list(Path("results/eval/whole").glob("*.json"))
    return sorted(str(p) for p in cells)


def paper_specs():
    return sorted(str(p) for p in PAPERS.glob("*.yaml"))


# ---- fair comparisons: robust scores, cost and storage (ddflow.report.robust / storage; docs/fair.md) ----------
def fair_targets():
    """The robust-score and cost-and-storage tables and the accuracy-vs-storage figures: part of every run."""
    tables = [f"results/tables/fair/{t}.{ext}" for t in ("robust_scores", "cost_storage") for ext in ("csv", "md")]
    return tables + [f"results/figures/acc_vs_storage/{d}.png" for d in GRID["datasets"]]


def fair_protocols():
    """JSON {method: its default protocol} of the configured methods (the protocol each row reads)."""
    return json.dumps({m: default_protocol(m) for m in GRID["methods"]}, sort_keys=True)


def fair_distilled(wildcards):
    """Every configured distilled set (of the wildcards' dataset, when the rule has one)."""
    dataset = wildcards.get("dataset")
    return [
        distilled_path(m, d, i, s)
        for m in GRID["methods"]
        for d in GRID["datasets"]
        if dataset in (None, d)
        for i in ddconfig.method_ipcs(GRID, m)
        for s in GRID["seeds"]
    ]


def robust_settings(wildcards=None):
    """JSON of the checked robust_scores settings (a function: its templates hold braces Snakemake would expand)."""
    s = ddrobust.check_settings(analysis_settings(GRID["datasets"][0]).get("robust_scores") or {})
    return json.dumps(s, sort_keys=True)


def robust_cells(wildcards):
    """The methods' own cells, and for the methods and IPCs of robust_scores' `variant_methods` / `variant_ipcs`
    (null: all) the cells the scores need: the whole-dataset bound, Random under the method's protocol, the
    `-hard` variant of a learned-label method's protocol, and the `-aug` / `-noaug` variants of the set and of Random
    (ddflow.protocols.regimes), each where its protocol admits it and Random has settings for it. Other such cells
    join when they exist."""
    s = json.loads(robust_settings())
    wanted, required = [], set(cells())
    for m in GRID["methods"]:
        p = default_protocol(m)
        hard = s["hard_label_protocol"].format(protocol=p)
        variants = {s[k].format(protocol=p) for k in ("aug_protocol", "no_aug_protocol")}
        needed = (variants | ({hard} if get_method(m).learned_labels else set())) & set(ddprotocol_registry.PROTOCOLS)
        covered = s["variant_methods"] is None or m in s["variant_methods"]
        for d in GRID["datasets"]:
            for i in ddconfig.method_ipcs(GRID, m):
                on = covered and (s["variant_ipcs"] is None or int(i) in s["variant_ipcs"])
                for seed in GRID["seeds"]:
                    for q in variants | {hard, p}:
                        for n in (m, "random"):
                            path = eval_path(q, n, d, i, seed)
                            wanted.append(path)
                            # Random: the method's protocol and its augmentation variants (its labels are hard)
                            need = (q in needed - {hard} or q == p) if n == "random" else q in needed
                            if on and need and fits(n, q):
                                required.add(path)
    required |= set(robust_whole_paths())
    optional = [p for p in dict.fromkeys(wanted) if p not in required and Path(p).exists()]
    whole = [whole_path(d) for d in GRID["datasets"]]
    existing = [p for p in whole if p not in required and (PRESET == "paper" or Path(p).exists())]
    return cells() + sorted(required - set(cells())) + optional + existing


def robust_whole_paths():
    """The whole-dataset cells the robust scores need (HLR's bound): those of the datasets where robust_scores'
    `variant_methods` x `variant_ipcs` (null: all) cover a configured method and IPC."""
    s = json.loads(robust_settings())
    covered = [
        m
        for m in GRID["methods"]
        if (s["variant_methods"] is None or m in s["variant_methods"])
        and any(s["variant_ipcs"] is None or int(i) in s["variant_ipcs"] for i in ddconfig.method_ipcs(GRID, m))
    ]
    return [whole_path(d) for d in GRID["datasets"]] if covered else []


def fits(method, protocol):
    """Whether a method's sets are evaluated under a protocol: one of its own or a variant of one (Random: dc and
    frepo, whose settings its hparams hold)."""
    return ddregimes.VARIANT_IDS.get(protocol, (protocol,))[0] in get_method(method).protocols


def out_prefix(wildcards, output):
    """A table's outputs less their extension (the --out-prefix its command writes .csv, .md, .tex, .html to)."""
    return str(Path(output.csv).with_suffix(""))
