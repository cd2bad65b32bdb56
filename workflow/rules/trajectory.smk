# Stages 2 and 3 of the trajectory family (MTT, EAD): expert trajectories and checkpoint-sampling manifests.
# Experts: one rule per block of experts (defined here in a loop at parse time), each writing its experts' own
# files results/experts/{dataset}/{prep}/{net}/e{i}.pt; a killed block resumes from results/resume/experts/.
# The block layout comes from workflow/hparams/experts.yaml and must be the same for every configured dataset.
from ddflow import trajectory as ddtraj  # noqa: E402
from ddflow.errors import DdflowError  # noqa: E402


wildcard_constraints:
    prep="raw|kornia|frepo",
    m=r"\d+",
    t=r"\d+",
    p=r"\d+",


def expert_settings(dataset):
    return ddhparams.resolve("experts", dataset, 0, PRESET, HPARAMS)


def _expert_layout():
    layouts = {}
    for d in GRID["datasets"]:
        s = expert_settings(d)
        layouts[d] = (int(s["experts"]), int(s["block"]))
    if len(set(layouts.values())) > 1:
        raise DdflowError(f"workflow/hparams/experts.yaml: experts/block differ between datasets {layouts}; "
                          "the expert rules need one layout")
    return next(iter(layouts.values()))


N_EXPERTS, EXPERT_BLOCK = _expert_layout()


def expert_paths(dataset, prep, net):
    return [ddtraj.expert_path(dataset, prep, net, i) for i in range(N_EXPERTS)]


def expert_settings_json(wildcards):
    return json.dumps(expert_settings(wildcards.dataset), sort_keys=True)


for _b, _members in enumerate(ddtraj.blocks(N_EXPERTS, EXPERT_BLOCK)):

    rule:
        name:
            f"experts_block{_b}"
        input:
            data="results/data/{dataset}.npz",
        output:
            [f"results/experts/{{dataset}}/{{prep}}/{{net}}/e{i}.pt" for i in _members],
        params:
            settings=expert_settings_json,
            indices=" ".join(map(str, _members)),
            resume=f"results/resume/experts/{{dataset}}/{{prep}}/{{net}}/block{_b}.pt",
            device=config["device"],
        resources:
            gpu=GPU,
        threads: 1
        log:
            f"results/logs/experts/{{dataset}}/{{prep}}/{{net}}/block{_b}.log",
        shell:
            "python -m ddflow experts --dataset {wildcards.dataset} --prep {wildcards.prep} --net {wildcards.net}"
            " --data {input.data} --settings '{params.settings}' --indices {params.indices} --outs {output}"
            " --resume {params.resume} --device {params.device} --threads {threads} > {log} 2>&1"


def sampling_experts(wildcards):
    return expert_paths(wildcards.dataset, wildcards.prep, wildcards.net)


rule mtt_windows:
    input:
        sampling_experts,
    output:
        "results/trajectories/{dataset}/{prep}/{net}/mtt-m{m}-t{t}.json",
    log:
        "results/logs/trajectories/{dataset}/{prep}/{net}/mtt-m{m}-t{t}.log",
    shell:
        "python -m ddflow trajectory-sample --sampler mtt-m{wildcards.m}-t{wildcards.t} --dataset {wildcards.dataset}"
        " --prep {wildcards.prep} --net {wildcards.net} --out {output} {input} > {log} 2>&1"


rule ead_pool:
    input:
        sampling_experts,
    output:
        "results/trajectories/{dataset}/{prep}/{net}/ead-p{p}.pt",
    log:
        "results/logs/trajectories/{dataset}/{prep}/{net}/ead-p{p}.log",
    shell:
        "python -m ddflow trajectory-sample --sampler ead-p{wildcards.p} --dataset {wildcards.dataset}"
        " --prep {wildcards.prep} --net {wildcards.net} --out {output} {input} > {log} 2>&1"
