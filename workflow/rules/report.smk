# Summary: every run side by side (errors, MD stability, training time, plots).
REPORT = config["report"]


rule report:
    input:
        metrics=expand("results/{run}/metrics.json", run=REPORTED),
        md=(
            expand("results/{run}/md.json", run=MD_RUNS)
            if config["md"]["enabled"]
            else []
        ),
    output:
        report(
            "results/summary.md", caption="../report/summary.rst", category="Summary"
        ),
    log:
        "logs/report.log",
    conda:
        PILIP_ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        results=expand("results/{run}", run=REPORTED),
        title=REPORT["title"],
        baseline=f"--baseline {REPORT['baseline']}" if REPORT["baseline"] else "",
    shell:
        "pilip report --results {params.results} -o {output} --title {params.title:q}"
        " {params.baseline} > {log} 2>&1"
