rule sample:
    output:
        "configurations/{system}.parquet",
    log:
        "logs/sample/{system}.log",
    conda:
        PILIP_ENV
    threads: 1
    params:
        config=CONFIG_FILE,
    shell:
        "pilip sample --config {params.config} --system {wildcards.system}"
        " -o {output} > {log} 2>&1"
