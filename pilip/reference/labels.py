"""Labels tables: results JSONL -> Parquet, merging chunk tables, retry and re-extrapolation.

A labels table has one row per configuration of one reference method, failures included::

    config_id, reference, status (ok|failed|timeout), energy (eV, null unless ok),
    forces (list<fixed_size_list<float64,3>>, eV/A, null unless computed),
    components (map<string, float64>, Hartree: unit "Eh" in the field metadata),
    error, wall_time (s), attempts, program, program_version, method,
    options (JSON), threads, host, date (ISO-8601 UTC)

The results JSONL (see ``pilip.reference.backends.base``) is the crash-safe record a backend appends
to; this module turns it into the table and back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pilip import keys, tables, units
from pilip.atomic_io import atomic_path
from pilip.errors import PilipError
from pilip.reference.backends.base import read_results, results_line

STATUSES = (keys.STATUS_OK, keys.STATUS_FAILED, keys.STATUS_TIMEOUT)
COMPONENTS_TYPE = pa.map_(pa.string(), pa.float64())

LABELS_SCHEMA = pa.schema(
    [
        pa.field(keys.CONFIG_ID, pa.string(), nullable=False),
        pa.field(keys.REFERENCE, pa.string(), nullable=False),
        pa.field(keys.STATUS, pa.string(), nullable=False),
        pa.field(keys.ENERGY, pa.float64(), metadata={keys.META_UNIT: units.ENERGY.encode()}),
        pa.field(keys.FORCES, tables.VECTOR3_LIST, metadata={keys.META_UNIT: units.FORCE.encode()}),
        pa.field(
            keys.COMPONENTS, COMPONENTS_TYPE, metadata={keys.META_UNIT: units.HARTREE.encode()}
        ),
        pa.field(keys.ERROR, pa.string()),
        pa.field(keys.WALL_TIME, pa.float64(), metadata={keys.META_UNIT: b"s"}),
        pa.field(keys.ATTEMPTS, pa.int32()),
        pa.field(keys.PROGRAM, pa.string()),
        pa.field(keys.PROGRAM_VERSION, pa.string()),
        pa.field(keys.METHOD, pa.string()),
        pa.field(keys.OPTIONS, pa.string()),
        pa.field(keys.THREADS, pa.int32()),
        pa.field(keys.HOST, pa.string()),
        pa.field(keys.DATE, pa.string()),
    ]
)


def results_path_for(labels_path: str | os.PathLike) -> Path:
    """The results JSONL beside a labels table (``c.parquet`` -> ``c.results.jsonl``)."""
    path = Path(labels_path)
    return path.with_name(f"{path.stem}.results.jsonl")


def missing_record(config_id: str, provenance: dict[str, Any], error: str) -> dict[str, Any]:
    """A failed row for a configuration the backend wrote no result for."""
    return {
        "config_id": config_id,
        "status": keys.STATUS_FAILED,
        "energy": None,
        "forces": None,
        "components": {},
        "error": error,
        "wall_time": 0.0,
        "attempts": 0,
        "program_version": "unknown",
        "threads": 0,
        "host": None,
        "date": None,
        **{k: provenance.get(k) for k in ("program", "method", "options")},
    }


def labels_table(records: Sequence[dict[str, Any]], reference: str) -> pa.Table:
    """Build a labels table from results records (one per configuration, in row order).

    ``energy`` is kept only for status ok; ``forces`` are (n_atoms, 3) eV/A or None.
    """
    for record in records:
        if record.get("status") not in STATUSES:
            raise PilipError(
                f"results for configuration {record.get('config_id')}: unknown status "
                f"{record.get('status')!r} (expected {', '.join(STATUSES)})"
            )
    ok = [r["status"] == keys.STATUS_OK for r in records]
    forces = [
        np.asarray(r["forces"], dtype=np.float64).reshape(-1, 3)
        if good and r.get("forces") is not None
        else None
        for r, good in zip(records, ok, strict=True)
    ]
    columns = {
        keys.CONFIG_ID: [r["config_id"] for r in records],
        keys.REFERENCE: [reference] * len(records),
        keys.STATUS: [r["status"] for r in records],
        keys.ENERGY: [
            r.get("energy") if good else None for r, good in zip(records, ok, strict=True)
        ],
        keys.FORCES: tables.vectors_to_arrow(forces),
        keys.COMPONENTS: [sorted((r.get("components") or {}).items()) for r in records],
        keys.ERROR: [r.get("error") for r in records],
        keys.WALL_TIME: [float(r.get("wall_time") or 0.0) for r in records],
        keys.ATTEMPTS: [int(r.get("attempts") or 0) for r in records],
        keys.PROGRAM: [r.get("program") for r in records],
        keys.PROGRAM_VERSION: [r.get("program_version") for r in records],
        keys.METHOD: [r.get("method") for r in records],
        keys.OPTIONS: [json.dumps(r.get("options") or {}, sort_keys=True) for r in records],
        keys.THREADS: [int(r.get("threads") or 0) for r in records],
        keys.HOST: [r.get("host") for r in records],
        keys.DATE: [r.get("date") for r in records],
    }
    arrays = [
        columns[f.name]
        if isinstance(columns[f.name], pa.Array)
        else pa.array(columns[f.name], f.type)
        for f in LABELS_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=LABELS_SCHEMA)


def records_from_table(table: pa.Table) -> list[dict[str, Any]]:
    """Results records from a labels table (the inverse of :func:`labels_table`)."""
    rows = table.drop_columns([keys.FORCES, keys.COMPONENTS, keys.REFERENCE]).to_pylist()
    forces = table.column(keys.FORCES).to_pylist()
    components = table.column(keys.COMPONENTS).to_pylist()
    for row, f, c in zip(rows, forces, components, strict=True):
        row["forces"] = f
        row["components"] = dict(c or [])
        row["options"] = json.loads(row["options"] or "{}")
    return rows


def write_labels(table: pa.Table, path: str | os.PathLike, provenance: dict[str, Any]) -> Path:
    """Write a labels table atomically with units, schema version and provenance."""
    return tables.write_table(table, path, kind="labels", provenance=provenance)


def read_labels(path: str | os.PathLike) -> pa.Table:
    """Read a labels table written by pilip (PilipError naming the file otherwise)."""
    table = tables.read_table(path, kind="labels")
    missing = [f.name for f in LABELS_SCHEMA if f.name not in table.column_names]
    if missing:
        raise PilipError(f"{path}: labels table without column(s) {', '.join(missing)}")
    return table


def merge_labels(parts: Iterable[pa.Table]) -> pa.Table:
    """Concatenate labels tables of one reference; one row per config id.

    Where an id appears more than once (chunks that overlap after re-chunking, a retry written
    to another file), an ok row wins over a failed one, and a later table over an earlier one.
    """
    parts = list(parts)
    if not parts:
        return LABELS_SCHEMA.empty_table()
    table = pa.concat_tables([p.select(LABELS_SCHEMA.names).cast(LABELS_SCHEMA) for p in parts])
    references = set(table.column(keys.REFERENCE).to_pylist())
    if len(references) > 1:
        raise PilipError(
            f"labels of different references ({', '.join(sorted(references))}) cannot be "
            "merged; collect one reference at a time"
        )
    ids = table.column(keys.CONFIG_ID).to_pylist()
    ok = [s == keys.STATUS_OK for s in table.column(keys.STATUS).to_pylist()]
    chosen: dict[str, int] = {}
    for row, (config_id, good) in enumerate(zip(ids, ok, strict=True)):
        previous = chosen.get(config_id)
        if previous is None or good or not ok[previous]:
            chosen[config_id] = row
    return table.take(pa.array(sorted(chosen.values()), pa.int64()))


def rewrite_results(path: str | os.PathLike, drop: Callable[[dict[str, Any]], bool]) -> list[str]:
    """Remove the results lines for which ``drop(record)`` is true; returns their config ids.

    The file is rewritten atomically, one line per config id (the last one), so a later
    ``Backend.run`` recomputes exactly the dropped configurations.
    """
    path = Path(path)
    records = read_results(path)
    dropped = [config_id for config_id, record in records.items() if drop(record)]
    if not dropped and (not path.exists() or path.read_bytes().endswith(b"\n")):
        return []
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for config_id, record in records.items():
            if config_id not in dropped:
                fh.write(results_line(record, allow_nan=True))
    return dropped


def drop_failed_results(path: str | os.PathLike) -> list[str]:
    """Forget failed and timed-out results so that they are computed again (--retry-failed)."""
    return rewrite_results(path, lambda r: r.get("status") != keys.STATUS_OK)


def seed_results(path: str | os.PathLike, table: pa.Table) -> None:
    """Write a results file from an existing labels table (when its JSONL was deleted)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for record in records_from_table(table):
            fh.write(results_line(record, allow_nan=True))


def reextrapolate_table(
    table: pa.Table,
    extrapolate: Callable[[dict[str, float]], float],
    reference: str,
    method: str | None = None,
) -> pa.Table:
    """Recompute ``energy`` (eV) of every ok row from its components with ``extrapolate``.

    ``extrapolate(components_in_hartree) -> total_in_hartree``. Every row gets ``reference``
    and, when given, ``method`` (the new recipe's string); failed rows keep their energy
    (none) and error. Components are not changed, so the original totals can be recovered.
    """
    status = table.column(keys.STATUS).to_pylist()
    components = table.column(keys.COMPONENTS).to_pylist()
    energies = table.column(keys.ENERGY).to_pylist()
    new = []
    for s, comps, old in zip(status, components, energies, strict=True):
        if s != keys.STATUS_OK:
            new.append(old)
            continue
        if not comps:
            raise PilipError(
                "labels row without energy components: this table cannot be re-extrapolated "
                "(it was not computed with a basis-set recipe)"
            )
        new.append(float(extrapolate(dict(comps))) * units.HARTREE_TO_EV)
    index = table.schema.get_field_index(keys.ENERGY)
    table = table.set_column(index, table.schema.field(index), pa.array(new, pa.float64()))
    replaced = {keys.REFERENCE: reference}
    if method is not None:
        replaced[keys.METHOD] = method
    for name, value in replaced.items():
        index = table.schema.get_field_index(name)
        column = pa.array([value] * table.num_rows, pa.string())
        table = table.set_column(index, table.schema.field(index), column)
    return table
