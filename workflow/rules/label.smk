# Labelling: a checkpoint splits each system's configurations into chunks, one label job per
# chunk. `pilip label` keeps a results JSONL beside its output, so a rerun after a crash
# recomputes no finished geometry.
LABELLING = config["labelling"]
TRAIN_REFERENCE = LABELLING["reference"]
CONFIG_FILE = workflow.configfiles[0]


wildcard_constraints:
    reference="[A-Za-z][A-Za-z0-9_-]*",
    chunk=r"\d\d\d\d+",


def reference_recipe(reference):
    """What a reference computes, as canonical JSON (a rerun trigger; retries excluded)."""
    entry = config["references"].get(reference, {})
    return json.dumps(
        {k: v for k, v in entry.items() if k != "retry_options"}, sort_keys=True
    )


checkpoint chunk:
    input:
        "configurations/{system}.parquet",
    output:
        directory("chunks/{system}"),
    log:
        "logs/chunk/{system}.log",
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
    threads: LABELLING["threads"]
    resources:
        mem_mb=LABELLING["mem_mb"],
        runtime=LABELLING["runtime"],
    params:
        config=CONFIG_FILE,
        # a changed recipe reruns the job, and pilip label then refuses the old results
        recipe=lambda wildcards: reference_recipe(wildcards.reference),
    shell:
        "pilip label {input} --reference {wildcards.reference}"
        " --config {params.config} --threads {threads} -o {output} > {log} 2>&1"


def label_chunks(wildcards):
    """Every chunk's labels table of one reference (known once the checkpoints ran)."""
    files = []
    for system in SYSTEMS:
        folder = checkpoints.chunk.get(system=system).output[0]
        chunks = sorted(glob_wildcards(f"{folder}/chunk-{{chunk}}.parquet").chunk)
        files += expand(
            "labels/{reference}/{system}/chunk-{chunk}.parquet",
            reference=wildcards.reference,
            system=system,
            chunk=chunks,
        )
    return files
