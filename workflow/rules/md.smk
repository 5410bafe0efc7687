# MD stability: Langevin NVT with every run from test configurations of its dataset; not
# with a run whose baseline runs only from labels tables (a Psi4 cheap level: its student
# runs MD instead).
MD_OPTIONS = [
    "temperature",
    "timestep",
    "steps",
    "friction",
    "bond_threshold",
    "starts",
    "seed",
    "trajectory_interval",
]


rule md:
    input:
        model="models/{run}/model.pt",
        dataset=f"datasets/{TRAIN_REFERENCE}.parquet",
    output:
        summary="results/{run}/md.json",
        trajectory="results/{run}/md.extxyz",
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
        options=" ".join(
            f"--{name.replace('_', '-')} {MD[name]}" for name in MD_OPTIONS
        ),
    shell:
        "OMP_NUM_THREADS={threads} pilip md {input.model} {input.dataset}"
        " --out results/{wildcards.run} --device {params.device} {params.options} > {log} 2>&1"
