"""Jobs run the `pilip` of the environment that runs Snakemake, activated or not (a new user's
defect: without `activate`, every job failed with exit status 127, `pilip: command not found`).

Both ways the README shows, with the environment's bin/ absent from PATH: its own
`.venv/bin/snakemake` started in the repository folder, and `snakemake -s /path/Snakefile`
started in another folder (there with some other `pilip` first on PATH, which must not win).
Real jobs run: a dry run never starts `pilip`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from workflow_helpers import BIN, REPO, write_config

pytest.importorskip("tblite")
pytestmark = [pytest.mark.workflow, pytest.mark.slow]

# GFN2-xTB labels of four water geometries: sample, chunk, label and collect, one job each
STUDY = {
    "systems": {"water": {"seed": "H2O"}},
    "sampling": {"seed": 1, "generators": [{"kind": "rattle", "n": 3}]},
    "references": {"xtb": {"backend": "xtb", "method": "GFN2-xTB"}},
    "labelling": {"reference": "xtb"},
    "force_validation": {"enabled": False},
    "cheap_level": {"enabled": False},
}


def unactivated(extra_path: Path | None = None) -> dict[str, str]:
    """The environment of a shell that never activated pilip's: no folder holding a `pilip`
    on PATH (EXTRA_PATH, first, excepted), no VIRTUAL_ENV."""
    folders = [
        folder
        for folder in os.environ["PATH"].split(os.pathsep)
        if folder and not (Path(folder) / "pilip").exists()
    ]
    if extra_path is not None:
        folders.insert(0, str(extra_path))
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    env.update(PATH=os.pathsep.join(folders), OMP_NUM_THREADS="1")
    return env


def run(command: list, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def job_logs(work: Path) -> str:
    return "\n".join(path.read_text() for path in sorted((work / "logs").rglob("*.log")))


def test_venv_snakemake_in_the_repository_folder_runs_the_jobs(tmp_path):
    """`.venv/bin/snakemake` as README's "Run on a cluster" shows (the outputs go to
    tmp_path through --directory, not into the repository)."""
    write_config(tmp_path, STUDY)
    proc = run(
        [BIN / "snakemake", "datasets/xtb.parquet", "--cores", "1",
         "--directory", tmp_path, "--configfile", tmp_path / "config.yaml"],
        cwd=REPO,
        env=unactivated(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:] + job_logs(tmp_path)
    assert (tmp_path / "datasets" / "xtb.parquet").is_file()
    assert "command not found" not in job_logs(tmp_path)
    # each label job's time and memory, under logs/ (not the repository's benchmarks/)
    (benchmark,) = (tmp_path / "logs" / "benchmarks" / "label" / "xtb" / "water").glob("*.tsv")
    assert benchmark.read_text().startswith("s\th:m:s\tmax_rss")


def test_snakefile_from_another_folder_runs_its_own_pilip(tmp_path):
    """`snakemake -s /path/to/pilip/Snakefile` in the study's folder; a `pilip` of another
    environment first on PATH is not the one the jobs run."""
    other = tmp_path / "other-env" / "bin"
    other.mkdir(parents=True)
    (other / "pilip").write_text("#!/bin/sh\necho 'the wrong pilip' >&2\nexit 3\n")
    (other / "pilip").chmod(0o755)
    work = tmp_path / "study"
    work.mkdir()
    write_config(work, STUDY)
    proc = run(
        [BIN / "snakemake", "-s", REPO / "Snakefile", "configurations/water.parquet",
         "--cores", "1", "--configfile", "config.yaml"],
        cwd=work,
        env=unactivated(other),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:] + job_logs(work)
    assert (work / "configurations" / "water.parquet").is_file()
    assert "the wrong pilip" not in job_logs(work)
