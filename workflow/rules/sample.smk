# Sampling: one configurations table per system. Reruns when `sampling` or the system's own
# entry changes (its split excepted), or when the structure file its seed names changes.
rule sample:
    input:
        seed_input,
    output:
        "configurations/{system}.parquet",
    log:
        "logs/sample/{system}.log",
    conda:
        PILIP_ENV
    threads: 1
    params:
        settings=lambda wildcards: settings(
            "sampling", f"systems.{wildcards.system}", exclude=("split",)
        ),
    shell:
        'pilip sample --config "$PILIP_WORKFLOW_CONFIG" --system {wildcards.system}'
        " -o {output} > {log} 2>&1"
