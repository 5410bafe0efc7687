# Distilled students: a variant with `teacher: VARIANT` (a Delta variant) is a standalone model
# trained by `pilip distill` on its teacher's energies and forces of a pool: the cheap level's
# extra pool (configurations without a reference label) plus the teacher's own MD frames
# (results/<teacher>/md.extxyz; md.json beside it drops the failing frames), or, for a teacher
# whose baseline runs only from labels tables (no MD), the reference dataset's train and val
# rows, with the cheap level's labels of them all. Evaluated, run in MD and reported like
# every other run (models/<run>/, results/<run>/).


rule distill:
    input:
        teacher=lambda wildcards: f"models/{STUDENTS[wildcards.run]}/model.pt",
        pool=student_pool,
        md_summary=student_md_summary,
        baseline_labels=student_baseline_labels,
        reference=student_reference,
    output:
        model="models/{run}/model.pt",
        metrics="models/{run}/metrics.csv",
    log:
        "logs/train/{run}.log",
    benchmark:
        "logs/benchmarks/train/{run}.tsv"
    wildcard_constraints:
        run=one_of(STUDENTS),
    conda:
        PILIP_ENV
    threads: TRAINING["threads"]
    resources:
        mem_mb=TRAINING["mem_mb"],
        runtime=TRAINING["runtime"],
        gpu=TRAINING["gpus"],
    params:
        # changed student settings rerun the job (pilip distill then restarts, not resumes)
        settings=lambda wildcards: training_settings(wildcards.run),
        baseline_labels=lambda wildcards, input: (
            f"--baseline-labels {input.baseline_labels}"
            if input.baseline_labels
            else ""
        ),
        reference=lambda wildcards, input: (
            f"--reference-dataset {input.reference}" if input.reference else ""
        ),
    shell:
        "OMP_NUM_THREADS={threads} pilip distill {input.teacher} {input.pool}"
        ' --out models/{wildcards.run} --config "$PILIP_WORKFLOW_CONFIG" --variant {wildcards.run}'
        " --threads {threads} {params.baseline_labels} {params.reference}"
        " --restart-if-changed --no-progress > {log} 2>&1"
