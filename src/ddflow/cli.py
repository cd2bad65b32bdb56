"""`python -m ddflow <stage> ...`: the only entry point the Snakemake rules call. Rules hold no logic."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .errors import DdflowError

log = logging.getLogger("ddflow")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--hparams-dir", default=None)


def cmd_data(a) -> None:
    from .data import prepare
    prepare(a.dataset, a.out, npz=a.npz, root=a.root, download=not a.no_download)


def cmd_validation_split(a) -> None:
    from .data.validation import split_file
    split_file(a.dataset, a.data, json.loads(a.settings), a.out)


def cmd_featnet(a) -> None:
    from .runtime import resolve_device
    from .stages import featnet
    featnet.run(a.dataset, a.net, json.loads(a.settings), a.data, resolve_device(a.device), a.out)


def cmd_distill(a) -> None:
    from .distill import run
    from .runtime import resolve_device
    inputs = dict(kv.split("=", 1) for kv in a.input)
    run(a.method, a.dataset, a.ipc, a.seed, a.preset, resolve_device(a.device), a.data, a.out, resume=a.resume,
        inputs=inputs, hp_dir=a.hparams_dir, save_every=a.save_every, snapshot_dir=a.snapshot_dir,
        paper_rule=a.paper_rule)


def cmd_evaluate(a) -> None:
    from .interop.evaluate import run_evaluate
    run_evaluate(a)


def cmd_table(a) -> None:
    """A paper table by its spec's kind: evaluation cells (cells, or by architecture: xarch) or distilled records'
    timing (timing)."""
    from .report.tables import build_table, load_spec, write_table
    from .report.timing import build_timing_table, write_timing_table
    kind = load_spec(a.spec)["kind"]
    if kind == "timing":
        write_timing_table(build_timing_table(a.spec, a.cells), a.out_prefix)
    elif kind == "cells":
        rows = json.loads(a.extra_rows) if a.extra_rows else []
        write_table(build_table(a.spec, a.cells, datasets=a.datasets, ipcs=a.ipcs, extra_rows=rows), a.out_prefix)
    elif kind == "xarch":  # one dataset x IPC, named by the spec (--datasets / --ipcs do not apply)
        from .report.xarch import build_xarch_table, write_xarch_table
        write_xarch_table(build_xarch_table(a.spec, a.cells), a.out_prefix)
    else:
        raise DdflowError(f"{a.spec}: a {kind!r} spec is not a table of results/tables (kinds: cells, timing, xarch)")


def cmd_import(a) -> None:
    """An outside distilled set to ddflow records (ddflow.interop): one per seed (`{seed}` in --out for several)."""
    from .interop.imports import build_records, check_entry, options_entry
    entry = options_entry(a.path, a.format, a.dataset, a.ipc, a.space, a.seed, lr=_number_or_path(a.lr), zca=a.zca,
                          protocols=a.protocols, eval_as=a.eval_as, normalize_as=a.normalize_as, classes=a.classes)
    imp = check_entry(a.name, entry, a.preset, a.hparams_dir)
    records = build_records(imp, a.preset, a.data, seeds=None if a.seed is None else [a.seed])
    if len(records) > 1 and "{seed}" not in a.out:
        raise DdflowError(f"{a.path}: {len(records)} experiments; put {{seed}} in --out or choose one with --seed")
    from .records import check_record
    from .runtime import provenance
    for r in records:
        out = a.out.replace("{seed}", str(r.seed))
        check_record(r, f"{a.path} (import {a.name})")  # the checks every loaded record passes, before it is written
        r.extra.setdefault("provenance", provenance())
        r.save(out)
        log.info("%s: %s (%s, %s space, %d images)", out, r.cell, a.format, r.space, len(r.images))


def _number_or_path(v: str | None):
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return v


def cmd_export(a) -> None:
    from .interop.export import export_record
    from .records import load_distilled
    export_record(load_distilled(a.distilled), a.out, a.png_dir, a.space)


def cmd_whole(a) -> None:
    from .runtime import resolve_device
    from .whole import train_whole
    train_whole(a.dataset, a.data, a.preset, resolve_device(a.device), a.out, a.hparams_dir)


def cmd_results_matrix(a) -> None:
    from .report.matrix import write_matrix
    rows = write_matrix(a.results, a.papers, a.out, a.presets)
    log.info("%s: %d cells (presets: %s)", a.out, len(rows), ", ".join(a.presets or ["all"]))


def cmd_grid(a) -> None:
    from .report.figures import distilled_grid
    distilled_grid(a.distilled, a.out)


def cmd_acc_vs_ipc(a) -> None:
    from .report.figures import accuracy_vs_ipc
    accuracy_vs_ipc(a.cells, a.dataset, a.out)


def cmd_acc_vs_iteration(a) -> None:
    from .report.figures import accuracy_vs_iteration
    accuracy_vs_iteration(a.cells, a.dataset, a.ipc, a.out, a.title)


def cmd_experts(a) -> None:
    from .runtime import resolve_device
    from .stages import experts
    experts.run(a.dataset, a.prep, a.net, a.indices, json.loads(a.settings), a.data, a.outs, resolve_device(a.device),
                resume=a.resume, receipt=a.receipt)


def cmd_trajectory_sample(a) -> None:
    from .stages import sampling
    sampling.run(a.sampler, a.dataset, a.prep, a.net, a.experts, a.out)


def _isa_inputs(a):
    from .data import get_info, load_real
    from .records.featnet import load_feature_net
    from .runtime import resolve_device
    device = resolve_device(a.device)
    info = get_info(a.dataset)
    return load_real(a.data, info, device), load_feature_net(a.feature_net, info, device).eval()


def cmd_isa_fig5(a) -> None:
    from .report.isa import fig5
    fig5(a.cells, a.dataset, a.ipc, a.out)


def _paper_values(a) -> dict | None:
    from .report.tables import load_spec
    return load_spec(a.spec).get("paper") if a.spec else None


def cmd_isa_information(a) -> None:
    from .report.isa import information_table
    data, net = _isa_inputs(a)
    information_table(a.distilled, data, net, a.out_prefix, a.batch, a.batches, paper=_paper_values(a))


def cmd_isa_recall(a) -> None:
    from .report.isa import recall_table
    data, net = _isa_inputs(a)
    recall_table(a.distilled, data, net, a.out_prefix, a.k, paper=_paper_values(a))


def cmd_isa_fig6(a) -> None:
    from .report.isa import fig6
    data, net = _isa_inputs(a)
    fig6(a.distilled, data, net, a.out)


def cmd_smoke(a) -> int:
    """Ten minutes on one GPU (ddflow.smoke): prints the Markdown table; 1 when a step failed."""
    from .runtime import resolve_device
    from .smoke import run_smoke
    if a.tiny and a.threads is None and "SNAKEMAKE_THREADS" not in os.environ:
        import torch
        torch.set_num_threads(1)  # toy sizes: one thread is fastest (a second one spins: ~5x the CPU time measured)
    report = run_smoke(a.out, resolve_device(a.device), mnist=a.mnist, cifar10=a.cifar10, hp_dir=a.hparams_dir,
                       tiny=a.tiny, budget=a.budget, steps=a.steps)
    print((Path(a.out) / "smoke.md").read_text(), end="")
    return 1 if any(s.get("error") for s in report["steps"].values()) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ddflow", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

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
    p.set_defaults(fn=cmd_distill)

    p = sub.add_parser("evaluate", help="evaluate one distilled set under one protocol (ddflow.interop.evaluate)")
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
    p.add_argument("--validation", default=None, help="the validation split (protocols that choose on it)")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("table", help="a paper table from evaluation cells (or distilled records, kind timing)")
    p.add_argument("--spec", required=True)
    p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--ipcs", nargs="+", type=int, required=True)
    p.add_argument("--out-prefix", required=True)
    p.add_argument("--extra-rows", default=None, help="JSON list of rows added after the spec's (imported sets)")
    p.add_argument("cells", nargs="*")
    p.set_defaults(fn=cmd_table)

    p = sub.add_parser("import", help="a distilled set made by other code -> ddflow record(s) (ddflow.interop)")
    _common(p)
    p.add_argument("--name", required=True, help="the id it is evaluated and tabled under (not a method id)")
    p.add_argument("--path", required=True)
    p.add_argument("--format", required=True, help="plain | mtt | dc | png | rfad | kip")
    p.add_argument("--dataset", required=True)
    p.add_argument("--ipc", type=int, required=True)
    p.add_argument("--space", required=True, help="pixels | normalized | zca")
    p.add_argument("--seed", type=int, default=None, help="the seed (dc format: the experiment; default all)")
    p.add_argument("--lr", default=None, help="the learned lr: a number or a .pt file holding it")
    p.add_argument("--zca", default=None, help="space zca: a ZCA state file, or kornia|frepo|kip (fitted on --data)")
    p.add_argument("--protocols", nargs="+", default=None)
    p.add_argument("--eval-as", default=None, help="the method whose evaluation settings apply")
    p.add_argument("--normalize-as", default=None, help="the dataset whose mean/std a normalized set used")
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

    p = sub.add_parser("whole", help="the whole-dataset bound: ConvNets trained on the full training split (dc loop)")
    _common(p)
    for k in ("dataset", "data", "preset", "out"):
        p.add_argument(f"--{k}", required=True)
    p.set_defaults(fn=cmd_whole)

    p = sub.add_parser("results-matrix", help="every evaluated cell (preset marked) beside the paper's value")
    p.add_argument("--results", default="results", help="the results folder (its eval/ cells are read)")
    p.add_argument("--papers", default="workflow/papers", help="the table specs")
    p.add_argument("--presets", nargs="+", default=None, help="only these presets (default all; docs/: paper)")
    p.add_argument("--out", default="results/RESULTS.md", help="docs/RESULTS.md: paper-scale cells only")
    p.set_defaults(fn=cmd_results_matrix)

    p = sub.add_parser("grid", help="image grid of a distilled set")
    p.add_argument("--distilled", required=True)
    p.add_argument("--out", required=True)
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

    from .report.cost import add_parser as add_cost
    add_cost(sub)
    from .report.fair import add_parser as add_fair
    add_fair(sub)

    p = sub.add_parser("smoke", help="ten minutes on one GPU: accuracy against the official code, and speed")
    _common(p)
    p.add_argument("--out", required=True, help="folder for smoke.json, smoke.md and the runs' files")
    p.add_argument("--mnist", default=None, help="MNIST npz (uint8 NHWC x_train, y_train, x_test, y_test)")
    p.add_argument("--cifar10", default=None, help="CIFAR-10 npz (same layout)")
    p.add_argument("--tiny", action="store_true", help="toy sizes on the CPU, one thread (makes missing datasets)")
    p.add_argument("--budget", type=float, default=None, help="seconds per step (default: per-step budgets)")
    p.add_argument("--steps", nargs="+", default=None, help="a subset of: dc dm dsa mtt eval (default all)")
    p.set_defaults(fn=cmd_smoke)

    a = parser.parse_args(argv)
    from .runtime import setup, versions
    setup(getattr(a, "threads", None))
    log.info("ddflow %s: %s", a.cmd, json.dumps(versions(getattr(a, "device", None))))
    try:
        return a.fn(a) or 0
    except DdflowError as e:
        print(f"ddflow error: {e}", file=sys.stderr)
        return 2
