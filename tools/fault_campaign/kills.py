"""Part 1: chains of runs, each killed once in every stage, compared with the uninterrupted run."""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from tools.fault_campaign.common import STAGES, log, prepare
from tools.fault_campaign.compare import compare_runs
from tools.fault_campaign.dag import leftovers, run_dag


def kill_campaign(
    root: Path, config: dict[str, Any], baseline: dict[str, Any], n_kills: int, seed: int
) -> dict[str, Any]:
    """Chains of runs, each killed once in every stage (seeded moments) until ``n_kills``."""
    rng = random.Random(seed)
    durations = {
        stage: max(0.2, last - first) for stage, (first, last) in baseline["stages_seen"].items()
    }
    chains, total = [], 0
    while total < n_kills:
        index = len(chains)
        targets = [(stage, rng.random()) for stage in STAGES][: n_kills - total]
        work = prepare(root / f"kills-{index}", config)
        tmp = root / f"tmp-kills-{index}"
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"kill chain {index}: {len(targets)} targets")
        chain = run_dag(work, targets=targets, durations=durations, tmp=tmp)
        chain["temporary_left"] = leftovers(tmp)
        if chain["failed"]:
            log(f"  the DAG did not complete: {chain['failed']}")
            # complete it without faults, so the other figures still count this chain
            rescue = run_dag(work, tmp=tmp)
            chain["completed_on_a_further_run"] = rescue["failed"] is None
        chain["comparison"] = compare_runs(work, root / "baseline")
        chains.append(chain)
        total += len(chain["kills"])
        if not chain["kills"]:
            raise RuntimeError("a chain ran without a single kill: stage detection is broken")
    kills = [k for c in chains for k in c["kills"]]
    lost = sum(c["wall_s"] - baseline["wall_s"] for c in chains)
    labels = [c["comparison"]["labels"] for c in chains]
    return {
        "kills": len(kills),
        "kills_by_stage": dict(
            Counter(s for k in kills for s in (k["running"] or ["between jobs"]))
        ),
        "survivors": sum(len(k["survivors"]) for k in kills),
        "recomputed_geometries": sum(c["comparison"]["recomputed_geometries"] for c in chains),
        "geometries": sum(c["comparison"]["geometries"] for c in chains),
        "labels_bitwise_equal": sum(x["bitwise_equal"] for x in labels),
        "labels_compared": sum(x["labels"] for x in labels),
        "metrics_max_abs_difference": max(
            c["comparison"]["models"]["max_abs_difference"] for c in chains
        ),
        "metrics_compared": sum(c["comparison"]["models"]["metrics_compared"] for c in chains),
        "metrics_missing": [m for c in chains for m in c["comparison"]["models"]["missing"]],
        "bad_files": {
            f"kills-{i}/{name}": why
            for i, c in enumerate(chains)
            for name, why in c["comparison"]["bad_files"].items()
        },
        "label_scratch_left": sum(
            1 for c in chains for n in c["temporary_left"] if n.startswith("pilip-")
        ),
        "snakemake_temporary_left": sum(
            1 for c in chains for n in c["temporary_left"] if n.startswith("snakemake")
        ),
        "wall_lost_per_kill_s": lost / max(1, len(kills)),
        "restart_s_mean": float(np.mean([k["restart_s"] for k in kills if "restart_s" in k])),
        "killed_jobs_age_s_mean": float(np.mean([k["killed_jobs_age_s"] for k in kills])),
        "chain_wall_s": [round(c["wall_s"], 1) for c in chains],
        "resumes_failed": [c["failed"] for c in chains if c["failed"]],
        "chains": chains,
    }
