# Evaluation: every run on the held-out rows of the training reference's dataset (energies:
# test split; forces: force-validation rows, never used in training).
EVALUATION = config["evaluation"]


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
        # the learning curves of a trained run (the cheap level alone has no training log)
        training_log=lambda wildcards, input: (
            f"--training-log {input.training_log}"
            if "training_log" in input.keys()
            else ""
        ),
    shell:
        "OMP_NUM_THREADS={threads} pilip evaluate {input.model} {input.dataset}"
        " --out {params.out} {params.training_log}"
        " --device {params.device} --batch-size {params.batch_size} > {log} 2>&1"


# The cheap level alone (models/cheap_level, from rule baseline_model) is evaluated by the same
# rule, less what it does not have: a training log and its learning curves. Snakemake prefers
# this rule for results/cheap_level/ because its files are named without wildcards.
use rule evaluate as evaluate_cheap_level with:
    input:
        model=f"models/{CHEAP_RUN}/model.pt",
        dataset=f"datasets/{TRAIN_REFERENCE}.parquet",
    output:
        metrics=f"results/{CHEAP_RUN}/metrics.json",
        parity_energy=f"results/{CHEAP_RUN}/parity_energy.png",
        parity_forces=f"results/{CHEAP_RUN}/parity_forces.png",
    log:
        f"logs/evaluate/{CHEAP_RUN}.log",
    benchmark:
        f"logs/benchmarks/evaluate/{CHEAP_RUN}.tsv"
