"""Fault campaign (issue 13): inject real faults into the whole DAG and count what survived.

    bash scripts/setup.sh && .venv/bin/python benchmarks/fault_campaign.py

runs, on the tiny test config (tests/e2e/config.yaml) with real Psi4, in a scratch folder:

0. one uninterrupted run of the DAG: the reference every other run is compared with;
1. kills: chains of runs, each killed with ``kill -9`` of Snakemake's whole process group at a
   seeded random moment of a target stage (sampling, labelling, collecting, training,
   evaluation, MD), then ``--unlock`` + ``--rerun-incomplete`` until the DAG completes;
   compared with the uninterrupted run: finished geometries recomputed, label energies
   bitwise equal, model metrics equal, corrupt or partial files left, wall time lost per kill;
2. a full disk: labelling and training on a small tmpfs (mounted here, always unmounted),
   filled so that a write fails with ENOSPC mid-run, and labelling with Psi4's scratch files
   there too at eight fill levels; then space freed and the stage resumed;
3. damaged files: truncated and bit-flipped Parquet tables (bits anywhere, and bits in the
   footer, which no page CRC covers), a results JSONL cut mid-line, a
   checkpoint cut short, a config with a wrong type in every section, each fed to the pilip
   command that reads it;
4. quantum chemistry that misbehaves: SCF non-convergence on a fraction of geometries, a
   geometry that hangs past the per-geometry timeout, the Psi4 worker killed mid-chunk (all in
   one DAG run), then ``pilip label --retry-failed``; and the Psi4 interpreter missing;
5. untrusted names (system, reference, variant) with spaces, quotes, ``;``, ``$()``, ``../``.

Prints a JSON record of every figure and writes it to ``<work>/campaign.json``; the figures in
docs/reliability.md come from one such run. Needs root only for the tmpfs (part 2 is skipped
with a reason otherwise). On 2 cores the default settings take about 15 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
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
TIME_KEYS = re.compile(r"time|date|created|host|dataset$|^model$|seconds")


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


# --- processes -------------------------------------------------------------------------------


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live process."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields and fields[0] == "Z":  # a zombie is dead, only not yet reaped
            continue
        out[int(entry.name)] = (int(fields[1]), cmdline)
    return out


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of ``root`` and every process below it."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out[pid] = table[pid][1]
        todo += children.get(pid, [])
    return out


def stages_running(procs: dict[int, str]) -> set[str]:
    stages = set()
    for cmdline in procs.values():
        for command in PILIP_COMMAND.findall(cmdline):
            if command in STAGE_OF:
                stages.add(STAGE_OF[command])
        if "psi4_worker" in cmdline:
            stages.add("labelling")
    return stages


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def kill_tree(proc: subprocess.Popen) -> list[str]:
    """kill -9 Snakemake's process group; the command lines of any process that survived."""
    before = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    return [cmd for pid, cmd in before.items() if alive(pid)]


# --- the uninterrupted run and the kill chains -----------------------------------------------


def prepare(work: Path, config: dict[str, Any]) -> Path:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return work


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


# --- comparing a run with the uninterrupted one ----------------------------------------------


def label_rows(work: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(labels file relative path, config id) -> row, for every labels table of a run."""
    out = {}
    for path in sorted((work / "labels").rglob("*.parquet")):
        rel = str(path.relative_to(work))
        for row in pq.read_table(path).to_pylist():
            out[(rel, row["config_id"])] = row
    return out


def bits(value: Any) -> bytes:
    return np.asarray(value if value is not None else np.nan, dtype=np.float64).tobytes()


def compare_labels(work: Path, reference: Path) -> dict[str, int]:
    mine, theirs = label_rows(work), label_rows(reference)
    equal = sum(
        1
        for key, row in theirs.items()
        if key in mine
        and mine[key]["status"] == row["status"]
        and bits(mine[key]["energy"]) == bits(row["energy"])
        and bits(mine[key].get("forces") or []) == bits(row.get("forces") or [])
    )
    return {"labels": len(theirs), "bitwise_equal": equal, "missing": len(set(theirs) - set(mine))}


def results_lines(work: Path) -> tuple[int, int]:
    """(complete results lines, distinct configurations) over every results JSONL of a run."""
    lines = ids = 0
    for path in (work / "labels").rglob("*.results.jsonl"):
        complete = path.read_bytes().split(b"\n")[:-1]
        records = [json.loads(raw) for raw in complete if raw.strip()]
        lines += len(records)
        ids += len({r["config_id"] for r in records})
    return lines, ids


def numbers(value: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every numeric leaf of a JSON value, by dotted path; timings and names left out."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not TIME_KEYS.search(str(key)):
                yield from numbers(item, f"{prefix}{key}.")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from numbers(item, f"{prefix}{i}.")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield prefix.rstrip("."), float(value)


def csv_numbers(path: Path) -> Iterator[tuple[str, float]]:
    with open(path, newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            for key, value in row.items():
                if not TIME_KEYS.search(key):
                    yield f"{i}.{key}", float(value)


def compare_models(work: Path, reference: Path) -> dict[str, Any]:
    """Max absolute difference of every metric (metrics.json, md.json, metrics.csv)."""
    worst, compared, missing = 0.0, 0, []
    files = [p.relative_to(reference) for p in reference.glob("results/*/*.json")]
    files += [p.relative_to(reference) for p in reference.glob("models/*/metrics.csv")]
    for rel in sorted(files):
        if not (work / rel).is_file():
            missing.append(str(rel))
            continue
        if rel.suffix == ".csv":
            want, got = dict(csv_numbers(reference / rel)), dict(csv_numbers(work / rel))
        else:
            want = dict(numbers(json.loads((reference / rel).read_text())))
            got = dict(numbers(json.loads((work / rel).read_text())))
        for key, value in want.items():
            compared += 1
            if key not in got:
                missing.append(f"{rel}:{key}")
                continue
            worst = max(worst, abs(got[key] - value))
    return {"metrics_compared": compared, "max_abs_difference": worst, "missing": missing}


def check_file(path: Path) -> str | None:
    """None when ``path`` reads back whole, else why not."""
    from pilip import tables
    from pilip.potential import checkpoint

    try:
        suffix = path.suffix
        if TEMP_NAME.search(path.name):
            return "temporary name"
        if suffix == ".parquet":
            tables.read_table(path)
        elif suffix == ".pt":
            checkpoint.read_checkpoint(path)
        elif suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".jsonl":
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                return "partial last line"
            for raw in data.split(b"\n")[:-1]:
                json.loads(raw)
        elif suffix == ".csv":
            data = path.read_text()
            if data and not data.endswith("\n"):
                return "partial last line"
            rows = list(csv.reader(io.StringIO(data)))
            if not rows or any(len(r) != len(rows[0]) for r in rows):
                return "rows of unequal length"
        elif suffix == ".png":
            data = path.read_bytes()
            if not data.startswith(b"\x89PNG") or b"IEND" not in data[-16:]:
                return "not a whole PNG"
        elif suffix == ".extxyz":
            import ase.io

            ase.io.read(path, ":")
    except Exception as exc:  # any failure to read back is what we count
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    return None


def scan_files(work: Path) -> dict[str, str]:
    """Every file of a run that does not read back whole (``.snakemake`` aside)."""
    bad = {}
    for path in sorted(work.rglob("*")):
        if ".snakemake" in path.parts or not path.is_file():
            continue
        problem = check_file(path)
        if problem:
            bad[str(path.relative_to(work))] = problem
    return bad


def compare_runs(work: Path, reference: Path) -> dict[str, Any]:
    lines, ids = results_lines(work)
    ref_lines, ref_ids = results_lines(reference)
    return {
        "geometries": ref_ids,
        "recomputed_geometries": lines - ids,
        "labels": compare_labels(work, reference),
        "models": compare_models(work, reference),
        "bad_files": scan_files(work),
    }


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


# --- 2. a full disk --------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path, size_kb: int) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` mounted at ``path`` for the block, always unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path, leave_bytes: int) -> Path:
    """A ballast file that leaves about ``leave_bytes`` free on ``folder``'s filesystem."""
    ballast = folder / "ballast.bin"
    free = shutil.disk_usage(folder).free
    with open(ballast, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave_bytes))
    return ballast


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


SCRATCH_SWEEP_KB = (16, 256, 768, 1024, 1088, 1152, 1216, 2048)


def disk_campaign(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Labelling and training on a nearly full tmpfs; then space freed and the stage resumed."""
    if os.geteuid() != 0:
        return {"skipped": "mounting a tmpfs needs root"}
    baseline = root / "baseline"
    out: dict[str, Any] = {}
    stages = {
        "labelling": (
            ["chunks/water/chunk-0000.parquet"],
            [
                "label",
                "chunks/water/chunk-0000.parquet",
                "--reference",
                config["labelling"]["reference"],
                "--config",
                "config.yaml",
                "-o",
                "labels/chunk-0000.parquet",
            ],
            ["labels/chunk-0000"],
        ),
        "training": (
            [f"datasets/{config['labelling']['reference']}.parquet"],
            train_argv(
                f"datasets/{config['labelling']['reference']}.parquet",
                "models/energy",
                "--restart-if-changed",
            ),
            ["models/energy"],
        ),
    }
    # KB left free: a few geometries' Psi4 output but the table / results lines; one
    # model.pt but not last.pt / not even one model.pt / not even a metrics.csv row; then
    # labelling with Psi4's scratch files on the small disk too (TMPDIR there), at fill levels
    # from nothing to enough: around 1.1 MB, Psi4 fails to write its scratch files and frees
    # them again, so the disk no longer looks full when the failure is looked at
    cases = [
        ("labelling", 48, False),
        ("labelling", 4, False),
        ("training", 96, False),
        ("training", 24, False),
        ("training", 4, False),
    ] + [("labelling", kb, True) for kb in SCRATCH_SWEEP_KB]
    for stage, leave_kb, scratch_here in cases:
        inputs, argv, names = stages[stage]
        where = "-scratch" if scratch_here else ""
        mount = root / f"disk-{stage}{where}-{leave_kb}k"
        with small_filesystem(mount, 4096) as fs:
            shutil.copy(root / "baseline" / "config.yaml", fs / "config.yaml")
            for rel in inputs:
                (fs / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(baseline / rel, fs / rel)
            (fs / names[0]).parent.mkdir(parents=True, exist_ok=True)  # as Snakemake does
            tmp = fs / "tmp" if scratch_here else None
            if tmp is not None:
                tmp.mkdir()
            ballast = fill(fs, leave_kb * 1024)
            log(f"full disk, {stage}: {shutil.disk_usage(fs).free // 1024} KB free")
            full = run_pilip(argv, fs, tmp=tmp)
            result = one_line_error(full, names + ([str(tmp)] if tmp else []))
            result["finished"] = full.returncode == 0  # there was enough space after all
            result["bad_files"] = scan_files(fs)
            ballast.unlink()
            resumed = run_pilip(argv, fs, tmp=tmp)
            result["resume_exit_status"] = resumed.returncode
            result["resume_error"] = (
                resumed.stderr.strip().splitlines()[-1:] if resumed.returncode else []
            )
            result["bad_files_after_resume"] = scan_files(fs)
            if stage == "labelling":
                lines, ids = results_lines(fs)
                result["recomputed_geometries"] = lines - ids
                mine = {r["config_id"]: r for r in label_rows_of(fs / "labels/chunk-0000.parquet")}
                want = label_rows_of(
                    baseline / f"labels/{config['labelling']['reference']}/water/chunk-0000.parquet"
                )
                result["labels_bitwise_equal"] = sum(
                    1
                    for r in want
                    if r["config_id"] in mine
                    and bits(mine[r["config_id"]]["energy"]) == bits(r["energy"])
                )
                result["labels_compared"] = len(want)
            else:
                ref = dict(csv_numbers(baseline / "models/energy/metrics.csv"))
                got = (
                    dict(csv_numbers(fs / "models/energy/metrics.csv"))
                    if (fs / "models/energy/metrics.csv").is_file()
                    else {}
                )
                result["metrics_equal"] = bool(got) and got == ref
                result["model_equal"] = same_weights(
                    fs / "models/energy/model.pt", baseline / "models/energy/model.pt"
                )
            scratch_there = ", Psi4's scratch there too" if scratch_here else ""
            out[f"{stage}{scratch_there}, {leave_kb} KB free"] = result
            log(f"full disk, {stage}: {result['error']!r}, resumed with {resumed.returncode}")
    return out


def label_rows_of(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist() if path.is_file() else []


def same_weights(a: Path, b: Path) -> bool:
    import torch

    if not a.is_file():
        return False
    wa = torch.load(a, weights_only=True)["model"]["state_dict"]
    wb = torch.load(b, weights_only=True)["model"]["state_dict"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# --- 3. damaged files ------------------------------------------------------------------------


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


def outputs_of(folder: Path) -> dict[str, Any]:
    """The content a command wrote (tables as rows, metrics without timings), by file name."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.suffix == ".parquet":
            out[rel] = pq.read_table(path).to_pylist()
        elif path.name == "metrics.csv":
            out[rel] = dict(csv_numbers(path))
        elif path.name == "metrics.json":
            out[rel] = dict(numbers(json.loads(path.read_text())))
    return out


def refusal(code: int, err: str, name: str) -> str:
    """rejected (exit 2, the error one line naming ``name``), traceback or unclear error.

    Progress lines before the error are fine; the error itself must be the last line.
    """
    lines = [line for line in err.splitlines() if line.strip()]
    if "Traceback" in err or code not in (0, 2):
        return "traceback"
    last = lines[-1] if lines else ""
    return "rejected" if ": error: " in last and name in last else "unclear error"


def damaged_case(
    work: Path, name: str, argv: list[str], output: str, damaged: str, good: dict[str, Any]
) -> dict[str, Any]:
    """Run one command on a damaged file; rejected / harmless / silently wrong / traceback."""
    if (work / output).exists():
        shutil.rmtree(work / output) if (work / output).is_dir() else (work / output).unlink()
    code, err = in_process(argv, work)
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 0:
        verdict = "harmless" if outputs_of(work / output) == good else "silently wrong"
    else:
        verdict = refusal(code, err, Path(damaged).name)
    return {"case": name, "verdict": verdict, "error": lines[-1] if lines else ""}


def flip_bit(data: bytes, rng: random.Random, footer: bool = False) -> tuple[bytes, int]:
    """``data`` with one seeded bit flipped anywhere, or (``footer``) in the Parquet footer:
    the schema, encodings, offsets and metadata, which no page CRC covers."""
    start = 0
    if footer:
        start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    offset = rng.randrange(start, len(data) - (8 if footer else 0))
    flipped = bytearray(data)
    flipped[offset] ^= 1 << rng.randrange(8)
    return bytes(flipped), offset


def damaged_campaign(root: Path, flips: int, seed: int) -> dict[str, Any]:
    """Every damaged input fed to the command that reads it, in this process."""
    import torch

    torch.set_num_threads(1)
    rng = random.Random(seed)
    baseline = root / "baseline"
    config = yaml.safe_load((baseline / "config.yaml").read_text())
    ref = config["labelling"]["reference"]
    fv = config["force_validation"]["reference"]
    work = root / "damaged"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for rel in (
        "config.yaml",
        "configurations",
        "chunks",
        "labels",
        "datasets",
        "force_validation",
        "models",
    ):
        src = baseline / rel
        shutil.copytree(src, work / rel) if src.is_dir() else shutil.copy(src, work / rel)
    labels = sorted(
        str(p.relative_to(work)) for p in (work / "labels" / ref).rglob("chunk-*.parquet")
    )
    # the table, the command that reads it (with {} for the file), the output folder/file
    readers = {
        "configurations": (
            "configurations/water.parquet",
            ["chunk", "{}", "--size", "8", "-o", "out/chunks"],
            "out",
        ),
        "labels": (
            labels[0],
            [
                "collect",
                "--configurations",
                "configurations/water.parquet",
                "--labels",
                "{}",
                *labels[1:],
                "--force-validation",
                f"labels/{fv}/force_validation.parquet",
                "--config",
                "config.yaml",
                "-o",
                "out/dataset.parquet",
                "--summary",
                "out/summary.txt",
            ],
            "out",
        ),
        "dataset": (
            f"datasets/{ref}.parquet",
            train_argv("{}", "out/run"),
            "out",
        ),
    }
    cases = []
    for kind, (path, template, output) in readers.items():
        original = (work / path).read_bytes()
        argv = [a.replace("{}", path) for a in template]
        if (work / output).exists():
            shutil.rmtree(work / output)
        code, err = in_process(argv, work)
        if code != 0:
            raise RuntimeError(f"{kind}: the undamaged file fails: {err}")
        good = outputs_of(work / output)
        damages = {
            "truncated to half": original[: len(original) // 2],
            "footer cut": original[:-9],
        }
        for i in range(flips):
            data, offset = flip_bit(original, rng)
            damages[f"bit {i} flipped (byte {offset} of {len(original)})"] = data
        for i in range(flips):
            data, offset = flip_bit(original, rng, footer=True)
            damages[f"footer bit {i} flipped (byte {offset} of {len(original)})"] = data
        for name, data in damages.items():
            (work / path).write_bytes(data)
            case = damaged_case(work, f"{kind} table, {name}", argv, output, path, good)
            cases.append(case)
        (work / path).write_bytes(original)
    cases += damaged_jsonl_cases(work, ref, flips, rng)
    cases += damaged_checkpoint_cases(work, ref)
    cases += flipped_checkpoint_cases(work, ref, flips, rng)
    cases += damaged_config_cases(work)
    verdicts = Counter(c["verdict"] for c in cases)
    return {
        "tried": len(cases),
        "rejected": verdicts.get("rejected", 0),
        "harmless": verdicts.get("harmless", 0),
        "recomputed": verdicts.get("recomputed", 0),
        "verdicts": dict(verdicts),
        "cases": cases,
    }


def damaged_jsonl_cases(
    work: Path, ref: str, flips: int = 0, rng: random.Random | None = None
) -> list[dict[str, Any]]:
    """A results JSONL cut mid-line (recomputed), one with a broken line inside (refused), and
    ``flips`` with one seeded bit flipped (refused, or the same labels)."""
    cases = []
    chunk = "chunks/water/chunk-0000.parquet"
    labels = Path(f"labels/{ref}/water/chunk-0000.parquet")
    results = labels.with_name("chunk-0000.results.jsonl")
    original = (work / results).read_bytes()
    good = pq.read_table(work / labels).to_pylist()
    lines = original.split(b"\n")
    cut = b"\n".join(lines[:4]) + b"\n" + lines[4][: len(lines[4]) // 2]
    broken = b"\n".join([*lines[:2], lines[2][:40], *lines[3:]])
    argv = ["label", chunk, "--reference", ref, "--config", "config.yaml", "-o", str(labels)]
    damages = [("cut mid-line", cut), ("a broken line inside", broken)]
    for i in range(flips):  # not the last newline: that would be a cut, tested above
        data, offset = flip_bit(original[:-1], rng)
        damages.append((f"bit {i} flipped (byte {offset} of {len(original)})", data + b"\n"))
    for name, data in damages:
        (work / labels).unlink(missing_ok=True)
        (work / results).write_bytes(data)
        proc = run_pilip(argv, work)  # real Psi4 for the geometries to recompute
        err = [line for line in proc.stderr.splitlines() if line.strip()]
        if proc.returncode == 0:
            got = pq.read_table(work / labels).to_pylist()
            same = [bits(a["energy"]) == bits(b["energy"]) for a, b in zip(got, good, strict=False)]
            written = (work / results).read_bytes().split(b"\n")[:-1]
            ok = all(same) and len(same) == len(good) and len(written) == len(good)
            verdict = "recomputed" if ok else "silently wrong"
            if ok and "bit" in name:  # nothing to recompute: the flip changed nothing read
                verdict = "harmless" if "computed 0 now" in proc.stderr else "recomputed"
        else:
            verdict = refusal(proc.returncode, proc.stderr, results.name)
        cases.append(
            {"case": f"results JSONL, {name}", "verdict": verdict, "error": err[-1] if err else ""}
        )
    (work / results).write_bytes(original)
    return cases


def damaged_checkpoint_cases(work: Path, ref: str) -> list[dict[str, Any]]:
    """model.pt cut short (evaluate, md) and last.pt cut short (train resumes from it)."""
    cases = []
    for name in ("model.pt", "last.pt"):
        path = work / "models" / "energy" / name
        original = path.read_bytes()
        path.write_bytes(original[: len(original) // 2])
        if name == "model.pt":
            commands = {
                "evaluate": evaluate_argv(ref),
                "md": [
                    "md",
                    "models/energy/model.pt",
                    f"datasets/{ref}.parquet",
                    "--out",
                    "out/md",
                    "--device",
                    "cpu",
                    "--steps",
                    "5",
                ],
            }
        else:
            commands = {
                "train (resume)": train_argv(f"datasets/{ref}.parquet", "models/energy"),
            }
        for command, argv in commands.items():
            shutil.rmtree(work / "out", ignore_errors=True)
            code, err = in_process(argv, work)
            lines = [line for line in err.splitlines() if line.strip()]
            if code != 0:
                verdict = refusal(code, err, name)
            else:
                verdict = "accepted"  # judged below for last.pt: a fresh start is fine
                if name == "last.pt":
                    got = dict(csv_numbers(work / "models/energy/metrics.csv"))
                    want = dict(csv_numbers(root_of(work) / "baseline/models/energy/metrics.csv"))
                    verdict = "recomputed" if got == want else "silently wrong"
            cases.append(
                {
                    "case": f"checkpoint {name} cut short, {command}",
                    "verdict": verdict,
                    "error": lines[-1] if lines else "",
                }
            )
        path.write_bytes(original)
    return cases


def flipped_checkpoint_cases(
    work: Path, ref: str, flips: int, rng: random.Random
) -> list[dict[str, Any]]:
    """model.pt with one seeded bit flipped, evaluated: refused, or exactly the same metrics."""
    path = work / "models" / "energy" / "model.pt"
    argv = evaluate_argv(ref)
    shutil.rmtree(work / "out", ignore_errors=True)
    code, err = in_process(argv, work)
    if code != 0:
        raise RuntimeError(f"evaluate: the undamaged checkpoint fails: {err}")
    good = outputs_of(work / "out" / "eval")
    original = path.read_bytes()
    cases = []
    for i in range(flips):
        data, offset = flip_bit(original, rng)
        path.write_bytes(data)
        name = f"checkpoint model.pt, bit {i} flipped (byte {offset} of {len(original)}), evaluate"
        cases.append(damaged_case(work, name, argv, "out/eval", "model.pt", good))
    path.write_bytes(original)
    return cases


def root_of(work: Path) -> Path:
    return work.parent


def wrong_type(spec: dict[str, Any]) -> Any:
    types = spec.get("type", [])
    types = [types] if isinstance(types, str) else types
    return [1, 2] if "string" in types or "enum" in spec else "ten"


def damaged_config_cases(work: Path) -> list[dict[str, Any]]:
    """A wrong type in every section of the config (the section itself, and one key in it)."""
    from pilip.config import load_schema

    schema = load_schema()
    base = yaml.safe_load((work / "config.yaml").read_text())
    cases = []
    for section, spec in schema["properties"].items():
        variants = {f"{section}: 42": (section, None, 42)}
        inner = spec.get("properties")
        if inner is None and isinstance(spec.get("additionalProperties"), dict):
            entry = spec["additionalProperties"]
            name = next(iter(base.get(section) or {}), None)
            if name and entry.get("properties"):
                key, leaf = next(iter(entry["properties"].items()))
                variants[f"{section}.{name}.{key}"] = (section, (name, key), wrong_type(leaf))
        elif inner:
            key, leaf = next((k, v) for k, v in inner.items() if v.get("type") != "object")
            variants[f"{section}.{key}"] = (section, (key,), wrong_type(leaf))
        for label, (sec, path, value) in variants.items():
            config = json.loads(json.dumps(base))
            if path is None:
                config[sec] = value
            else:
                node = config.setdefault(sec, {})
                for part in path[:-1]:
                    node = node.setdefault(part, {})
                node[path[-1]] = value
            (work / "bad.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            argv = ["sample", "--config", "bad.yaml", "--system", "water", "-o", "out/x.parquet"]
            shutil.rmtree(work / "out", ignore_errors=True)
            code, err = in_process(argv, work)
            lines = [line for line in err.splitlines() if line.strip()]
            key = sec if path is None else path[-1]
            if code == 0:
                verdict = "silently wrong"
            else:
                verdict = refusal(code, err, "bad.yaml")
                if verdict == "rejected" and key not in lines[-1]:
                    verdict = "unclear error"
            cases.append(
                {
                    "case": f"config, wrong type at {label}",
                    "verdict": verdict,
                    "error": lines[-1] if lines else "",
                }
            )
    return cases


# --- 4. quantum chemistry that misbehaves ----------------------------------------------------

SCF_MAXITER = 10  # below what some sampled water geometries need: SCF fails on a fraction
GEOMETRY_TIMEOUT_S = 8.0
STOP_S = 15.0  # a worker stopped this long overshoots the per-geometry timeout


class WorkerFaults:
    """Stops one Psi4 worker past the per-geometry timeout, then kills another mid-chunk.

    "Mid-chunk": once the label job it works for has results for two of its geometries.
    """

    def __init__(self, work: Path) -> None:
        self.work = work
        self.first_seen: dict[int, float] = {}
        self.stopped: int | None = None
        self.stopped_at = 0.0
        self.resumed = False
        self.killed: int | None = None

    def progress(self, pid: int) -> tuple[int, int]:
        """(results lines, configurations) of the label job whose Psi4 worker is ``pid``."""
        try:
            with open(f"/proc/{pid}/stat") as fh:
                parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{parent}/cmdline", "rb") as fh:
                argv = fh.read().decode().split("\0")
            output = Path(argv[argv.index("-o") + 1])
            total = pq.read_metadata(self.work / argv[argv.index("label") + 1]).num_rows
        except (OSError, ValueError, IndexError):
            return 0, 0
        results = self.work / output.with_name(output.stem + ".results.jsonl")
        return (results.read_bytes().count(b"\n") if results.is_file() else 0), total

    def mid_chunk(self, pid: int, done: int) -> bool:
        """At least ``done`` geometries finished and at least two still to come."""
        finished, total = self.progress(pid)
        return done <= finished <= total - 2

    def __call__(self, procs: dict[int, str]) -> None:
        now = time.monotonic()
        workers = [pid for pid, cmd in procs.items() if "psi4_worker" in cmd]
        for pid in workers:
            self.first_seen.setdefault(pid, now)
        if self.stopped is None:
            ready = [p for p in workers if self.mid_chunk(p, 1)]
            if ready:
                self.stopped, self.stopped_at = ready[0], now
                os.kill(self.stopped, signal.SIGSTOP)
                log(f"  Psi4 worker {self.stopped} stopped (a hung geometry)")
        elif not self.resumed and now - self.stopped_at > STOP_S:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.stopped, signal.SIGCONT)
            self.resumed = True
        if self.stopped is not None and self.killed is None:
            ready = [p for p in workers if p != self.stopped and self.mid_chunk(p, 2)]
            if ready:
                self.killed = ready[0]
                os.kill(self.killed, signal.SIGKILL)
                log(f"  Psi4 worker {self.killed} killed mid-chunk")


def failure_kind(error: str | None) -> str:
    error = error or ""
    if "SCFConvergenceError" in error or "converge" in error:
        return "scf_not_converged"
    if "timeout" in error:
        return "timeout"
    if "worker died" in error:
        return "worker_killed"
    return "other"


def qc_campaign(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    """One DAG run with all three faults, then --retry-failed; and Psi4 missing."""
    ref = config["labelling"]["reference"]
    faulty = json.loads(json.dumps(config))
    spec = faulty["references"][ref]
    spec["options"] = {**(spec.get("options") or {}), "maxiter": SCF_MAXITER}
    spec["retry_options"] = {"maxiter": 100}
    faulty["labelling"].update(retry=False, timeout=GEOMETRY_TIMEOUT_S)
    work = prepare(root / "qc", faulty)
    faults = WorkerFaults(work)
    log("misbehaving quantum chemistry: one DAG run")
    run = run_dag(work, on_poll=faults, tmp=root / "tmp-qc")
    if run["failed"]:
        return {"dag_completed": False, "failed": run["failed"]}
    everything = [r for rel, *_ in label_jobs(work, config) for r in label_rows_of(work / rel)]
    rows = label_rows_of_all(work, ref)
    failed = [r for r in everything if r["status"] != "ok"]
    kinds = Counter(failure_kind(r["error"]) for r in failed)
    summary = (work / "datasets" / f"{ref}.summary.txt").read_text()
    counted = re.search(r"labels: ok (\d+), failed (\d+), timeout (\d+)", summary)
    summary_counts = [int(x) for x in counted.groups()] if counted else None
    statuses = Counter(r["status"] for r in rows)
    out: dict[str, Any] = {
        "dag_completed": run["failed"] is None,
        "dag_wall_s": round(run["wall_s"], 1),
        "geometries": len(everything),
        "failed_rows": len(failed),
        "failures_by_kind": dict(kinds),
        "rows_with_error_text": sum(1 for r in failed if r["error"]),
        "errors": [f"{r['status']}: {(r['error'] or '')[:200]}" for r in failed],
        "summary_counts_match": summary_counts
        == [statuses.get("ok", 0), statuses.get("failed", 0), statuses.get("timeout", 0)],
        "summary_line": counted.group(0) if counted else None,
        "force_validation_line": (re.findall(r"force validation: [^\n]*", summary) or [None])[0],
        "worker_stopped": faults.stopped is not None,
        "worker_killed": faults.killed is not None,
    }
    # the user's fix: retries on, a generous timeout; then --retry-failed on every chunk
    faulty["labelling"].update(retry=True, timeout=3600)
    (work / "config.yaml").write_text(yaml.safe_dump(faulty, sort_keys=False))
    recomputed = expected = ok_touched = 0
    for rel, source, reference, extra in label_jobs(work, config):
        labels = work / rel
        before_rows = pq.read_table(labels).to_pylist()
        results = labels.with_name(labels.stem + ".results.jsonl")
        ok_before = {i: r for i, r in read_lines(results).items() if r["status"] == "ok"}
        expected += sum(1 for r in before_rows if r["status"] != "ok")
        proc = run_pilip(
            [
                "label",
                str(source),
                "--reference",
                reference,
                *extra,
                "--config",
                "config.yaml",
                "-o",
                str(rel),
                "--retry-failed",
            ],
            work,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"--retry-failed failed on {rel}: {proc.stderr}")
        computed = re.search(r"computed (\d+) now", proc.stdout + proc.stderr)
        recomputed += int(computed.group(1)) if computed else 0
        after = read_lines(results)
        ok_touched += sum(1 for i, r in ok_before.items() if after.get(i) != r)
    out["retry_expected"] = expected
    out["retry_recomputed"] = recomputed
    out["retry_ok_rows_touched"] = ok_touched
    log(f"--retry-failed: {recomputed} recomputed, {expected} failed before")
    again = run_dag(work, tmp=root / "tmp-qc")
    final = [r for rel, *_ in label_jobs(work, config) for r in label_rows_of(work / rel)]
    out["after_retry_ok"] = sum(1 for r in final if r["status"] == "ok")
    out["after_retry_labels"] = compare_labels(work, root / "baseline")
    out["rerun_wall_s"] = round(again["wall_s"], 1)
    out["rerun_failed"] = again["failed"]
    out["psi4_missing"] = psi4_missing(root, config)
    return out


def label_jobs(work: Path, config: dict[str, Any]) -> list[tuple[Path, Path, str, list[str]]]:
    """(labels table, its input, reference, extra flags) of every label job of a run."""
    ref = config["labelling"]["reference"]
    jobs = [
        (p.relative_to(work), Path("chunks") / p.parent.name / p.name, ref, [])
        for p in sorted((work / "labels" / ref).rglob("chunk-*.parquet"))
    ]
    fv = config["force_validation"]
    if fv.get("enabled", True):
        rel = Path("labels") / fv["reference"] / "force_validation.parquet"
        jobs.append(
            (rel, Path("force_validation/configurations.parquet"), fv["reference"], ["--forces"])
        )
    return jobs


def read_lines(results: Path) -> dict[str, dict[str, Any]]:
    """The complete lines of a results JSONL by config id (the last line for an id wins)."""
    raw = results.read_bytes().split(b"\n")[:-1] if results.is_file() else []
    return {r["config_id"]: r for r in (json.loads(x) for x in raw if x.strip())}


def label_rows_of_all(work: Path, ref: str) -> list[dict[str, Any]]:
    return [
        r
        for p in sorted((work / "labels" / ref).rglob("chunk-*.parquet"))
        for r in pq.read_table(p).to_pylist()
    ]


def psi4_missing(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The DAG with ``labelling.psi4_python`` pointing at no interpreter."""
    broken = json.loads(json.dumps(config))
    missing = root / "no-such-env" / "bin" / "python"
    broken["labelling"]["psi4_python"] = str(missing)
    work = prepare(root / "qc-psi4-missing", broken)
    proc = subprocess.run(
        snakemake_argv(),
        cwd=work,
        env=environment(root / "tmp-qc"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    logs = sorted((work / "logs" / "label").rglob("*.log")) if (work / "logs").is_dir() else []
    errors = [line for p in logs for line in p.read_text().splitlines() if ": error:" in line]
    ran = (
        sorted(str(p.relative_to(work / "logs")) for p in (work / "logs").rglob("*.log"))
        if (work / "logs").is_dir()
        else []
    )
    return {
        "exit_status": proc.returncode,
        "jobs_started": ran,
        "label_errors": sorted(set(errors)),
        "snakemake_error": [line for line in proc.stderr.splitlines() if "error" in line.lower()][
            :3
        ],
        "labels_written": sorted(
            str(p.relative_to(work)) for p in (work / "labels").rglob("*.parquet")
        )
        if (work / "labels").is_dir()
        else [],
        "bad_files": scan_files(work),
    }


# --- 5. untrusted names ----------------------------------------------------------------------

BAD_NAMES = {
    "space": "wat er",
    "single quote": "wat'er",
    "double quote": 'wat"er',
    "semicolon": "water;touch CANARY",
    "command substitution": "$(touch CANARY)",
    "backticks": "`touch CANARY`",
    "parent folders": "../../escape",
}


def rename(config: dict[str, Any], place: str, name: str) -> dict[str, Any]:
    config = json.loads(json.dumps(config))
    if place == "system":
        config["systems"] = {name: next(iter(config["systems"].values()))}
    elif place == "reference":
        ref = config["labelling"]["reference"]
        config["references"][name] = config["references"].pop(ref)
        config["labelling"]["reference"] = name
    elif place == "force-validation reference":
        ref = config["force_validation"]["reference"]
        config["references"][name] = config["references"].pop(ref)
        config["force_validation"]["reference"] = name
    elif place == "variant":
        config.setdefault("training", {})["variants"] = {
            "energy": {"losses": ["energy"]},
            name: {"losses": ["energy", "pitc", "pisc"]},
        }
    elif place == "report baseline":
        config.setdefault("report", {})["baseline"] = name
    return config


def names_campaign(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Every bad name in every place, through Snakemake: refused before any job runs?"""
    places = ("system", "reference", "force-validation reference", "variant", "report baseline")
    outside = root / "names"
    if outside.exists():
        shutil.rmtree(outside)
    outside.mkdir()
    cases = []
    for place in places:
        for kind, name in BAD_NAMES.items():
            work = outside / "work"
            if work.exists():
                shutil.rmtree(work)
            # the finished uninterrupted run: a name that passes reruns only what it reaches
            shutil.copytree(root / "baseline", work, ignore=shutil.ignore_patterns("locks"))
            (work / "config.yaml").write_text(
                yaml.safe_dump(rename(config, place, name), sort_keys=False)
            )
            done = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}
            before = {p.name for p in outside.iterdir()}
            proc = subprocess.run(
                snakemake_argv(),
                cwd=work,
                env=environment(root / "tmp-names"),
                capture_output=True,
                text=True,
                timeout=900,
            )
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            errors = [line for line in lines if "error" in line.lower()]
            made = sorted(
                str(p.relative_to(work))
                for p in work.rglob("*")
                if p.is_file()
                and ".snakemake" not in p.parts
                and done.get(p) != p.stat().st_mtime_ns
            )
            escaped = sorted({p.name for p in outside.iterdir()} - before - {"work"})
            canary = any(p.name == "CANARY" for p in outside.rglob("*")) or Path("CANARY").exists()
            refused = proc.returncode != 0 and not made and len(errors) == 1
            cases.append(
                {
                    "place": place,
                    "kind": kind,
                    "refused_before_any_job": refused,
                    "error": errors[0] if errors else (lines[-1] if lines else ""),
                    "error_lines": len(errors),
                    "files_written": len(made),
                    "written_outside": escaped,
                    "command_ran": canary,
                }
            )
            log(f"  name {kind!r} as {place}: {'refused' if refused else 'NOT refused'}")
    return {
        "tried": len(cases),
        "refused": sum(c["refused_before_any_job"] for c in cases),
        "written_outside": sum(bool(c["written_outside"]) for c in cases),
        "commands_ran": sum(c["command_ran"] for c in cases),
        "cases": cases,
    }


# --- the figures as Markdown (docs/reliability.md) -------------------------------------------


def percent(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100.0 * part / whole:.0f} %)" if whole else "0/0"


def first_error(result: dict[str, Any]) -> str:
    return (result["label_errors"] or result["snakemake_error"] or [""])[0]


def markdown(record: dict[str, Any]) -> str:
    """The campaign's figures as Markdown tables."""
    out = [
        f"Uninterrupted run: {record['baseline']['wall_s']:.1f} s. "
        f"Campaign: {record.get('wall_s', 0) / 60:.1f} min, seed {record['seed']}.",
        "",
    ]
    kills = record.get("kills")
    if kills and "crashed" not in kills:
        stages = ", ".join(f"{k} {v}" for k, v in sorted(kills["kills_by_stage"].items()))
        out += [
            "### 1. Kills",
            "",
            "| figure | target | measured |",
            "|---|---|---|",
            f"| `kill -9` of Snakemake's process group | >= 20 | {kills['kills']} "
            f"(running at the kill: {stages}) |",
            f"| processes that survived a kill | 0 | {kills['survivors']} |",
            f"| chains whose resumed DAG did not complete | 0 | "
            f"{len(kills['resumes_failed'])} {'; '.join(kills['resumes_failed'])[:300]} |",
            f"| finished geometries recomputed | 0 | {kills['recomputed_geometries']} "
            f"(of {kills['geometries']} labelled) |",
            f"| label energies and forces bitwise equal | 100 % | "
            f"{percent(kills['labels_bitwise_equal'], kills['labels_compared'])} |",
            f"| model metrics (metrics.json, md.json, metrics.csv) | equal | max abs "
            f"difference {kills['metrics_max_abs_difference']:.3g} over "
            f"{kills['metrics_compared']} numbers, {len(kills['metrics_missing'])} missing |",
            f"| corrupt or partial files left | 0 | {len(kills['bad_files'])} |",
            f"| label scratch folders left | 0 | {kills['label_scratch_left']} "
            f"(Snakemake's own temporary folders: {kills['snakemake_temporary_left']}) |",
            f"| wall time lost per kill | - | {kills['wall_lost_per_kill_s']:.1f} s: the "
            f"chains' time over the uninterrupted run's, per kill (chains: "
            f"{', '.join(f'{w:.0f} s' for w in kills['chain_wall_s'])}; the shared machine's "
            f"load moves this) |",
            f"| restart after a kill | - | {kills['restart_s_mean']:.1f} s mean from the kill "
            "to the first job running again (`--unlock`, Snakemake's start, the DAG) |",
            f"| work in flight at a kill | - | {kills['killed_jobs_age_s_mean']:.1f} s mean "
            "age of the killed jobs (an upper bound of the work redone: label jobs keep "
            "their finished geometries) |",
            "",
        ]
    disk = record.get("disk")
    if disk and "crashed" not in disk and "skipped" not in disk:
        out += [
            "### 2. A full disk",
            "",
            "| stage, space left | the error (exit status) | one line naming the file | "
            "damaged files left | resumed | nothing lost |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in disk.items():
            if "labels_compared" in r:
                lost = (
                    f"{r['labels_bitwise_equal']}/{r['labels_compared']} labels bitwise "
                    f"equal, {r['recomputed_geometries']} recomputed"
                )
            else:
                lost = (
                    f"metrics {'equal' if r['metrics_equal'] else 'DIFFER'}, weights "
                    f"{'equal' if r['model_equal'] else 'DIFFER'}"
                )
            error = f"`{r['error'][:110]}` ({r['exit_status']})"
            if r.get("finished"):
                error, r["clean"] = "none: the space sufficed (0)", True
            out.append(
                f"| {name} | {error} | "
                f"{'yes' if r['clean'] else 'NO'} | {len(r['bad_files'])} | "
                f"{'yes' if r['resume_exit_status'] == 0 else 'NO'} | {lost} |"
            )
        out.append("")
    damaged = record.get("damaged")
    if damaged and "crashed" not in damaged:
        handled = damaged["rejected"] + damaged["recomputed"] + damaged["harmless"]
        out += [
            "### 3. Damaged files",
            "",
            f"Bad inputs tried: {damaged['tried']}; handled cleanly (refused in one line, "
            f"recomputed, or a flipped bit in bytes nothing reads): "
            f"{percent(handled, damaged['tried'])}. Verdicts: "
            + ", ".join(f"{k} {v}" for k, v in sorted(damaged["verdicts"].items()))
            + ".",
            "",
            "| damage | tried | verdicts | an error it gave |",
            "|---|---|---|---|",
        ]
        groups: dict[str, list[dict[str, Any]]] = {}
        for case in damaged["cases"]:
            key = re.sub(r"bit \d+ flipped \(byte \d+ of \d+\)", "one bit flipped", case["case"])
            key = key.replace("footer one bit flipped", "one bit flipped in the footer")
            key = re.sub(r"wrong type at .*", "a wrong type (each section, and a key in it)", key)
            groups.setdefault(key, []).append(case)
        for key, cases in groups.items():
            verdicts = Counter(c["verdict"] for c in cases)
            errors = [c["error"] for c in cases if ": error: " in c["error"]]
            example = (errors or [cases[0]["error"]])[-1][:110]
            out.append(
                f"| {key} | {len(cases)} | "
                + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items()))
                + f" | `{example}` |"
            )
        out.append("")
    qc = record.get("qc")
    if qc and "failed" in qc:
        out += ["### 4. Quantum chemistry that misbehaves", "", f"DAG FAILED: {qc['failed']}", ""]
    elif qc and "crashed" not in qc:
        missing = qc["psi4_missing"]
        out += [
            "### 4. Quantum chemistry that misbehaves",
            "",
            "| figure | measured |",
            "|---|---|",
            f"| faults injected | SCF maxiter {SCF_MAXITER}; a worker stopped "
            f"{STOP_S:.0f} s against a {GEOMETRY_TIMEOUT_S:.0f} s timeout: "
            f"{'yes' if qc['worker_stopped'] else 'NO'}; a worker killed mid-chunk: "
            f"{'yes' if qc['worker_killed'] else 'NO'} |",
            f"| DAG completed with the faults | {'yes' if qc['dag_completed'] else 'NO'} "
            f"({qc['dag_wall_s']} s) |",
            f"| failed rows (of {qc['geometries']}) | {qc['failed_rows']}: "
            + ", ".join(f"{k} {v}" for k, v in sorted(qc["failures_by_kind"].items()))
            + " |",
            f"| failed rows with their error text | {qc['rows_with_error_text']} |",
            f"| summary counts them | {'yes' if qc['summary_counts_match'] else 'NO'} "
            f"(`{qc['summary_line']}`; `{qc['force_validation_line']}`) |",
            f"| `--retry-failed` recomputed | {qc['retry_recomputed']} "
            f"(failed before: {qc['retry_expected']}; ok rows touched: "
            f"{qc['retry_ok_rows_touched']}) |",
            f"| after the retry and a rerun of the DAG | {qc['after_retry_ok']} ok, "
            f"{qc['after_retry_labels']['bitwise_equal']} of "
            f"{qc['after_retry_labels']['labels']} bitwise equal to the uninterrupted run |",
            f"| Psi4 interpreter missing | exit {missing['exit_status']}; jobs started: "
            f"{len(missing['jobs_started'])}; labels written: {len(missing['labels_written'])}; "
            f"error: `{first_error(missing)[:150]}` |",
            "",
        ]
    names = record.get("names")
    if names and "crashed" not in names:
        by_place: dict[str, list[dict[str, Any]]] = {}
        for case in names["cases"]:
            by_place.setdefault(case["place"], []).append(case)
        out += [
            "### 5. Untrusted names",
            "",
            f"Names tried: {names['tried']} ({', '.join(BAD_NAMES)}) in "
            f"{len(by_place)} places; refused before any job ran: "
            f"{percent(names['refused'], names['tried'])}; written outside the working "
            f"folder: {names['written_outside']}; injected commands that ran: "
            f"{names['commands_ran']}.",
            "",
            "| place | refused | example error |",
            "|---|---|---|",
        ]
        for place, cases in by_place.items():
            refused = sum(c["refused_before_any_job"] for c in cases)
            out.append(f"| {place} | {refused}/{len(cases)} | `{cases[-1]['error'][:120]}` |")
        out.append("")
    return "\n".join(out)


# --- main ------------------------------------------------------------------------------------

PARTS = ("kills", "disk", "damaged", "qc", "names")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the study to run")
    parser.add_argument("--work", type=Path, default=Path("fault-campaign"), help="scratch folder")
    parser.add_argument("--kills", type=int, default=24, help="kill -9 count (at least 20)")
    parser.add_argument("--seed", type=int, default=13, help="seeds kill moments and bit flips")
    parser.add_argument("--flips", type=int, default=8, help="bit flips per Parquet table")
    parser.add_argument(
        "--reuse-baseline",
        action="store_true",
        help="reuse <work>/baseline from an earlier campaign (development only)",
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; choose from {','.join(PARTS)}")
    config = yaml.safe_load(args.config.read_text())
    root = args.work.resolve()
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    record: dict[str, Any] = {"config": str(args.config), "seed": args.seed}
    saved = root / "baseline" / "campaign-baseline.json"
    if args.reuse_baseline and saved.is_file():
        baseline = json.loads(saved.read_text())
    else:
        log("uninterrupted run")
        baseline = run_dag(prepare(root / "baseline", config), tmp=root / "tmp-baseline")
        if baseline["failed"]:
            raise RuntimeError(f"the uninterrupted run failed: {baseline['failed']}")
        baseline["bad_files"] = scan_files(root / "baseline")
        saved.write_text(json.dumps(baseline))
    record["baseline"] = baseline
    log(f"uninterrupted run: {baseline['wall_s']:.1f} s, stages {baseline['stages_seen']}")
    campaigns = {
        "kills": lambda: kill_campaign(root, config, baseline, args.kills, args.seed),
        "disk": lambda: disk_campaign(root, config),
        "damaged": lambda: damaged_campaign(root, args.flips, args.seed),
        "qc": lambda: qc_campaign(root, config),
        "names": lambda: names_campaign(root, config),
    }
    for part in parts:
        log(f"part: {part}")
        try:
            record[part] = campaigns[part]()
        except Exception as exc:  # a campaign reports what broke and goes on with the rest
            record[part] = {"crashed": f"{type(exc).__name__}: {exc}"}
            log(f"part {part} crashed: {exc}")
        (root / "campaign.json").write_text(json.dumps(record, indent=1, default=str))
    record["wall_s"] = time.monotonic() - started
    (root / "campaign.json").write_text(json.dumps(record, indent=1, default=str))
    (root / "campaign.md").write_text(markdown(record))
    print(markdown(record))
    log(f"figures: {root / 'campaign.md'}, every number: {root / 'campaign.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
