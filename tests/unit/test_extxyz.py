"""extxyz import/export through the CLI: values, splits, kinds, and an exact round trip."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pyarrow as pa
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from pilip import keys, tables
from pilip.cli import main
from pilip.extxyz import import_structures
from pilip.splits import assign_splits

ACAC = Path(__file__).resolve().parents[3] / "shared" / "data" / "acac" / "train_300K.xyz"


def labelled_frames(n: int = 12, seed: int = 0) -> list:
    """Water and methane frames with full-precision positions, energies (eV), forces (eV/A)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = molecule("H2O" if i % 2 else "CH4")
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        energy = -2000.0 + rng.normal() / 3.0
        forces = rng.normal(0, 1 / 3, atoms.positions.shape)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


def write_ase(path: Path, frames: list) -> Path:
    ase.io.write(path, frames, format="extxyz")
    return path


def test_import_reads_ase_energies_and_forces(tmp_path):
    frames = labelled_frames()
    source = write_ase(tmp_path / "water.xyz", frames)
    expected = ase.io.read(source, ":")  # what ASE itself reads from the text
    out = tmp_path / "data.parquet"
    assert main(["import", str(source), "-o", str(out), "--reference", "pbe"]) == 0
    table = tables.read_table(out, kind="dataset")
    assert table.num_rows == len(frames)
    assert table.column(keys.ENERGY).to_pylist() == [a.get_potential_energy() for a in expected]
    got_forces = table.column(keys.FORCES).to_pylist()
    got_positions = tables.rows_of(table.column(keys.POSITIONS))
    for atoms, f, r in zip(expected, got_forces, got_positions, strict=True):
        np.testing.assert_array_equal(np.array(f), atoms.get_forces())
        np.testing.assert_array_equal(r, atoms.positions)
    assert set(table.column(keys.REFERENCE).to_pylist()) == {"pbe"}
    assert set(table.column(keys.SYSTEM).to_pylist()) == {"water"}
    assert set(table.column(keys.GENERATOR).to_pylist()) == {"import"}
    assert json.loads(table.column(keys.GENERATOR_PARAMS)[5].as_py()) == {
        "source": "water.xyz",
        "frame": 5,
    }
    ids = table.column(keys.ID).to_pylist()
    assert ids == [tables.configuration_id(a.numbers, a.positions) for a in expected]
    assert table.column(keys.SPLIT).to_pylist() == assign_splits(ids, (0.8, 0.1, 0.1))
    assert not any(table.column(keys.FORCE_VALIDATION).to_pylist())
    assert tables.field_unit(table, keys.ENERGY) == "eV"
    assert tables.field_unit(table, keys.FORCES) == "eV/A"
    assert tables.table_provenance(table)["command"] == "import"


def test_export_import_round_trip_is_exact(tmp_path):
    frames = labelled_frames(seed=3)
    configs = tables.configurations_from_atoms(
        frames, system="mix", generator="md", seed=5, charge=0
    )
    ids = configs.column(keys.ID).to_pylist()
    forces = [a.get_forces() for a in frames]
    forces[3] = None  # a row without forces stays without forces
    dataset = tables.dataset_table(
        configs,
        [a.get_potential_energy() for a in frames],
        forces,
        reference="ccsd_t",
        split=assign_splits(ids, (0.5, 0.25, 0.25)),
        force_validation=[i == 4 for i in range(len(frames))],
    )
    first = tables.write_table(dataset, tmp_path / "a.parquet", "dataset", {})
    assert main(["export", str(first), "-o", str(tmp_path / "a.xyz")]) == 0
    assert main(["import", str(tmp_path / "a.xyz"), "-o", str(tmp_path / "b.parquet")]) == 0
    back = tables.read_table(tmp_path / "b.parquet", kind="dataset")
    for name in (keys.ID, keys.NUMBERS, keys.POSITIONS, keys.CHARGE, keys.MULTIPLICITY,
                 keys.SYSTEM, keys.REFERENCE, keys.SPLIT, keys.FORCE_VALIDATION):  # fmt: skip
        assert back.column(name).equals(dataset.column(name)), name
    # float64 values compare exactly, not approximately
    assert back.column(keys.ENERGY).to_pylist() == dataset.column(keys.ENERGY).to_pylist()
    assert back.column(keys.FORCES).to_pylist() == dataset.column(keys.FORCES).to_pylist()
    assert back.column(keys.FORCES)[3].as_py() is None
    flat_a, _ = tables.positions_to_numpy(dataset.column(keys.POSITIONS))
    flat_b, _ = tables.positions_to_numpy(back.column(keys.POSITIONS))
    assert flat_a.tobytes() == flat_b.tobytes()
    # the exported text is an extended XYZ that plain ASE reads with the same numbers
    atoms = ase.io.read(tmp_path / "a.xyz", ":")
    assert [a.get_potential_energy() for a in atoms] == dataset.column(keys.ENERGY).to_pylist()
    np.testing.assert_array_equal(atoms[0].positions, frames[0].positions)


def test_file_without_energies_becomes_configurations(tmp_path):
    frames = [molecule("H2O"), molecule("NH3")]
    frames[1].info.update(charge=1, multiplicity=2)
    source = write_ase(tmp_path / "seeds.extxyz", frames)
    out = tmp_path / "c.parquet"
    assert main(["import", str(source), "-o", str(out), "--system", "mixed"]) == 0
    table = tables.read_table(out, kind="configurations")
    assert table.schema.names == [f.name for f in tables.CONFIGURATION_FIELDS]
    assert table.column(keys.CHARGE).to_pylist() == [0, 1]
    assert table.column(keys.MULTIPLICITY).to_pylist() == [1, 2]
    assert table.column(keys.SYSTEM).to_pylist() == ["mixed", "mixed"]
    # export of a configurations table works too
    assert main(["export", str(out), "-o", str(tmp_path / "c.xyz")]) == 0
    again = ase.io.read(tmp_path / "c.xyz", ":")
    np.testing.assert_array_equal(again[1].positions, frames[1].positions)


def test_split_options(tmp_path):
    source = write_ase(tmp_path / "s.xyz", labelled_frames(n=30))
    assert main(["import", str(source), "-o", str(tmp_path / "t.parquet"), "--reference", "r",
                 "--split", "test"]) == 0  # fmt: skip
    table = tables.read_table(tmp_path / "t.parquet")
    assert set(table.column(keys.SPLIT).to_pylist()) == {"test"}
    assert main(["import", str(source), "-o", str(tmp_path / "f.parquet"), "--reference", "r",
                 "--splits", "0.5,0.5,0"]) == 0  # fmt: skip
    table = tables.read_table(tmp_path / "f.parquet")
    ids = table.column(keys.ID).to_pylist()
    assert table.column(keys.SPLIT).to_pylist() == assign_splits(ids, (0.5, 0.5, 0.0))
    assert "test" not in table.column(keys.SPLIT).to_pylist()


def test_custom_keys_no_forces_and_force_validation(tmp_path):
    frames = labelled_frames(n=4)
    for a in frames:
        a.info["dft_energy"] = a.get_potential_energy() + 1.0
        a.arrays["dft_forces"] = a.get_forces() * 2
        a.calc = None
    source = write_ase(tmp_path / "k.xyz", frames)
    result = import_structures(
        source, reference="dft", energy_key="dft_energy", forces_key="dft_forces"
    )
    expected = ase.io.read(source, ":")
    assert result.table.column(keys.ENERGY).to_pylist() == [a.info["dft_energy"] for a in expected]
    np.testing.assert_array_equal(
        np.array(result.table.column(keys.FORCES)[2].as_py()), expected[2].arrays["dft_forces"]
    )
    result = import_structures(
        source, reference="dft", energy_key="dft_energy", forces_key=None, force_validation=True
    )
    assert result.table.column(keys.FORCES).null_count == 4
    assert all(result.table.column(keys.FORCE_VALIDATION).to_pylist())


def test_duplicates_are_dropped(tmp_path):
    frames = labelled_frames(n=4)
    source = write_ase(tmp_path / "d.xyz", frames + frames[:2])
    result = import_structures(source, reference="r")
    assert result.n_frames == 6 and result.n_duplicates == 2 and result.table.num_rows == 4


def test_non_ase_format_export(tmp_path):
    frames = labelled_frames(n=3)
    configs = tables.configurations_from_atoms(frames, system="w", generator="md")
    dataset = tables.dataset_table(configs, [1.0, 2.0, 3.0], [None] * 3, reference="r", split="val")
    path = tables.write_table(dataset, tmp_path / "x.parquet", "dataset", {})
    assert main(["export", str(path), "-o", str(tmp_path / "x.traj")]) == 0
    back = ase.io.read(tmp_path / "x.traj", ":")
    assert [a.get_potential_energy() for a in back] == [1.0, 2.0, 3.0]


@pytest.mark.skipif(not ACAC.is_file(), reason="shared acac dataset not present")
def test_real_acac_file(tmp_path):
    out = tmp_path / "acac.parquet"
    assert main(["import", str(ACAC), "-o", str(out), "--reference", "pbe_d3"]) == 0
    table = tables.read_table(out, kind="dataset")
    first = ase.io.read(ACAC, 0)
    assert table.num_rows == 500
    assert table.column(keys.ENERGY)[0].as_py() == first.get_potential_energy()
    np.testing.assert_array_equal(
        np.array(table.column(keys.FORCES)[0].as_py()), first.get_forces()
    )
    assert table.column(keys.NUMBERS)[0].as_py() == first.numbers.tolist()
    counts = dict(
        zip(*np.unique(table.column(keys.SPLIT).to_pylist(), return_counts=True), strict=True)
    )
    assert 350 < counts["train"] < 450 and counts["val"] + counts["test"] == 500 - counts["train"]
    assert isinstance(table.column(keys.POSITIONS), pa.ChunkedArray)


def test_export_import_keeps_how_each_configuration_was_made(tmp_path):
    """Issue 14, defect 8: generator, generator_params, seed and parent_id survive the trip."""
    frames = labelled_frames(n=4, seed=8)
    params = [
        {"amplitude": 0.05, "n": 20},
        {"source": 'C:\\data\\"odd" name.xyz', "frame": 3},  # backslashes and quotes
        {},
        {"temperature": 500.0, "calculator": "GFN2-xTB"},
    ]
    configs = tables.configurations_from_atoms(
        frames,
        system="mix",
        generator=["rattle", "import", "seed", "md"],
        generator_params=params,
        seed=[0, 17, 2**40, 3],
        # an id of digits only, which ASE reads as a number, and one with leading zeros
        parent_id=[None, "0123456789012345", "1234567890123456", "00ab00cd00ef0012"],
    )
    first = tables.write_table(configs, tmp_path / "c.parquet", "configurations", {})
    assert main(["export", str(first), "-o", str(tmp_path / "c.xyz")]) == 0
    assert main(["import", str(tmp_path / "c.xyz"), "-o", str(tmp_path / "d.parquet")]) == 0
    back = tables.read_table(tmp_path / "d.parquet", kind="configurations")
    for name in tables.CONFIGURATION_SCHEMA.names:
        assert back.column(name).equals(configs.column(name)), name
    assert json.loads(back.column(keys.GENERATOR_PARAMS)[1].as_py()) == params[1]


def test_bad_generator_params_in_a_file(tmp_path):
    frame = molecule("H2O")
    frame.info["generator_params"] = "not json"
    source = write_ase(tmp_path / "bad.xyz", [frame])
    assert main(["import", str(source), "-o", str(tmp_path / "x.parquet")]) == 2
    assert not (tmp_path / "x.parquet").exists()
