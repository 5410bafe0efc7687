"""Part 4: quantum chemistry that misbehaves: SCF, a hung and a killed Psi4 worker, no Psi4."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from tools.fault_campaign.common import environment, log, prepare, run_pilip, snakemake_argv
from tools.fault_campaign.compare import compare_labels, label_rows_of, read_lines, scan_files
from tools.fault_campaign.dag import run_dag

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
