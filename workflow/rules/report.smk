# Stage 6: paper tables (CSV, Markdown, LaTeX) and figures; `snakemake --report report.html` collects them.
# Seconds of work each: localrules, so a cluster run does not queue them.


localrules:
    table,
    grid_figure,
    acc_vs_ipc,
    dream_fig1,


rule table:
    input:
        table_cells,
    output:
        multiext("results/tables/{table}", ".csv", ".md", ".tex"),
    params:
        spec=table_spec,
        datasets=" ".join(GRID["datasets"]),
        ipcs=" ".join(map(str, GRID["ipcs"])),
    log:
        "results/logs/tables/{table}.log",
    shell:
        "python -m ddflow table --spec {params.spec} --datasets {params.datasets} --ipcs {params.ipcs}"
        " --out-prefix results/tables/{wildcards.table} {input} > {log} 2>&1"


rule grid_figure:
    input:
        "results/distilled/{method}/{dataset}/ipc{ipc}/s{seed}.pt",
    output:
        report(
            "results/figures/grids/{method}/{dataset}/ipc{ipc}/s{seed}.png",
            caption="../report/grid.rst",
            category="Distilled images",
            subcategory="{method}",
        ),
    log:
        "results/logs/figures/grids/{method}/{dataset}/ipc{ipc}/s{seed}.log",
    shell:
        "python -m ddflow grid --distilled {input} --out {output} > {log} 2>&1"


rule acc_vs_ipc:
    input:
        acc_vs_ipc_cells,
    output:
        report("results/figures/acc_vs_ipc/{dataset}.png", caption="../report/acc_vs_ipc.rst",
               category="Accuracy vs IPC"),
    log:
        "results/logs/figures/acc_vs_ipc/{dataset}.log",
    shell:
        "python -m ddflow acc-vs-ipc --dataset {wildcards.dataset} --out {output} {input} > {log} 2>&1"


rule dream_fig1:
    input:
        dream_fig1_cells,
    output:
        report("results/figures/dream/fig1_{dataset}_ipc{ipc}.png", caption="../report/dream_fig1.rst",
               category="DREAM"),
    log:
        "results/logs/figures/dream/fig1_{dataset}_ipc{ipc}.log",
    shell:
        "python -m ddflow acc-vs-iteration --dataset {wildcards.dataset} --ipc {wildcards.ipc}"
        " --title 'DREAM supp. Fig. 1: {wildcards.dataset}, IPC {wildcards.ipc}' --out {output} {input} > {log} 2>&1"
