# Stage 2 (trajectory methods: MTT, EAD, HaBa): expert trajectories, trained in blocks of experts
# (workflow/hparams/stages/experts.yaml: experts, block); prep {prep}-batchstd standardises every batch (HaBa's experts).
# One job per block writes its experts' files results/experts/{dataset}/{prep}/{net}/e{i}.pt and then the block's
# receipt block{block}.json (its declared output: it exists only when every expert file of the block is whole).
# A killed block resumes from results/resume/experts/.


rule experts:
    input:
        unpack(checked_inputs(data="results/data/{dataset}.npz")),
    output:
        "results/experts/{dataset}/{prep}/{net}/block{block}.json",
    log:
        "results/logs/experts/{dataset}/{prep}/{net}/block{block}.log",
    priority: PRIORITY["experts"]
    conda:
        ENV
    threads: TORCH_THREADS["experts"]
    resources:
        gpu=gpu_count,
        runtime=job_runtime("experts"),
        mem_mb=job_mem_mb("experts"),
    params:
        settings=expert_settings_json,
        block=expert_block_args,
        resume="results/resume/experts/{dataset}/{prep}/{net}/block{block}.pt",
        device=config["device"],
        threads=TORCH_THREADS["experts"],
    shell:
        "python -m ddflow experts --dataset {wildcards.dataset:q} --prep {wildcards.prep:q} --net {wildcards.net:q}"
        " --data {input.data:q} --settings {params.settings:q} {params.block} --receipt {output:q}"
        " --resume {params.resume:q} --device {params.device:q} --threads {params.threads} > {log:q} 2>&1"
