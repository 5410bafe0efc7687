# pilip: seed molecules -> energy-only QM labels -> weak-loss-trained potentials -> report.
# Every stage is a `pilip` command (see `pilip --help`); rules only wire files together.
from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/label.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/train.smk"


rule all:
    input:
        expand("configurations/{system}.parquet", system=SYSTEMS),
        f"datasets/{TRAIN_REFERENCE}.parquet",
        f"datasets/{TRAIN_REFERENCE}.summary.txt",
