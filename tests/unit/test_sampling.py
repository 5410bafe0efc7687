"""Sampling: determinism, rejection and dedupe, and the physics of normal-mode sampling."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import molecule
from ase.io import write
from ase.optimize import BFGS

from pilip import keys, tables
from pilip.cli import main
from pilip.config import validate_config
from pilip.errors import PilipError
from pilip.sampling import (
    external_basis,
    finite_difference_hessian,
    generator_seed,
    harmonic_sample,
    make_calculator,
    normal_modes,
    sample_system,
)
from pilip.structures import closest_pair

pytest.importorskip("tblite")


def config(generators, systems=None, **sampling):
    systems = systems or {"water": {"seed": "H2O"}}
    return validate_config({"systems": systems, "sampling": {"generators": generators, **sampling}})


ALL_KINDS = [
    {"kind": "rattle", "n": 4, "amplitude": 0.05},
    {"kind": "normal_modes", "n": 4, "temperature": 400},
    {"kind": "md", "n": 3, "interval": 5, "equilibration": 10},
]


@pytest.fixture(scope="module")
def relaxed_water():
    atoms = molecule("H2O")
    atoms.calc = make_calculator("GFN2-xTB", 0, 1)
    BFGS(atoms, logfile=None).run(fmax=1e-4, steps=200)
    return atoms


def test_same_config_gives_identical_ids_and_positions():
    first, stats = sample_system(config(ALL_KINDS), "water")
    second, _ = sample_system(config(ALL_KINDS), "water")
    assert first.column(keys.ID).to_pylist() == second.column(keys.ID).to_pylist()
    a, _ = tables.positions_to_numpy(first.column(keys.POSITIONS))
    b, _ = tables.positions_to_numpy(second.column(keys.POSITIONS))
    assert a.tobytes() == b.tobytes()
    assert (
        first.column(keys.GENERATOR).to_pylist()
        == ["seed"] + ["rattle"] * 4 + ["normal_modes"] * 4 + ["md"] * 3
    )
    assert [s.kept for s in stats] == [4, 4, 3]
    seed_id = first.column(keys.ID)[0].as_py()
    assert first.column(keys.PARENT_ID).to_pylist() == [None] + [seed_id] * 11
    assert len(set(first.column(keys.ID).to_pylist())) == first.num_rows
    np.testing.assert_array_equal(a[:3], molecule("H2O").positions)
    assert first.column(keys.SEED).to_pylist()[1] == generator_seed(0, "water", 0, "rattle")


def test_seed_changes_configurations_but_other_systems_do_not():
    base, _ = sample_system(config(ALL_KINDS[:1]), "water")
    reseeded, _ = sample_system(config(ALL_KINDS[:1], seed=1), "water")
    more_systems = {"water": {"seed": "H2O"}, "ammonia": {"seed": "NH3"}}
    crowded, _ = sample_system(config(ALL_KINDS[:1], systems=more_systems), "water")
    ids = base.column(keys.ID).to_pylist()
    assert reseeded.column(keys.ID).to_pylist()[0] == ids[0]  # the seed geometry itself
    assert not set(reseeded.column(keys.ID).to_pylist()[1:]) & set(ids[1:])
    assert crowded.column(keys.ID).to_pylist() == ids


def test_rattle_amplitude_is_the_standard_deviation():
    table, _ = sample_system(config([{"kind": "rattle", "n": 300, "amplitude": 0.04}]), "water")
    flat, _ = tables.positions_to_numpy(table.column(keys.POSITIONS))
    displacements = flat[3:].reshape(300, 3, 3) - molecule("H2O").positions
    assert abs(displacements.std() - 0.04) < 0.04 * 0.05  # 2700 samples: ~1.4 % standard error
    assert abs(displacements.mean()) < 0.004


def test_close_contacts_are_rejected_and_counted():
    generators = [{"kind": "rattle", "n": 60, "amplitude": 0.35}]
    table, (stats,) = sample_system(config(generators, min_distance=0.9), "water")
    assert stats.rejected > 0 and stats.kept > 0
    assert stats.generated == 60 == stats.rejected + stats.duplicates + stats.kept
    assert table.num_rows == 1 + stats.kept
    for row in tables.rows_of(table.column(keys.POSITIONS)):
        assert closest_pair(row)[2] >= 0.9


def test_duplicates_are_removed_by_id():
    table, (stats,) = sample_system(config([{"kind": "rattle", "n": 5, "amplitude": 0.0}]), "water")
    assert (stats.duplicates, stats.kept, table.num_rows) == (5, 0, 1)


def test_seed_from_a_structure_file_relative_to_the_config(tmp_path):
    atoms = molecule("CH3OH")
    atoms.positions += 0.01
    write(tmp_path / "methanol.xyz", atoms)
    cfg = config(ALL_KINDS[:1], systems={"meoh": {"seed": "methanol.xyz"}})
    table, _ = sample_system(cfg, "meoh", config_dir=tmp_path)
    np.testing.assert_allclose(
        np.array(table.column(keys.POSITIONS)[0].as_py()), atoms.positions, atol=1e-8
    )
    assert table.column(keys.GENERATOR_PARAMS)[0].as_py() == '{"source": "methanol.xyz"}'


def test_charged_open_shell_seed_keeps_charge_and_multiplicity():
    cfg = config(ALL_KINDS[:1], systems={"cation": {"seed": "H2O", "charge": 1, "multiplicity": 2}})
    table, _ = sample_system(cfg, "cation")
    assert set(table.column(keys.CHARGE).to_pylist()) == {1}
    assert set(table.column(keys.MULTIPLICITY).to_pylist()) == {2}


def test_unknown_system_and_seed():
    with pytest.raises(PilipError, match="--system: 'ethanol' is not in the config's systems"):
        sample_system(config(ALL_KINDS[:1]), "ethanol")
    with pytest.raises(
        PilipError, match="systems.x.seed: 'Unobtainium' is neither an ASE molecule"
    ):
        sample_system(config(ALL_KINDS[:1], systems={"x": {"seed": "Unobtainium"}}), "x")


def test_md_frames_are_finite_distinct_and_keep_the_centre_of_mass():
    table, (stats,) = sample_system(config([ALL_KINDS[2]]), "water")
    frames = tables.rows_of(table.column(keys.POSITIONS))[1:]
    masses = molecule("H2O").get_masses()
    centre = masses @ molecule("H2O").positions / masses.sum()
    assert stats.kept == 3
    for frame in frames:
        assert np.isfinite(frame).all()
        np.testing.assert_allclose(masses @ frame / masses.sum(), centre, atol=1e-8)
    assert not np.allclose(frames[0], frames[1], atol=1e-3)


# --- normal-mode physics ---------------------------------------------------------------------


def test_hessian_predicts_force_changes(relaxed_water):
    hessian = finite_difference_hessian(relaxed_water, step=0.005)
    np.testing.assert_allclose(hessian, hessian.T)
    probe = relaxed_water.copy()
    probe.calc = relaxed_water.calc
    delta = np.random.default_rng(1).normal(0, 0.002, probe.positions.shape)
    f0 = probe.get_forces().copy()
    probe.positions = relaxed_water.positions + delta
    change = probe.get_forces() - f0
    np.testing.assert_allclose(change.ravel(), -hessian @ delta.ravel(), rtol=0.05, atol=2e-3)


def test_frequencies_match_ase_vibrations(relaxed_water, tmp_path, monkeypatch):
    from ase.vibrations import Vibrations

    monkeypatch.chdir(tmp_path)
    hessian = finite_difference_hessian(relaxed_water, step=0.005)
    values, _ = normal_modes(hessian, relaxed_water.positions, relaxed_water.get_masses())
    assert len(values) == 3 and (values > 0).all()
    # eV/(A^2 amu) -> cm^-1, the conversion ASE's Vibrations uses
    ours = np.sqrt(values) * units._hbar * 1e10 / np.sqrt(units._e * units._amu) / units.invcm
    vib = Vibrations(relaxed_water, delta=0.005, nfree=2)
    vib.run()
    theirs = np.sort(np.real(vib.get_frequencies()))[-3:]
    np.testing.assert_allclose(np.sort(ours), theirs, rtol=0.01)
    assert 1300 < ours.min() < 1800 and 3300 < ours.max() < 4000  # bend; O-H stretches


def test_external_basis_of_linear_and_bent_molecules():
    co2 = molecule("CO2")
    assert external_basis(co2.positions, co2.get_masses()).shape == (9, 5)
    water = molecule("H2O")
    basis = external_basis(water.positions, water.get_masses())
    np.testing.assert_allclose(basis.T @ basis, np.eye(6), atol=1e-12)


def test_harmonic_sampling_obeys_equipartition_and_moves_no_centre(relaxed_water):
    atoms = relaxed_water
    hessian = finite_difference_hessian(atoms, step=0.005)
    masses = atoms.get_masses()
    values, modes = normal_modes(hessian, atoms.positions, masses)
    temperature, n = 500.0, 4000
    d = harmonic_sample(values, modes, masses, temperature, n, np.random.default_rng(0))
    flat = d.reshape(n, -1)
    energy = 0.5 * np.einsum("si,ij,sj->s", flat, hessian, flat)  # eV, Cartesian Hessian
    kt = units.kB * temperature
    expected = 0.5 * len(values) * kt
    standard_error = np.sqrt(0.5 * len(values)) * kt / np.sqrt(n)
    assert abs(energy.mean() - expected) < 4 * standard_error
    # no net translation and no (linearised) rotation
    np.testing.assert_allclose(np.einsum("i,sij->sj", masses, d), 0.0, atol=1e-10)
    r = atoms.positions - masses @ atoms.positions / masses.sum()
    angular = np.einsum("i,sij->sj", masses, np.cross(r[None], d))
    np.testing.assert_allclose(angular, 0.0, atol=1e-9)


def test_sample_command_writes_a_table(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "systems: {water: {seed: H2O}}\nsampling: {generators: [{kind: rattle, n: 3}]}\n"
    )
    out = tmp_path / "configurations" / "water.parquet"
    assert (
        main(
            [
                "sample",
                "--config",
                str(tmp_path / "config.yaml"),
                "--system",
                "water",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    table = tables.read_table(out, kind="configurations")
    assert table.num_rows == 4
    prov = tables.table_provenance(table)
    assert prov["system"] == "water" and len(prov["config_hash"]) == 16
    assert prov["generators"][0]["kept"] == 3


def test_extra_pool_is_larger_new_and_from_the_same_samplers():
    from pilip.sampling import sample_extra_pool

    cfg = config(ALL_KINDS)
    reference, _ = sample_system(cfg, "water")
    pool, stats = sample_extra_pool(cfg, "water", 3)
    assert "seed" not in pool.column("generator").to_pylist()
    ref_ids = set(reference.column("id").to_pylist())
    assert not ref_ids & set(pool.column("id").to_pylist())
    for kind in ("rattle", "normal_modes", "md"):
        n_ref = reference.column("generator").to_pylist().count(kind)
        assert pool.column("generator").to_pylist().count(kind) == 3 * n_ref
    again, _ = sample_extra_pool(cfg, "water", 3)
    assert again.column("id").to_pylist() == pool.column("id").to_pylist()
