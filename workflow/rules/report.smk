# Stage 6: paper tables (CSV, Markdown, LaTeX, HTML), figures (PNG with a PDF copy) and ISA's analyses, each from its spec in
# workflow/papers/ (the data: methods, protocol, paper values); `snakemake --report report.html` collects them.
# Seconds of work each, except the ISA analyses that compute feature-net features: the others are localrules, so a
# cluster run does not queue them.


localrules:
    table,
    grid_figure,
    acc_vs_ipc,
    dream_fig1,
    isa_fig5,
    isa_fig8,
    isa_analyses,
    results_matrix,
    robust_scores,
    cost_storage,
    acc_vs_storage,


rule table:
    input:
        table_inputs,
    output:
        csv="results/tables/{table}.csv",
        md="results/tables/{table}.md",
        tex="results/tables/{table}.tex",
        html=report(
            "results/tables/{table}.html",
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
    log:
        "results/logs/tables/{table}.log",
    conda:
        REPORT_ENV
    params:
        spec=table_spec,
        datasets=GRID["datasets"],
        ipcs=[str(i) for i in GRID["ipcs"]],
        prefix="results/tables/{table}",
        extra_rows=table_extra_rows,
    shell:
        "python -m ddflow table --spec {params.spec:q} --datasets {params.datasets:q} --ipcs {params.ipcs:q}"
        " --extra-rows {params.extra_rows:q} --out-prefix {params.prefix:q} {input:q} > {log:q} 2>&1"


# The image grids of the configured grid's sets at the quick preset: one job per dataset (rule grid_figures), as a
# grid takes about a second to draw and a process about two to start (torch); such a job waits for every set of its
# dataset. At the paper preset (days of distillation) each grid follows its set: one job per set (grid_figure), the
# rule that also draws any set outside the configured grid.
if GRID_BATCHED:

    localrules:
        grid_figures,

    ruleorder: grid_figures > grid_figure

    rule grid_figures:
        input:
            grid_sets,
        output:
            png=[
                report(
                    path,
                    caption="../report/grids.rst",
                    category="Distilled images",
                    subcategory=method,
                )
                for method, path in grid_figure_patterns("png")
            ],
            pdf=[path for _, path in grid_figure_patterns("pdf")],
        log:
            "results/logs/figures/grids/{dataset}.log",
        conda:
            REPORT_ENV
        shell:
            "python -m ddflow grid --distilled {input:q} --out {output.png:q} > {log:q} 2>&1"


rule grid_figure:
    input:
        "results/distilled/{method}/{dataset}/ipc{ipc}/s{seed}.pt",
    output:
        png=report(
            "results/figures/grids/{method}/{dataset}/ipc{ipc}/s{seed}.png",
            caption="../report/grid.rst",
            category="Distilled images",
            subcategory="{method}",
        ),
        pdf="results/figures/grids/{method}/{dataset}/ipc{ipc}/s{seed}.pdf",
    log:
        "results/logs/figures/grids/{method}/{dataset}/ipc{ipc}/s{seed}.log",
    conda:
        REPORT_ENV
    shell:
        "python -m ddflow grid --distilled {input:q} --out {output.png:q} > {log:q} 2>&1"


rule acc_vs_ipc:
    input:
        acc_vs_ipc_cells,
    output:
        png=report(
            "results/figures/acc_vs_ipc/{dataset}.png",
            caption="../report/acc_vs_ipc.rst",
            category="Accuracy vs IPC",
        ),
        pdf="results/figures/acc_vs_ipc/{dataset}.pdf",
    log:
        "results/logs/figures/acc_vs_ipc/{dataset}.log",
    conda:
        REPORT_ENV
    shell:
        "python -m ddflow acc-vs-ipc --dataset {wildcards.dataset:q} --out {output.png:q} {input:q} > {log:q} 2>&1"


rule dream_fig1:
    input:
        dream_fig1_cells,
    output:
        png=report(
            "results/figures/dream/fig1_{dataset}_ipc{ipc}.png",
            caption="../report/dream_fig1.rst",
            category="DREAM",
        ),
        pdf="results/figures/dream/fig1_{dataset}_ipc{ipc}.pdf",
    log:
        "results/logs/figures/dream/fig1_{dataset}_ipc{ipc}.log",
    conda:
        REPORT_ENV
    params:
        title=figure_title("dream_fig1"),
    shell:
        "python -m ddflow acc-vs-iteration --dataset {wildcards.dataset:q} --ipc {wildcards.ipc:q}"
        " --title {params.title:q} --out {output.png:q} {input:q} > {log:q} 2>&1"


# ---- fair comparisons: DD-Ranking's robust scores, cost and storage of every set (docs/fair.md) ----------------


rule robust_scores:
    input:
        cells=robust_cells,
        distilled=fair_distilled,
    output:
        csv="results/tables/fair/robust_scores.csv",
        md="results/tables/fair/robust_scores.md",
        tex="results/tables/fair/robust_scores.tex",
        html=report(
            "results/tables/fair/robust_scores.html",
            caption="../report/robust_scores.rst",
            category="Fair comparisons",
        ),
    log:
        "results/logs/tables/fair/robust_scores.log",
    conda:
        REPORT_ENV
    params:
        protocols=fair_protocols(),
        settings=robust_settings,
        prefix=out_prefix,
    shell:
        "python -m ddflow robust-scores --protocols {params.protocols:q} --settings {params.settings:q}"
        " --out-prefix {params.prefix:q} {input.cells:q} --distilled {input.distilled:q} > {log:q} 2>&1"


rule cost_storage:
    input:
        cells=cells(),
        distilled=fair_distilled,
    output:
        csv="results/tables/fair/cost_storage.csv",
        md="results/tables/fair/cost_storage.md",
        tex="results/tables/fair/cost_storage.tex",
        html=report(
            "results/tables/fair/cost_storage.html",
            caption="../report/cost_storage.rst",
            category="Fair comparisons",
        ),
    log:
        "results/logs/tables/fair/cost_storage.log",
    conda:
        REPORT_ENV
    params:
        protocols=fair_protocols(),
        prefix=out_prefix,
    shell:
        "python -m ddflow cost-storage --protocols {params.protocols:q} --out-prefix {params.prefix:q}"
        " {input.cells:q} --distilled {input.distilled:q} > {log:q} 2>&1"


rule acc_vs_storage:
    input:
        cells=acc_vs_ipc_cells,
        distilled=fair_distilled,
    output:
        png=report(
            "results/figures/acc_vs_storage/{dataset}.png",
            caption="../report/acc_vs_storage.rst",
            category="Fair comparisons",
        ),
        pdf="results/figures/acc_vs_storage/{dataset}.pdf",
    log:
        "results/logs/figures/acc_vs_storage/{dataset}.log",
    conda:
        REPORT_ENV
    params:
        protocols=fair_protocols(),
    shell:
        "python -m ddflow acc-vs-storage --protocols {params.protocols:q} --dataset {wildcards.dataset:q}"
        " --out {output.png:q} {input.cells:q} --distilled {input.distilled:q} > {log:q} 2>&1"


# ---- ISA's analyses (`snakemake isa_analyses` makes them all for the configured datasets and IPCs) -------------


rule isa_analyses:
    input:
        isa_analysis_targets(),


rule isa_fig5:
    input:
        isa_fig5_cells,
    output:
        png=report(
            "results/figures/isa/fig5_{dataset}_ipc{ipc}.png",
            caption="../report/isa_fig5.rst",
            category="ISA",
        ),
        pdf="results/figures/isa/fig5_{dataset}_ipc{ipc}.pdf",
    log:
        "results/logs/figures/isa/fig5_{dataset}_ipc{ipc}.log",
    conda:
        REPORT_ENV
    shell:
        "python -m ddflow isa-fig5 --dataset {wildcards.dataset:q} --ipc {wildcards.ipc:q} --out {output.png:q} {input:q} > {log:q} 2>&1"


rule isa_fig8:
    input:
        isa_fig8_cells,
    output:
        png=report(
            "results/figures/isa/fig8_{dataset}_ipc{ipc}.png",
            caption="../report/isa_fig8.rst",
            category="ISA",
        ),
        pdf="results/figures/isa/fig8_{dataset}_ipc{ipc}.pdf",
    log:
        "results/logs/figures/isa/fig8_{dataset}_ipc{ipc}.log",
    conda:
        REPORT_ENV
    params:
        title=figure_title("isa_fig8"),
    shell:
        "python -m ddflow acc-vs-iteration --dataset {wildcards.dataset:q} --ipc {wildcards.ipc:q}"
        " --title {params.title:q} --out {output.png:q} {input:q} > {log:q} 2>&1"


rule isa_fig6:
    input:
        distilled=isa_distilled("isa_fig6"),
        data="results/data/{dataset}.npz",
        featnet=isa_featnet,
    output:
        png=report(
            "results/figures/isa/fig6_{dataset}_ipc{ipc}.png",
            caption="../report/isa_fig6.rst",
            category="ISA",
        ),
        pdf="results/figures/isa/fig6_{dataset}_ipc{ipc}.pdf",
    log:
        "results/logs/figures/isa/fig6_{dataset}_ipc{ipc}.log",
    conda:
        ENV
    threads: TORCH_THREADS["isa_fig6"]
    resources:
        gpu=gpu_count,  # feature-net features, on the run's device
    params:
        device=config["device"],
        threads=TORCH_THREADS["isa_fig6"],
    shell:
        "python -m ddflow isa-fig6 --dataset {wildcards.dataset:q} --data {input.data:q} --feature-net {input.featnet:q}"
        " --device {params.device:q} --threads {params.threads} --out {output.png:q} {input.distilled:q} > {log:q} 2>&1"


rule isa_table:
    input:
        distilled=isa_table_distilled,
        data="results/data/{dataset}.npz",
        featnet=isa_featnet,
    output:
        csv="results/tables/isa/{kind}_{dataset}_ipc{ipc}.csv",
        md="results/tables/isa/{kind}_{dataset}_ipc{ipc}.md",
        html=report(
            "results/tables/isa/{kind}_{dataset}_ipc{ipc}.html",
            caption="../report/isa_table.rst",
            category="ISA",
        ),
    log:
        "results/logs/tables/isa/{kind}_{dataset}_ipc{ipc}.log",
    wildcard_constraints:
        kind="information|recall",
    conda:
        ENV
    threads: TORCH_THREADS["isa_table"]
    resources:
        gpu=gpu_count,  # feature-net features, on the run's device
    params:
        spec=isa_table_spec,
        args=isa_table_args,
        device=config["device"],
        threads=TORCH_THREADS["isa_table"],
        prefix="results/tables/isa/{kind}_{dataset}_ipc{ipc}",
    shell:
        "python -m ddflow isa-{wildcards.kind:q} --dataset {wildcards.dataset:q} --data {input.data:q}"
        " --feature-net {input.featnet:q} --device {params.device:q} --threads {params.threads} {params.args} --spec {params.spec:q}"
        " --out-prefix {params.prefix:q} {input.distilled:q} > {log:q} 2>&1"


# ---- the results matrix (not in the default target: `snakemake results_matrix`) -------------------------------


rule results_matrix:
    input:
        cells=existing_eval_cells(),
        specs=paper_specs(),
    output:
        "results/RESULTS.md",
    log:
        "results/logs/results_matrix.log",
    conda:
        REPORT_ENV
    params:
        papers=PAPERS,
    shell:
        "python -m ddflow results-matrix --results results --papers {params.papers:q} --out {output:q} > {log:q} 2>&1"
