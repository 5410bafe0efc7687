"""A run against the uninterrupted one: labels bitwise, metrics, files that do not read back."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tools.fault_campaign.common import TEMP_NAME, TIME_KEYS


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


def read_lines(results: Path) -> dict[str, dict[str, Any]]:
    """The complete lines of a results JSONL by config id (the last line for an id wins)."""
    raw = results.read_bytes().split(b"\n")[:-1] if results.is_file() else []
    return {r["config_id"]: r for r in (json.loads(x) for x in raw if x.strip())}


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


def label_rows_of(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist() if path.is_file() else []


def same_weights(a: Path, b: Path) -> bool:
    import torch

    if not a.is_file():
        return False
    wa = torch.load(a, weights_only=True)["model"]["state_dict"]
    wb = torch.load(b, weights_only=True)["model"]["state_dict"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
