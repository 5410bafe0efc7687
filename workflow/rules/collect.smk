# Collect: configurations + ok labels -> datasets/{reference}.parquet with splits and a
# summary; force-validation forces (analytic gradients, evaluation only) joined in.
rule force_validation_subset:
    input:
        expand("configurations/{system}.parquet", system=SYSTEMS),
    output:
        "force_validation/configurations.parquet",
    log:
        "logs/force_validation/subset.log",
    conda:
        PILIP_ENV
    params:
        settings=lambda wildcards: settings(
            "splits",
            "systems.*.split",
            "force_validation.split",
            "force_validation.per_system",
        ),
    shell:
        'pilip force-subset {input} --config "$PILIP_WORKFLOW_CONFIG" -o {output} > {log} 2>&1'


rule label_force_validation:
    input:
        "force_validation/configurations.parquet",
    output:
        "labels/{reference}/force_validation.parquet",
    log:
        "logs/label/{reference}/force_validation.log",
    benchmark:
        "logs/benchmarks/label/{reference}/force_validation.tsv"
    conda:
        PILIP_ENV
    threads: LABELLING["threads"]
    resources:
        mem_mb=LABELLING["mem_mb"],
        runtime=LABELLING["runtime"],
    params:
        # a changed recipe reruns the job, and pilip label then refuses the old results
        recipe=lambda wildcards: reference_recipe(wildcards.reference),
    shell:
        "pilip label {input} --reference {wildcards.reference} --forces"
        ' --config "$PILIP_WORKFLOW_CONFIG" --threads {threads} --mem-mb {resources.mem_mb}'
        " -o {output} > {log} 2>&1"


rule collect:
    input:
        configurations=expand("configurations/{system}.parquet", system=SYSTEMS),
        # every system's chunk folder as a plain input: Snakemake then plans all chunk jobs
        # at once instead of stopping at the first checkpoint that has not run yet
        chunks=expand("chunks/{system}", system=SYSTEMS),
        labels=label_chunks,
        force_validation=force_validation_labels,
    output:
        dataset="datasets/{reference}.parquet",
        summary="datasets/{reference}.summary.txt",
    log:
        "logs/collect/{reference}.log",
    conda:
        PILIP_ENV
    params:
        splits=lambda wildcards: split_settings(),
        force_validation=lambda wildcards, input: (
            f"--force-validation {input.force_validation}"
            if input.force_validation
            else ""
        ),
    shell:
        "pilip collect --configurations {input.configurations} --labels {input.labels}"
        ' {params.force_validation} --config "$PILIP_WORKFLOW_CONFIG"'
        " -o {output.dataset} --summary {output.summary} > {log} 2>&1"
