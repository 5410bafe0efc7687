# MD stability: Langevin NVT with every run from test configurations of its dataset (Fu et
# al.'s protocol: stability, time to first failure, h(r) MAE, steps/s; with a committee the
# force spread, and the frames above md.spread_threshold as a configurations table); not with
# a run whose baseline runs only from labels tables (a Psi4 cheap level: its student runs MD
# instead). Finished runs, and a running run's progress every 2 minutes, are kept in
# results/{run}/md_runs/: a rerun after a kill continues where it stopped.
from pilip.commands.md import workflow_options


rule md:
    input:
        model="models/{run}/model.pt",
        dataset=f"datasets/{TRAIN_REFERENCE}.parquet",
    output:
        summary="results/{run}/md.json",
        trajectory="results/{run}/md.extxyz",
        spread="results/{run}/md_spread.csv",
        candidates="results/{run}/md_candidates.parquet",
    log:
        "logs/md/{run}.log",
    benchmark:
        "logs/benchmarks/md/{run}.tsv"
    wildcard_constraints:
        run=one_of(MD_RUNS),
    conda:
        PILIP_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        device=MD["device"],
        options=lambda wildcards: workflow_options(MD, TRAINING, wildcards.run),
    shell:
        "OMP_NUM_THREADS={threads} pilip md {input.model} {input.dataset}"
        " --out results/{wildcards.run} --device {params.device} {params.options} > {log} 2>&1"
