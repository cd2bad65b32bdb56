# Config validation, wildcard constraints, path builders and input functions. No logic lives in the rules.
import json
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # a source checkout works before `pip install -e .`
from ddflow import config as ddconfig  # noqa: E402
from ddflow import distill as ddistill  # noqa: E402
from ddflow import hparams as ddhparams  # noqa: E402
from ddflow.methods import get_method  # noqa: E402

ddconfig.coerce_cli_types(config)
validate(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")
HPARAMS = Path(config.get("hparams_dir") or Path(workflow.basedir) / "workflow" / "hparams").resolve()
PAPERS = Path(workflow.basedir) / "workflow" / "papers"
GRID = ddconfig.check(config, hparams_dir=HPARAMS, papers_dir=PAPERS)  # clear errors before any job
PRESET = config["preset"]


wildcard_constraints:
    dataset="[a-z0-9-]+",
    method="[a-z0-9-]+",
    protocol="[a-z0-9-]+",
    net="[A-Za-z0-9]+",
    table="[a-z0-9_-]+",
    ipc=r"\d+",
    seed=r"\d+",
    it=r"\d+",


def _gpu_count():
    """GPU slots a GPU job declares: only when it will run on CUDA (device cuda, or auto on a machine where
    torch sees a GPU). Locally, `--resources gpu=N` then caps concurrent GPU jobs; profiles/slurm sets gpu=1."""
    if config["device"] == "cpu":
        return 0
    if config["device"] == "cuda":
        return 1
    import torch

    return int(torch.cuda.is_available())


GPU = _gpu_count()


# ---- paths -----------------------------------------------------------------------------------------------
def data_path(dataset):
    return f"results/data/{dataset}.npz"


def distilled_path(method, dataset, ipc, seed):
    return f"results/distilled/{method}/{dataset}/ipc{ipc}/s{seed}.pt"


def eval_path(protocol, method, dataset, ipc, seed):
    return f"results/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}.json"


def snapshot_eval_path(protocol, method, dataset, ipc, seed, it):
    return f"results/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}/it{it}.json"


def featnet_path(dataset, net):
    return f"results/nets/{dataset}/{net}-full.pt"


def default_protocol(method):
    return get_method(method).protocols[0]


# ---- targets ---------------------------------------------------------------------------------------------
def cells(methods=None, protocol=None):
    """Evaluation cell paths of the configured grid (optionally restricted to some methods / one protocol)."""
    out = []
    for m in methods if methods is not None else GRID["methods"]:
        for d in GRID["datasets"]:
            for i in GRID["ipcs"]:
                for s in GRID["seeds"]:
                    out.append(eval_path(protocol or default_protocol(m), m, d, i, s))
    return out


def table_cells(wildcards):
    rows = ddconfig.table_rows(PAPERS / f"{wildcards.table}.yaml")
    out = []
    for method, protocol in rows:
        if method in GRID["methods"]:
            out += cells([method], protocol)
    return out


def grid_figures():
    return [f"results/figures/grids/{m}/{d}/ipc{i}/s{s}.png"
            for m in GRID["methods"] for d in GRID["datasets"] for i in GRID["ipcs"] for s in GRID["seeds"]]


# methods whose accuracy-vs-iteration curves DREAM's supplementary Figure 1 compares (with and without DREAM)
DREAM_FIG1_METHODS = ("dc", "dc-dream", "dsa", "dsa-dream", "dm", "dm-dream", "idc", "dream")


def snapshot_iterations(method, dataset, ipc):
    return ddistill.snapshot_iterations(ddhparams.resolve(method, dataset, int(ipc), PRESET, HPARAMS))


def dream_fig1_cells(wildcards):
    """Snapshot cells of the first configured seed (the paper's figure shows one distillation per method)."""
    out = []
    for m in GRID["methods"]:
        if m not in DREAM_FIG1_METHODS:
            continue
        for s in GRID["seeds"][:1]:
            out.append(eval_path(default_protocol(m), m, wildcards.dataset, wildcards.ipc, s))
            for n in snapshot_iterations(m, wildcards.dataset, wildcards.ipc):
                out.append(snapshot_eval_path(default_protocol(m), m, wildcards.dataset, wildcards.ipc, s, n))
    return out


# A method family's rule file (workflow/rules/<family>.smk, included after this one) may append functions
# returning extra default targets (its figures, analyses): all_targets() calls each.
EXTRA_TARGETS = []


def all_targets():
    tables = [f"results/tables/{t}.{ext}" for t in GRID["tables"] for ext in ("csv", "md", "tex")]
    figures = [f"results/figures/acc_vs_ipc/{d}.png" for d in GRID["datasets"]]
    if "dream_fig1" in GRID["figures"]:
        # the paper's figure is CIFAR-10 at IPC 10; we draw it for every configured dataset at IPC 10 (or at the
        # configured IPCs when 10 is not among them)
        fig_ipcs = [10] if 10 in GRID["ipcs"] else GRID["ipcs"]
        figures += [f"results/figures/dream/fig1_{d}_ipc{i}.png" for d in GRID["datasets"] for i in fig_ipcs]
    extra = [path for fn in EXTRA_TARGETS for path in fn()]
    return cells() + tables + figures + grid_figures() + extra


# ---- input functions and params --------------------------------------------------------------------------
def data_args(wildcards):
    src = (config.get("data") or {}).get(wildcards.dataset) or {}
    args = []
    if src.get("npz"):
        args += ["--npz", str(Path(src["npz"]).expanduser().resolve())]
    if src.get("root"):
        args += ["--root", str(Path(src["root"]).expanduser().resolve())]
    return " ".join(args)


def distill_inputs(wildcards):
    inputs = {"data": data_path(wildcards.dataset)}
    cls = get_method(wildcards.method)
    hp = ddhparams.resolve(wildcards.method, wildcards.dataset, int(wildcards.ipc), PRESET, HPARAMS)
    if "feature_net" in cls.requires:
        inputs["feature_net"] = featnet_path(wildcards.dataset, hp["feature_net"])
    if "trajectories" in cls.requires:  # MTT / EAD: the checkpoint-sampling manifest (workflow/rules/trajectory.smk)
        from ddflow.trajectory import manifest_path

        inputs["trajectories"] = manifest_path(wildcards.dataset, hp)
    return inputs


def distill_extra_args(wildcards, input):
    return " ".join(f"--input {k}={v}" for k, v in input.items() if k != "data")


def method_hparams(wildcards):
    """The resolved hyperparameters as a param: Snakemake reruns a cell whose hyperparameters changed."""
    return json.dumps(ddhparams.resolve(wildcards.method, wildcards.dataset, int(wildcards.ipc), PRESET, HPARAMS),
                      sort_keys=True)


def eval_settings(wildcards):
    from ddflow.evaluate import protocol_settings

    return json.dumps(protocol_settings(wildcards.method, wildcards.dataset, int(wildcards.ipc), PRESET,
                                        wildcards.protocol, HPARAMS), sort_keys=True)


def featnet_settings(wildcards):
    return json.dumps(ddhparams.resolve("featnet", wildcards.dataset, 0, PRESET, HPARAMS), sort_keys=True)


def acc_vs_ipc_cells(wildcards):
    return [p for p in cells() if f"/{wildcards.dataset}/" in p]


def table_spec(wildcards):
    return str(PAPERS / f"{wildcards.table}.yaml")
