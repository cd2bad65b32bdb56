# Stage 4 (and the feature net some methods need): one job per method x dataset x IPC x seed.
# The resume file is deliberately not an output: Snakemake deletes a failed job's outputs, the resume file survives.


rule featnet:
    input:
        data="results/data/{dataset}.npz",
    output:
        "results/nets/{dataset}/{net}-full.pt",
    log:
        "results/logs/featnet/{dataset}/{net}.log",
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    params:
        settings=featnet_settings,
        device=config["device"],
    shell:
        "python -m ddflow featnet --dataset {wildcards.dataset} --data {input.data} --net {wildcards.net}"
        " --settings '{params.settings}' --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


rule distill:
    input:
        unpack(distill_inputs),
    output:
        final="results/distilled/{method}/{dataset}/ipc{ipc}/s{seed}.pt",
        snapshots=directory("results/distilled/{method}/{dataset}/ipc{ipc}/s{seed}"),
    log:
        "results/logs/distill/{method}/{dataset}/ipc{ipc}/s{seed}.log",
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    params:
        hparams=method_hparams,
        extra=distill_extra_args,
        resume="results/resume/{method}/{dataset}/ipc{ipc}/s{seed}.pt",
        device=config["device"],
        hparams_dir=HPARAMS,
        preset=config["preset"],
        save_every=config.get("save_every", 100),
    shell:
        "python -m ddflow distill --method {wildcards.method} --dataset {wildcards.dataset}"
        " --ipc {wildcards.ipc} --seed {wildcards.seed} --preset {params.preset} --data {input.data}"
        " --device {params.device} --threads {threads} --hparams-dir {params.hparams_dir}"
        " --resume {params.resume} --save-every {params.save_every}"
        " --snapshot-dir {output.snapshots} {params.extra} --out {output.final} > {log} 2>&1"
