# ddflow: every table cell of the reproduced dataset-distillation papers is a target.
# Thin on purpose: config, validation, includes and `rule all`; the wiring lives in workflow/rules/common.smk.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/experts.smk"
include: "workflow/rules/sampling.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
