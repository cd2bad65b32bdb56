# Stage 5: K networks trained from scratch on a distilled set under one protocol -> one JSON cell.


rule evaluate:
    input:
        unpack(
            eval_inputs(
                distilled="results/distilled/{method}/{dataset}/ipc{ipc}/s{seed}.pt",
                data="results/data/{dataset}.npz",
            )
        ),
    output:
        "results/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}.json",
    log:
        "results/logs/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}.log",
    conda:
        ENV
    threads: TORCH_THREADS["evaluate"]
    resources:
        gpu=gpu_count,
        runtime=job_runtime("gpu_job"),
        mem_mb=job_mem_mb("gpu_job"),
    params:
        settings=eval_settings,
        device=config["device"],
        threads=TORCH_THREADS["evaluate"],
        validation=validation_arg,
    shell:
        "python -m ddflow evaluate --distilled {input.distilled:q} --data {input.data:q} --protocol {wildcards.protocol:q}"
        " --settings {params.settings:q} --device {params.device:q} --threads {params.threads} {params.validation}"
        " --out {output:q} > {log:q} 2>&1"


rule evaluate_paper_rule:
    input:
        unpack(
            eval_inputs(
                snapshots="results/distilled/{method}/{dataset}/ipc{ipc}/s{seed}",
                data="results/data/{dataset}.npz",
            )
        ),
    output:
        "results/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}/paper_rule/it{it}.json",
    log:
        "results/logs/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}/paper_rule/it{it}.log",
    conda:
        ENV
    threads: TORCH_THREADS["evaluate_paper_rule"]
    resources:
        gpu=gpu_count,
        runtime=job_runtime("gpu_job"),
        mem_mb=job_mem_mb("gpu_job"),
    params:
        settings=paper_rule_settings,
        device=config["device"],
        threads=TORCH_THREADS["evaluate_paper_rule"],
        validation=validation_arg,
    shell:
        "python -m ddflow evaluate --distilled {input.snapshots:q}/it{wildcards.it:q}.pt --data {input.data:q}"
        " --protocol {wildcards.protocol:q} --settings {params.settings:q} --device {params.device:q}"
        " --threads {params.threads} {params.validation} --out {output:q} > {log:q} 2>&1"


rule evaluate_snapshot:
    input:
        unpack(
            eval_inputs(
                snapshots="results/distilled/{method}/{dataset}/ipc{ipc}/s{seed}",
                data="results/data/{dataset}.npz",
            )
        ),
    output:
        "results/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}/it{it}.json",
    log:
        "results/logs/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}/it{it}.log",
    conda:
        ENV
    threads: TORCH_THREADS["evaluate_snapshot"]
    resources:
        gpu=gpu_count,
        runtime=job_runtime("gpu_job"),
        mem_mb=job_mem_mb("gpu_job"),
    params:
        settings=eval_settings,
        device=config["device"],
        threads=TORCH_THREADS["evaluate_snapshot"],
        validation=validation_arg,
    shell:
        "python -m ddflow evaluate --distilled {input.snapshots:q}/it{wildcards.it:q}.pt --data {input.data:q}"
        " --protocol {wildcards.protocol:q} --settings {params.settings:q} --device {params.device:q}"
        " --threads {params.threads} {params.validation} --out {output:q} > {log:q} 2>&1"


# The whole-dataset bound (ddflow.stages.whole): ConvNets trained on the full training split, one cell per dataset.
rule whole_dataset:
    input:
        [whole_path(d) for d in GRID["datasets"]],


rule whole_dataset_cell:
    input:
        unpack(checked_inputs(data="results/data/{dataset}.npz")),
    output:
        "results/eval/whole/{dataset}.json",
    log:
        "results/logs/eval/whole/{dataset}.log",
    conda:
        ENV
    threads: TORCH_THREADS["whole_dataset_cell"]
    resources:
        gpu=gpu_count,
        runtime=job_runtime("gpu_job"),
        mem_mb=job_mem_mb("gpu_job"),
    params:
        settings=whole_settings_json,
        device=config["device"],
        preset=config["preset"],
        threads=TORCH_THREADS["whole_dataset_cell"],
    shell:
        "python -m ddflow whole --dataset {wildcards.dataset:q} --data {input.data:q} --preset {params.preset:q}"
        " --settings {params.settings:q} --device {params.device:q} --threads {params.threads} --out {output:q}"
        " > {log:q} 2>&1"
