# pilip: seed molecules -> energy-only QM labels -> weak-loss-trained potentials -> report.
# Every stage is a `pilip` command (see `pilip --help`); rules only wire files together.
import copy
import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import min_version, update_config

from pilip.config import (
    SCHEMA_PATH,
    config_hash,
    resolved_config,
    typed_overrides,
    validate_config,
    write_config,
)
from pilip.errors import PilipError

min_version("8.0")


# A user's `--configfile my.yaml` REPLACES the repository's config.yaml: Snakemake would merge
# the two (planning the demo's systems beside the user's). `--config KEY=VALUE` overrides apply
# on top of whichever file is used.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


CONFIG_SOURCE = Path(workflow.configfiles[-1])
# Snakemake reads the values inside `--config training={"epochs": 3}` as strings: type them.
update_config(config, typed_overrides(workflow.config_settings.config))
GIVEN_CONFIG = copy.deepcopy(dict(config))  # as written (+ overrides), before defaults

# Validate against the JSON schema (pilip/schemas/config.schema.yaml, shipped in the package)
# and fill its defaults; a bad key stops the run with one line naming the file, the key and
# what was expected, before any job starts.
try:
    overrides = " (with --config overrides)" if workflow.config_settings.config else ""
    config.update(
        validate_config(config, SCHEMA_PATH, source=f"{CONFIG_SOURCE}{overrides}")
    )
    # The user's config with its --config overrides (seed files made absolute) is what every
    # `pilip` command reads, so an override reaches the commands and not only the DAG (the
    # commands fill the schema's defaults themselves). Named by its content, so a second
    # snakemake started with other settings (even one refused by the lock) cannot change the
    # file under running jobs. The jobs find it through $PILIP_WORKFLOW_CONFIG, set by the shell
    # prefix: no rerun trigger (each rule's params hold exactly the settings it reads).
    RESOLVED = resolved_config(GIVEN_CONFIG, CONFIG_SOURCE.parent)
    RESOLVED_CONFIG = f".pilip/config-{config_hash(RESOLVED)}.yaml"
    write_config(
        RESOLVED,
        RESOLVED_CONFIG,
        header=f"# Written by the Snakefile from {CONFIG_SOURCE}{overrides}; do not edit.\n",
    )
    exported = (
        shlex.quote(os.path.abspath(RESOLVED_CONFIG))
        .replace("{", "{{")
        .replace("}", "}}")
    )
    prefix = f"set -euo pipefail; export PILIP_WORKFLOW_CONFIG={exported}; "
except PilipError as error:
    sys.exit(f"pilip: error: {error}")


# The jobs run the `pilip` command of the environment that runs Snakemake (the one this
# Snakefile imported pilip from), activated or not: its folder goes first on the jobs' PATH
# (cluster jobs too: they run this Snakefile with the same interpreter). Not with --use-conda
# (--software-deployment-method conda): the prefix runs inside each job's activated conda
# environment then, whose own pilip must win.
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    # beside the interpreter (a venv's or conda env's bin/), else where its installs put scripts
    PILIP_BIN = next(
        (
            folder
            for folder in (
                os.path.dirname(sys.executable),
                sysconfig.get_path("scripts"),
                sysconfig.get_path("scripts", f"{os.name}_user"),
            )
            if os.access(os.path.join(folder, "pilip"), os.X_OK)
        ),
        None,
    )
    if PILIP_BIN:
        quoted = shlex.quote(PILIP_BIN).replace("{", "{{").replace("}", "}}")
        prefix += f'export PATH={quoted}:"$PATH"; '
    elif not shutil.which("pilip"):
        sys.exit(
            f"pilip: error: no `pilip` command beside {sys.executable} (the Python running"
            f" Snakemake) nor on PATH; install pilip there: {sys.executable} -m pip install"
            f" {shlex.quote(workflow.basedir)}"
        )
shell.prefix(prefix)


include: "workflow/rules/common.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/label.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/cheap.smk"
include: "workflow/rules/md.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        expand("configurations/{system}.parquet", system=SYSTEMS),
        # without systems (and no configurations tables yet) there is nothing to collect
        f"datasets/{TRAIN_REFERENCE}.parquet" if SYSTEMS else [],
        f"datasets/{TRAIN_REFERENCE}.summary.txt" if SYSTEMS else [],
        "results/summary.md" if SYSTEMS else [],


onstart:
    # Before the first job: a Psi4 interpreter that cannot run is refused now, not by the
    # first label job after sampling and chunking. Jobs sent to other machines (a cluster
    # executor) may find one there: a warning then.
    from pilip.reference.psi4_env import workflow_psi4_problem

    problem = workflow_psi4_problem(
        config, {job.rule.name for job in workflow.dag.needrun_jobs()}
    )
    if problem and workflow.local_exec:
        sys.exit(f"pilip: error: {problem}")
    if problem:
        print(
            f"pilip: warning: {problem} (here; the jobs' machines may have it)",
            file=sys.stderr,
        )
