# Training: one run per variant in training.variants (default: `energy` on energies alone and
# `weak` with PITC + PISC), each on the dataset of the training reference. `pilip train`
# resumes from models/<run>/last.pt after an interruption, and starts afresh when the config
# changed (--restart-if-changed).
TRAINING = config["training"]
RUNS = sorted(TRAINING["variants"])
# the cheap level alone is reported beside the trained runs (workflow/rules/cheap.smk)
CHEAP = config["cheap_level"]
CHEAP_ON = bool(CHEAP["enabled"] and SYSTEMS)
CHEAP_RUN = "cheap_level"
REPORTED = RUNS + ([CHEAP_RUN] if CHEAP_ON else [])


wildcard_constraints:
    run="|".join(REPORTED),


def init_input(wildcards):
    """The checkpoint a fine-tune variant starts from (init), built by the workflow when it is
    models/pretrain/model.pt."""
    init = TRAINING["variants"][wildcards.run].get("init")
    return [init] if init else []


def baseline_labels_input(wildcards):
    """The cheap labels a Delta variant reads when its baseline is the cheap level."""
    baseline = TRAINING["variants"][wildcards.run].get("baseline")
    if CHEAP_ON and baseline == CHEAP["reference"]:
        return expand("cheap/{system}.sampled.labels.parquet", system=SYSTEMS)
    return []


rule train:
    input:
        dataset=f"datasets/{TRAIN_REFERENCE}.parquet",
        unlabelled=unlabelled_input,
        init=init_input,
        baseline_labels=baseline_labels_input,
    output:
        model="models/{run}/model.pt",
        metrics="models/{run}/metrics.csv",
    log:
        "logs/train/{run}.log",
    conda:
        PILIP_ENV
    threads: TRAINING["threads"]
    resources:
        mem_mb=TRAINING["mem_mb"],
        runtime=TRAINING["runtime"],
        gpu=TRAINING["gpus"],
    params:
        # changed training settings rerun the job (pilip train then restarts, not resumes)
        settings=lambda wildcards: training_settings(wildcards.run),
        baseline_labels=lambda wildcards, input: (
            f"--baseline-labels {input.baseline_labels}"
            if input.baseline_labels
            else ""
        ),
    shell:
        "OMP_NUM_THREADS={threads} pilip train {input.dataset} --out models/{wildcards.run}"
        ' --config "$PILIP_WORKFLOW_CONFIG" --variant {wildcards.run} --threads {threads}'
        " {params.baseline_labels} --restart-if-changed --no-progress > {log} 2>&1"
