# Evaluation: every run on the held-out rows of the training reference's dataset (energies:
# test split; forces: force-validation rows, never used in training). A run whose baseline
# runs only from labels tables (a Psi4 cheap level) reads it from the cheap level's labels.
EVALUATION = config["evaluation"]


rule evaluate:
    input:
        model="models/{run}/model.pt",
        training_log=training_log_of,
        dataset=f"datasets/{TRAIN_REFERENCE}.parquet",
        baseline_labels=tabled_labels_input,
    output:
        metrics="results/{run}/metrics.json",
        parity_energy=report(
            "results/{run}/parity_energy.png",
            caption="../report/parity_energy.rst",
            category="Parity plots",
            labels={"run": "{run}", "figure": "energies"},
        ),
        parity_forces=report(
            "results/{run}/parity_forces.png",
            caption="../report/parity_forces.rst",
            category="Parity plots",
            labels={"run": "{run}", "figure": "forces"},
        ),
        learning_curve=report(
            "results/{run}/learning_curve.png",
            caption="../report/learning_curve.rst",
            category="Learning curves",
            labels={"run": "{run}", "figure": "learning curve"},
        ),
    log:
        "logs/evaluate/{run}.log",
    benchmark:
        "logs/benchmarks/evaluate/{run}.tsv"
    conda:
        PILIP_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        device=EVALUATION["device"],
        batch_size=EVALUATION["batch_size"],
        out=lambda wildcards, output: os.path.dirname(output.metrics),
        # the learning curves of a trained run (the cheap level's figure says it has none)
        training_log=lambda wildcards, input: (
            f"--training-log {input.training_log}" if input.training_log else ""
        ),
        # a baseline that runs only from tables (a Psi4 cheap level) is read from its labels
        baseline_labels=lambda wildcards, input: (
            f"--baseline-labels {input.baseline_labels}"
            if input.baseline_labels
            else ""
        ),
    shell:
        "OMP_NUM_THREADS={threads} pilip evaluate {input.model} {input.dataset}"
        " --out {params.out} {params.training_log} {params.baseline_labels}"
        " --device {params.device} --batch-size {params.batch_size} > {log} 2>&1"
