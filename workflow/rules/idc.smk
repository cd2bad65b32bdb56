# IDC / DREAM (issue 5): DREAM's supplementary Table 2 from the distilled records' own timing. Its cells are the
# distillations of the configured idc/dream runs (not evaluation cells), hence its own rule, preferred over `table`.


localrules:
    dream_t2,


ruleorder: dream_t2 > table


def dream_t2_inputs(wildcards):
    rows = ddconfig.table_rows(PAPERS / "dream_t2.yaml")
    return [distilled_path(m, d, i, s) for m, _ in rows if m in GRID["methods"]
            for d in GRID["datasets"] for i in GRID["ipcs"] for s in GRID["seeds"]]


rule dream_t2:
    input:
        dream_t2_inputs,
    output:
        multiext("results/tables/dream_t2", ".csv", ".md", ".tex"),
    params:
        spec=str(PAPERS / "dream_t2.yaml"),
    log:
        "results/logs/tables/dream_t2.log",
    shell:
        "python -m ddflow timing-table --spec {params.spec} --out-prefix results/tables/dream_t2 {input} > {log} 2>&1"
