"""Configurations/dataset tables: content ids, zero-copy positions, metadata, atomic writes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ase.build import molecule

from pilip import keys, tables
from pilip.errors import PilipError
from pilip.splits import assign_splits, parse_fractions, unit_interval
from pilip.table_checksums import META_CHECKSUMS, checksums


@pytest.fixture
def configurations() -> pa.Table:
    rng = np.random.default_rng(7)
    atoms = []
    for name in ("H2O", "CH3CH2OH", "NH3", "CH4"):
        a = molecule(name)
        a.positions += rng.normal(0, 0.01, a.positions.shape)
        atoms.append(a)
    return tables.configurations_from_atoms(
        atoms,
        system=["water", "ethanol", "ammonia", "methane"],
        generator="rattle",
        generator_params={"amplitude": 0.01},
        seed=42,
        parent_id=[None, "abc", None, "def"],
    )


def test_id_follows_the_documented_recipe():
    numbers = np.array([8, 1, 1])
    positions = np.array(
        [[0.0, 0.0, 0.1192620], [0.0, 0.763239, -0.477047], [0.0, -0.763239, -0.477047]]
    )
    digest = hashlib.sha256()
    digest.update(np.array([8, 1, 1], "<i4").tobytes())
    digest.update(
        np.array([[0, 0, 119262], [0, 763239, -477047], [0, -763239, -477047]], "<i8").tobytes()
    )
    digest.update(np.array([-1, 2], "<i4").tobytes())
    assert tables.configuration_id(numbers, positions, -1, 2) == digest.hexdigest()[:16]


def test_id_changes_with_content_and_ignores_sub_precision_noise():
    a = molecule("H2O")
    base = tables.configuration_id(a.numbers, a.positions)
    assert len(base) == 16 and int(base, 16) >= 0
    # positions are rounded to 1e-6 A: noise far below that keeps the id
    assert tables.configuration_id(a.numbers, a.positions + 1e-10) == base
    moved = a.positions.copy()
    moved[1, 0] += 2e-6
    assert tables.configuration_id(a.numbers, moved) != base
    assert tables.configuration_id(a.numbers, a.positions, charge=1, multiplicity=2) != base
    assert tables.configuration_id(a.numbers, a.positions, multiplicity=3) != base
    assert tables.configuration_id(a.numbers[::-1], a.positions) != base


def test_configuration_columns_types_and_values(configurations):
    t = configurations
    assert t.schema.names == [f.name for f in tables.CONFIGURATION_FIELDS]
    assert t.schema.field(keys.POSITIONS).type == pa.list_(pa.list_(pa.float64(), 3))
    assert t.column(keys.NUMBERS).to_pylist()[0] == [8, 1, 1]
    assert t.column(keys.SYSTEM).to_pylist() == ["water", "ethanol", "ammonia", "methane"]
    assert t.column(keys.PARENT_ID).to_pylist() == [None, "abc", None, "def"]
    assert json.loads(t.column(keys.GENERATOR_PARAMS)[0].as_py()) == {"amplitude": 0.01}
    assert t.column(keys.SEED).to_pylist() == [42] * 4
    ethanol = molecule("CH3CH2OH")
    assert np.allclose(np.array(t.column(keys.POSITIONS)[1].as_py()), ethanol.positions, atol=0.05)


def test_positions_to_numpy_is_zero_copy_and_exact(configurations):
    column = configurations.column(keys.POSITIONS)
    flat, offsets = tables.positions_to_numpy(column)
    assert flat.dtype == np.float64 and flat.shape == (3 + 9 + 4 + 5, 3)
    assert offsets.dtype == np.int64 and offsets.tolist() == [0, 3, 12, 16, 21]
    buffer = column.chunk(0).values.values.buffers()[1]
    assert flat.ctypes.data == buffer.address  # a view on the Arrow buffer, no copy
    for i, row in enumerate(column.to_pylist()):
        np.testing.assert_array_equal(flat[offsets[i] : offsets[i + 1]], np.array(row))


def test_positions_to_numpy_of_a_slice_and_of_several_chunks(configurations):
    column = configurations.column(keys.POSITIONS)
    flat, offsets = tables.positions_to_numpy(configurations.slice(2, 2).column(keys.POSITIONS))
    assert offsets.tolist() == [0, 4, 9]
    np.testing.assert_array_equal(
        flat, np.concatenate([np.array(r) for r in column.to_pylist()[2:]])
    )
    chunked = pa.chunked_array([column.chunk(0).slice(0, 1), column.chunk(0).slice(1, 3)])
    flat2, offsets2 = tables.positions_to_numpy(chunked)
    np.testing.assert_array_equal(flat2, tables.positions_to_numpy(column)[0])
    assert offsets2.tolist() == [0, 3, 12, 16, 21]
    back = tables.numpy_to_positions(flat2, offsets2)
    assert back.equals(column.chunk(0))


def test_write_read_round_trip_with_units_and_provenance(tmp_path, configurations):
    energies = [-2000.123456789012345, -4200.5, None, 1e-300]
    forces = [np.full((3, 3), 0.1), None, np.arange(12.0).reshape(4, 3) / 7, np.zeros((5, 3))]
    splits = assign_splits(configurations.column(keys.ID).to_pylist())
    dataset = tables.dataset_table(
        configurations,
        energies,
        forces,
        reference="mp2_cbs",
        split=splits,
        force_validation=[0, 1, 0, 0],
    )
    path = tables.write_table(dataset, tmp_path / "d.parquet", "dataset", {"command": "test"})
    back = tables.read_table(path, kind="dataset")
    assert back.column(keys.ENERGY).to_pylist() == energies
    got_forces = back.column(keys.FORCES).to_pylist()
    assert got_forces[1] is None
    np.testing.assert_array_equal(np.array(got_forces[2]), forces[2])
    assert back.column(keys.FORCE_VALIDATION).to_pylist() == [False, True, False, False]
    for name in (keys.ID, keys.POSITIONS, keys.NUMBERS, keys.SPLIT, keys.REFERENCE, keys.CHARGE):
        assert back.column(name).equals(dataset.column(name)), name
    assert tables.field_unit(back, keys.POSITIONS) == "A"
    assert tables.field_unit(back, keys.ENERGY) == "eV"
    assert tables.field_unit(back, keys.FORCES) == "eV/A"
    assert tables.field_unit(back, keys.SYSTEM) is None
    assert tables.table_kind(back) == "dataset"
    prov = tables.table_provenance(back)
    assert prov["command"] == "test" and prov["pilip_version"] and prov["created"]
    raw = pq.read_schema(path).metadata
    assert raw[keys.META_SCHEMA_VERSION] == keys.SCHEMA_VERSION.encode()


def dataset_of(configurations: pa.Table) -> pa.Table:
    forces = [np.full((3, 3), 0.1), None, np.arange(12.0).reshape(4, 3) / 7, np.zeros((5, 3))]
    return tables.dataset_table(
        configurations,
        [-2000.5, float("nan"), None, 1e-300],
        forces,
        reference="mp2_cbs",
        split=["train", "train", "val", "test"],
        force_validation=[0, 1, 0, 0],
    )


def test_content_checksums_are_of_values_not_of_chunks_or_slices(configurations):
    dataset = dataset_of(configurations)
    pieces = pa.concat_tables([dataset.slice(0, 1), dataset.slice(1, 3)])  # two chunks
    assert pieces.column(keys.FORCES).num_chunks == 2
    assert checksums(pieces) == checksums(dataset)
    assert checksums(dataset.slice(1)) != checksums(dataset)
    other = dataset.set_column(
        dataset.schema.get_field_index(keys.ENERGY),
        dataset.schema.field(keys.ENERGY),
        pa.array([-2000.5, float("nan"), None, 2e-300]),
    )
    assert json.loads(checksums(other))[keys.ENERGY] != json.loads(checksums(dataset))[keys.ENERGY]


def test_checksums_survive_the_round_trip_and_filters_read_as_pyarrow_does(
    tmp_path, configurations
):
    path = tables.write_table(dataset_of(configurations), tmp_path / "d.parquet", "dataset", {})
    back = tables.read_table(path)  # verified: the recorded checksums match what was read
    filters = [(keys.SPLIT, "=", "train"), (keys.FORCE_VALIDATION, "=", False)]
    mine = tables.read_parquet(path, columns=[keys.FORCES], filters=filters)
    want = pq.read_table(path, columns=[keys.FORCES], filters=filters)
    assert mine.column_names == [keys.FORCES] and mine.num_rows == 1
    assert mine.column(keys.FORCES).equals(want.column(keys.FORCES))
    assert back.num_rows == 4


def test_a_table_written_before_checksums_still_reads(tmp_path, configurations):
    path = tables.write_table(configurations, tmp_path / "c.parquet", "configurations", {})
    table = pq.read_table(path)
    metadata = {k: v for k, v in table.schema.metadata.items() if k != META_CHECKSUMS}
    pq.write_table(table.replace_schema_metadata(metadata), path)
    assert tables.read_table(path, kind="configurations").equals(configurations)


def test_explicit_units_survive_write(tmp_path):
    field = pa.field("scf_dz", pa.float64(), metadata={keys.META_UNIT: b"Eh"})
    table = pa.table({"config_id": ["a"], keys.ENERGY: [1.0], "scf_dz": [-76.0]}).cast(
        pa.schema([pa.field("config_id", pa.string()), pa.field(keys.ENERGY, pa.float64()), field])
    )
    back = tables.read_table(tables.write_table(table, tmp_path / "l.parquet", "labels", {}))
    assert tables.field_unit(back, "scf_dz") == "Eh"
    assert tables.field_unit(back, keys.ENERGY) == "eV"


def test_failed_write_leaves_no_file(tmp_path, configurations, monkeypatch):
    def broken(table, where, **kwargs):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(tables.pq, "write_table", broken)
    with pytest.raises(OSError):
        tables.write_table(configurations, tmp_path / "c.parquet", "configurations", {})
    assert list(tmp_path.iterdir()) == []


def test_read_table_errors_name_the_file(tmp_path, configurations):
    with pytest.raises(PilipError, match="missing.parquet: no such file"):
        tables.read_table(tmp_path / "missing.parquet")
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(PilipError, match="text.parquet: not a readable Parquet file"):
        tables.read_table(tmp_path / "text.parquet")
    pq.write_table(configurations, tmp_path / "plain.parquet")
    with pytest.raises(PilipError, match="plain.parquet: not a pilip table"):
        tables.read_table(tmp_path / "plain.parquet")
    path = tables.write_table(configurations, tmp_path / "c.parquet", "configurations", {})
    with pytest.raises(PilipError, match="c.parquet: a configurations table, expected dataset"):
        tables.read_table(path, kind="dataset")
    with pytest.raises(ValueError):
        tables.write_table(configurations, tmp_path / "x.parquet", "nonsense", {})


def test_atoms_list_restores_geometry_and_labels(configurations):
    dataset = tables.dataset_table(
        configurations,
        [1.5, 2.5, 3.5, 4.5],
        [None, None, np.ones((4, 3)), None],
        reference="r",
        split="train",
    )
    atoms = tables.atoms_list(dataset)
    assert [a.get_chemical_formula() for a in atoms] == ["H2O", "C2H6O", "H3N", "CH4"]
    assert atoms[1].get_potential_energy() == 2.5
    np.testing.assert_array_equal(atoms[2].get_forces(), np.ones((4, 3)))
    assert atoms[0].info[keys.ID] == configurations.column(keys.ID)[0].as_py()
    np.testing.assert_array_equal(
        atoms[3].positions, np.array(configurations.column(keys.POSITIONS)[3].as_py())
    )


# --- splits ----------------------------------------------------------------------------------


def test_splits_are_deterministic_order_independent_and_near_fractions():
    ids = [hashlib.sha256(str(i).encode()).hexdigest()[:16] for i in range(20000)]
    splits = assign_splits(ids, (0.7, 0.2, 0.1))
    assert assign_splits(ids[::-1], (0.7, 0.2, 0.1)) == splits[::-1]
    assert assign_splits(ids[:100], (0.7, 0.2, 0.1)) == splits[:100]
    for name, fraction in zip(keys.SPLITS, (0.7, 0.2, 0.1), strict=True):
        share = splits.count(name) / len(ids)
        sigma = np.sqrt(fraction * (1 - fraction) / len(ids))
        assert abs(share - fraction) < 5 * sigma, (name, share)
    assert set(assign_splits(ids[:500], (1, 0, 0))) == {"train"}
    assert set(assign_splits(ids[:500], (0, 0, 1))) == {"test"}
    u = unit_interval(ids[0])
    assert 0.0 <= u < 1.0 and unit_interval(ids[0]) == u


def test_split_fractions_are_checked():
    assert parse_fractions("0.8, 0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.8,0.1", "0.5,0.5,0.5", "a,b,c", "1.1,-0.1,0"):
        with pytest.raises(PilipError, match="--splits"):
            parse_fractions(bad)


def test_a_missing_column_is_named_and_not_called_damage(tmp_path, configurations):
    path = tables.write_table(configurations, tmp_path / "c.parquet", "configurations", {})
    with pytest.raises(PilipError) as err:
        tables.read_parquet(path, columns=[keys.ID, keys.ENERGY])
    assert str(err.value).startswith(f"{path}: no column 'energy' (it has id, numbers,")
