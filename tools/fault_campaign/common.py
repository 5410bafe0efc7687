"""Shared by every part: paths, the stages, how commands are run and how a refusal is judged."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


DEFAULT_CONFIG = REPO / "tests" / "e2e" / "config.yaml"


BIN = Path(sys.executable).parent  # the environment's pilip and snakemake


STAGES = ("sampling", "labelling", "collecting", "training", "evaluation", "md")


# order in the DAG: evaluation and MD of a run may run side by side
LEVEL = {"sampling": 0, "labelling": 1, "collecting": 2, "training": 3, "evaluation": 4, "md": 4}


# pilip subcommand -> DAG stage it belongs to
STAGE_OF = {
    "sample": "sampling",
    "chunk": "labelling",
    "force-subset": "labelling",
    "label": "labelling",
    "collect": "collecting",
    "train": "training",
    "baseline-model": "training",
    "evaluate": "evaluation",
    "report": "evaluation",
    "md": "md",
}


PILIP_COMMAND = re.compile(r"(?:^|[\s/])pilip\s+([a-z][a-z-]*)")


TEMP_NAME = re.compile(r"(^\..*\.tmp$)|(\.tmp$)|(\.partial$)|(~$)")


POLL_S = 0.05


# wall-clock quantities (times, speeds such as md.json steps_per_s) differ between identical reruns
TIME_KEYS = re.compile(r"time|date|created|host|dataset$|^model$|seconds|per_s")


def log(message: str) -> None:
    print(f"[campaign {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def environment(tmp: Path | None = None) -> dict[str, str]:
    """The environment of every command: one thread, this pilip first on PATH, own TMPDIR."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if tmp is not None:
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    return env


def snakemake_argv(*extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--cores",
        "2",
        "--configfile",
        "config.yaml",
        *extra,
    ]


def run_pilip(
    argv: list[str], cwd: Path, timeout: float = 600, tmp: Path | None = None
) -> subprocess.CompletedProcess:
    """``pilip ARGV`` as a user runs it (its own process), output captured; ``tmp``: its
    TMPDIR (where labelling puts Psi4's scratch files)."""
    return subprocess.run(
        [str(BIN / "pilip"), *argv],
        cwd=cwd,
        env=environment(tmp),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_argv(dataset: str, out: str, *extra: str) -> list[str]:
    """``pilip train`` of the ``energy`` variant as the DAG runs it (one thread)."""
    return [
        "train",
        dataset,
        "--out",
        out,
        "--config",
        "config.yaml",
        "--variant",
        "energy",
        "--threads",
        "1",
        *extra,
        "--no-progress",
    ]


def evaluate_argv(ref: str) -> list[str]:
    """``pilip evaluate`` of the energy run's model.pt on the dataset, into out/eval."""
    model, dataset = "models/energy/model.pt", f"datasets/{ref}.parquet"
    return ["evaluate", model, dataset, "--out", "out/eval", "--device", "cpu"]


def prepare(work: Path, config: dict[str, Any]) -> Path:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return work


def in_process(argv: list[str], cwd: Path) -> tuple[int, str]:
    """``pilip ARGV`` in this process (fast: torch imported once): exit status and stderr."""
    from pilip.cli import main as pilip_main

    err = io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = pilip_main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
            except Exception:  # a traceback is what we count
                import traceback

                traceback.print_exc(file=err)
                code = 1
    finally:
        os.chdir(old)
    return code, err.getvalue()


def one_line_error(proc: subprocess.CompletedProcess, names: list[str]) -> dict[str, Any]:
    """How ``proc`` failed: exit status, its error line, whether that line names a file.

    Clean: exit status 2, no traceback, the last line the error, naming one of ``names``
    (progress lines before it are fine).
    """
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    names_path = any(name in last for name in names)
    return {
        "exit_status": proc.returncode,
        "traceback": "Traceback" in proc.stderr,
        "names_path": names_path,
        "error": last,
        "clean": proc.returncode == 2
        and "Traceback" not in proc.stderr
        and ": error: " in last
        and names_path,
    }


def refusal(code: int, err: str, name: str) -> str:
    """rejected (exit 2, the error one line naming ``name``), traceback or unclear error.

    Progress lines before the error are fine; the error itself must be the last line.
    """
    lines = [line for line in err.splitlines() if line.strip()]
    if "Traceback" in err or code not in (0, 2):
        return "traceback"
    last = lines[-1] if lines else ""
    return "rejected" if ": error: " in last and name in last else "unclear error"
