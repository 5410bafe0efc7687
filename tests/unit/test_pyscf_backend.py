"""The PySCF backend (registered only through its entry point): CBS arithmetic, forces by
finite differences, retries, timeouts, bad input, re-extrapolation.

Agreement with Psi4 is tested in tests/psi4/test_pyscf_agreement.py."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from ase.build import molecule

from pilip import keys, tables, units
from pilip.cli import main
from pilip.errors import PilipError
from pilip.reference import labels
from pilip.reference.backends import BUILTIN, make_backend
from pilip.reference.backends.base import read_results
from pilip.reference.labelling import label_table

WATER = molecule("H2O")

REFERENCES = {
    "mp2_dt": {"backend": "pyscf", "method": "mp2/cc-pv[dt]z"},
    "mp2_dz": {"backend": "pyscf", "method": "mp2", "basis": "cc-pvdz"},
    "slow_scf": {"backend": "pyscf", "method": "scf/cc-pvdz", "options": {"max_cycle": 1}},
    "rescued": {
        "backend": "pyscf",
        "method": "scf/cc-pvdz",
        "options": {"max_cycle": 1},
        "retry_options": {"max_cycle": 100},
    },
}


def config_of(atoms, config_id="w"):
    return {
        "id": config_id,
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "charge": 0,
        "multiplicity": 1,
    }


def run_backend(spec, configs, tmp_path, gradients=False):
    backend = make_backend("ref", spec)
    backend.check(configs)
    results = tmp_path / "r.jsonl"
    results.unlink(missing_ok=True)
    backend.run(configs, results, threads=1, gradients=gradients, scratch=tmp_path,
                retry_options=None, timeout_s=None)  # fmt: skip
    return read_results(results)


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(2):
        atoms = WATER.copy()
        atoms.positions += rng.normal(0, 0.03, atoms.positions.shape)
        frames.append(atoms)
    table = tables.configurations_from_atoms(frames, system="water", generator="rattle")
    tables.write_table(table, tmp_path / "configs.parquet", "configurations", {})
    config = {"systems": {"water": {"seed": "H2O"}}, "references": REFERENCES}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_registered_only_through_the_entry_point():
    assert "pyscf" not in BUILTIN
    backend = make_backend("ref", REFERENCES["mp2_dz"])
    assert type(backend).__module__ == "pilip.reference.backends.pyscf_backend"


def test_cbs_total_is_helgaker_x3_of_the_stored_components(tmp_path):
    record = run_backend(REFERENCES["mp2_dt"], [config_of(WATER)], tmp_path)["w"]
    c = record["components"]
    assert set(c) == {"scf/cc-pvdz", "scf/cc-pvtz", "mp2_corl/cc-pvdz", "mp2_corl/cc-pvtz"}
    # mp2/cc-pv[dt]z: SCF of the largest basis + (3^3 E_T - 2^3 E_D) / (3^3 - 2^3)
    by_hand = c["scf/cc-pvtz"] + (27 * c["mp2_corl/cc-pvtz"] - 8 * c["mp2_corl/cc-pvdz"]) / 19
    assert record["energy"] == pytest.approx(by_hand * units.HARTREE_TO_EV, abs=1e-9)
    # sanity: water's MP2 correlation energy in cc-pVDZ is about -0.20 Eh, SCF about -76.02 Eh
    assert -0.25 < c["mp2_corl/cc-pvdz"] < -0.15
    assert -76.1 < c["scf/cc-pvdz"] < -75.9


def test_mp2_forces_equal_finite_differences_in_ev_per_angstrom(tmp_path):
    spec = REFERENCES["mp2_dz"]
    forces = np.array(
        run_backend(spec, [config_of(WATER)], tmp_path, gradients=True)["w"]["forces"]
    )
    assert forces.shape == (3, 3)

    def central_difference(atom, axis, step):
        displaced = []
        for sign in (+1, -1):
            moved = WATER.copy()
            moved.positions[atom, axis] += sign * step
            displaced.append(config_of(moved, f"{atom}{axis}{sign}{step}"))
        energies = run_backend(spec, displaced, tmp_path)
        e_plus, e_minus = (energies[c["id"]]["energy"] for c in displaced)
        return (e_plus - e_minus) / (2 * step)  # eV/A

    for atom, axis in ((0, 2), (1, 1)):
        coarse, fine = central_difference(atom, axis, 2e-3), central_difference(atom, axis, 1e-3)
        derivative = (4 * fine - coarse) / 3  # Richardson: removes the step^2 error
        assert forces[atom, axis] == pytest.approx(-derivative, abs=2e-6)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-6)  # no net force


def test_scf_failure_is_a_row_and_retry_options_rescue_it(study):
    report = label_table("configs.parquet", "slow_scf", "failed.parquet")
    assert report.counts["failed"] == 2
    failed = labels.read_labels(study / "failed.parquet")
    assert all(
        "SCF did not converge in 1 cycles" in e for e in failed.column(keys.ERROR).to_pylist()
    )
    label_table("configs.parquet", "rescued", "rescued.parquet")
    rescued = labels.read_labels(study / "rescued.parquet")
    assert rescued.column(keys.STATUS).to_pylist() == ["ok", "ok"]
    assert rescued.column(keys.ATTEMPTS).to_pylist() == [2, 2]


def test_timeout_is_a_row(study):
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["labelling"] = {"timeout": 0.001}
    (study / "config.yaml").write_text(yaml.safe_dump(config))
    report = label_table("configs.parquet", "mp2_dt", "labels.parquet")
    assert report.counts == {"ok": 0, "failed": 0, "timeout": 2}
    table = labels.read_labels(study / "labels.parquet")
    assert table.column(keys.ERROR).to_pylist() == ["timed out after 0.001 s"] * 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"method": "b3lyp/cc-pvdz"}, "pyscf backend runs hf, mp2, ccsd, ccsd(t), not 'b3lyp'"),
        ({"method": "b3lpy/cc-pvdz"}, "references.ref.method: unknown method 'b3lpy'"),
        ({"method": "mp3/cc-pvdz"}, "pyscf backend runs hf, mp2, ccsd, ccsd(t), not 'mp3'"),
        ({"method": "mp2/cc-pvdzz"}, "basis set 'cc-pvdzz' is unknown to PySCF"),
        ({"method": "mp2"}, "'mp2' has no basis"),
        ({"method": "mp2/cc-pv[dq]z"}, "skips a cardinal number"),
        (
            {
                "cbs": {
                    "corl": {
                        "method": "mp2",
                        "basis": "cc-pv[dt]z",
                        "scheme": "scf_xtpl_helgaker_2",
                    }
                }
            },
            "extrapolates scf energies, not the corl energy",
        ),
        ({"method": "mp2/cc-pvdz", "options": {"conv_tol": "tight"}}, "conv_tol: expected float"),
        ({"method": "mp2/cc-pvdz", "options": {"maxiter": 5}}, "maxiter: unknown pyscf option"),
        ({"method": "mp2/cc-pvdz", "solvent": "water"}, "references.ref.solvent: not a pyscf"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(PilipError) as info:
        make_backend("ref", {"backend": "pyscf", **spec})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_configurations_and_gradients_refused_before_any_qm(tmp_path):
    backend = make_backend("ref", {"backend": "pyscf", "method": "mp2/cc-pvdz"})
    radical = {**config_of(WATER), "charge": 1}
    with pytest.raises(PilipError, match="9 electrons .* cannot have multiplicity 1"):
        backend.check([radical])
    with pytest.raises(PilipError, match="closed-shell"):
        backend.check([{**config_of(WATER), "charge": 1, "multiplicity": 2}])
    iodine = {**config_of(WATER), "numbers": [8, 1, 53]}
    uhf = make_backend("ref", {"backend": "pyscf", "method": "mp2/cc-pvdz",
                               "options": {"reference": "uhf"}})  # fmt: skip
    with pytest.raises(PilipError, match="basis set cc-pvdz has no functions for I"):
        uhf.check([iodine])
    cc = make_backend("ref", {"backend": "pyscf", "method": "ccsd(t)/cc-pvdz"})
    with pytest.raises(PilipError, match="analytic gradients for hf, mp2 only"):
        cc.run([config_of(WATER)], tmp_path / "r.jsonl", threads=1, gradients=True,
               scratch=tmp_path, retry_options=None, timeout_s=None)  # fmt: skip
    assert not (tmp_path / "r.jsonl").exists()


def test_reextrapolate_recomputes_totals_from_components(study, capsys):
    label_table("configs.parquet", "mp2_dt", "labels.parquet")
    original = labels.read_labels(study / "labels.parquet")
    formula = (
        "{cbs: {scf: {basis: 'cc-pv[dt]z', scheme: scf_xtpl_truhlar_2},"
        " corl: {method: mp2, basis: 'cc-pv[dt]z', alpha: 2.4}}}"
    )
    code = main(["reextrapolate", "labels.parquet", "-o", "rx.parquet", "--formula", formula])
    assert code == 0
    new = labels.read_labels(study / "rx.parquet")
    assert new.column(keys.COMPONENTS).to_pylist() == original.column(keys.COMPONENTS).to_pylist()
    assert set(new.column(keys.REFERENCE).to_pylist()) == {"mp2_dt_rx"}
    for comps, energy in zip(
        new.column(keys.COMPONENTS).to_pylist(), new.column(keys.ENERGY).to_pylist(), strict=True
    ):
        c = dict(comps)
        scf_d, scf_t = c["scf/cc-pvdz"], c["scf/cc-pvtz"]
        scf = scf_t - (scf_t - scf_d) / (3**-3.4 - 2**-3.4) * 3**-3.4  # power form, a = 3.4
        corl = (c["mp2_corl/cc-pvtz"] * 3**2.4 - c["mp2_corl/cc-pvdz"] * 2**2.4) / (3**2.4 - 2**2.4)
        assert energy == pytest.approx((scf + corl) * units.HARTREE_TO_EV, abs=1e-8)
    code = main(["reextrapolate", "labels.parquet", "-o", "tz.parquet", "--formula",
                 "{method: 'mp2/cc-pvtz'}"])  # fmt: skip
    tz = labels.read_labels(study / "tz.parquet")
    c = dict(tz.column(keys.COMPONENTS)[0].as_py())
    expected = (c["scf/cc-pvtz"] + c["mp2_corl/cc-pvtz"]) * units.HARTREE_TO_EV
    assert tz.column(keys.ENERGY)[0].as_py() == pytest.approx(expected, abs=1e-9)

    code = main(["reextrapolate", "labels.parquet", "-o", "bad.parquet", "--formula",
                 "{method: 'mp2/cc-pv[tq]z'}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "needs energy components scf/cc-pvqz" in err
    assert not (study / "bad.parquet").exists()
