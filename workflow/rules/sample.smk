rule sample:
    output:
        "configurations/{system}.parquet",
    log:
        "logs/sample/{system}.log",
    threads: 1
    shell:
        "pilip sample --config {workflow.configfiles[0]} --system {wildcards.system}"
        " -o {output} > {log} 2>&1"
