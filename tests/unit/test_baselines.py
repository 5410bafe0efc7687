"""Delta-learning baselines: resolving, labelling (pilip label's code path) with a cache, the
total surface as a model."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from model_batches import molecules, small_painn, to_batch

from pilip import keys, tables
from pilip.errors import PilipError
from pilip.potential.baselines import (
    BaselineCache,
    DeltaModel,
    cache_from_labels,
    read_labels_for,
    resolve_baseline,
)
from pilip.potential.calculator import PilipCalculator
from pilip.potential.checkpoint import load_model, save_checkpoint
from pilip.potential.forces import energy_and_forces
from pilip.potential.recipes.delta import LABELS_FILE as CACHE_TABLE
from pilip.potential.recipes.delta import baseline_labels_of
from pilip.reference.labelling import read_configs
from pilip.reference.labels import read_labels

pytest.importorskip("tblite")
torch.set_num_threads(1)
CACHE_RESULTS = "baseline.results.jsonl"


def compute_labels(baseline, configs, run_dir):
    """(labels, configs as the table holds them): the Delta recipe labels ``configs`` as
    ``pilip label`` would, into ``run_dir``."""
    table = tables.configurations_table(
        [np.asarray(c["numbers"]) for c in configs],
        [np.asarray(c["positions"]) for c in configs],
        system="t",
        generator="import",
    )
    path = tables.write_table(table, run_dir / "configs.parquet", "configurations", {})
    configs = read_configs(path)
    labels = baseline_labels_of(
        baseline, {"train": (path, configs)}, run_dir=run_dir, config_path=None,
        labels_paths=None, log=lambda message: None,
    )  # fmt: skip
    return labels, configs


def config_of(atoms: Atoms, config_id: str) -> dict:
    return {
        "id": config_id,
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "charge": 0,
        "multiplicity": 1,
    }


def xtb_reference(atoms: Atoms) -> tuple[float, np.ndarray]:
    """GFN2-xTB straight from tblite's ASE calculator (eV, eV/A)."""
    from tblite.ase import TBLite

    atoms = atoms.copy()
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    return atoms.get_potential_energy(), atoms.get_forces()


def test_inline_names_resolve_with_a_full_specification():
    baseline = resolve_baseline("GFN2-xTB")
    spec = baseline.specification()
    assert spec["name"] == "gfn2-xtb"
    assert spec["method"] == "GFN2-xTB" and spec["program"] == "tblite"
    assert spec["program_version"] not in ("", "unknown")
    assert resolve_baseline("gfn1-xtb").specification()["method"] == "GFN1-xTB"
    json.dumps(spec)  # goes into the checkpoint as plain JSON


def test_a_config_reference_of_an_in_process_backend_is_a_baseline():
    config = {"references": {"cheap": {"backend": "xtb", "method": "GFN1-xTB"}}}
    assert resolve_baseline("cheap", config).specification()["method"] == "GFN1-xTB"


@pytest.mark.parametrize(
    ("name", "config", "words"),
    [
        ("gfn3-xtb", None, ["unknown baseline", "gfn2-xtb"]),
        (
            "mp2_cbs",
            {"references": {"mp2_cbs": {"backend": "psi4", "method": "mp2/cc-pv[dt]z"}}},
            ["does not run in process", "--init"],
        ),
    ],
)
def test_bad_baseline_names_are_one_line_errors(name, config, words):
    with pytest.raises(PilipError) as info:
        resolve_baseline(name, config)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_labels_equal_tblite_and_a_second_run_reuses_the_cache(tmp_path, monkeypatch):
    atoms = [molecule("H2O"), molecule("CH4")]
    configs = [config_of(a, f"c{i}") for i, a in enumerate(atoms)]
    baseline = resolve_baseline("gfn2-xtb")
    labels, configs = compute_labels(baseline, configs, tmp_path)
    for i, a in enumerate(atoms):
        energy, forces = xtb_reference(a)
        assert labels.energy[i] == pytest.approx(energy, abs=1e-8)
        np.testing.assert_allclose(labels.forces[i], forces, atol=1e-8)
    assert (tmp_path / CACHE_TABLE).is_file() and (tmp_path / CACHE_RESULTS).is_file()
    assert read_labels(tmp_path / CACHE_TABLE).num_rows == 2

    def no_calculation(*args, **kwargs):
        raise AssertionError("the cached baseline was computed again")

    monkeypatch.setattr(type(baseline.backend), "_single_point", no_calculation)
    again, _ = compute_labels(resolve_baseline("gfn2-xtb"), configs, tmp_path)
    np.testing.assert_array_equal(again.energy, labels.energy)
    # the labels table alone (results JSONL lost) is enough to resume too
    (tmp_path / CACHE_RESULTS).unlink()
    again, _ = compute_labels(resolve_baseline("gfn2-xtb"), configs, tmp_path)
    np.testing.assert_array_equal(again.energy, labels.energy)


def test_a_failed_structure_is_a_row_with_its_error_not_a_crash(tmp_path):
    good = config_of(molecule("H2O"), "good")
    bad = dict(good, id="bad", positions=[[0.0, 0.0, 0.0]] * 3)  # atoms on top of each other
    labels, (_, bad) = compute_labels(resolve_baseline("gfn2-xtb"), [good, bad], tmp_path)
    assert labels.ok.tolist() == [True, False]
    assert labels.errors[bad["id"]]
    table = read_labels(tmp_path / CACHE_TABLE)
    rows = {r[keys.CONFIG_ID]: r for r in table.to_pylist()}
    assert rows[bad["id"]][keys.STATUS] == keys.STATUS_FAILED and rows[bad["id"]][keys.ERROR]


def test_labels_read_from_a_table_must_come_from_the_same_method(tmp_path):
    _, configs = compute_labels(
        resolve_baseline("gfn1-xtb"), [config_of(molecule("H2O"), "w")], tmp_path
    )
    with pytest.raises(PilipError, match="same method"):
        read_labels_for(tmp_path / CACHE_TABLE, configs, resolve_baseline("gfn2-xtb"))
    got = read_labels_for(tmp_path / CACHE_TABLE, configs, resolve_baseline("gfn1-xtb"))
    assert got.ok.all()
    with pytest.raises(PilipError, match="no row for 1 of the 1 structures"):
        read_labels_for(
            tmp_path / CACHE_TABLE, [dict(configs[0], id="other")], resolve_baseline("gfn1-xtb")
        )


def test_delta_energy_is_baseline_plus_model_and_forces_are_its_gradient():
    model = small_painn()
    delta = DeltaModel(model, resolve_baseline("gfn2-xtb")).eval()
    structures = molecules()
    batch = to_batch(structures)
    energy, forces = energy_and_forces(delta, batch)
    model_energy, model_forces = energy_and_forces(model, batch)
    start = 0
    for i, atoms in enumerate(structures):
        xtb_energy, xtb_forces = xtb_reference(atoms)
        n = len(atoms)
        assert float(energy[i]) == pytest.approx(xtb_energy + float(model_energy[i]), abs=1e-8)
        np.testing.assert_allclose(
            forces[start : start + n].numpy(),
            xtb_forces + model_forces[start : start + n].numpy(),
            atol=1e-8,
        )
        start += n


def test_delta_forces_are_finite_differences_of_delta_energies():
    delta = DeltaModel(small_painn(), resolve_baseline("gfn2-xtb")).eval()
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    batch = to_batch([atoms])
    _, forces = energy_and_forces(delta, batch)
    h = 1e-4
    for atom, axis in [(0, 0), (2, 1), (5, 2), (8, 0)]:
        energies = []
        for sign in (1, -1):
            moved = {k: v.clone() for k, v in batch.items()}
            moved[keys.POSITIONS][atom, axis] += sign * h
            energies.append(float(energy_and_forces(delta, moved)[0][0]))
        numeric = -(energies[0] - energies[1]) / (2 * h)
        assert float(forces[atom, axis]) == pytest.approx(numeric, abs=2e-4)


def test_the_cache_serves_known_structures_and_the_rest_is_computed(tmp_path):
    atoms = molecule("H2O")
    labels, configs = compute_labels(
        resolve_baseline("gfn2-xtb"), [config_of(atoms, "w")], tmp_path
    )
    cache = cache_from_labels(labels, configs, torch.float32, BaselineCache())
    delta = DeltaModel(small_painn("float32"), resolve_baseline("gfn2-xtb"), cache)
    batch = to_batch([atoms], dtype=torch.float32)
    energy_and_forces(delta, batch)
    assert delta.calls == 0  # served from the labels, float32 positions and all
    batch[keys.POSITIONS] = batch[keys.POSITIONS] + 0.01
    energy_and_forces(delta, batch)
    assert delta.calls == 1


def test_calculator_of_a_delta_checkpoint_returns_baseline_plus_model(tmp_path):
    model = small_painn()
    baseline = resolve_baseline("gfn2-xtb")
    path = tmp_path / "model.pt"
    meta = {"config": {}, "elements": [1, 6, 8], "baseline": baseline.specification()}
    save_checkpoint(path, model=model, model_name="painn", meta=meta)
    loaded, loaded_meta = load_model(path)
    assert loaded_meta["baseline"]["method"] == "GFN2-xTB"
    atoms = molecule("CH3CH2OH")
    atoms.calc = PilipCalculator(path, device="cpu")
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    xtb_energy, xtb_forces = xtb_reference(atoms)
    model_energy, model_forces = energy_and_forces(model, to_batch([atoms]))
    assert energy == pytest.approx(xtb_energy + float(model_energy[0]), abs=1e-8)
    np.testing.assert_allclose(forces, xtb_forces + model_forces.numpy(), atol=1e-8)


def test_a_checkpoint_whose_baseline_cannot_run_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    spec = resolve_baseline("gfn2-xtb").specification()
    save_checkpoint(
        path, model=small_painn(), model_name="painn", meta={"config": {}, "baseline": spec}
    )
    import builtins

    real_import = builtins.__import__

    def no_tblite(name, *args, **kwargs):
        if name.startswith("tblite"):
            raise ImportError("No module named 'tblite'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tblite)
    with pytest.raises(PilipError) as info:
        PilipCalculator(path, device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "GFN2-xTB" in message and "pip install 'pilip[xtb]'" in message


@pytest.mark.parametrize(
    ("k", "mode"), [(0.0, "three_calls"), (0.5, "three_calls"), (0.5, "fused")]
)
def test_weak_losses_of_a_delta_model_are_those_of_the_total_surface(k, mode):
    """With the network switched off, PITC and PISC of baseline + model are the baseline's own
    Taylor residuals at the same perturbations, computed here straight from tblite."""
    from pilip.potential.losses import LossTerm, WeakLossOptions, compute_losses, draw_perturbations

    model = small_painn()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    baseline = resolve_baseline("gfn2-xtb")
    delta = DeltaModel(model, baseline)
    structures = molecules(("H2O", "CH4"))
    batch = to_batch(structures)
    options = WeakLossOptions(eps=0.05, k=k, mode=mode)
    terms = [LossTerm("pitc", 1.0), LossTerm("pisc", 1.0)]
    generator = torch.Generator().manual_seed(3)
    losses = compute_losses(delta, batch, terms, torch.Generator().manual_seed(3), options)
    d1, d2 = draw_perturbations(batch, options.eps, options.center, generator)

    def xtb(atoms_index, displacement):
        atoms = structures[atoms_index]
        start = sum(len(a) for a in structures[:atoms_index])
        shift = displacement[start : start + len(atoms)].numpy()
        return baseline.energy_and_forces(atoms.numbers, atoms.positions + shift)

    pitc, pisc = [], []
    for i, atoms in enumerate(structures):
        start = sum(len(a) for a in structures[:i])
        a = xtb(i, torch.zeros_like(d1))
        b, c = xtb(i, d2), xtb(i, d1)
        s1 = d1[start : start + len(atoms)].numpy()
        s2 = d2[start : start + len(atoms)].numpy()
        f_a = (1 - k) * a[1] + k * c[1]
        f_b = (1 - k) * b[1] + k * c[1]
        pitc.append(c[0] - a[0] + (f_a * s1).sum())
        pisc.append(c[0] - b[0] + (f_b * (s1 - s2)).sum())
    assert float(losses["pitc"].detach()) == pytest.approx(np.mean(np.square(pitc)), rel=1e-6)
    assert float(losses["pisc"].detach()) == pytest.approx(np.mean(np.square(pisc)), rel=1e-6)
    assert float(losses["pitc"].detach()) > 0
