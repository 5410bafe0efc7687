# pilip: seed molecules -> energy-only QM labels -> weak-loss-trained potentials -> report.
# Every stage is a `pilip` command (see `pilip --help`); rules only wire files together.
import os
import sys

from snakemake.utils import min_version

from pilip.config import validate_config
from pilip.errors import PilipError

SCHEMA = os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")

min_version("8.0")


configfile: "config.yaml"


# Validate against the JSON schema and fill its defaults; a bad key stops the run with one line
# naming the file, the key and what was expected, before any job starts.
try:
    config.update(validate_config(config, SCHEMA, source=workflow.configfiles[0]))
except PilipError as error:
    sys.exit(f"pilip: error: {error}")


include: "workflow/rules/common.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/label.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/md.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        expand("configurations/{system}.parquet", system=SYSTEMS),
        f"datasets/{TRAIN_REFERENCE}.parquet",
        f"datasets/{TRAIN_REFERENCE}.summary.txt",
        "results/summary.md",
