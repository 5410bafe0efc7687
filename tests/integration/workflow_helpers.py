"""Run pilip's Snakefile from tests: a dry run's planned jobs, a run's exit and last line.

Shared by the workflow tests (and the fault campaign's name checks): import it as
``from workflow_helpers import dry_run_jobs, snakemake`` from a test in tests/integration.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
JOB_LINE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")


def snakemake(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``snakemake -s REPO/Snakefile ARGS`` run in WORKDIR (so ``--configfile`` paths are
    relative to it), with pilip's interpreter first on PATH."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args]
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )


def write_config(workdir: Path, config: dict, name: str = "config.yaml") -> Path:
    path = Path(workdir) / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def dry_run_jobs(workdir: Path, *args: str) -> set[str]:
    """The jobs ``snakemake -n`` plans, as ``rule`` or ``rule[wildcards]`` (``all`` left out)."""
    proc = snakemake(workdir, "-n", *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # planning is silent: no input function fails for a job another rule makes
    for word in ("Exception", "Traceback"):
        assert word not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    jobs: set[str] = set()
    rule = None
    for line in (proc.stdout + "\n" + proc.stderr).splitlines():
        match = JOB_LINE.match(line.strip())
        if match:
            if rule is not None:
                jobs.add(rule)
            rule = match.group(1)
        elif rule is not None and line.strip().startswith("wildcards:"):
            jobs.add(f"{rule}[{line.split(':', 1)[1].strip()}]")
            rule = None
    if rule is not None:
        jobs.add(rule)
    return jobs - {"all"}
