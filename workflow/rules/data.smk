# Stage 1: a dataset as results/data/{dataset}.npz (uint8 NHWC, fixed train/test split).
# A localrule: it may download through torchvision, and cluster compute nodes often have no internet.


localrules:
    data,


rule data:
    input:
        data_inputs,
    output:
        "results/data/{dataset}.npz",
    log:
        "results/logs/data/{dataset}.log",
    conda:
        ENV
    params:
        args=data_args,
    shell:
        "python -m ddflow data --dataset {wildcards.dataset:q} --out {output:q} {params.args} > {log:q} 2>&1"
