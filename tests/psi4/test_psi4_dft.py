"""DFT through the Psi4 backend: energies equal psi4.energy, forces are -dE/dx; pilip label."""

import shutil

import numpy as np
import pytest
from test_psi4_worker_labels import DIRECT, forces_and_finite_differences, label, water

from pilip import keys, tables, units
from pilip.cli import main
from pilip.reference import labels

pytestmark = pytest.mark.psi4

EH = units.HARTREE_TO_EV
FORCE = units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
METHODS = ("b3lyp/cc-pvdz", "wb97x-d/def2-svp")


@pytest.fixture(scope="module")
def direct(run_psi4):
    """psi4.energy / psi4.gradient called directly on one water geometry."""
    config = water("dft")
    payload = [{"kind": "energy", "method": m, **config} for m in METHODS]
    payload.append({"kind": "gradient", "method": METHODS[1], **config})
    out = run_psi4(DIRECT, payload)
    return config, dict(zip(METHODS, out[:2], strict=True)), np.array(out[2])


@pytest.mark.parametrize("method", METHODS)
def test_dft_energy_equals_psi4_energy(tmp_path, direct, method):
    config, energies, _ = direct
    rows, _ = label(tmp_path, [config], method=method)
    row = rows[config["id"]]
    assert row["status"] == "ok", row["error"]
    assert row["energy"] / EH == pytest.approx(energies[method], abs=1e-8)
    assert row["components"] == {method: pytest.approx(energies[method], abs=1e-8)}
    assert row["method"] == method


def test_dft_gradient_equals_psi4_gradient(tmp_path, direct):
    config, _, gradient = direct
    rows, _ = label(tmp_path, [config], gradients=True, method=METHODS[1])
    forces = np.array(rows[config["id"]]["forces"])
    assert forces == pytest.approx(-gradient * FORCE, abs=1e-6)


@pytest.mark.slow
def test_dft_forces_match_finite_differences(tmp_path):
    forces, differences = forces_and_finite_differences(tmp_path, water("dft-fd"), 2e-3, METHODS[1])
    for (atom, axis), difference in differences.items():
        # measured: 3e-4 eV/A at most (Psi4's DFT gradient has no grid-weight derivatives)
        assert forces[atom, axis] == pytest.approx(difference, abs=1e-3)
    assert np.abs(forces).max() > 0.1  # a distorted molecule: the comparison means something


def test_label_command_makes_the_output_folder(tmp_path, monkeypatch):
    """Issue 14, defect 1: `-o newdir/x.parquet` with newdir absent killed the Psi4 worker."""
    monkeypatch.chdir(tmp_path)
    config = water("newdir")
    table = tables.configurations_table(
        [config["numbers"]], [config["positions"]], system="water", generator="test"
    )
    tables.write_table(table, tmp_path / "c.parquet", "configurations", {})
    rc = main(["label", "c.parquet", "--reference", METHODS[1], "-o", "new/dir/x.parquet"])
    assert rc == 0
    out = labels.read_labels(tmp_path / "new" / "dir" / "x.parquet")
    assert out.column(keys.STATUS).to_pylist() == ["ok"]
    assert out.column(keys.METHOD).to_pylist() == [METHODS[1]]
    assert (tmp_path / "new" / "dir" / "x.results.psi4.out").is_file()


@pytest.mark.skipif(shutil.which("dftd3") is not None, reason="the dftd3 program is installed")
def test_d3_without_the_dftd3_program_is_refused_before_any_calculation(tmp_path, capsys):
    config = water("d3")
    table = tables.configurations_table(
        [config["numbers"]], [config["positions"]], system="water", generator="test"
    )
    tables.write_table(table, tmp_path / "c.parquet", "configurations", {})
    out = tmp_path / "x.parquet"
    rc = main(["label", str(tmp_path / "c.parquet"), "--reference", "b3lyp-d3bj/def2-svp",
               "-o", str(out)])  # fmt: skip
    assert rc == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "needs the 'dftd3' program" in message
    assert not out.exists()
