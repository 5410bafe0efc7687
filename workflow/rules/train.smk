# Training: one run per variant in training.variants (default: `energy` on energies alone and
# `weak` with PITC + PISC), each on the dataset of the training reference. `pilip train`
# resumes from models/<run>/last.pt after an interruption, and starts afresh when the config
# changed (--restart-if-changed).
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
    benchmark:
        "logs/benchmarks/train/{run}.tsv"
    wildcard_constraints:
        # the training variants (models/cheap_level comes from rule baseline_model, a
        # distilled student from rule distill)
        run=one_of(TRAINED),
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
