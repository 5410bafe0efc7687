"""PySCF and Psi4 backends agree: every stored component and total to 1e-8 Eh.

Both run conventional integrals (Psi4 scf_type pk, mp2_type conv) with tight convergence, on
two rattled water geometries; the measured agreement is ~1e-10 Eh for MP2 and ~5e-10 Eh for
CCSD(T).
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from ase.build import molecule

from pilip import keys, tables, units
from pilip.reference import labels
from pilip.reference.labelling import label_table

pytestmark = [pytest.mark.psi4, pytest.mark.slow]


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(2):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(0, 0.03, atoms.positions.shape)
        frames.append(atoms)
    table = tables.configurations_from_atoms(frames, system="water", generator="rattle")
    tables.write_table(table, tmp_path / "configs.parquet", "configurations", {})
    config = {"systems": {"water": {"seed": "H2O"}}, "references": {}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_pyscf_agrees_with_psi4(study, psi4_interpreter):
    """Conventional MP2/cc-pV[DT]Z and CCSD(T)/cc-pVDZ: every component and total to 1e-8 Eh."""
    tight = {"scf_type": "pk", "e_convergence": 1e-10, "d_convergence": 1e-10}
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["references"].update(
        {
            "psi4_mp2": {
                "backend": "psi4",
                "method": "mp2/cc-pv[dt]z",
                "options": {**tight, "mp2_type": "conv", "freeze_core": True},
            },
            "pyscf_mp2": {
                "backend": "pyscf",
                "method": "mp2/cc-pv[dt]z",
                "options": {"freeze_core": True},
            },
            "psi4_cc": {
                "backend": "psi4",
                "method": "ccsd(t)/cc-pvdz",
                "options": {**tight, "r_convergence": 1e-9},
            },
            "pyscf_cc": {"backend": "pyscf", "method": "ccsd(t)/cc-pvdz"},
        }
    )
    (study / "config.yaml").write_text(yaml.safe_dump(config))
    for pair in (("psi4_mp2", "pyscf_mp2"), ("psi4_cc", "pyscf_cc")):
        tables_ = []
        for name in pair:
            label_table("configs.parquet", name, f"{name}.parquet")
            tables_.append(labels.read_labels(study / f"{name}.parquet"))
        psi4, pyscf = tables_
        assert psi4.column(keys.STATUS).to_pylist() == ["ok", "ok"]
        difference = np.subtract(psi4.column(keys.ENERGY), pyscf.column(keys.ENERGY))
        np.testing.assert_allclose(difference / units.HARTREE_TO_EV, 0.0, atol=1e-8)
        for a, b in zip(
            psi4.column(keys.COMPONENTS).to_pylist(),
            pyscf.column(keys.COMPONENTS).to_pylist(),
            strict=True,
        ):
            a, b = dict(a), dict(b)
            assert set(a) == set(b)
            for name in a:
                assert a[name] == pytest.approx(b[name], abs=1e-8), name
