# Names and helpers shared by the rules. Keep logic in the pilip package.
import json

SYSTEMS = sorted(config["systems"])
CONFIG_FILE = workflow.configfiles[0]
# Every rule runs pilip from the main environment (`--use-conda` builds it from this file).
PILIP_ENV = "../../envs/pilip.yaml"


def reference_recipe(reference):
    """What a reference computes, as canonical JSON (a rerun trigger; retries excluded)."""
    entry = config["references"].get(reference, {})
    return json.dumps(
        {k: v for k, v in entry.items() if k != "retry_options"}, sort_keys=True
    )


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


def force_validation_labels(wildcards):
    if not FORCE_VALIDATION["enabled"]:
        return []
    return [f"labels/{FORCE_VALIDATION['reference']}/force_validation.parquet"]


def unlabelled_input(wildcards):
    """The unlabelled configurations table of a run, if its variant (or training) names one."""
    variant = TRAINING["variants"][wildcards.run]
    if "unlabelled" in variant:
        path = variant["unlabelled"]
    else:  # training.unlabelled feeds the variants with weak losses only
        losses = variant.get("losses", TRAINING["losses"])
        weak = "pitc" in losses or "pisc" in losses
        path = TRAINING["unlabelled"] if weak else None
    return [path] if path else []


def training_settings(run):
    """What a training run computes, as canonical JSON (a rerun trigger; placement excluded)."""
    placement = {
        "threads",
        "mem_mb",
        "runtime",
        "gpus",
        "device",
        "checkpoint_interval_s",
    }
    settings = {k: v for k, v in TRAINING.items() if k not in placement | {"variants"}}
    return json.dumps(
        {**settings, "variant": TRAINING["variants"][run]}, sort_keys=True
    )
