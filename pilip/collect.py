"""Join configurations and labels into the dataset table that training reads, with a summary.

Only ``status == ok`` labels become dataset rows; every row gets a split from its id hash
(``pilip.splits``), except rows whose configuration comes from a *dataset* table given as
configurations (cheap labels of an imported dataset): those keep that dataset's split.
Force-validation labels (analytic gradients at an affordable level) put their forces, in eV/A,
on the matching rows with ``force_validation = true``: those forces are for evaluation only
(``pilip.rows`` decides which rows each stage may read).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pilip import keys, splits, tables
from pilip.errors import PilipError
from pilip.reference import labels


@dataclasses.dataclass
class Collected:
    """A dataset table and the numbers its summary reports."""

    table: pa.Table
    reference: str
    n_configurations: dict[str, int]  # system -> configurations
    status_counts: dict[str, int]  # status -> label rows of the configurations
    unlabelled: int  # configurations without any label row
    failures: dict[str, int]  # "status: error kind" -> rows
    wall_time: list[float]  # s, of every labelled configuration
    force_validation_reference: str | None = None
    force_validation_rows: int = 0
    force_validation_failed: int = 0
    force_validation_requested: bool = False  # force-validation labels were given
    fixed_splits: int = 0  # rows whose split the user set (by system or id)


def read_configurations(paths: Sequence[str | os.PathLike]) -> pa.Table:
    """Concatenate configurations tables (or the configurations of dataset tables).

    An id in two tables is an error.
    """
    if not paths:
        raise PilipError("--configurations: give at least one configurations table")
    parts = [
        tables.read_table(p, kind=("configurations", "dataset")).select(
            tables.CONFIGURATION_SCHEMA.names
        )
        for p in paths
    ]
    table = pa.concat_tables([p.cast(tables.CONFIGURATION_SCHEMA) for p in parts])
    ids = table.column(keys.ID).to_pylist()
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    if repeated:
        raise PilipError(
            f"configuration id {repeated[0]} appears in more than one row of "
            f"{', '.join(str(p) for p in paths)}; remove the duplicate"
        )
    return table


def stored_splits(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """Configuration id -> split of every row of the dataset tables among ``paths``."""
    out: dict[str, str] = {}
    for path in paths:
        table = tables.read_table(path, kind=("configurations", "dataset"))
        if tables.table_kind(table) == "dataset":
            ids = table.column(keys.ID).to_pylist()
            out.update(zip(ids, table.column(keys.SPLIT).to_pylist(), strict=True))
    return out


def label_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand folders to the labels tables (``*.parquet``) below them, sorted."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(path.rglob("*.parquet")))
        else:
            files.append(path)
    return files


def error_kind(status: str, error: str | None) -> str:
    """A short failure class for the summary: status plus the error's first clause."""
    lines = (error or "").strip().splitlines()
    text = lines[0] if lines else "no error text"
    return f"{status}: {text.split(':')[0][:60]}"


def fixed_splits(
    configurations: pa.Table,
    by_system: Mapping[str, str] | None = None,
    by_id: Mapping[str, str] | None = None,
    where: tuple[str, str] = ("systems.<name>.split (--system-split)", "splits.by_id (--id-split)"),
) -> dict[str, str]:
    """id -> split for the rows a user placed by hand: by configuration id, else by system.

    A system or id that matches no configuration is an error (a typo would otherwise leave
    the rows where the hash puts them). ``where`` names the two settings in that error.
    """
    ids = configurations.column(keys.ID).to_pylist()
    systems = configurations.column(keys.SYSTEM).to_pylist()
    by_system, by_id = dict(by_system or {}), dict(by_id or {})
    for name in by_system:
        if name not in systems:
            known = ", ".join(sorted(set(systems)))
            raise PilipError(f"{where[0]}: no configurations of system {name!r} (have: {known})")
    unknown = sorted(set(by_id) - set(ids))
    if unknown:
        raise PilipError(
            f"{where[1]}: {unknown[0]!r} is not the id of any configuration given; "
            "copy ids from the configurations table"
        )
    fixed = {i: by_system[s] for i, s in zip(ids, systems, strict=True) if s in by_system}
    fixed.update(by_id)
    return fixed


def split_of_rows(
    configuration_paths: Sequence[str | os.PathLike],
    ids: Sequence[str],
    fractions: Sequence[float],
    fixed: Mapping[str, str],
    keep_splits: bool = True,
) -> list[str]:
    """The split of every id: set by hand (``fixed``), else kept from a dataset table among
    ``configuration_paths`` (with ``keep_splits``), else from the id hash and ``fractions``.

    :func:`collect` and :func:`force_validation_subset` both assign splits here, so the
    force-validation pick always comes from the split that the dataset says.
    """
    split = splits.assign_splits(ids, fractions, fixed)
    if keep_splits:
        stored = stored_splits(configuration_paths)
        split = [s if i in fixed else stored.get(i, s) for i, s in zip(ids, split, strict=True)]
    return split


def collect(
    configuration_paths: Sequence[str | os.PathLike],
    label_paths: Sequence[str | os.PathLike],
    fractions: Sequence[float] = splits.DEFAULT_FRACTIONS,
    force_validation_paths: Sequence[str | os.PathLike] = (),
    keep_splits: bool = True,
    split_of_system: Mapping[str, str] | None = None,
    split_of_id: Mapping[str, str] | None = None,
) -> Collected:
    """Build the dataset table (configuration columns + energy eV + forces eV/A + split).

    Splits come from each id's hash and ``fractions``, except for the rows a user placed by
    hand: ``split_of_id`` (configuration id -> split), then ``split_of_system`` (system ->
    split, e.g. a held-back molecule as test). ``configuration_paths`` may name dataset
    tables; with ``keep_splits`` their rows keep their split unless placed by hand.
    """
    configurations = read_configurations(configuration_paths)
    fixed = fixed_splits(configurations, split_of_system, split_of_id)
    files = label_files(label_paths)
    if not files:
        raise PilipError("--labels: no labels tables given or found")
    merged = labels.merge_labels(labels.read_labels(p) for p in files)
    reference = merged.column(keys.REFERENCE)[0].as_py() if merged.num_rows else None
    if reference is None:
        raise PilipError(f"{files[0]}: no label rows; nothing to collect")

    by_id = {cid: row for row, cid in enumerate(merged.column(keys.CONFIG_ID).to_pylist())}
    config_ids = configurations.column(keys.ID).to_pylist()
    statuses = merged.column(keys.STATUS).to_pylist()
    errors = merged.column(keys.ERROR).to_pylist()
    walls = merged.column(keys.WALL_TIME).to_pylist()
    status_counts: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    keep, label_rows, wall_time = [], [], []
    for row, config_id in enumerate(config_ids):
        label_row = by_id.get(config_id)
        if label_row is None:
            continue
        status = statuses[label_row]
        status_counts[status] += 1
        wall_time.append(float(walls[label_row] or 0.0))
        if status == keys.STATUS_OK:
            keep.append(row)
            label_rows.append(label_row)
        else:
            failures[error_kind(status, errors[label_row])] += 1
    unlabelled = len(config_ids) - sum(status_counts.values())

    keep, label_rows = pa.array(keep, pa.int64()), pa.array(label_rows, pa.int64())
    kept = configurations.take(keep)
    kept_ids = kept.column(keys.ID).to_pylist()
    energy = merged.column(keys.ENERGY).take(label_rows).to_pylist()
    forces_column = merged.column(keys.FORCES).take(label_rows).to_pylist()
    forces = [None if f is None else np.asarray(f) for f in forces_column]
    fv_flag = [False] * len(kept_ids)

    fv_reference, fv_rows, fv_failed = None, 0, 0
    if force_validation_paths:
        fv = labels.merge_labels(labels.read_labels(p) for p in label_files(force_validation_paths))
        if fv.num_rows:
            fv_reference = fv.column(keys.REFERENCE)[0].as_py()
        fv_ok = fv.filter(
            pc.and_(
                pc.equal(fv.column(keys.STATUS), keys.STATUS_OK),
                pc.is_valid(fv.column(keys.FORCES)),
            )
        )
        fv_failed = fv.num_rows - fv_ok.num_rows
        fv_forces = dict(
            zip(
                fv_ok.column(keys.CONFIG_ID).to_pylist(),
                fv_ok.column(keys.FORCES).to_pylist(),
                strict=True,
            )
        )
        for i, config_id in enumerate(kept_ids):
            if config_id in fv_forces:
                forces[i] = np.asarray(fv_forces[config_id])
                fv_flag[i] = True
                fv_rows += 1

    split = split_of_rows(configuration_paths, kept_ids, fractions, fixed, keep_splits)
    table = tables.dataset_table(
        kept,
        energy,
        forces,
        reference=reference,
        split=split,
        force_validation=fv_flag,
    )
    systems = Counter(configurations.column(keys.SYSTEM).to_pylist())
    return Collected(
        table=table,
        reference=reference,
        n_configurations=dict(systems),
        status_counts={s: status_counts.get(s, 0) for s in labels.STATUSES},
        unlabelled=unlabelled,
        failures=dict(failures.most_common()),
        wall_time=wall_time,
        force_validation_reference=fv_reference,
        force_validation_rows=fv_rows,
        force_validation_failed=fv_failed,
        force_validation_requested=bool(force_validation_paths),
        fixed_splits=sum(1 for i in kept_ids if i in fixed),
    )


def dataset_warnings(collected: Collected) -> list[str]:
    """What a stage downstream will lack, in one line each: splits too small to use."""
    counts = Counter(collected.table.column(keys.SPLIT).to_pylist())
    shown = ", ".join(f"{s} {counts.get(s, 0)}" for s in keys.SPLITS)
    fix = (
        "raise splits.{} in the config, or place rows by hand (systems.<name>.split, "
        "splits.by_id; pilip collect --system-split/--id-split)"
    )
    needs = {
        "train": "training needs at least 1 row to fit",
        "val": "training needs at least 1 for early stopping and model selection",
        "test": "evaluation needs at least 1 for energy errors (and MD starts from test rows)",
    }
    warnings = [
        f"{split} split has 0 rows ({shown}): {need}; {fix.format(split)}"
        for split, need in needs.items()
        if counts.get(split, 0) == 0
    ]
    if collected.force_validation_requested and collected.force_validation_rows == 0:
        warnings.append(
            "force validation has 0 rows with forces: force errors need at least 1; raise "
            "force_validation.per_system or the size of force_validation.split"
        )
    return warnings


def summary_text(collected: Collected, output: str | os.PathLike) -> str:
    """A short human-readable summary: counts, failures by kind, energy range, wall time."""
    table = collected.table
    lines = [f"dataset {output}: reference {collected.reference}"]
    systems = ", ".join(f"{s} {n}" for s, n in sorted(collected.n_configurations.items()))
    lines.append(f"configurations: {sum(collected.n_configurations.values())} ({systems})")
    counts = ", ".join(f"{s} {n}" for s, n in collected.status_counts.items())
    lines.append(f"labels: {counts}, unlabelled {collected.unlabelled}")
    if collected.failures:
        lines.append("failures by kind:")
        lines.extend(f"  {n:5d}  {kind}" for kind, n in collected.failures.items())
    else:
        lines.append("failures by kind: none")
    split_counts = Counter(table.column(keys.SPLIT).to_pylist())
    lines.append(
        f"dataset rows: {table.num_rows} ("
        + ", ".join(f"{s} {split_counts.get(s, 0)}" for s in keys.SPLITS)
        + ")"
    )
    if table.num_rows:
        system_column = table.column(keys.SYSTEM).to_pylist()
        energies = np.asarray(table.column(keys.ENERGY).to_numpy(zero_copy_only=False))
        lines.append("energy range (eV):")
        for system in sorted(set(system_column)):
            e = energies[np.asarray(system_column) == system]
            lines.append(
                f"  {system}: {e.min():.6f} .. {e.max():.6f} (span {e.max() - e.min():.4f})"
            )
    wall = np.asarray(collected.wall_time, dtype=float)
    if wall.size:
        lines.append(
            f"wall time: {wall.sum():.1f} s total, {wall.mean():.2f} s mean, "
            f"{wall.max():.2f} s max per configuration"
        )
    if collected.fixed_splits:
        lines.append(f"splits set by hand: {collected.fixed_splits} rows")
    if collected.force_validation_reference is not None:
        lines.append(
            f"force validation: {collected.force_validation_rows} rows with "
            f"{collected.force_validation_reference} forces (eV/A, evaluation only), "
            f"{collected.force_validation_failed} failed"
        )
    lines.extend(f"warning: {w}" for w in dataset_warnings(collected))
    return "\n".join(lines) + "\n"


def force_validation_subset(
    configuration_paths: Sequence[str | os.PathLike],
    fractions: Sequence[float],
    split: str,
    per_system: int,
    split_of_system: Mapping[str, str] | None = None,
    split_of_id: Mapping[str, str] | None = None,
) -> pa.Table:
    """The configurations whose forces are computed for evaluation only.

    Per system, the first ``per_system`` configurations of ``split`` in id order (ids are
    content hashes, so this is a fixed pseudo-random pick that does not depend on row order).
    Splits are assigned exactly as :func:`collect` assigns them (rows placed by hand, splits
    kept from dataset tables given as configurations, else the id hash).
    """
    if split not in keys.SPLITS:
        raise PilipError(
            f"force_validation.split: expected one of {', '.join(keys.SPLITS)}, got {split!r}"
        )
    configurations = read_configurations(configuration_paths)
    ids = configurations.column(keys.ID).to_pylist()
    systems = configurations.column(keys.SYSTEM).to_pylist()
    fixed = fixed_splits(configurations, split_of_system, split_of_id)
    in_split = split_of_rows(configuration_paths, ids, fractions, fixed)
    chosen: list[int] = []
    for system in dict.fromkeys(systems):
        rows = sorted(
            (ids[i], i) for i in range(len(ids)) if systems[i] == system and in_split[i] == split
        )
        chosen.extend(i for _, i in rows[:per_system])
    return configurations.take(pa.array(sorted(chosen), pa.int64()))


def dataset_provenance(collected: Collected, fractions: Sequence[float], **extra: Any) -> dict:
    """The provenance record stored in the dataset table's file metadata."""
    return {
        "command": "pilip collect",
        "reference": collected.reference,
        "splits": dict(zip(keys.SPLITS, map(float, fractions), strict=True)),
        "force_validation_reference": collected.force_validation_reference,
        **extra,
    }
