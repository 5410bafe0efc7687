# Evaluation: every trained run on the held-out rows of the training reference's dataset
# (energies: test split; forces: force-validation rows, never used in training).
rule evaluate:
    input:
        model="models/{run}/model.pt",
        training_log="models/{run}/metrics.csv",
        dataset=f"datasets/{TRAIN_REFERENCE}.parquet",
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
    conda:
        PILIP_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        device=EVALUATION["device"],
        batch_size=EVALUATION["batch_size"],
    shell:
        "OMP_NUM_THREADS={threads} pilip evaluate {input.model} {input.dataset}"
        " --out results/{wildcards.run} --training-log {input.training_log}"
        " --device {params.device} --batch-size {params.batch_size} > {log} 2>&1"
