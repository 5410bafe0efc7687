"""The campaign's figures as Markdown tables (docs/reliability.md)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from tools.fault_campaign.names import BAD_NAMES
from tools.fault_campaign.qc import GEOMETRY_TIMEOUT_S, SCF_MAXITER, STOP_S


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
