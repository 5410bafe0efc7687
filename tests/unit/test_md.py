"""MD stability: a stable potential stays stable, broken ones are caught at the right time."""

import math
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes

from pilip.potential.md import (
    MDSettings,
    bonded_pairs,
    median_time_to_failure,
    run_langevin,
    stability_test,
    write_trajectory,
)


class BondCalculator(Calculator):
    """Harmonic springs on the starting bonds plus a constant outward force ``push`` (eV/A).

    ``push = 0`` is a stable potential; ``push > 0`` pulls every bond apart at constant force.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, atoms: Atoms, k: float = 30.0, push: float = 0.0, nan_after: int = -1):
        super().__init__()
        self.pairs, self.d0 = bonded_pairs(atoms)
        self.k, self.push, self.nan_after, self.calls = k, push, nan_after, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        vec = self.atoms.positions[j] - self.atoms.positions[i]
        d = np.linalg.norm(vec, axis=1)
        energy = np.sum(0.5 * self.k * (d - self.d0) ** 2 - self.push * d)
        de_dd = self.k * (d - self.d0) - self.push
        grad = de_dd[:, None] * vec / d[:, None]  # dE/dr_j
        forces = np.zeros_like(self.atoms.positions)
        np.add.at(forces, j, -grad)
        np.add.at(forces, i, grad)
        self.calls += 1
        if 0 <= self.nan_after < self.calls:
            energy = float("nan")
        self.results = {"energy": float(energy), "forces": forces}


class CommitteeCalculator(BondCalculator):
    """A fake committee: BondCalculator's mean, and a force std of ``scale`` x |force| per
    component (``scale = 0``: identical members)."""

    def __init__(self, atoms: Atoms, scale: float = 0.1, **kwargs):
        super().__init__(atoms, **kwargs)
        self.scale = scale

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results["forces_std"] = self.scale * np.abs(self.results["forces"])
        self.results["energy_std"] = 0.0


def test_bonded_pairs_of_ethanol_are_its_eight_bonds():
    pairs, lengths = bonded_pairs(molecule("CH3CH2OH"))
    assert len(pairs) == 8  # 5 C-H, 1 O-H, 1 C-C, 1 C-O
    assert np.all((lengths > 0.9) & (lengths < 1.6))


def test_stable_potential_stays_stable_and_thermostat_holds_temperature():
    atoms = molecule("CH3CH2OH")
    settings = MDSettings(temperature=300.0, timestep=0.5, steps=1500, friction=0.05, seed=1)
    result = run_langevin(atoms, BondCalculator(atoms), settings)
    assert result.stable and result.reason == "completed"
    assert result.steps_done == 1500
    assert result.time_ps == pytest.approx(0.75)
    assert result.time_to_failure_ps is None
    assert 0.0 < result.max_bond_deviation < 0.5
    # 21 degrees of freedom fluctuate strongly; the mean over 0.75 ps stays near the target
    assert 200.0 < result.mean_temperature_K < 400.0
    assert result.n_bonds == 8


def test_bond_pulled_apart_fails_at_the_analytic_time():
    # H2 at 0 K without friction, a constant outward force F on the bond: the bond grows by
    # (F / mu) t^2 / 2, so it passes the 0.5 A threshold at t = sqrt(2 * 0.5 A * mu / F).
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    push = 1.0  # eV/A
    mu = atoms.get_masses()[0] / 2
    expected_fs = math.sqrt(2 * 0.5 * mu / push) / units.fs
    settings = MDSettings(temperature=0.0, timestep=0.1, steps=1000, friction=0.0)
    result = run_langevin(atoms, BondCalculator(atoms, k=0.0, push=push), settings)
    assert not result.stable and result.reason == "bond"
    assert result.time_to_failure_ps * 1000 == pytest.approx(expected_fs, abs=0.11)
    assert result.steps_done < 1000
    assert result.max_bond_deviation > 0.5


def test_non_finite_energy_is_reported_as_unstable():
    atoms = molecule("H2O")
    settings = MDSettings(steps=100, timestep=0.5)
    result = run_langevin(atoms, BondCalculator(atoms, nan_after=20), settings)
    assert not result.stable and result.reason == "non-finite energy"
    assert result.steps_done < 100
    assert result.time_to_failure_ps == pytest.approx(result.steps_done * 0.5e-3)
    assert result.summary()["time_to_failure_ps"] == result.time_to_failure_ps


def test_steps_per_second_and_the_median_time_to_failure():
    atoms = molecule("H2O")
    result = run_langevin(atoms, BondCalculator(atoms), MDSettings(steps=40))
    assert result.steps_per_s == pytest.approx(40 / result.wall_time_s)
    assert result.mean_force_spread is None and result.max_force_spread is None
    assert "force_spread" not in result.frames[-1].info  # a single model has no spread
    # stable runs (None) count as surviving past their end
    assert median_time_to_failure([0.1, 0.3, None]) == 0.3
    assert median_time_to_failure([0.1, 0.2, 0.4]) == 0.2
    assert median_time_to_failure([0.1, None, None]) is None
    assert median_time_to_failure([0.1, None]) is None  # half stable: the median is unknown
    assert median_time_to_failure([]) is None


def test_committee_force_spread_is_the_largest_per_atom_norm_of_the_force_std():
    atoms = molecule("CH3CH2OH")
    settings = MDSettings(steps=30, trajectory_interval=10)
    result = run_langevin(atoms, CommitteeCalculator(atoms, scale=0.1), settings)
    spreads = [f.info["force_spread"] for f in result.frames]
    # the members' raw forces (the frames keep the forces after MD's centre-of-mass constraint)
    raw = CommitteeCalculator(atoms, scale=0.1)
    expected = []
    for frame in result.frames:
        raw.calculate(frame, ["forces"])
        expected.append(0.1 * np.linalg.norm(raw.results["forces"], axis=1).max())
    np.testing.assert_allclose(spreads, expected, rtol=1e-12)
    assert max(spreads) > 0
    assert result.max_force_spread == pytest.approx(max(spreads))
    assert result.mean_force_spread == pytest.approx(np.mean(spreads))
    same = run_langevin(atoms, CommitteeCalculator(atoms, scale=0.0), settings)
    assert same.max_force_spread == 0.0  # identical members agree


def test_stability_test_summarises_runs_speed_spread_and_hr():
    from pilip.potential.md import by_system

    starts = []
    for seed in range(2):
        atoms = molecule("CH3CH2OH")
        atoms.positions += np.random.default_rng(seed).normal(scale=0.03, size=(9, 3))
        atoms.info.update(system="ethanol", id=f"start{seed}")
        starts.append(atoms)
    settings = MDSettings(steps=200, trajectory_interval=10, friction=0.05)
    summary, frames = stability_test(
        starts, CommitteeCalculator(starts[0]), settings, by_system(starts)
    )
    runs = summary["runs"]
    total_wall = sum(r["wall_time_s"] for r in runs)
    assert summary["steps_per_s"] == pytest.approx(400 / total_wall)
    assert summary["n_stable"] == 2 and summary["median_time_to_failure_ps"] is None
    assert summary["force_spread_max"] == pytest.approx(max(r["max_force_spread"] for r in runs))
    assert [r["hr_frames"] for r in runs] == [20, 20]  # steps 10..200, not the start
    # a thermal trajectory near its starts: close in h(r), but not the starts themselves
    assert 0.0 < summary["hr_mae"] < 1.5
    assert summary["hr_systems"]["ethanol"]["n_reference"] == 2
    assert summary["units"]["steps_per_s"].startswith("MD steps per")


def test_trajectory_is_readable_by_ase(tmp_path):
    atoms = molecule("H2O")
    settings = MDSettings(steps=50, timestep=0.5, trajectory_interval=10)
    result = run_langevin(atoms, BondCalculator(atoms), settings)
    path = tmp_path / "md.extxyz"
    write_trajectory(result.frames, path)
    frames = ase.io.read(path, index=":")
    assert [f.info["step"] for f in frames] == [0, 10, 20, 30, 40, 50]
    assert frames[-1].info["time_fs"] == pytest.approx(25.0)
    assert frames[-1].get_chemical_symbols() == ["O", "H", "H"]
    assert np.isfinite(frames[-1].get_potential_energy())
    assert frames[-1].get_forces().shape == (3, 3)
    np.testing.assert_allclose(frames[-1].positions, result.frames[-1].positions, atol=1e-7)


def _model_and_dataset(tmp_path, splits):
    import torch
    from model_batches import molecules

    from pilip.potential.checkpoint import save_checkpoint
    from pilip.potential.models import build_model
    from pilip.tables import configurations_from_atoms, dataset_table, write_table

    torch.manual_seed(0)
    model = build_model("schnet", n_features=8, n_filters=8, n_rbf=8, n_interactions=1)
    checkpoint = tmp_path / "run" / "model.pt"
    save_checkpoint(checkpoint, model=model, model_name="schnet", meta={"elements": [1, 6, 8]})
    names = ("H2O", "H2O", "CH4", "CH4")
    structures = molecules(names, seed=2)
    configurations = configurations_from_atoms(structures, system=list(names), generator="rattle")
    table = dataset_table(configurations, [0.0] * 4, [None] * 4, reference="x", split=splits)
    return checkpoint, write_table(table, tmp_path / "data.parquet", "dataset", {})


def test_md_command_writes_summary_and_readable_trajectory(tmp_path):
    import json

    from pilip.cli import main
    from pilip.reference.labelling import read_configs

    checkpoint, dataset = _model_and_dataset(tmp_path, ["test", "test", "test", "train"])
    out = tmp_path / "md"
    options = "--device cpu --steps 20 --trajectory-interval 5 --starts 2 --seed 7".split()
    argv = ["md", str(checkpoint), str(dataset), "--out", str(out), *options]
    assert main(argv) == 0
    summary = json.loads((out / "md.json").read_text())
    # two H2O test rows, one CH4 test row (the other CH4 row is training data)
    assert summary["n_runs"] == 3
    assert [r["system"] for r in summary["runs"]] == ["CH4", "H2O", "H2O"]
    assert summary["settings"]["steps"] == 20 and summary["settings"]["seed"] == 7
    assert summary["settings"]["temperature"] == 300.0  # default kept
    assert summary["n_stable"] + sum(not r["stable"] for r in summary["runs"]) == 3
    frames = ase.io.read(out / "md.extxyz", index=":")
    assert {f.info["run"] for f in frames} == {0, 1, 2}
    assert len([f for f in frames if f.info["run"] == 1]) == 5  # steps 0, 5, 10, 15, 20
    assert frames[0].info["config_id"] == summary["runs"][0]["config_id"]
    # the Fu et al. protocol: h(r) against the test structures, speed, time to failure
    assert summary["hr_r_max"] == 10.0 and summary["hr_bins"] == 500
    assert 0.0 <= summary["hr_mae"] <= 2.0
    assert set(summary["hr_systems"]) == {"CH4", "H2O"}
    assert summary["hr_systems"]["H2O"]["n_reference"] == 2
    assert all(r["hr_frames"] >= 1 and r["steps_per_s"] > 0 for r in summary["runs"])
    assert summary["steps_per_s"] > 0 and "median_time_to_failure_ps" in summary
    # a single model: no spread, an empty candidates table that pilip label reads
    assert summary["force_spread_max"] is None and summary["n_candidates"] == 0
    assert (out / "md_spread.csv").read_text().splitlines() == [
        "run,system,step,time_ps,force_spread_ev_per_a,candidate"
    ]
    assert read_configs(out / "md_candidates.parquet") == []


def test_md_command_without_test_rows_fails_cleanly(tmp_path, capsys):
    from pilip.cli import main

    checkpoint, dataset = _model_and_dataset(tmp_path, ["train", "train", "val", "train"])
    out = tmp_path / "md"
    assert main(["md", str(checkpoint), str(dataset), "--out", str(out)]) == 2
    assert "no test-split rows" in capsys.readouterr().err
    assert not out.exists()
    assert main(["md", str(checkpoint), str(dataset), "--out", str(out), "--steps", "0"]) == 2


def _fake_committee(monkeypatch):
    """pilip md's PilipCalculator replaced by a committee-like one: the real model's mean and
    a force std of 0.1 x |force| per component."""
    import pilip.potential.calculator as calculator_module

    class FakeCommittee(calculator_module.PilipCalculator):
        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            self.results["forces_std"] = 0.1 * np.abs(self.results["forces"])
            self.results["energy_std"] = 0.001

    monkeypatch.setattr(calculator_module, "PilipCalculator", FakeCommittee)
    return FakeCommittee


def test_md_command_writes_the_committee_spread_and_its_candidates(tmp_path, monkeypatch):
    import csv
    import json

    from pilip.cli import main
    from pilip.reference.labelling import read_configs
    from pilip.tables import read_table

    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    committee = _fake_committee(monkeypatch)
    checkpoint, dataset = _model_and_dataset(tmp_path, ["test", "test", "test", "train"])
    options = "--device cpu --steps 30 --trajectory-interval 3 --starts 2".split()
    first = tmp_path / "first"
    assert main(["md", str(checkpoint), str(dataset), "--out", str(first), *options]) == 0
    rows = list(csv.DictReader((first / "md_spread.csv").open()))
    frames = ase.io.read(first / "md.extxyz", index=":")
    assert len(rows) == len(frames)  # every kept frame has a spread
    members = committee(checkpoint, device="cpu")
    for row, frame in zip(rows, frames, strict=True):
        assert int(row["step"]) == frame.info["step"] and int(row["run"]) == frame.info["run"]
        members.calculate(frame, ["forces"])
        expected = 0.1 * np.linalg.norm(members.results["forces"], axis=1).max()
        assert float(row["force_spread_ev_per_a"]) == pytest.approx(expected, rel=1e-6)
        assert row["candidate"] == "0"  # no threshold, no candidates
    summary = json.loads((first / "md.json").read_text())
    spreads = [float(r["force_spread_ev_per_a"]) for r in rows]
    assert summary["force_spread_max"] == pytest.approx(max(spreads))
    assert summary["force_spread_mean"] == pytest.approx(np.mean(spreads))
    # the same runs again (same seeds) with a threshold inside the spreads seen
    moving = [s for r, s in zip(rows, spreads, strict=True) if int(r["step"]) > 0]
    threshold = float(np.median(moving))
    above = sum(s > threshold for s in moving)
    assert 0 < above < len(moving)
    out = tmp_path / "md"
    argv = ["md", str(checkpoint), str(dataset), "--out", str(out), *options]
    assert main([*argv, "--spread-threshold", str(threshold)]) == 0
    summary = json.loads((out / "md.json").read_text())
    assert summary["spread_threshold"] == threshold and summary["n_candidates"] == above
    flagged = [r for r in csv.DictReader((out / "md_spread.csv").open()) if r["candidate"] == "1"]
    assert len(flagged) == above
    candidates = read_table(out / "md_candidates.parquet", kind="configurations")
    assert candidates.num_rows == above
    configs = read_configs(out / "md_candidates.parquet")  # what pilip label reads
    ids = [c["id"] for c in configs]
    assert len(set(ids)) == len(ids) == above
    starts = {r["config_id"]: r["system"] for r in summary["runs"]}
    table = candidates.to_pylist()
    for row, flag in zip(table, flagged, strict=True):
        assert row["generator"] == "md_spread" and row["parent_id"] in starts
        assert row["system"] == starts[row["parent_id"]] == flag["system"]
        assert (row["charge"], row["multiplicity"]) == (0, 1)
        params = json.loads(row["generator_params"])
        assert params["step"] == int(flag["step"]) and params["run"] == int(flag["run"])
        assert params["force_spread"] > threshold == params["spread_threshold"]
        assert row["seed"] == params["run"]  # seed 0 + run


def test_spread_threshold_without_a_committee_is_refused_before_md(tmp_path, capsys):
    from pilip.cli import main

    checkpoint, dataset = _model_and_dataset(tmp_path, ["test", "test", "test", "train"])
    out = tmp_path / "md"
    argv = ["md", str(checkpoint), str(dataset), "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--spread-threshold", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "--spread-threshold 0.2" in err and "not a committee" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    for bad in ("0", "-1", "nan"):
        assert main([*argv, "--spread-threshold", bad]) == 2
        assert "--spread-threshold" in capsys.readouterr().err


def test_workflow_passes_the_spread_threshold_to_committee_runs_only():
    from pilip.commands.md import workflow_options
    from pilip.config import load_config

    config = load_config("config.yaml")
    md, training = dict(config["md"]), config["training"]
    options = workflow_options(md, training, "energy")
    for flag in ("--steps 2000", "--starts 1", "--trajectory-interval 10", "--seed 0"):
        assert flag in options
    assert "--spread-threshold" not in options  # the default: null
    md["spread_threshold"] = 0.3
    training = {**training, "variants": {**training["variants"], "committee": {"ensemble": 4}}}
    assert workflow_options(md, training, "committee").endswith("--spread-threshold 0.3")
    for single in ("energy", "cheap_level"):  # one model: pilip md would refuse the threshold
        assert "--spread-threshold" not in workflow_options(md, training, single)
    everyone = {**training, "ensemble": 3}
    assert "--spread-threshold 0.3" in workflow_options(md, everyone, "energy")


class PushHydrogen(Calculator):
    """A constant force ``push`` (eV/A) along +x on every hydrogen, nothing else."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, push: float = 1.0):
        super().__init__()
        self.push = push

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        hydrogen = self.atoms.numbers == 1
        forces = np.zeros_like(self.atoms.positions)
        forces[hydrogen, 0] = self.push
        energy = -self.push * float(self.atoms.positions[hydrogen, 0].sum())
        self.results = {"energy": energy, "forces": forces}


@pytest.mark.parametrize(
    ("donor", "acceptor_x", "allowed"),
    [("O", 2.5, True), ("O", 2.75, True), ("C", 2.5, False), ("O", -2.5, False)],
)
def test_a_proton_moving_between_oxygens_is_a_transfer_only_where_allowed(
    donor, acceptor_x, allowed
):
    """O-H...O at 0 K, the H pushed to the other O: its O-H bond breaks by 0.5 A when it is
    1.03 A (O...O 2.5 A: bonded) or 1.28 A (2.75 A: nearer than to its donor) from the other
    O. "fail" (Fu et al.) ends the run there; "allow" counts a proton transfer and goes on
    with the new topology. A C-H bond broken the same way, or an H pushed away from the
    other O, is no proton transfer."""
    atoms = Atoms(f"{donor}HO", positions=[[0, 0, 0], [0.97, 0, 0], [acceptor_x, 0, 0]])
    mass = atoms.get_masses()[1]
    reach_fs = math.sqrt(2 * 0.6 * mass / 1.0) / units.fs  # H moved 0.6 A past its start
    steps = int(reach_fs / 0.1)
    strict = MDSettings(temperature=0.0, timestep=0.1, steps=steps, friction=0.0)
    result = run_langevin(atoms, PushHydrogen(), strict)
    assert not result.stable and result.reason == "bond" and result.n_proton_transfers == 0
    loose = MDSettings(**{**strict.__dict__, "proton_transfer": "allow"})
    result = run_langevin(atoms, PushHydrogen(), loose)
    assert result.stable == allowed
    assert result.n_proton_transfers == (1 if allowed else 0)


def _count_runs(monkeypatch):
    """Wrap pilip.potential.md.run_langevin; the returned list grows by one per MD run."""
    import pilip.potential.md as md_module

    calls, original = [], md_module.run_langevin

    def counted(atoms, calculator, settings, *args):
        calls.append(settings.seed)
        return original(atoms, calculator, settings, *args)

    monkeypatch.setattr(md_module, "run_langevin", counted)
    return calls


def _without_timings(summary):
    timing = ("wall_time_s", "steps_per_s")
    return {
        **{k: v for k, v in summary.items() if k not in (*timing, "runs")},
        "runs": [{k: v for k, v in r.items() if k not in timing} for r in summary["runs"]],
    }


def test_an_interrupted_md_command_resumes_without_redoing_finished_runs(
    tmp_path, monkeypatch, capsys
):
    import json

    from pilip.cli import main
    from pilip.potential.md_runs import RUNS_DIR

    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    calls = _count_runs(monkeypatch)
    checkpoint, dataset = _model_and_dataset(tmp_path, ["test", "test", "test", "train"])
    out = tmp_path / "md"
    options = "--device cpu --steps 20 --trajectory-interval 5 --starts 2 --seed 7".split()
    argv = ["md", str(checkpoint), str(dataset), "--out", str(out), *options]
    assert main(argv) == 0 and calls == [7, 8, 9]
    whole = json.loads((out / "md.json").read_text())
    whole_frames = ase.io.read(out / "md.extxyz", index=":")
    # killed during the second of three runs: only the first is finished, nothing else written
    for name in ("md.json", "md.extxyz", "md_spread.csv", "md_candidates.parquet"):
        (out / name).unlink()
    for path in (out / RUNS_DIR).glob("run-000[12].*"):
        path.unlink()
    (out / RUNS_DIR / "run-0001.extxyz").write_text("3\ncut short")  # a frames file, no record
    calls.clear()
    assert main(argv) == 0
    assert calls == [8, 9]  # runs 1 and 2 (seeds 8, 9) again, run 0 taken as it was
    said = capsys.readouterr().err
    assert "run 1/3 (CH4 " in said and "(kept in md_runs/)" in said
    resumed = json.loads((out / "md.json").read_text())
    assert resumed["runs"][0]["wall_time_s"] == whole["runs"][0]["wall_time_s"]
    assert _without_timings(resumed) == _without_timings(whole)
    frames = ase.io.read(out / "md.extxyz", index=":")
    assert [f.info["run"] for f in frames] == [f.info["run"] for f in whole_frames]
    assert [f.info["config_id"] for f in frames] == [f.info["config_id"] for f in whole_frames]
    for frame, before in zip(frames, whole_frames, strict=True):
        np.testing.assert_allclose(frame.positions, before.positions, atol=1e-7)
        np.testing.assert_allclose(frame.get_forces(), before.get_forces(), atol=1e-6)
    # everything finished: a rerun simulates nothing; other settings simulate everything
    calls.clear()
    assert main(argv) == 0 and calls == []
    assert main([*argv, "--temperature", "400"]) == 0 and calls == [7, 8, 9]
    assert json.loads((out / "md.json").read_text())["settings"]["temperature"] == 400.0


def test_kept_runs_belong_to_one_model_start_and_settings(tmp_path):
    from dataclasses import replace

    from pilip.potential.md_runs import RunStore

    atoms = molecule("H2O")
    atoms.info.update(system="H2O", id="0017")
    settings = MDSettings(steps=10, trajectory_interval=5)
    result = run_langevin(atoms, BondCalculator(atoms), settings)
    run = {"run": 0, "system": "H2O", "config_id": "0017", **result.summary()}
    for frame in result.frames:
        frame.info.update(run=0, system="H2O", config_id="0017")
    store = RunStore(tmp_path, "model-a")
    assert store.load(0, atoms, settings) is None  # nothing kept yet
    store.save(0, atoms, settings, run, result.frames)
    kept, frames = store.load(0, atoms, settings)
    assert kept == run
    assert [f.info["config_id"] for f in frames] == ["0017"] * 3  # a string id stays a string
    assert [f.info["step"] for f in frames] == [0, 5, 10]
    moved = atoms.copy()
    moved.positions[0, 0] += 1e-6
    assert store.load(0, moved, settings) is None  # another start
    assert store.load(0, atoms, replace(settings, seed=1)) is None  # another seed
    assert RunStore(tmp_path, "model-b").load(0, atoms, settings) is None  # another model
    assert store.load(1, atoms, settings) is None  # another run index


class Interrupted(Exception):
    """A job's kill, raised from inside a calculation."""


class KilledCommitteeCalculator(CommitteeCalculator):
    """CommitteeCalculator that is killed in its ``kill_at``-th calculation."""

    def __init__(self, atoms: Atoms, kill_at: int, **kwargs):
        super().__init__(atoms, **kwargs)
        self.kill_at = kill_at

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if self.calls + 1 == self.kill_at:
            raise Interrupted
        super().calculate(atoms, properties, system_changes)


def test_a_run_killed_midway_continues_with_the_steps_it_would_have_taken(tmp_path):
    from dataclasses import replace

    from pilip.potential.md_runs import RunStore

    atoms = molecule("CH3CH2OH")
    # 500 K on weak springs: the atoms move far, and the thermostat draws 2 x 9 x 3 numbers a
    # step, so a resumed run that lost or repeated one random number would drift apart
    settings = MDSettings(temperature=500.0, steps=60, trajectory_interval=7, seed=3)
    whole = run_langevin(atoms, CommitteeCalculator(atoms, k=10.0), settings)
    store = RunStore(tmp_path, "model", checkpoint_s=0.0)  # progress saved after every step
    store.folder.mkdir()
    (store.folder / "run-0000.progress.npz").write_bytes(b"PK\x03\x04cut short")
    assert store.checkpoint(0, atoms, settings).load() is None  # unreadable: start afresh
    killed = KilledCommitteeCalculator(atoms, kill_at=41, k=10.0)  # in step 40 (1st: step 0)
    with pytest.raises(Interrupted):
        run_langevin(atoms, killed, settings, store.checkpoint(0, atoms, settings))
    progress = store.checkpoint(0, atoms, settings).load()
    assert progress.step == 39 and [f.info["step"] for f in progress.frames] == [
        0,
        7,
        14,
        21,
        28,
        35,
    ]
    assert store.checkpoint(0, atoms, replace(settings, seed=4)).load() is None  # not its run
    calculator = CommitteeCalculator(atoms, k=10.0)
    resumed = run_langevin(atoms, calculator, settings, store.checkpoint(0, atoms, settings))
    assert calculator.calls == 1 + 60 - 39  # the forces at step 39 again, then steps 40-60
    for frame, before in zip(resumed.frames, whole.frames, strict=True):
        assert frame.info == before.info  # step, time, temperature, force spread
        assert np.array_equal(frame.positions, before.positions)
        assert np.array_equal(frame.get_momenta(), before.get_momenta())
        assert np.array_equal(frame.get_forces(), before.get_forces())
    timing = ("wall_time_s", "steps_per_s")
    assert {k: v for k, v in resumed.summary().items() if k not in timing} == {
        k: v for k, v in whole.summary().items() if k not in timing
    }
    assert resumed.wall_time_s > progress.wall_time_s > 0  # both stretches of the run
    # a finished run keeps its record and frames, and no progress
    stability_test([atoms], calculator, settings, store=store)
    names = sorted(p.name for p in store.folder.iterdir())
    assert names == ["run-0000.extxyz", "run-0000.json", "run-0000.log"]  # progress gone


def test_a_kill_during_a_save_keeps_the_save_before_it(tmp_path, monkeypatch):
    """A job killed (SIGINT: KeyboardInterrupt) while it writes its progress, half the file
    written, leaves the previous save whole and no temporary file; the run continues from it
    with the steps it would have taken."""
    from pilip.potential import md_runs
    from pilip.potential.md_runs import RunStore

    atoms = molecule("CH3CH2OH")
    settings = MDSettings(temperature=500.0, steps=30, trajectory_interval=4, seed=5)
    whole = run_langevin(atoms, CommitteeCalculator(atoms, k=10.0), settings)
    store = RunStore(tmp_path, "model", checkpoint_s=0.0)  # progress saved after every step
    saves, savez = [], np.savez

    def killed_in_save_20(handle, **arrays):
        saves.append(1)
        if len(saves) == 20:  # the save after step 20: half a file, then the kill
            handle.write(b"PK\x03\x04" + b"\0" * 1000)
            raise KeyboardInterrupt
        savez(handle, **arrays)

    monkeypatch.setattr(md_runs.np, "savez", killed_in_save_20)
    with pytest.raises(KeyboardInterrupt):
        checkpoint = store.checkpoint(0, atoms, settings)
        run_langevin(atoms, CommitteeCalculator(atoms, k=10.0), settings, checkpoint)
    monkeypatch.setattr(md_runs.np, "savez", savez)
    assert sorted(p.name for p in store.folder.iterdir()) == [
        "run-0000.log",
        "run-0000.progress.npz",
    ]  # no temporary file beside them
    assert store.checkpoint(0, atoms, settings).load().step == 19  # the save before the kill
    calculator = CommitteeCalculator(atoms, k=10.0)
    resumed = run_langevin(atoms, calculator, settings, store.checkpoint(0, atoms, settings))
    assert calculator.calls == 1 + 30 - 19
    for frame, before in zip(resumed.frames, whole.frames, strict=True):
        assert frame.info == before.info
        assert np.array_equal(frame.positions, before.positions)
        assert np.array_equal(frame.get_momenta(), before.get_momenta())


def test_a_killed_md_command_continues_its_unfinished_run_from_the_last_save(
    tmp_path, monkeypatch, capsys
):
    import json

    from pilip.cli import main
    from pilip.potential.calculator import PilipCalculator

    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    checkpoint, dataset = _model_and_dataset(tmp_path, ["test", "train", "train", "train"])
    options = "--device cpu --steps 30 --trajectory-interval 4 --seed 2 --checkpoint-s 0"
    argv = ["md", str(checkpoint), str(dataset), *options.split()]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    calls, original = [], PilipCalculator.calculate

    def killed_in_step_25(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 26:
            raise Interrupted
        return original(self, *args, **kwargs)

    out = tmp_path / "md"
    with monkeypatch.context() as patch:
        patch.setattr(PilipCalculator, "calculate", killed_in_step_25)
        with pytest.raises(Interrupted):
            main([*argv, "--out", str(out)])
    assert not (out / "md.json").exists()
    assert sorted(p.name for p in (out / "md_runs").iterdir()) == [
        "run-0000.log",
        "run-0000.progress.npz",
    ]
    log = (out / "md_runs" / "run-0000.log").read_text().splitlines()
    assert log[0].startswith("#") and [int(line.split()[0]) for line in log[1:]] == [
        0, 4, 8, 12, 16, 20, 24  # every kept frame up to the kill (steps 25/26 not kept)
    ]  # fmt: skip
    calls.clear()
    monkeypatch.setattr(PilipCalculator, "calculate", killed_in_step_25)  # counts; no kill
    assert main([*argv, "--out", str(out)]) == 0
    assert len(calls) == 1 + 30 - 24  # step 24's forces again, then steps 25-30
    assert "continued from step 24" in capsys.readouterr().err  # said, and not in md.json
    whole = json.loads((tmp_path / "whole" / "md.json").read_text())
    resumed = json.loads((out / "md.json").read_text())
    assert _without_timings(resumed) == _without_timings(whole)
    assert (out / "md.extxyz").read_text() == (tmp_path / "whole" / "md.extxyz").read_text()
    # the resumed run's log holds each kept frame once, as the uninterrupted run's does
    logs = [p / "md_runs" / "run-0000.log" for p in (out, tmp_path / "whole")]
    assert logs[0].read_text() == logs[1].read_text()
    kept = ase.io.read(out / "md_runs" / "run-0000.extxyz", ":")
    columns = np.loadtxt(logs[0])  # step, ps, Epot, Ekin, Etot (eV), K, spread (nan: one model)
    assert columns.shape == (len(kept), 7) and np.isnan(columns[:, 6]).all()
    np.testing.assert_allclose(columns[:, 2], [f.get_potential_energy() for f in kept], atol=2e-6)
    np.testing.assert_allclose(columns[:, 4] - columns[:, 3], columns[:, 2], atol=3e-6)


def test_md_runs_side_by_side_in_processes_give_the_runs_of_one_process(tmp_path, capsys):
    """--jobs 2: four runs, run 0 kept from an earlier command and three simulated in two
    worker processes, equal bit for bit the four simulated one after another."""
    import json

    from pilip.cli import main

    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # the workers' thread count: the same arithmetic
    checkpoint, dataset = _model_and_dataset(tmp_path, ["test"] * 4)
    options = "--device cpu --steps 24 --trajectory-interval 6 --seed 3 --checkpoint-s 0"
    argv = ["md", str(checkpoint), str(dataset), *options.split()]
    assert main([*argv, "--starts", "2", "--out", str(tmp_path / "one")]) == 0
    out = tmp_path / "side"
    assert main([*argv, "--starts", "1", "--out", str(out)]) == 0  # keeps run 0 (CH4 a)
    capsys.readouterr()
    assert main([*argv, "--starts", "2", "--out", str(out), "--jobs", "2"]) == 0
    said = capsys.readouterr().err
    assert "run 1/4 (CH4 " in said and "(kept in md_runs/)" in said
    assert said.count("steps/s)") == 3  # runs 2-4 simulated, by the workers
    one = json.loads((tmp_path / "one" / "md.json").read_text())
    side = json.loads((out / "md.json").read_text())
    assert [r["run"] for r in side["runs"]] == [0, 1, 2, 3]
    assert _without_timings(side) == _without_timings(one)
    assert (out / "md.extxyz").read_text() == (tmp_path / "one" / "md.extxyz").read_text()


def test_a_test_split_by_runs_gives_the_runs_of_the_whole_test(tmp_path, capsys):
    """--runs: a four-run test split in two commands (0,2 and 1-3, run 2 kept from the first)
    gives each run the seed, steps and frames it has in the whole test."""
    import json

    from pilip.cli import main

    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    checkpoint, dataset = _model_and_dataset(tmp_path, ["test"] * 4)
    options = "--device cpu --steps 24 --trajectory-interval 6 --seed 3 --starts 2"
    argv = ["md", str(checkpoint), str(dataset), *options.split()]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "md.json").read_text())
    whole_frames = ase.io.read(tmp_path / "whole" / "md.extxyz", index=":")
    out = tmp_path / "split"
    assert main([*argv, "--out", str(out), "--runs", "0,2"]) == 0
    first = json.loads((out / "md.json").read_text())
    assert [r["run"] for r in first["runs"]] == [0, 2] and first["n_runs"] == 2
    assert first["selected_runs"] == [0, 2]
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--runs", "1-3"]) == 0
    said = capsys.readouterr().err
    assert "run 3/4 (H2O " in said and "(kept in md_runs/)" in said
    assert said.count("steps/s)") == 2  # runs 1 and 3 simulated
    second = json.loads((out / "md.json").read_text())
    assert [r["run"] for r in second["runs"]] == [1, 2, 3]
    runs = {r["run"]: r for r in _without_timings(first)["runs"] + _without_timings(second)["runs"]}
    assert [runs[k] for k in range(4)] == _without_timings(whole)["runs"]
    frames = ase.io.read(out / "md.extxyz", index=":")
    expected = [f for f in whole_frames if f.info["run"] in (1, 2, 3)]
    assert [f.info["run"] for f in frames] == [f.info["run"] for f in expected]
    for frame, same in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(frame.positions, same.positions)
    # run numbers the test does not have, or not numbers: one line, before any MD
    for spec, said in (("4", "this test has runs 0-3 "), ("2-1", "runs 0-3"), ("-1", "e.g. 1-4")):
        assert main([*argv, "--out", str(tmp_path / "bad"), "--runs", spec]) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_run_that_raises_in_a_worker_process_stops_the_test_with_its_error(tmp_path):
    from functools import partial

    from pilip.potential.md import MDSettings, stability_test

    starts = [molecule("H2O"), molecule("H2O")]
    with pytest.raises(ValueError, match="not a calculator"):
        stability_test(starts, partial(_no_calculator, "not a calculator"), MDSettings(steps=3),
                       jobs=2)  # fmt: skip
    with pytest.raises(ValueError, match="jobs=0"):
        stability_test(starts, partial(_no_calculator, "x"), MDSettings(steps=3), jobs=0)
    with pytest.raises(ValueError, match="builds the calculator in each process"):
        stability_test(starts, BondCalculator(starts[0]), MDSettings(steps=3), jobs=2)


def _no_calculator(message):
    raise ValueError(message)


def test_md_command_refuses_jobs_below_one(tmp_path, capsys):
    from pilip.cli import main

    checkpoint, dataset = _model_and_dataset(tmp_path, ["test", "train", "train", "train"])
    out = tmp_path / "md"
    assert main(["md", str(checkpoint), str(dataset), "--out", str(out), "--jobs", "0"]) == 2
    assert "--jobs 0: use 1 or more" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_md_worker_processes_end_when_the_command_is_killed(tmp_path):
    """A `pilip md --jobs 2` killed outright (SIGKILL: no clean-up) leaves no worker running
    on; each run's progress stays for a rerun."""
    import os
    import signal
    import subprocess
    import sys
    import time

    checkpoint, dataset = _model_and_dataset(tmp_path, ["test"] * 4)
    out = tmp_path / "md"
    command = "import sys; from pilip.cli import main; sys.exit(main(sys.argv[1:]))"
    options = "--device cpu --steps 10000000 --bond-threshold 1e6 --checkpoint-s 0 --jobs 2"
    main = subprocess.Popen(
        [sys.executable, "-c", command, "md", str(checkpoint), str(dataset), "--out", str(out),
         *options.split()],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        saved = [out / "md_runs" / f"run-000{k}.progress.npz" for k in (0, 1)]
        deadline = time.monotonic() + 120
        while not all(path.is_file() for path in saved) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(path.is_file() for path in saved), "the two workers never saved a step"
        workers = _children(main.pid)
    finally:
        main.send_signal(signal.SIGKILL)
        main.wait()
    assert len(workers) >= 2  # the two workers (and multiprocessing's resource tracker)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)
    assert all(path.is_file() for path in saved)  # for a rerun to continue


def _children(pid):
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended (its reaper is gone too)
