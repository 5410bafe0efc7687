"""One place decides which rows each stage may use; no stage sees another's rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pilip import keys
from pilip.potential.data import TRAIN, VAL, load_dataset
from pilip.potential.evaluate import read_evaluation_sets
from pilip.potential.md import select_starts
from pilip.rows import FIT, MD_START, SELECT, TEST_ENERGY, TEST_FORCES, RowFlags, stage_rows
from pilip.tables import configurations_table, dataset_table, write_table


def _every_kind_of_row(tmp_path):
    """Every split x force_validation x reference x with/without forces, each row a distinct
    geometry whose x offset is its row number (so a geometry names its row)."""
    split, fv, reference, forces = [], [], [], []
    for s in ("train", "val", "test"):
        for flag in (False, True):
            for ref in ("mp2/cbs", "mp2/cc-pvdz"):
                for with_forces in (False, True):
                    split.append(s), fv.append(flag), reference.append(ref)
                    forces.append(np.full((3, 3), 0.1) if with_forces else None)
    base = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    positions = [base + [10.0 * i, 0.0, 0.0] for i in range(len(split))]
    configs = configurations_table([np.array([8, 1, 1])] * len(split), positions, system="w",
                                   generator="rattle")  # fmt: skip
    # the training energies are MP2/CBS: make the train rows of the other reference vanish
    keep = [i for i in range(len(split)) if not (split[i] == "train" and reference[i] != "mp2/cbs")]
    table = dataset_table(
        configs.take(keep), [-2000.0 - i for i in keep], [forces[i] for i in keep],
        reference=[reference[i] for i in keep], split=[split[i] for i in keep],
        force_validation=[fv[i] for i in keep],
    )  # fmt: skip
    path = write_table(table, tmp_path / "d.parquet", "dataset", {})
    return path, table


def _row_ids(positions: torch.Tensor | np.ndarray) -> set[int]:
    """Row numbers of a stack of structures (3 atoms each) from their x offsets."""
    x = np.asarray(positions).reshape(-1, 3, 3)[:, 0, 0]
    return {int(round(v / 10.0)) for v in x}


def test_no_stage_reads_rows_it_must_not(tmp_path):
    path, table = _every_kind_of_row(tmp_path)
    row_of = {i: int(round(p[0][0] / 10.0)) for i, p in enumerate(table["positions"].to_pylist())}
    split = dict(zip(row_of.values(), table["split"].to_pylist(), strict=True))
    fv = dict(zip(row_of.values(), table["force_validation"].to_pylist(), strict=True))
    reference = dict(zip(row_of.values(), table["reference"].to_pylist(), strict=True))

    data = load_dataset(path)
    fit, select = _row_ids(data[TRAIN].positions), _row_ids(data[VAL].positions)
    sets = read_evaluation_sets(path)
    test_energy = _row_ids(sets.energy.structures.positions)
    test_forces = _row_ids(sets.forces.structures.positions)
    md = {_row_ids(a.positions).pop() for a in select_starts(path, per_system=100)}

    assert fit and select and test_energy and test_forces and md
    assert all(split[i] == "train" and not fv[i] for i in fit)
    assert all(split[i] == "val" and not fv[i] for i in select)
    assert not fit & select
    for evaluated in (test_energy, test_forces, md):
        assert not evaluated & (fit | select)  # nothing measured on fitted or selected rows
    assert all(split[i] == "test" for i in test_energy | md)
    assert all(fv[i] or split[i] == "test" for i in test_forces)
    # test energies of the training reference, or of any reference on non-force-validation rows
    assert all(reference[i] == "mp2/cbs" or not fv[i] for i in test_energy)
    # the same rows as the one function gives each stage
    flags = RowFlags(
        split=np.asarray(table["split"].to_pylist(), dtype=object),
        force_validation=np.asarray(table["force_validation"].to_pylist()),
        has_energy=np.ones(table.num_rows, dtype=bool),
        has_forces=np.asarray(table["forces"].is_valid()),
        reference=np.asarray(table["reference"].to_pylist(), dtype=object),
    )
    for stage, seen in ((FIT, fit), (SELECT, select), (TEST_ENERGY, test_energy),
                        (TEST_FORCES, test_forces), (MD_START, md)):  # fmt: skip
        assert {row_of[i] for i in stage_rows(stage, flags)} == seen, stage


def test_loading_checks_the_schema_version(tmp_path):
    import pyarrow.parquet as pq

    from pilip.errors import PilipError

    path, table = _every_kind_of_row(tmp_path)
    metadata = dict(table.schema.metadata or {})
    metadata[keys.META_SCHEMA_VERSION] = b"0"
    metadata[keys.META_KIND] = b"dataset"
    old = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata(metadata), old)
    with pytest.raises(PilipError, match="old.parquet: schema version 0, this pilip reads"):
        load_dataset(old)
