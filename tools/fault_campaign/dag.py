"""Runs of the whole DAG in a folder, killed at seeded moments of target stages (part 1)."""

from __future__ import annotations

import random
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.fault_campaign.common import (
    LEVEL,
    PILIP_COMMAND,
    POLL_S,
    environment,
    log,
    snakemake_argv,
)
from tools.fault_campaign.processes import descendants, kill_tree, stages_running


def leftovers(tmp: Path) -> list[str]:
    """What the jobs left in their temporary folder (a killed job cannot clean up)."""
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def dag_failure(work: Path, attempt: int) -> str:
    """Why Snakemake stopped: the failed jobs' error lines (from their logs), or its own."""
    text = (work / f"snakemake-{attempt}.log").read_text()
    logs = re.findall(r"log: (\S+) \(check log file", text)
    errors = []
    for rel in dict.fromkeys(logs):
        path = work / rel
        lines = path.read_text().splitlines() if path.is_file() else []
        errors += [f"{rel}: {line}" for line in lines if ": error: " in line or "Error" in line]
    return "; ".join(errors) or text[-500:]


def run_dag(
    work: Path,
    *,
    targets: list[tuple[str, float]] = (),
    durations: dict[str, float] | None = None,
    rng: random.Random | None = None,
    on_poll: Callable[[dict[int, str]], None] | None = None,
    tmp: Path | None = None,
    timeout_s: float = 1800,
) -> dict[str, Any]:
    """Run the DAG in ``work`` to completion, killing it at each target on the way.

    ``failed`` in the result is None, or why the DAG stopped without completing.

    A target (stage, fraction) kills the whole process group ``fraction`` of that stage's
    duration in the uninterrupted run after a job of the stage is first seen. Returns the wall
    time, the kills, and the first and last time each stage was seen running.
    """
    targets = list(targets)
    kills: list[dict[str, Any]] = []
    skipped: list[str] = []
    seen: dict[str, list[float]] = {}
    job_started: dict[int, float] = {}  # pid of a pilip job -> when first seen
    start = time.monotonic()
    attempt = 0
    failed = None
    while True:
        if attempt:
            unlock = subprocess.run(
                snakemake_argv("--unlock"), cwd=work, env=environment(tmp), capture_output=True
            )
            if unlock.returncode != 0:
                raise RuntimeError(f"snakemake --unlock failed in {work}")
        extra = ("--rerun-incomplete",) if attempt else ()
        with open(work / f"snakemake-{attempt}.log", "w") as out:
            proc = subprocess.Popen(
                snakemake_argv(*extra),
                cwd=work,
                env=environment(tmp),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the unit a kill -9 hits
            )
        deadline = None
        killed = False
        while proc.poll() is None:
            now = time.monotonic() - start
            if now > timeout_s:
                kill_tree(proc)
                raise RuntimeError(f"the DAG in {work} ran past {timeout_s} s")
            procs = descendants(proc.pid)
            running = stages_running(procs)
            for stage in running:
                seen.setdefault(stage, [now, now])[1] = now
            jobs = [pid for pid, cmd in procs.items() if PILIP_COMMAND.search(cmd)]
            for pid in jobs:
                job_started.setdefault(pid, now)
            if jobs and kills and "restart_s" not in kills[-1]:
                # from the kill to the first job running again: unlock, Snakemake, DAG
                kills[-1]["restart_s"] = round(now - kills[-1]["t_s"], 2)
            if on_poll is not None:
                on_poll(procs)
            while targets and deadline is None:
                stage, fraction = targets[0]
                if stage in running:
                    deadline = now + fraction * (durations or {}).get(stage, 1.0)
                elif stage in seen and any(LEVEL[s] > LEVEL[stage] for s in running):
                    skipped.append(stage)  # it ran and the DAG is past it
                    targets.pop(0)
                else:
                    break
            if deadline is not None and now >= deadline:
                stage, fraction = targets.pop(0)
                at_kill = sorted(stages_running(descendants(proc.pid)))
                ages = [now - job_started[pid] for pid in jobs if pid in job_started]
                survivors = kill_tree(proc)
                kills.append(
                    {
                        "target": stage,
                        "fraction": round(fraction, 3),
                        "t_s": round(now, 2),
                        "running": at_kill,
                        # how long the killed jobs had run: an upper bound of the work lost
                        # (a label job keeps its finished geometries)
                        "killed_jobs_age_s": round(max(ages, default=0.0), 2),
                        "survivors": survivors,
                    }
                )
                log(f"  kill {len(kills)} at {now:.1f} s, target {stage}, running {at_kill}")
                killed = True
                break
            time.sleep(POLL_S)
        if not killed:
            if proc.returncode != 0:
                failed = dag_failure(work, attempt)
            break
        attempt += 1
    return {
        "failed": failed,
        "wall_s": time.monotonic() - start,
        "kills": kills,
        "skipped_targets": skipped + [t[0] for t in targets],
        "stages_seen": {k: [round(v[0], 2), round(v[1], 2)] for k, v in seen.items()},
    }
