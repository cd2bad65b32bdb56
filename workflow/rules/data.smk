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


# The validation split of a dataset's training split (ddflow.data.validation; sizes: workflow/hparams/stages/validation.yaml):
# what methods that choose on held-out data choose on, never the test split.
rule validation_split:
    input:
        unpack(checked_inputs(data="results/data/{dataset}.npz")),
    output:
        "results/splits/{dataset}.npz",
    log:
        "results/logs/splits/{dataset}.log",
    priority: PRIORITY["inputs"]
    conda:
        ENV
    params:
        settings=validation_settings,
    shell:
        "python -m ddflow validation-split --dataset {wildcards.dataset:q} --data {input.data:q}"
        " --settings {params.settings:q} --out {output:q} > {log:q} 2>&1"
