# Names and helpers shared by the rules: every name that more than one file reads is defined
# here (included first), so no rule file depends on the order of the others. A name that one
# rule file alone reads lives in that file. Keep logic in the pilip package.
from pilip.config import (
    SAFE_NAME,
    check_labelling_reference,
    runs_in_process,
    seed_file,
    settings_json,
    tabled_variants,
)
from pilip.potential.study_models import PRETRAIN_MODEL, models_not_installed
from pilip.potential.terms import WEAK_TERMS  # the loss terms' registry (no torch)

# The config's systems; a config without `systems:` (labelling only) works on the
# configurations tables already in configurations/ (e.g. written by `pilip import`).
if "systems" in config:
    SYSTEMS = sorted(config["systems"])
else:
    SYSTEMS = sorted(
        name
        for name in glob_wildcards("configurations/{system}.parquet").system
        if SAFE_NAME.match(name)
    )
    if not SYSTEMS:
        print(
            f"pilip: {CONFIG_SOURCE} has no systems and configurations/ holds no tables:"
            " nothing to sample or label (add systems:, or `pilip import` configurations)",
            file=sys.stderr,
        )
if SYSTEMS:  # the DAG labels with labelling.reference: it must exist, default or not
    try:
        check_labelling_reference(config)
    except PilipError as error:
        sys.exit(f"pilip: error: {CONFIG_SOURCE}: {error}")
# A run whose model needs an extra that is not installed (mace-torch for model: mace) is
# refused now, not by its train job after the labelling. Not with --use-conda: the jobs' own
# environment (envs/pilip.yaml) is the one that must have it.
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    problem = models_not_installed(config)
    if problem:
        sys.exit(f"pilip: error: {CONFIG_SOURCE}: {problem}")
# Every rule runs pilip from the main environment (`--use-conda` builds it from this file).
PILIP_ENV = "../../envs/pilip.yaml"
# Keys that place a job (where and how fast it runs) but do not change what it computes.
PLACEMENT = ("threads", "mem_mb", "runtime", "gpus", "device", "checkpoint_interval_s")

# The config sections read by several rule files.
LABELLING = config["labelling"]
# the reference whose energies every run is trained and tested on
TRAIN_REFERENCE = LABELLING["reference"]
FORCE_VALIDATION = config["force_validation"]
# Planned when enabled and its reference is defined: a config that never names one (labelling
# only) is not made to compute the default study's mp2_dz.
FORCE_VALIDATION_PLANNED = (
    FORCE_VALIDATION["enabled"]
    and FORCE_VALIDATION["reference"] in config["references"]
)
TRAINING = config["training"]
MD = config["md"]

# --- the cheap level (multi-fidelity; workflow/rules/cheap.smk) ------------------------------
CHEAP = config["cheap_level"]
CHEAP_ON = bool(CHEAP["enabled"] and SYSTEMS)
CHEAP_RUN = "cheap_level"  # the cheap level alone, reported beside the trained runs
CHEAP_POOLS = ["sampled"] + (["extra"] if CHEAP["extra_pool"] > 0 else [])
try:
    # a cheap level that cannot run in process (a Psi4 DFT level with gradients) labels
    # through chunks and label jobs like the reference; its Delta models read those labels
    # (tabled baselines: evaluated with them, no MD; their students run MD)
    CHEAP_IN_PROCESS = not CHEAP_ON or runs_in_process(config, CHEAP["reference"])
    TABLED = tabled_variants(config) + ([] if CHEAP_IN_PROCESS else [CHEAP_RUN])
except PilipError as error:
    sys.exit(f"pilip: error: {CONFIG_SOURCE}: {error}")

# The runs: one per training variant (rule train, or rule distill for a distilled student,
# whose variant names its teacher), and the cheap level alone (rule baseline_model). Each is
# evaluated (rule evaluate), run in MD unless its baseline runs only from tables, and reported.
RUNS = list(TRAINING["variants"])  # in the config's order: the summary keeps it
STUDENTS = {
    run: variant["teacher"]
    for run, variant in TRAINING["variants"].items()
    if variant.get("teacher")
}
TRAINED = [run for run in RUNS if run not in STUDENTS]
REPORTED = RUNS + ([CHEAP_RUN] if CHEAP_ON else [])
MD_RUNS = [run for run in REPORTED if run not in TABLED]


def one_of(names):
    """A wildcard constraint matching exactly ``names``; none at all when there are none (an
    empty constraint would match every value)."""
    return "|".join(names) or "(?!x)x"


wildcard_constraints:
    system="[A-Za-z][A-Za-z0-9_-]*",
    reference="[A-Za-z][A-Za-z0-9_-]*",
    chunk=r"\d\d\d\d+",
    run=one_of(REPORTED),
    pool="sampled|extra",


def settings(*paths, exclude=()):
    """The config values a job reads, as canonical JSON (its `params` rerun trigger).

    Editing one of them reruns exactly the jobs that read it (and those downstream); a
    comment or a placement key changes nothing. See pilip.config.settings_json.
    """
    return settings_json(config, *paths, exclude=exclude)


def reference_recipe(reference):
    """What a reference computes (a rerun trigger; retries excluded)."""
    return settings(f"references.{reference}", exclude=("retry_options",))


def split_settings():
    """Everything that decides a row's split."""
    return settings("splits", "systems.*.split")


def training_settings(run):
    """What a training run computes (a rerun trigger; placement excluded)."""
    return settings(
        "training", f"training.variants.{run}", exclude=(*PLACEMENT, "variants")
    )


def seed_input(wildcards):
    """The structure file a system's seed names, if any (a changed file reruns sampling)."""
    spec = config.get("systems", {}).get(wildcards.system)
    path = seed_file(spec, CONFIG_SOURCE.parent) if spec else None
    return [str(path)] if path else []


def label_chunks(wildcards):
    """Every chunk's labels table of one reference (known once the checkpoints ran)."""
    files = []
    for system in SYSTEMS:
        folder = checkpoints.chunk.get(system=system).output[0]
        chunks = sorted(glob_wildcards(f"{folder}/chunk-{{chunk}}.parquet").chunk)
        files += expand(
            "labels/{reference}/{system}/chunk-{chunk}.parquet",
            reference=wildcards.reference,
            system=system,
            chunk=chunks,
        )
    return files


def force_validation_labels(wildcards):
    if not FORCE_VALIDATION_PLANNED:
        return []
    return [f"labels/{FORCE_VALIDATION['reference']}/force_validation.parquet"]


def unlabelled_input(wildcards):
    """The unlabelled configurations table of a run, if its variant (or training) names one."""
    variant = TRAINING["variants"][wildcards.run]
    if "unlabelled" in variant:
        return [variant["unlabelled"]] if variant["unlabelled"] else []
    if not TRAINING["unlabelled"]:
        return []
    # training.unlabelled feeds the variants with weak losses only
    losses = variant.get("losses", TRAINING["losses"])
    weak = any(term in losses for term in WEAK_TERMS)
    return [TRAINING["unlabelled"]] if weak else []


def training_log_of(wildcards):
    """A trained run's metrics.csv (its learning curves); the cheap level alone has none."""
    return [] if wildcards.run == CHEAP_RUN else f"models/{wildcards.run}/metrics.csv"


# --- the cheap level's helpers ---------------------------------------------------------------
def cheap_configurations(wildcards):
    if wildcards.pool == "extra":
        return f"cheap/{wildcards.system}.extra.parquet"
    return f"configurations/{wildcards.system}.parquet"


def cheap_labels(pools=("sampled",)):
    """The cheap labels tables of every system for ``pools`` (sampled, extra): one table per
    system and pool, or, for a level that runs in label jobs (Psi4), every chunk's table
    (known once the chunk_cheap checkpoints ran: call it from an input function)."""
    pools = [p for p in pools if p in CHEAP_POOLS]
    if CHEAP_IN_PROCESS:
        return expand(
            "cheap/{system}.{pool}.labels.parquet", system=SYSTEMS, pool=pools
        )
    files = []
    for system in SYSTEMS:
        for pool in pools:
            folder = checkpoints.chunk_cheap.get(system=system, pool=pool).output[0]
            chunks = sorted(glob_wildcards(f"{folder}/chunk-{{chunk}}.parquet").chunk)
            files += expand(
                "cheap/labels/{system}.{pool}/chunk-{chunk}.parquet",
                system=system,
                pool=pool,
                chunk=chunks,
            )
    return files


def cheap_chunk_folders(pools=("sampled",)):
    """The chunk folders of a cheap level that runs in label jobs, as plain inputs: Snakemake
    then plans every chunk job at once (see rule collect)."""
    if CHEAP_IN_PROCESS:
        return []
    pools = [p for p in pools if p in CHEAP_POOLS]
    return expand("cheap/chunks/{system}.{pool}", system=SYSTEMS, pool=pools)


def init_input(wildcards):
    """The checkpoint a fine-tune variant starts from (init), built by the workflow when it is
    models/pretrain/model.pt."""
    init = config["training"]["variants"][wildcards.run].get("init")
    return [init] if init else []


def baseline_labels_input(wildcards):
    """The cheap labels a Delta variant reads when its baseline is the cheap level."""
    baseline = config["training"]["variants"][wildcards.run].get("baseline")
    if CHEAP_ON and baseline == CHEAP["reference"]:
        return cheap_labels()
    return []


def tabled_labels_input(wildcards):
    """The cheap labels of the reference dataset's structures, for evaluating a run whose
    baseline runs only from labels tables (a Psi4 cheap level)."""
    return cheap_labels() if wildcards.run in TABLED else []


# --- distilled students (workflow/rules/distill.smk) ------------------------------------------
def teacher_md_frames(run):
    """Whether the student ``run`` learns its teacher's MD frames (the teacher runs MD)."""
    return STUDENTS[run] in MD_RUNS and MD["enabled"]


def student_pool(wildcards):
    """The pool files of a student (see the top of this file)."""
    teacher = STUDENTS[wildcards.run]
    pool = []
    if CHEAP_ON and "extra" in CHEAP_POOLS:
        pool += expand("cheap/{system}.extra.parquet", system=SYSTEMS)
    if teacher_md_frames(wildcards.run):
        pool.append(f"results/{teacher}/md.extxyz")
    else:
        pool.append(f"datasets/{TRAIN_REFERENCE}.parquet")
    return pool


def student_md_summary(wildcards):
    """md.json beside the teacher's trajectory (it says which frames failed)."""
    if teacher_md_frames(wildcards.run):
        return [f"results/{STUDENTS[wildcards.run]}/md.json"]
    return []


def student_baseline_labels(wildcards):
    """The cheap labels of the whole pool, for a teacher whose baseline runs only from them."""
    if STUDENTS[wildcards.run] in TABLED:
        return cheap_labels(("sampled", "extra"))
    return []


def student_reference(wildcards):
    """The teacher's training set, when the student also fits its reference energies."""
    weight = TRAINING["variants"][wildcards.run].get("reference_weight") or 0
    return [f"datasets/{TRAIN_REFERENCE}.parquet"] if weight > 0 else []
