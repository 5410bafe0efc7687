"""The Delta and fine-tune recipes' preparation (--baseline, --init): labels, failures,
compatibility."""

import numpy as np
import pytest
import torch

from pilip import tables
from pilip.errors import PilipError
from pilip.potential.baselines import resolve_baseline
from pilip.potential.checkpoint import read_checkpoint, save_checkpoint
from pilip.potential.data import TRAIN, VAL, load_dataset
from pilip.potential.models import build_model
from pilip.potential.recipes import RunPlan
from pilip.potential.recipes.delta import LABELS_FILE as CACHE_TABLE
from pilip.potential.recipes.delta import Delta, baseline_targets
from pilip.potential.recipes.finetune import Finetune
from pilip.potential.train_config import TrainConfig
from pilip.reference.labels import read_labels

pytest.importorskip("tblite")
torch.set_num_threads(1)

BASE = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


def write_water(path, n_train=6, n_val=3, broken_train=0, numbers=(8, 1, 1), n_test=0):
    """Water dataset (energies from a made-up level); ``broken_train`` training rows put two
    atoms on top of each other, where xTB fails; ``n_test`` force-validation test rows carry
    made-up forces."""
    rng = np.random.default_rng(0)
    split = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    positions = [BASE + rng.normal(scale=0.05, size=(3, 3)) for _ in split]
    for i in range(broken_train):
        positions[i][1] = positions[i][0]
    energy = [-2080.0 + 0.1 * i for i in range(len(split))]
    forces = [None if s != "test" else rng.normal(size=(3, 3)) for s in split]
    configs = tables.configurations_table(
        [np.array(numbers)] * len(split), positions, system="water", generator="rattle"
    )
    table = tables.dataset_table(
        configs, energy, forces, reference="x", split=split,
        force_validation=[s == "test" for s in split],
    )  # fmt: skip
    tables.write_table(table, path, "dataset", {"command": "test"})
    return path


def prepare_baseline(name, data, **kwargs):
    return baseline_targets(resolve_baseline(name), data, **kwargs)


def xtb_energy(positions):
    return resolve_baseline("gfn2-xtb").energy_and_forces(np.array([8, 1, 1]), positions)[0]


def test_targets_are_reference_minus_baseline_and_cached(tmp_path, monkeypatch):
    path = write_water(tmp_path / "w.parquet")
    data = load_dataset(path)
    run = tmp_path / "run"
    setup, shifted, _ = prepare_baseline("gfn2-xtb", data, dataset=path, run_dir=run)
    for split in (TRAIN, VAL):
        s = data[split]
        for i in range(len(s)):
            atoms = s.positions[3 * i : 3 * i + 3].numpy()
            expected = float(s.energy[i]) - xtb_energy(atoms)
            assert float(shifted[split].energy[i]) == pytest.approx(expected, abs=1e-8)
    assert read_labels(run / CACHE_TABLE).num_rows == 9
    assert setup.record()["baseline"]["method"] == "GFN2-xTB"
    # resumed: nothing is computed again
    backend_cls = type(setup.baseline.backend)

    def no_calculation(*args, **kwargs):
        raise AssertionError("recomputed a cached baseline label")

    monkeypatch.setattr(backend_cls, "_single_point", no_calculation)
    _, again, _ = prepare_baseline("gfn2-xtb", data, dataset=path, run_dir=run)
    torch.testing.assert_close(again[TRAIN].energy, shifted[TRAIN].energy)


def test_a_structure_where_the_baseline_fails_is_left_out_and_recorded(tmp_path):
    path = write_water(tmp_path / "w.parquet", broken_train=2)
    messages = []
    setup, shifted, _ = prepare_baseline(
        "gfn2-xtb", load_dataset(path), dataset=path, run_dir=tmp_path / "run",
        log=messages.append,
    )  # fmt: skip
    assert len(shifted[TRAIN]) == 4 and len(shifted[VAL]) == 3
    assert len(setup.dropped[TRAIN]) == 2
    assert any("failed on 2 train structure(s)" in m for m in messages)
    rows = read_labels(tmp_path / "run" / CACHE_TABLE).to_pylist()
    assert sum(r["status"] == "failed" and bool(r["error"]) for r in rows) == 2


def test_elements_beyond_the_baseline_are_a_one_line_error(tmp_path):
    path = write_water(tmp_path / "u.parquet", numbers=(92, 1, 1))
    with pytest.raises(PilipError) as info:
        prepare_baseline("gfn2-xtb", load_dataset(path), dataset=path, run_dir=tmp_path / "r")
    assert "\n" not in str(info.value) and "--baseline gfn2-xtb" in str(info.value)
    assert not (tmp_path / "r" / CACHE_TABLE).exists()


def pretrained(tmp_path, baseline=None):
    torch.manual_seed(0)
    model = build_model("painn", n_features=8, n_rbf=6, n_interactions=1, dtype="float64")
    meta = {"config": {}, "elements": [1, 8]}
    if baseline:
        meta["recipes"] = [
            {"name": "delta", "baseline": resolve_baseline(baseline).specification()}
        ]
    path = tmp_path / f"init-{baseline}.pt"
    save_checkpoint(path, model=model, model_name="painn", meta=meta)
    return path


def finetune_plan(tmp_path, init, baseline):
    """A run plan checked by the recipes of ``--init init [--baseline baseline]``."""
    data = load_dataset(write_water(tmp_path / "w.parquet"))
    plan = RunPlan(TrainConfig(), data, tmp_path / "w.parquet", tmp_path / "run", elements=[1, 8])
    recipes = ([Delta({"baseline": baseline})] if baseline else []) + [Finetune({"init": init})]
    for recipe in recipes:
        recipe.check(plan)
    return plan, recipes


def test_init_and_baseline_must_agree(tmp_path):
    plain, over_gfn2, over_gfn1 = (pretrained(tmp_path, b) for b in (None, "gfn2-xtb", "gfn1-xtb"))
    finetune_plan(tmp_path, plain, None)
    finetune_plan(tmp_path, over_gfn2, "gfn2-xtb")
    for init, given, words in (
        (plain, "gfn2-xtb", "has no baseline"),
        (over_gfn2, None, "add --baseline gfn2-xtb"),
        (over_gfn1, "gfn2-xtb", "use the same baseline"),
    ):
        with pytest.raises(PilipError) as info:
            finetune_plan(tmp_path, init, given)
        assert words in str(info.value) and "\n" not in str(info.value)
    # a checkpoint of the format before recipe records (meta["baseline"]) reads the same
    legacy = tmp_path / "legacy.pt"
    payload = read_checkpoint(over_gfn1)
    meta = {**payload["meta"], "baseline": payload["meta"].pop("recipes")[0]["baseline"]}
    save_checkpoint(legacy, model=build_model("painn", n_features=8, n_rbf=6, n_interactions=1,
                    dtype="float64"), model_name="painn", meta=meta)  # fmt: skip
    with pytest.raises(PilipError, match="use the same baseline"):
        finetune_plan(tmp_path, legacy, "gfn2-xtb")


def test_init_hands_over_the_architecture_and_weights(tmp_path):
    init = pretrained(tmp_path, None)
    plan, recipes = finetune_plan(tmp_path, init, None)
    recipes[-1].prepare(plan)
    assert plan.config.model == "painn" and plan.config.model_params["n_features"] == 8
    weights = plan.init_weights
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())
    assert plan.records == [{"name": "finetune", "init": str(init)}]


def test_baseline_model_is_the_cheap_level_plus_fitted_offsets(tmp_path):
    from ase import Atoms

    from pilip.cli import main
    from pilip.potential.calculator import PilipCalculator

    path = write_water(tmp_path / "w.parquet")
    assert (
        main(["baseline-model", str(path), "--baseline", "gfn2-xtb", "--out", str(tmp_path / "m")])
        == 0
    )
    data = load_dataset(path)
    s = data[TRAIN]
    deltas = [
        float(s.energy[i]) - xtb_energy(s.positions[3 * i : 3 * i + 3].numpy())
        for i in range(len(s))
    ]
    atoms = Atoms(numbers=[8, 1, 1], positions=data[VAL].positions[:3].numpy())
    atoms.calc = PilipCalculator(tmp_path / "m" / "model.pt", device="cpu")
    xtb = resolve_baseline("gfn2-xtb").energy_and_forces(atoms.numbers, atoms.positions)
    assert atoms.get_potential_energy() == pytest.approx(xtb[0] + np.mean(deltas), abs=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), xtb[1], atol=1e-10)


def test_mixed_charge_states_are_refused_and_one_state_is_stored(tmp_path):
    path = write_water(tmp_path / "w.parquet")
    setup, _, _ = prepare_baseline(
        "gfn2-xtb", load_dataset(path), dataset=path, run_dir=tmp_path / "r"
    )
    assert setup.record()["baseline"]["charge"] == 0
    assert setup.record()["baseline"]["multiplicity"] == 1
    rng = np.random.default_rng(1)
    positions = [BASE + rng.normal(scale=0.05, size=(3, 3)) for _ in range(6)]
    configs = tables.configurations_table(
        [np.array([8, 1, 1])] * 6, positions, system="water", generator="rattle",
        charge=[0, 0, 0, 0, 1, 0], multiplicity=[1, 1, 1, 1, 2, 1],
    )  # fmt: skip
    split = ["train"] * 4 + ["val"] * 2
    table = tables.dataset_table(configs, [-2080.0] * 6, [None] * 6, reference="x", split=split)
    mixed = tmp_path / "mixed.parquet"
    tables.write_table(table, mixed, "dataset", {"command": "test"})
    with pytest.raises(PilipError, match="different charges or multiplicities"):
        prepare_baseline("gfn2-xtb", load_dataset(mixed), dataset=mixed, run_dir=tmp_path / "m")
