"""Teacher and student: a teacher model labels a pool of configurations with energies and
forces, and a standalone student learns them (``pilip distill``).

The teacher is any pilip model; typically a Delta model over a level that cannot run in MD
(a Psi4 DFT baseline, read from labels tables) or over one that ties every MD step to its
program (tblite). The student needs no baseline at run time. Its error is its teacher's plus
its own fitting error, so the pool should be large (hundreds of configurations, the default
samplers' output or MD frames).

Which pool rows the student may train on: configurations get train/val splits from their id
hash (``VAL_FRACTION`` to validation: model selection on the teacher's energies); rows of a
dataset table keep their train and val splits, and its test and force-validation rows are left
out, so that no structure a user evaluates on is ever a training structure of the student.
Energies in eV, forces in eV/A.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pilip import keys, splits, tables
from pilip.errors import PilipError

POOL_FILE = "pool.parquet"  # the teacher's labels of the pool: a dataset table in the run folder
VAL_FRACTION = 0.1


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_pool(paths: list[str | Path], log: Callable[[str], None]) -> tuple[pa.Table, list[str]]:
    """(configuration columns of every pool row the student may train on, their splits);
    duplicates (same id) kept once."""
    names = [f.name for f in tables.CONFIGURATION_FIELDS]
    parts, split_of = [], {}
    for path in paths:
        table = tables.read_table(path, kind=("configurations", "dataset"))
        ids = table.column(keys.ID).to_pylist()
        if keys.SPLIT in table.column_names:
            split = table.column(keys.SPLIT).to_pylist()
            fv = table.column(keys.FORCE_VALIDATION).fill_null(False).to_pylist()
            keep = [s in keys.SPLITS[:2] and not f for s, f in zip(split, fv, strict=True)]
            if not all(keep):
                log(f"{path}: {keep.count(False)} test or force-validation rows left out")
        else:
            split = splits.assign_splits(ids, (1.0 - VAL_FRACTION, VAL_FRACTION, 0.0))
            keep = [True] * len(ids)
        rows = [i for i, k in enumerate(keep) if k and ids[i] not in split_of]
        for i in rows:
            split_of[ids[i]] = split[i]
        parts.append(table.select(names).take(pa.array(rows, pa.int64())))
    pool = pa.concat_tables(parts).combine_chunks()
    if pool.num_rows == 0:
        raise PilipError(f"{', '.join(map(str, paths))}: no pool structure to train on")
    return pool, [split_of[i] for i in pool.column(keys.ID).to_pylist()]


def check_pool(pool: pa.Table, split: list[str], teacher_meta: dict[str, Any], source: str) -> None:
    """One-line PilipError for a pool the teacher cannot label or the student cannot train on."""
    from ase.data import chemical_symbols

    trained = {int(z) for z in teacher_meta.get("elements", [])}
    present = {int(z) for row in pool.column(keys.NUMBERS).to_pylist() for z in row}
    missing = sorted(present - trained)
    if trained and missing:
        names = ", ".join(chemical_symbols[z] for z in missing)
        raise PilipError(
            f"the pool has element(s) {names} that the teacher {source} was not trained on; "
            "leave those structures out of the pool"
        )
    for name in keys.SPLITS[:2]:
        if name not in split:
            raise PilipError(
                f"the pool has no {name} structure (the student needs both train and val "
                "rows); give a larger pool"
            )


def check_tabled_coverage(
    teacher_meta: dict[str, Any], pool: pa.Table, labels_paths: list[str] | None, source: str
) -> None:
    """For a teacher over a tabled baseline: every pool structure has an ok baseline label."""
    from pilip.potential.baselines import labels_records
    from pilip.potential.recipes import recipe_records

    delta = next((r for r in recipe_records(teacher_meta) if r["name"] == "delta"), None)
    if delta is None or not delta.get("tabled"):
        return
    name = delta["baseline"]["name"]
    if not labels_paths:
        raise PilipError(
            f"{source} is a Delta model over {name}, which runs only from labels tables: pass "
            f"its labels of the pool with --baseline-labels (pilip label POOL --reference "
            f"{name} --forces -o T)"
        )
    records = labels_records(labels_paths, delta["baseline"], "the teacher's baseline")
    ok = {
        i for i, r in records.items()
        if r.get("status") == keys.STATUS_OK and r.get("forces") is not None
    }  # fmt: skip
    ids = pool.column(keys.ID).to_pylist()
    missing = [i for i in ids if i not in ok]
    if missing:
        raise PilipError(
            f"{len(missing)} of the {len(ids)} pool structures have no {name} label in "
            f"--baseline-labels (e.g. configuration {missing[0]}); label them: pilip label POOL "
            f"--reference {name} --forces -o T, and pass T too"
        )


def label_pool(
    teacher: torch.nn.Module, pool: pa.Table, device: torch.device, batch_size: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The teacher's energies (n,) eV and forces, (n_atoms, 3) eV/A per structure."""
    from pilip.potential.data import structures_from_arrays
    from pilip.potential.evaluate import predict

    numbers = [np.asarray(z) for z in pool.column(keys.NUMBERS).to_pylist()]
    positions = tables.rows_of(pool.column(keys.POSITIONS))
    structures = structures_from_arrays(numbers, positions)
    energy, forces = predict(teacher, structures, device, batch_size, forces=True)
    bounds = np.concatenate([[0], np.cumsum([len(z) for z in numbers])])
    return energy, [forces[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def write_pool_dataset(
    pool: pa.Table,
    split: list[str],
    energy: np.ndarray,
    forces: list[np.ndarray],
    path: Path,
    teacher: dict[str, Any],
) -> Path:
    """The student's training data: a dataset table of the teacher's labels (reference
    ``teacher-<sha>``, forces on every row)."""
    reference = f"teacher-{teacher['sha256'][:12]}"
    table = tables.dataset_table(pool, list(energy), forces, reference=reference, split=split)
    provenance = {"command": "pilip distill", "teacher": teacher}
    return tables.write_table(table, path, "dataset", provenance)


def pool_is_current(path: Path, teacher: dict[str, Any]) -> bool:
    """Whether ``path`` holds the labels of this teacher on this pool (a rerun reuses them)."""
    if not path.is_file():
        return False
    try:
        recorded = tables.table_provenance(tables.read_table(path, kind="dataset"))
    except PilipError:
        return False
    return recorded.get("teacher") == teacher
