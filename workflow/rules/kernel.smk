# The kernel family (FRePo, ISA): ISA's analyses (paper-tables.md P6). The tables isa_t6 / isa_t7 go through rule
# table (their rows name protocols frepo and krr); distillations and evaluations through rules distill / evaluate.
# Targets (each by name; `snakemake isa_analyses` makes all of them for the configured datasets and IPCs):
#   results/figures/isa/fig5_{dataset}_ipc{ipc}.png     Fig. 5 (needs the frepo-drop-{hard,easy}{10,20,30} variants)
#   results/figures/isa/fig6_{dataset}_ipc{ipc}.png     Fig. 6 (frepo, frepo-drop-hard20, frepo-drop-easy20, isa)
#   results/figures/isa/fig8_{dataset}_ipc{ipc}.png     Fig. 8 (snapshots of frepo and isa, protocol frepo)
#   results/tables/isa/information_{dataset}_ipc{ipc}.md  the information test (frepo, isa)   [default run]
#   results/tables/isa/recall_{dataset}_ipc{ipc}.md       recall, k = 5 (frepo, isa)          [default run]

ISA_FIG5_METHODS = ["frepo"] + [f"frepo-drop-{w}{p}" for w in ("hard", "easy") for p in (10, 20, 30)]
ISA_FIG6_METHODS = ["frepo", "frepo-drop-hard20", "frepo-drop-easy20", "isa"]
ISA_PAIR = ["frepo", "isa"]
ISA_FEATNET = "ConvNet"  # the fixed feature space of recall / information test / Fig. 6: rule featnet's net
ISA_INFO_BATCH = {"quick": (256, 2), "paper": (1024, 5)}  # (real batch, number of batches); P6 uses batch 1024


def isa_seed():
    return GRID["seeds"][0]


def isa_fig5_cells(wildcards):
    return [eval_path("frepo", m, wildcards.dataset, wildcards.ipc, isa_seed()) for m in ISA_FIG5_METHODS]


def isa_distilled(methods):
    def fn(wildcards):
        return [distilled_path(m, wildcards.dataset, wildcards.ipc, isa_seed()) for m in methods]
    return fn


def isa_fig8_cells(wildcards):
    out = []
    for m in ISA_PAIR:
        out.append(eval_path("frepo", m, wildcards.dataset, wildcards.ipc, isa_seed()))
        for n in snapshot_iterations(m, wildcards.dataset, wildcards.ipc):
            out.append(snapshot_eval_path("frepo", m, wildcards.dataset, wildcards.ipc, isa_seed(), n))
    return out


def isa_default_targets():
    """The cheap analyses (feature-net features only) join the default run when frepo and isa are configured."""
    if not all(m in GRID["methods"] for m in ISA_PAIR):
        return []
    return [f"results/tables/isa/{kind}_{d}_ipc{i}.md" for kind in ("information", "recall")
            for d in GRID["datasets"] for i in GRID["ipcs"]]


EXTRA_TARGETS.append(isa_default_targets)


localrules:
    isa_fig5,
    isa_fig8,
    isa_analyses,


rule isa_analyses:
    input:
        [f"results/figures/isa/fig{n}_{d}_ipc{i}.png" for n in (5, 6, 8) for d in GRID["datasets"] for i in GRID["ipcs"]]
        + [f"results/tables/isa/{kind}_{d}_ipc{i}.md" for kind in ("information", "recall")
           for d in GRID["datasets"] for i in GRID["ipcs"]],


rule isa_fig5:
    input:
        isa_fig5_cells,
    output:
        "results/figures/isa/fig5_{dataset}_ipc{ipc}.png",
    log:
        "results/logs/figures/isa/fig5_{dataset}_ipc{ipc}.log",
    shell:
        "python -m ddflow isa-fig5 --dataset {wildcards.dataset} --ipc {wildcards.ipc} --out {output} {input} > {log} 2>&1"


rule isa_fig8:
    input:
        isa_fig8_cells,
    output:
        "results/figures/isa/fig8_{dataset}_ipc{ipc}.png",
    log:
        "results/logs/figures/isa/fig8_{dataset}_ipc{ipc}.log",
    shell:
        "python -m ddflow acc-vs-iteration --dataset {wildcards.dataset} --ipc {wildcards.ipc}"
        " --title 'ISA Fig. 8: {wildcards.dataset}, IPC {wildcards.ipc} (protocol frepo)' --out {output} {input}"
        " > {log} 2>&1"


rule isa_fig6:
    input:
        distilled=isa_distilled(ISA_FIG6_METHODS),
        data="results/data/{dataset}.npz",
        featnet=f"results/nets/{{dataset}}/{ISA_FEATNET}-full.pt",
    output:
        "results/figures/isa/fig6_{dataset}_ipc{ipc}.png",
    params:
        device=config["device"],
    log:
        "results/logs/figures/isa/fig6_{dataset}_ipc{ipc}.log",
    shell:
        "python -m ddflow isa-fig6 --dataset {wildcards.dataset} --data {input.data} --feature-net {input.featnet}"
        " --device {params.device} --threads 1 --out {output} {input.distilled} > {log} 2>&1"


rule isa_table:
    input:
        distilled=isa_distilled(ISA_PAIR),
        data="results/data/{dataset}.npz",
        featnet=f"results/nets/{{dataset}}/{ISA_FEATNET}-full.pt",
    output:
        multiext("results/tables/isa/{kind}_{dataset}_ipc{ipc}", ".csv", ".md"),
    wildcard_constraints:
        kind="information|recall",
    params:
        device=config["device"],
        batch=ISA_INFO_BATCH[PRESET][0],
        batches=ISA_INFO_BATCH[PRESET][1],
    log:
        "results/logs/tables/isa/{kind}_{dataset}_ipc{ipc}.log",
    shell:
        "python -m ddflow isa-{wildcards.kind} --dataset {wildcards.dataset} --data {input.data}"
        " --feature-net {input.featnet} --device {params.device} --threads 1 --batch {params.batch}"
        " --batches {params.batches} --k 5 --out-prefix results/tables/isa/{wildcards.kind}_{wildcards.dataset}_ipc{wildcards.ipc}"
        " {input.distilled} > {log} 2>&1"
