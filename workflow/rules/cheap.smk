# The cheap level (multi-fidelity; cheap_level in the config): energies and forces of every
# sampled configuration and of an extra pool that gets no reference label (cheap/), the
# pretraining run the fine-tune variants start from (models/pretrain), and the cheap level
# alone as a reported run (models/cheap_level). A level that runs in process (GFN2-xTB:
# milliseconds per configuration) labels each system's pool in one job (rule label_cheap); a
# Psi4 level (DFT gradients: seconds each) in chunks, one label job per chunk, as the
# reference does (checkpoint chunk_cheap, rule label_cheap_chunk).
rule sample_extra:
    input:
        seed_input,
    output:
        "cheap/{system}.extra.parquet",
    log:
        "logs/cheap/sample_extra/{system}.log",
    conda:
        PILIP_ENV
    threads: 1
    params:
        settings=lambda wildcards: settings(
            "sampling",
            f"systems.{wildcards.system}",
            "cheap_level.extra_pool",
            exclude=("split",),
        ),
    shell:
        'pilip sample --config "$PILIP_WORKFLOW_CONFIG" --system {wildcards.system}'
        " --extra-pool"
        " -o {output} > {log} 2>&1"


rule label_cheap:
    input:
        cheap_configurations,
    output:
        "cheap/{system}.{pool}.labels.parquet",
    log:
        "logs/cheap/label/{system}.{pool}.log",
    benchmark:
        "logs/benchmarks/cheap/label/{system}.{pool}.tsv"
    conda:
        PILIP_ENV
    threads: 1
    params:
        reference=CHEAP["reference"],
        recipe=lambda wildcards: reference_recipe(CHEAP["reference"]),
    shell:
        "pilip label {input} --reference {params.reference} --forces"
        ' --config "$PILIP_WORKFLOW_CONFIG" --threads {threads} -o {output} > {log} 2>&1'


checkpoint chunk_cheap:
    input:
        cheap_configurations,
    output:
        directory("cheap/chunks/{system}.{pool}"),
    log:
        "logs/cheap/chunk/{system}.{pool}.log",
    conda:
        PILIP_ENV
    params:
        size=LABELLING["chunk_size"],
    shell:
        "pilip chunk {input} --size {params.size} -o {output} > {log} 2>&1"


rule label_cheap_chunk:
    input:
        "cheap/chunks/{system}.{pool}/chunk-{chunk}.parquet",
    output:
        "cheap/labels/{system}.{pool}/chunk-{chunk}.parquet",
    log:
        "logs/cheap/label/{system}.{pool}/chunk-{chunk}.log",
    benchmark:
        "logs/benchmarks/cheap/label/{system}.{pool}/chunk-{chunk}.tsv"
    conda:
        PILIP_ENV
    threads: LABELLING["threads"]
    resources:
        mem_mb=LABELLING["mem_mb"],
        # a chunk killed at its time limit resumes on retry, with a longer limit
        runtime=lambda wildcards, attempt: LABELLING["runtime"] * attempt,
    params:
        reference=CHEAP["reference"],
        # a changed recipe reruns the job, and pilip label then refuses the old results
        recipe=lambda wildcards: reference_recipe(CHEAP["reference"]),
    shell:
        "pilip label {input} --reference {params.reference} --forces"
        ' --config "$PILIP_WORKFLOW_CONFIG" --threads {threads} --mem-mb {resources.mem_mb}'
        " -o {output} > {log} 2>&1"


rule collect_cheap:
    input:
        configurations=expand("configurations/{system}.parquet", system=SYSTEMS)
        + (
            expand("cheap/{system}.extra.parquet", system=SYSTEMS)
            if "extra" in CHEAP_POOLS
            else []
        ),
        chunks=cheap_chunk_folders(("sampled", "extra")),
        labels=lambda wildcards: cheap_labels(("sampled", "extra")),
    output:
        dataset="cheap/dataset.parquet",
        summary="cheap/dataset.summary.txt",
    log:
        "logs/cheap/collect.log",
    conda:
        PILIP_ENV
    params:
        splits=split_settings(),
    shell:
        "pilip collect --configurations {input.configurations} --labels {input.labels}"
        ' --config "$PILIP_WORKFLOW_CONFIG" -o {output.dataset} --summary {output.summary}'
        " > {log} 2>&1"


rule pretrain:
    input:
        dataset="cheap/dataset.parquet",
    output:
        model=PRETRAIN_MODEL,
        metrics="models/pretrain/metrics.csv",
    log:
        "logs/train/pretrain.log",
    benchmark:
        "logs/benchmarks/train/pretrain.tsv"
    conda:
        PILIP_ENV
    threads: TRAINING["threads"]
    resources:
        mem_mb=TRAINING["mem_mb"],
        runtime=TRAINING["runtime"],
        gpu=TRAINING["gpus"],
    params:
        settings=lambda wildcards: settings(
            "training", "cheap_level.pretrain", exclude=(*PLACEMENT, "variants")
        ),
        options=" ".join(
            f"--{key.replace('_', '-')} "
            + (",".join(value) if isinstance(value, list) else str(value))
            for key, value in CHEAP["pretrain"].items()
        ),
    shell:
        "OMP_NUM_THREADS={threads} pilip train {input.dataset} --out models/pretrain"
        ' --config "$PILIP_WORKFLOW_CONFIG" {params.options} --threads {threads}'
        " --restart-if-changed --no-progress > {log} 2>&1"


rule baseline_model:
    input:
        dataset=f"datasets/{TRAIN_REFERENCE}.parquet",
        chunks=cheap_chunk_folders(),
        labels=lambda wildcards: cheap_labels(),
    output:
        model=f"models/{CHEAP_RUN}/model.pt",
    log:
        f"logs/train/{CHEAP_RUN}.log",
    conda:
        PILIP_ENV
    threads: 1
    params:
        reference=CHEAP["reference"],
        recipe=lambda wildcards: reference_recipe(CHEAP["reference"]),
        out=lambda wildcards, output: os.path.dirname(output.model),
    shell:
        "OMP_NUM_THREADS={threads} pilip baseline-model {input.dataset}"
        ' --baseline {params.reference} --config "$PILIP_WORKFLOW_CONFIG"'
        " --baseline-labels {input.labels} --out {params.out} > {log} 2>&1"
