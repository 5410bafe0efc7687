# Training: one run per variant in training.variants (default: `energy` on energies alone and
# `weak` with PITC + PISC), each on the dataset of the training reference. `pilip train`
# resumes from models/<run>/last.pt after an interruption, and starts afresh when the config
# changed (--restart-if-changed).
TRAINING = config["training"]
RUNS = sorted(TRAINING["variants"])


wildcard_constraints:
    run="|".join(RUNS),


def unlabelled_input(wildcards):
    """The unlabelled configurations table of a run, if its variant (or training) names one."""
    variant = TRAINING["variants"][wildcards.run]
    if "unlabelled" in variant:
        path = variant["unlabelled"]
    else:  # training.unlabelled feeds the variants with weak losses only
        losses = variant.get("losses", TRAINING["losses"])
        weak = "pitc" in losses or "pisc" in losses
        path = TRAINING["unlabelled"] if weak else None
    return [path] if path else []


rule train:
    input:
        dataset=f"datasets/{TRAIN_REFERENCE}.parquet",
        unlabelled=unlabelled_input,
    output:
        model="models/{run}/model.pt",
        metrics="models/{run}/metrics.csv",
    log:
        "logs/train/{run}.log",
    threads: TRAINING["threads"]
    resources:
        mem_mb=TRAINING["mem_mb"],
        runtime=TRAINING["runtime"],
        gpu=TRAINING["gpus"],
    shell:
        "OMP_NUM_THREADS={threads} pilip train {input.dataset} --out models/{wildcards.run}"
        " --config {workflow.configfiles[0]} --variant {wildcards.run} --threads {threads}"
        " --restart-if-changed --no-progress > {log} 2>&1"
