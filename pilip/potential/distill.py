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
A structure file (extxyz, e.g. a ``pilip md`` trajectory: the teacher's own MD) gives
configurations too; of an MD trajectory the starting frames (step 0: test-split structures)
and, where ``md.json`` beside it says a run failed, that run's failing frame are left out.
Energies in eV, forces in eV/A.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pilip import keys, splits, tables
from pilip.digests import file_sha256
from pilip.errors import PilipError

POOL_FILE = "pool.parquet"  # the teacher's labels of the pool: a dataset table in the run folder
VAL_FRACTION = 0.1
STRUCTURE_FILES = (".extxyz", ".xyz")  # pool files read as structures, not tables


def read_pool(paths: list[str | Path], log: Callable[[str], None]) -> tuple[pa.Table, list[str]]:
    """(configuration columns of every pool row the student may train on, their splits);
    duplicates (same id) kept once."""
    names = [f.name for f in tables.CONFIGURATION_FIELDS]
    parts, split_of = [], {}
    for path in paths:
        if Path(path).suffix.lower() in STRUCTURE_FILES:
            table = read_frames(path, log)
        else:
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


def read_frames(path: str | Path, log: Callable[[str], None]) -> pa.Table:
    """A configurations table of the frames of a structure file (charge and multiplicity from
    each frame's info, else 0 and 1). Of a ``pilip md`` trajectory (frames with ``step`` in
    their info) the step-0 frames (each run's start, a test-split structure) are left out and,
    with ``md.json`` beside the file, the failing frame of every unstable run; frames with two
    atoms closer than ``DEFAULT_MIN_DISTANCE`` are left out too (each counted in the log)."""
    import json

    from pilip.structures import DEFAULT_MIN_DISTANCE, closest_pair, read_structures

    path = Path(path)
    frames = read_structures(path)
    failed = {}  # run -> its failing step
    summary = path.parent / "md.json"
    if summary.is_file() and any("step" in f.info for f in frames):
        try:
            runs = json.loads(summary.read_text()).get("runs") or []
        except (json.JSONDecodeError, AttributeError):
            raise PilipError(f"{summary}: not the JSON object pilip md writes; re-run it") from None
        failed = {r.get("run"): r.get("steps_done") for r in runs if not r.get("stable", True)}
    kept, dropped = [], {"start": 0, "failing": 0, "too close": 0}
    for frame in frames:
        step = frame.info.get("step")
        if step is not None and int(step) == 0:
            dropped["start"] += 1
        elif step is not None and failed.get(frame.info.get("run")) == int(step):
            dropped["failing"] += 1
        elif closest_pair(frame.positions)[2] < DEFAULT_MIN_DISTANCE:
            dropped["too close"] += 1
        else:
            kept.append(frame)
    notes = ", ".join(f"{n} {why}" for why, n in dropped.items() if n)
    if notes:
        log(f"{path}: {len(kept)} of {len(frames)} frames in the pool ({notes} left out)")
    if not kept:
        return tables.configurations_table([], [], system=[], generator=[])
    return tables.configurations_from_atoms(
        kept,
        system=[str(f.info.get("system") or path.stem) for f in kept],
        generator="frames",
        generator_params=[
            {"source": str(path), **{k: int(f.info[k]) for k in ("run", "step") if k in f.info}}
            for f in kept
        ],
        parent_id=[f.info.get("config_id") or f.info.get("id") for f in kept],
    )


def check_pool(pool: pa.Table, split: list[str], teacher_meta: dict[str, Any], source: str) -> None:
    """One-line PilipError for a pool the teacher cannot label or the student cannot train on."""
    present = {int(z) for row in pool.column(keys.NUMBERS).to_pylist() for z in row}
    check_pool_elements(present, teacher_meta, source, "the pool")
    for name in keys.SPLITS[:2]:
        if name not in split:
            raise PilipError(
                f"the pool has no {name} structure (the student needs both train and val "
                "rows); give a larger pool"
            )


def check_pool_elements(present: Any, teacher_meta: dict[str, Any], source: str, what: str) -> None:
    """One-line PilipError when ``present`` (atomic numbers) has elements the teacher lacks."""
    from ase.data import chemical_symbols

    trained = {int(z) for z in teacher_meta.get("elements", [])}
    missing = sorted({int(z) for z in present} - trained)
    if trained and missing:
        names = ", ".join(chemical_symbols[z] for z in missing)
        raise PilipError(
            f"{what} has element(s) {names} that the teacher {source} was not trained on; "
            "leave those structures out"
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


def reference_energies(
    teacher_meta: dict[str, Any], source: str, weight: float | None, dataset: str | None
) -> tuple[dict[str, Any], Any] | None:
    """(record, structures) of the teacher's training-set reference energies the student also
    fits (``--reference-weight W`` > 0): the train split of ``dataset``, else of the dataset
    recorded in the teacher's checkpoint, energies only (eV). None for W 0 / None. One-line
    PilipError for a bad W, a dataset given without W, a missing dataset or one of other
    reference energies than the teacher's."""
    from pilip.potential.data import TRAIN, load_dataset, training_references

    if weight is not None and not (math.isfinite(weight) and weight >= 0):
        raise PilipError(f"--reference-weight {weight}: must be a finite number >= 0")
    if not weight:
        if dataset is not None:
            raise PilipError(
                f"--reference-dataset {dataset}: give --reference-weight W > 0 to fit its "
                "energies, or drop it"
            )
        return None
    path = dataset or teacher_meta.get("dataset")
    if path is None:
        raise PilipError(
            f"--reference-weight {weight:g}: {source} records no training set; pass it with "
            "--reference-dataset DATASET"
        )
    if not Path(path).is_file():
        where = "" if dataset else f" (recorded in {source})"
        raise PilipError(
            f"--reference-weight {weight:g}: the teacher's training set {path}{where} is not "
            "here; pass it with --reference-dataset DATASET"
        )
    trained_on, found = teacher_meta.get("reference"), training_references(path)
    if trained_on and found and sorted(trained_on) != found:
        raise PilipError(
            f"--reference-dataset {path}: energies of {', '.join(found)}, but the teacher "
            f"{source} was trained on {', '.join(trained_on)}; pass the teacher's training set"
        )
    structures = load_dataset(path)[TRAIN]
    check_pool_elements(structures.elements(), teacher_meta, source, f"--reference-dataset {path}")
    record = {"dataset": str(path), "sha256": file_sha256(path), "weight": float(weight),
              "n_structures": len(structures)}  # fmt: skip
    return record, structures


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


def ids_sha256(pool: pa.Table) -> str:
    """sha256 of the pool's configuration ids in order (the ids hash the structures)."""
    return hashlib.sha256("\n".join(pool.column(keys.ID).to_pylist()).encode()).hexdigest()


def pool_is_current(path: Path, teacher: dict[str, Any]) -> bool:
    """Whether ``path`` holds the labels of this teacher on this pool (a rerun reuses them)."""
    if not path.is_file():
        return False
    try:
        recorded = tables.table_provenance(tables.read_table(path, kind="dataset"))
    except PilipError:
        return False
    return recorded.get("teacher") == teacher
