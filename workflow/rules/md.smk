# MD stability: Langevin NVT with every run from test configurations of its dataset (Fu et
# al.'s protocol: stability, time to first failure, h(r) MAE, steps/s; with a committee the
# force spread, and the frames above md.spread_threshold as a configurations table); not with
# a run whose baseline runs only from labels tables (a Psi4 cheap level: its student runs MD
# instead). Finished runs, and a running run's progress every 2 minutes, are kept in
# results/{run}/md_runs/: a rerun after a kill continues where it stopped. md.threads runs
# go side by side, one process and thread each.
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
    threads: MD["threads"]
    resources:
        mem_mb=lambda wildcards, threads: 1000 + 1000 * threads,
        runtime=60,
    params:
        device=MD["device"],
        options=lambda wildcards: workflow_options(MD, TRAINING, wildcards.run),
    shell:
        "OMP_NUM_THREADS=1 pilip md {input.model} {input.dataset} --jobs {threads}"
        " --out results/{wildcards.run} --device {params.device} {params.options} > {log} 2>&1"
