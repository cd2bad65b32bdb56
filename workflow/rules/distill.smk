# Stage 4 (and the feature net some methods need): one job per method x dataset x IPC x seed.
# The resume file is deliberately not an output: Snakemake deletes a failed job's outputs, the resume file survives.


rule featnet:
    input:
        unpack(checked_inputs(data="results/data/{dataset}.npz")),
    output:
        "results/nets/{dataset}/{net}-full.pt",
    log:
        "results/logs/featnet/{dataset}/{net}.log",
    priority: PRIORITY["inputs"]
    conda:
        ENV
    threads: TORCH_THREADS["featnet"]
    resources:
        gpu=gpu_count,
        runtime=job_runtime("gpu_job"),
        mem_mb=job_mem_mb("gpu_job"),
    params:
        settings=featnet_settings,
        device=config["device"],
        threads=TORCH_THREADS["featnet"],
    shell:
        "python -m ddflow featnet --dataset {wildcards.dataset:q} --data {input.data:q} --net {wildcards.net:q}"
        " --settings {params.settings:q} --device {params.device:q} --threads {params.threads} --out {output:q} > {log:q} 2>&1"


rule distill:
    input:
        unpack(distill_inputs),
    output:
        final="results/distilled/{method}/{dataset}/ipc{ipc}/s{seed}.pt",
        snapshots=directory("results/distilled/{method}/{dataset}/ipc{ipc}/s{seed}"),
    log:
        "results/logs/distill/{method}/{dataset}/ipc{ipc}/s{seed}.log",
    wildcard_constraints:
        method=distilled_method_names(),
    priority: distill_priority
    conda:
        ENV
    threads: TORCH_THREADS["distill"]
    resources:
        gpu=gpu_count,
        runtime=job_runtime("distill"),
        mem_mb=job_mem_mb("distill"),
    params:
        settings=distill_settings_json,
        extra=distill_extra_args,
        resume="results/resume/{method}/{dataset}/ipc{ipc}/s{seed}.pt",
        device=config["device"],
        preset=config["preset"],
        save_every=config.get("save_every", 100),
        threads=TORCH_THREADS["distill"],
    shell:
        "python -m ddflow distill --method {wildcards.method:q} --dataset {wildcards.dataset:q}"
        " --ipc {wildcards.ipc:q} --seed {wildcards.seed:q} --preset {params.preset:q} --data {input.data:q}"
        " --device {params.device:q} --threads {params.threads} --settings {params.settings:q}"
        " --resume {params.resume:q} --save-every {params.save_every:q}"
        " --snapshot-dir {output.snapshots:q} {params.extra} --out {output.final:q} > {log:q} 2>&1"


# An imported distilled set (config `imports`; ddflow.interop): made elsewhere, checked and written as a record.
rule import_set:
    input:
        unpack(import_inputs),
    output:
        "results/distilled/{name}/{dataset}/ipc{ipc}/s{seed}.pt",
    log:
        "results/logs/import/{name}/{dataset}/ipc{ipc}/s{seed}.log",
    wildcard_constraints:
        name=import_names(),
    conda:
        ENV
    threads: TORCH_THREADS["import_set"]
    params:
        args=import_args,
        threads=TORCH_THREADS["import_set"],
    shell:
        "python -m ddflow import {params.args} --threads {params.threads} --out {output:q} > {log:q} 2>&1"
