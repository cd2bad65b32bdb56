# Stage 5: K networks trained from scratch on a distilled set under one protocol -> one JSON cell.


rule evaluate:
    input:
        distilled="results/distilled/{method}/{dataset}/ipc{ipc}/s{seed}.pt",
        data="results/data/{dataset}.npz",
    output:
        "results/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}.json",
    log:
        "results/logs/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}.log",
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    params:
        settings=eval_settings,
        device=config["device"],
        hparams_dir=HPARAMS,
        preset=config["preset"],
    shell:
        "python -m ddflow evaluate --distilled {input.distilled} --data {input.data} --protocol {wildcards.protocol}"
        " --preset {params.preset} --device {params.device} --threads {threads}"
        " --hparams-dir {params.hparams_dir} --out {output} > {log} 2>&1"


rule evaluate_snapshot:
    input:
        snapshots="results/distilled/{method}/{dataset}/ipc{ipc}/s{seed}",
        data="results/data/{dataset}.npz",
    output:
        "results/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}/it{it}.json",
    log:
        "results/logs/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}/it{it}.log",
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    params:
        settings=eval_settings,
        device=config["device"],
        hparams_dir=HPARAMS,
        preset=config["preset"],
    shell:
        "python -m ddflow evaluate --distilled {input.snapshots}/it{wildcards.it}.pt --data {input.data}"
        " --protocol {wildcards.protocol} --preset {params.preset} --device {params.device} --threads {threads}"
        " --hparams-dir {params.hparams_dir} --out {output} > {log} 2>&1"
