# Labelling: a checkpoint splits each system's configurations into chunks, one label job per
# chunk. `pilip label` keeps a results JSONL beside its output, so a rerun after a crash
# recomputes no finished geometry.
checkpoint chunk:
    input:
        "configurations/{system}.parquet",
    output:
        directory("chunks/{system}"),
    log:
        "logs/chunk/{system}.log",
    conda:
        PILIP_ENV
    params:
        size=LABELLING["chunk_size"],
    shell:
        "pilip chunk {input} --size {params.size} -o {output} > {log} 2>&1"


rule label:
    input:
        "chunks/{system}/chunk-{chunk}.parquet",
    output:
        "labels/{reference}/{system}/chunk-{chunk}.parquet",
    log:
        "logs/label/{reference}/{system}/chunk-{chunk}.log",
    benchmark:
        "logs/benchmarks/label/{reference}/{system}/chunk-{chunk}.tsv"
    conda:
        PILIP_ENV
    threads: LABELLING["threads"]
    resources:
        mem_mb=LABELLING["mem_mb"],
        # a chunk killed at its time limit resumes on retry, with a longer limit
        runtime=lambda wildcards, attempt: LABELLING["runtime"] * attempt,
    params:
        # a changed recipe reruns the job, and pilip label then refuses the old results
        recipe=lambda wildcards: reference_recipe(wildcards.reference),
    shell:
        "pilip label {input} --reference {wildcards.reference}"
        ' --config "$PILIP_WORKFLOW_CONFIG" --threads {threads} --mem-mb {resources.mem_mb}'
        " -o {output} > {log} 2>&1"
