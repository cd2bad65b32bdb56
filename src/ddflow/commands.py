"""The subcommands' handlers: each turns its parsed arguments into one call of the library (ddflow.cli builds the
parsers and dispatches). A stage command takes the settings its rule resolved (--settings) or, run by hand, resolves
them here once (ddflow.settings)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .errors import DdflowError

log = logging.getLogger("ddflow")


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


def _settings(a, resolve):
    """The settings a stage runs with: --settings (the JSON its rule resolved) when given, else resolve() here
    (a command run by hand), once."""
    return json.loads(a.settings) if a.settings else resolve()


def cmd_distill(a) -> None:
    from .runtime import resolve_device
    from .settings import distill_settings
    from .stages.distill import run
    settings = _settings(a, lambda: distill_settings(a.method, a.dataset, a.ipc, a.preset, a.hparams_dir,
                                                     paper_rule=a.paper_rule))
    run(a.method, a.dataset, a.ipc, a.seed, a.preset, settings, resolve_device(a.device), a.data, a.out,
        resume=a.resume, inputs=dict(kv.split("=", 1) for kv in a.input), save_every=a.save_every,
        snapshot_dir=a.snapshot_dir)


def cmd_evaluate(a) -> None:
    """One set under one protocol: the cell to --out, else as JSON on stdout."""
    from .runtime import resolve_device
    from .stages.evaluate import run
    if a.settings:  # a workflow job: the record, protocol, settings and data its rule resolved
        missing = [f"--{k}" for k in ("protocol", "data") if getattr(a, k) is None]
        if missing:
            raise DdflowError(f"evaluate --settings needs {' and '.join(missing)}")
        request = (a.distilled, a.protocol, json.loads(a.settings), a.data)
    else:
        from .interop.evaluate import number_or_path
        from .interop.evaluate import request as resolve_request
        request = resolve_request(a.distilled, dataset=a.dataset, data=a.data, protocol=a.protocol, preset=a.preset,
                                  hp_dir=a.hparams_dir, models=a.models, fmt=a.format, space=a.space, ipc=a.ipc,
                                  lr=number_or_path(a.lr), classes=a.classes)
    cell = run(*request, resolve_device(a.device), out=a.out, validation=a.validation, teacher=a.teacher)
    if not a.out:
        print(json.dumps(cell, indent=1, default=str))


def cmd_table(a) -> None:
    """A paper table by its spec's kind: evaluation cells (cells, or by architecture: xarch) or distilled records'
    timing (timing)."""
    from .report.tables import build_table, load_spec, write_table
    kind = load_spec(a.spec)["kind"]
    if kind == "timing":  # reads .pt records: torch (the other kinds read JSON cells only)
        from .report.timing import build_timing_table, write_timing_table
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
    from .interop.evaluate import number_or_path
    from .interop.imports import build_records, check_entry, options_entry
    entry = options_entry(a.path, a.format, a.dataset, a.ipc, a.space, a.seed, lr=number_or_path(a.lr), zca=a.zca,
                          protocols=a.protocols, eval_as=a.eval_as, normalize_as=a.normalize_as, classes=a.classes)
    imp = check_entry(a.name, entry, a.preset, a.hparams_dir, resolve=not a.resolved)
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


def cmd_export(a) -> None:
    from .interop.export import export_record
    from .records import load_distilled
    export_record(load_distilled(a.distilled), a.out, a.png_dir, a.space)


def cmd_whole(a) -> None:
    from .runtime import resolve_device
    from .settings import whole_settings
    from .stages.whole import run
    settings = _settings(a, lambda: whole_settings(a.dataset, a.preset, a.hparams_dir))
    run(a.dataset, a.data, a.preset, settings, resolve_device(a.device), a.out)


def cmd_results_matrix(a) -> None:
    from .report.matrix import write_matrix
    rows = write_matrix(a.results, a.papers, a.out, a.presets)
    log.info("%s: %d cells (presets: %s)", a.out, len(rows), ", ".join(a.presets or ["all"]))


def cmd_grid(a) -> None:
    """The image grid of each --distilled set into the --out at the same place (rule grid_figures draws every set
    of a dataset in one job: the per-process start-up, importing torch, is most of a single grid's time)."""
    from .report.figures import distilled_grid
    if len(a.distilled) != len(a.out):
        raise DdflowError(f"grid: {len(a.distilled)} --distilled sets but {len(a.out)} --out paths; give one PNG "
                          "path per set, in the same order")
    for i, (path, out) in enumerate(zip(a.distilled, a.out), 1):
        distilled_grid(path, out)
        log.info("grid %d/%d: %s", i, len(a.out), out)


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
