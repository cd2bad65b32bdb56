"""`python -m ddflow <stage> ...`: the only entry point the Snakemake rules call. Rules hold no logic."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from .commands import (  # noqa: F401  (the handlers the parsers dispatch to)
    cmd_acc_vs_ipc,
    cmd_acc_vs_iteration,
    cmd_data,
    cmd_distill,
    cmd_evaluate,
    cmd_experts,
    cmd_export,
    cmd_featnet,
    cmd_grid,
    cmd_import,
    cmd_isa_fig5,
    cmd_isa_fig6,
    cmd_isa_information,
    cmd_isa_recall,
    cmd_results_matrix,
    cmd_smoke,
    cmd_table,
    cmd_trajectory_sample,
    cmd_validation_split,
    cmd_whole,
)
from .errors import DdflowError

log = logging.getLogger("ddflow")

# The commands that read only JSON, YAML and npz files (cells, specs, prepared data) and write tables, figures or
# npz: they start without importing torch, about two CPU-seconds of each such job (tests/test_layout.py checks their
# imports). `table` imports it for a timing spec (it reads .pt records) and an xarch spec (the protocols) only.
WITHOUT_TORCH = ("data", "validation-split", "table", "results-matrix", "acc-vs-ipc")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--hparams-dir", default=None)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from .runtime import setup, versions
    setup(getattr(a, "threads", None))
    log.info("ddflow %s: %s", a.cmd, json.dumps(versions(getattr(a, "device", None), a.cmd not in WITHOUT_TORCH)))
    try:
        return a.fn(a) or 0
    except DdflowError as e:
        print(f"ddflow error: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand, by group: the stages the rules call, outside sets, tables and figures, ISA's analyses,
    the fair comparisons and the smoke test."""
    from .report.cost import add_parser as add_cost
    from .report.fair import add_parser as add_fair
    parser = argparse.ArgumentParser(prog="ddflow", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for add in (_data_parsers, _distill_parsers, _evaluate_parsers, _interop_parsers, _report_parsers, _isa_parsers,
                add_cost, add_fair, _smoke_parser):
        add(sub)
    return parser


def _stage_settings(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--settings", default=None, help=f"JSON: the {what} its rule resolved (default: resolved from "
                                                    "--preset and --hparams-dir)")


def _data_parsers(sub) -> None:
    """The data, its validation split, the feature net, expert trajectories and their sampling."""
    p = sub.add_parser("data", help="prepare results/data/{dataset}.npz")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--npz", default=None)
    p.add_argument("--root", default=None)
    p.add_argument("--no-download", action="store_true")
    p.set_defaults(fn=cmd_data)

    p = sub.add_parser("validation-split", help="the validation part of a training split (ddflow.data.validation)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--settings", required=True, help="JSON: per_class, seed")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_validation_split)

    p = sub.add_parser("featnet", help="train a ConvNet on the full training split (herding's features)")
    _common(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--net", default="ConvNet")
    p.add_argument("--settings", required=True, help="JSON: epochs, lr, momentum, weight_decay, batch")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_featnet)

    p = sub.add_parser("experts", help="train a block of expert trajectories (one file per expert)")
    _common(p)
    for k in ("dataset", "prep", "net", "data", "settings"):
        p.add_argument(f"--{k}", required=True)
    p.add_argument("--indices", type=int, nargs="+", required=True)
    p.add_argument("--outs", nargs="+", required=True)
    p.add_argument("--resume", default=None)
    p.add_argument("--receipt", default=None, help="write this block receipt (JSON) once every expert file is written")
    p.set_defaults(fn=cmd_experts)

    p = sub.add_parser("trajectory-sample", help="checkpoint sampling manifest (MTT windows / EAD pool)")
    for k in ("sampler", "dataset", "prep", "net", "out"):
        p.add_argument(f"--{k}", required=True)
    p.add_argument("experts", nargs="+")
    p.set_defaults(fn=cmd_trajectory_sample)


def _distill_parsers(sub) -> None:
    """One distillation cell."""
    p = sub.add_parser("distill", help="one distillation cell")
    _common(p)
    for k in ("method", "dataset", "data", "out", "preset"):
        p.add_argument(f"--{k}", required=True)
    p.add_argument("--ipc", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--resume", default=None)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--snapshot-dir", default=None, help="write it{N}.pt for the hparams' snapshot iterations")
    p.add_argument("--input", action="append", default=[], help="NAME=PATH extra input (e.g. feature_net=...)")
    p.add_argument("--paper-rule", action="store_true",
                   help="also snapshot the iterations of the hparams' paper_rule (the paper's test evaluations)")
    _stage_settings(p, "hyperparameters and snapshot iterations")
    p.set_defaults(fn=cmd_distill)


def _evaluate_parsers(sub) -> None:
    """One evaluation cell and the whole-dataset bound."""
    p = sub.add_parser("evaluate", help="evaluate one distilled set under one protocol (ddflow.stages.evaluate)")
    _common(p)
    p.add_argument("--distilled", required=True, help="a ddflow record, or with --dataset any set import reads")
    p.add_argument("--dataset", default=None, help="the dataset of a set made elsewhere (format, IPC: guessed)")
    for k in ("format", "space", "lr"):
        p.add_argument(f"--{k}", default=None, help=f"a set made elsewhere: its {k} (as import's --{k})")
    p.add_argument("--ipc", type=int, default=None, help="a set made elsewhere: its IPC (default: from its size)")
    p.add_argument("--classes", nargs="+", default=None, help="png: the class folders' names in class order")
    p.add_argument("--data", default=None, help="the dataset's npz (default: prepared once into ~/.cache/ddflow)")
    p.add_argument("--protocol", default=None, help="default: the method's (outside sets: dc, or mtt with an lr)")
    p.add_argument("--preset", default=None, help="default: the record's, else paper")
    p.add_argument("--out", default=None, help="the cell's JSON file (default: printed on stdout)")
    p.add_argument("--models", type=int, default=None, help="models to train (default: the protocol settings')")
    p.add_argument("--validation", default=None, help="the validation split: protocols that choose on it need it; "
                   "with it every cell also scores its models on it (val_accuracies)")
    p.add_argument("--teacher", default=None, help="the teacher of a -teacher protocol (a feature-net file)")
    _stage_settings(p, "protocol settings (with --protocol and --data)")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("whole", help="the whole-dataset bound: ConvNets trained on the full training split (dc loop)")
    _common(p)
    for k in ("dataset", "data", "preset", "out"):
        p.add_argument(f"--{k}", required=True)
    _stage_settings(p, "settings (protocols.yaml dc updated by whole.yaml)")
    p.set_defaults(fn=cmd_whole)


def _interop_parsers(sub) -> None:
    """Sets made by other code in, ddflow records out."""
    p = sub.add_parser("import", help="a distilled set made by other code -> ddflow record(s) (ddflow.interop)")
    _common(p)
    p.add_argument("--name", required=True, help="the id it is evaluated and tabled under (not a method id)")
    p.add_argument("--path", required=True)
    p.add_argument("--format", required=True, help="plain | mtt | dc | png | rfad | kip | rtp")
    p.add_argument("--dataset", required=True)
    p.add_argument("--ipc", type=int, required=True)
    p.add_argument("--space", required=True, help="pixels | normalized | zca")
    p.add_argument("--seed", type=int, default=None, help="the seed (dc format: the experiment; default all)")
    p.add_argument("--lr", default=None, help="the learned lr: a number or a .pt file holding it")
    p.add_argument("--zca", default=None, help="space zca: a ZCA state file or a kind (kornia|frepo|rfad|kip)")
    p.add_argument("--protocols", nargs="+", default=None)
    p.add_argument("--eval-as", default=None, help="the method whose evaluation settings apply")
    p.add_argument("--normalize-as", default=None, help="the dataset whose mean/std a normalized set used")
    p.add_argument("--resolved", action="store_true",
                   help="the workflow checked and resolved this entry at parse time: resolve nothing again")
    p.add_argument("--classes", nargs="+", default=None, help="png: the class folders' names in class order")
    p.add_argument("--preset", default="quick")
    p.add_argument("--data", default=None, help="the dataset's npz (to fit a ZCA kind)")
    p.add_argument("--out", required=True, help="the record's path; {seed} is replaced by each seed")
    p.set_defaults(fn=cmd_import)

    p = sub.add_parser("export", help="a distilled record to a plain .pt/.npz (exact) and/or per-class PNGs")
    p.add_argument("--distilled", required=True)
    p.add_argument("--out", default=None, help="a .pt or .npz file")
    p.add_argument("--png-dir", default=None, help="8-bit PNGs per class (lossy: values clipped to [0, 1], warned)")
    p.add_argument("--space", default="native", help="native (exact, the record's space) | pixels (clipped, warned)")
    p.set_defaults(fn=cmd_export)


def _report_parsers(sub) -> None:
    """Tables, the results matrix and figures."""
    p = sub.add_parser("table", help="a paper table from evaluation cells (or distilled records, kind timing)")
    p.add_argument("--spec", required=True)
    p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--ipcs", nargs="+", type=int, required=True)
    p.add_argument("--out-prefix", required=True)
    p.add_argument("--extra-rows", default=None, help="JSON list of rows added after the spec's (imported sets)")
    p.add_argument("cells", nargs="*")
    p.set_defaults(fn=cmd_table)

    p = sub.add_parser("results-matrix", help="every evaluated cell (preset marked) beside the paper's value")
    p.add_argument("--results", default="results", help="the results folder (its eval/ cells are read)")
    p.add_argument("--papers", default="workflow/papers", help="the table specs")
    p.add_argument("--presets", nargs="+", default=None, help="only these presets (default all; docs/: paper)")
    p.add_argument("--out", default="results/RESULTS.md", help="docs/RESULTS.md: paper-scale cells only")
    p.set_defaults(fn=cmd_results_matrix)

    p = sub.add_parser("grid", help="image grid of each distilled set (one process draws many: one torch start-up)")
    p.add_argument("--distilled", required=True, nargs="+")
    p.add_argument("--out", required=True, nargs="+", help="one PNG per --distilled, in the same order")
    p.set_defaults(fn=cmd_grid)

    p = sub.add_parser("acc-vs-ipc", help="accuracy vs IPC figure for one dataset")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("cells", nargs="*")
    p.set_defaults(fn=cmd_acc_vs_ipc)

    p = sub.add_parser("acc-vs-iteration", help="accuracy of snapshots vs distillation iteration (DREAM Fig. 1)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--ipc", type=int, required=True)
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True)
    p.add_argument("cells", nargs="*")
    p.set_defaults(fn=cmd_acc_vs_iteration)



def _isa_parsers(sub) -> None:
    """ISA's analyses: Fig. 5 from cells; the information and recall tables and Fig. 6 from sets."""
    p = sub.add_parser("isa-fig5", help="ISA Fig. 5: accuracy when discarding the hardest vs easiest samples")
    p.add_argument("--dataset", required=True)
    p.add_argument("--ipc", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("cells", nargs="*")
    p.set_defaults(fn=cmd_isa_fig5)
    for name, fn, helptext in (("isa-information", cmd_isa_information, "ISA's information test table"),
                               ("isa-recall", cmd_isa_recall, "ISA's recall table"),
                               ("isa-fig6", cmd_isa_fig6, "ISA Fig. 6: 2-D embedding of real and synthetic images")):
        p = sub.add_parser(name, help=helptext)
        _common(p)
        p.add_argument("--dataset", required=True)
        p.add_argument("--data", required=True)
        p.add_argument("--feature-net", required=True)
        p.add_argument("--out" if name == "isa-fig6" else "--out-prefix", required=True)
        p.add_argument("--batch", type=int, default=1024)
        p.add_argument("--batches", type=int, default=5)
        p.add_argument("--k", type=int, default=5)
        p.add_argument("--spec", default=None, help="the analysis spec (workflow/papers/isa_*.yaml): paper values")
        p.add_argument("distilled", nargs="+")
        p.set_defaults(fn=fn)


def _smoke_parser(sub) -> None:
    """Ten minutes on one GPU."""
    p = sub.add_parser("smoke", help="ten minutes on one GPU: accuracy against the official code, and speed")
    _common(p)
    p.add_argument("--out", required=True, help="folder for smoke.json, smoke.md and the runs' files")
    p.add_argument("--mnist", default=None, help="MNIST npz (uint8 NHWC x_train, y_train, x_test, y_test)")
    p.add_argument("--cifar10", default=None, help="CIFAR-10 npz (same layout)")
    p.add_argument("--tiny", action="store_true", help="toy sizes on the CPU, one thread (makes missing datasets)")
    p.add_argument("--budget", type=float, default=None, help="seconds per step (default: per-step budgets)")
    p.add_argument("--steps", nargs="+", default=None, help="a subset of: dc dm dsa mtt eval (default all)")
    p.set_defaults(fn=cmd_smoke)
