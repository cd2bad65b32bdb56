# Stage 3 (trajectory methods): checkpoint sampling. Manifests of (expert, epoch) checkpoints: MTT's windows
# (a JSON naming the experts) and EAD's pool (one compact tensor file of the drawn checkpoints).


rule mtt_windows:
    input:
        expert_receipts,
    output:
        "results/trajectories/{dataset}/{prep}/{net}/mtt-m{m}-t{t}.json",
    log:
        "results/logs/trajectories/{dataset}/{prep}/{net}/mtt-m{m}-t{t}.log",
    priority: PRIORITY["experts"]
    conda:
        ENV
    params:
        experts=expert_files,
    shell:
        "python -m ddflow trajectory-sample --sampler mtt-m{wildcards.m:q}-t{wildcards.t:q} --dataset {wildcards.dataset:q}"
        " --prep {wildcards.prep:q} --net {wildcards.net:q} --out {output:q} {params.experts} > {log:q} 2>&1"


rule ead_pool:
    input:
        expert_receipts,
    output:
        "results/trajectories/{dataset}/{prep}/{net}/ead-p{p}.pt",
    log:
        "results/logs/trajectories/{dataset}/{prep}/{net}/ead-p{p}.log",
    priority: PRIORITY["experts"]
    conda:
        ENV
    params:
        experts=expert_files,
    shell:
        "python -m ddflow trajectory-sample --sampler ead-p{wildcards.p:q} --dataset {wildcards.dataset:q}"
        " --prep {wildcards.prep:q} --net {wildcards.net:q} --out {output:q} {params.experts} > {log:q} 2>&1"
