"""Committees (``pilip train --ensemble N``): one checkpoint whose mean is the potential and
whose members' spread the calculator reports (tiny PaiNNs, water)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError
from model_batches import molecules, to_batch
from test_train import TIMES, read_metrics, write_dataset

from pilip import keys
from pilip.cli import main
from pilip.errors import PilipError
from pilip.potential.calculator import PilipCalculator
from pilip.potential.checkpoint import load_model, read_checkpoint, save_checkpoint
from pilip.potential.committee import (
    Committee,
    committee_of,
    committee_payload,
    predict_with_spread,
)
from pilip.potential.data import VAL, load_dataset
from pilip.potential.evaluate import predict
from pilip.potential.forces import energy_and_forces, total_energy
from pilip.potential.metrics import energy_metrics
from pilip.potential.models import build_model

torch.set_num_threads(1)
TINY = ["--n-features", "8", "--n-interactions", "1", "--cutoff", "4.0", "--no-progress",
        "--device", "cpu", "--batch-size", "4"]  # fmt: skip
CPU = torch.device("cpu")


def painn(seed: int, n_features: int = 16, dtype: str = "float64") -> torch.nn.Module:
    """A small PaiNN of random weights (``seed``) with per-element offsets of a trained one."""
    torch.manual_seed(seed)
    model = build_model("painn", n_features=n_features, n_rbf=8, n_interactions=2, dtype=dtype)
    for z, shift in ((1, -13.6), (6, -1029.0), (8, -2040.0)):
        model.energy_shift.shift[z] = shift
    return model.eval()


def without_times(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIMES} for r in rows]


def weights(path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]["state_dict"]


# --- the committee and its spread ------------------------------------------------------------


def test_a_committee_of_identical_members_has_no_spread_and_is_that_model():
    model = painn(0)
    committee = Committee([model, copy.deepcopy(model)])
    batch = to_batch(molecules())
    energy, forces = energy_and_forces(model, batch)
    prediction = predict_with_spread(committee, batch)
    assert torch.equal(prediction.energy, energy) and torch.equal(prediction.forces, forces)
    assert torch.equal(prediction.energy_std, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(prediction.forces_std, torch.zeros_like(forces))
    assert torch.equal(committee(batch), model(batch))
    assert committee.member_energies(batch).shape == (2, 3)
    assert committee_of(committee) is committee and committee_of(model) is None
    single = predict_with_spread(model, batch)
    assert single.energy_std is None and single.forces_std is None and single.members is None


def test_committee_forces_are_finite_differences_of_the_mean_energy():
    committee = Committee([painn(0), painn(1), painn(2)])
    batch = to_batch(molecules(("H2O", "CH4")))
    prediction = predict_with_spread(committee, batch)
    h = 1e-5
    numerical = torch.zeros_like(prediction.forces)
    structure = batch[keys.BATCH]
    for atom in range(len(structure)):
        for axis in range(3):
            energies = []
            for sign in (1.0, -1.0):
                positions = batch[keys.POSITIONS].clone()
                positions[atom, axis] += sign * h
                energies.append(total_energy(committee, {**batch, keys.POSITIONS: positions}))
            difference = (energies[0] - energies[1])[structure[atom]]
            numerical[atom, axis] = -difference / (2 * h)
    assert torch.allclose(prediction.forces, numerical, atol=1e-6)
    # the mean and the spread are those of the members, each on its own
    alone = [energy_and_forces(m, batch) for m in committee.members]
    energies = torch.stack([e for e, _ in alone])
    forces = torch.stack([f for _, f in alone])
    assert torch.allclose(prediction.energy, energies.mean(0), rtol=0, atol=1e-9)
    assert torch.allclose(prediction.energy, total_energy(committee, batch), rtol=0, atol=1e-9)
    expected_std = torch.from_numpy(np.std(energies.numpy(), axis=0))  # ddof 0
    assert torch.allclose(prediction.energy_std, expected_std, rtol=1e-9)
    assert torch.allclose(prediction.forces_std, forces.std(0, correction=0), rtol=1e-9)
    assert prediction.energy_std.min() > 0 and prediction.forces_std.max() > 0
    assert prediction.members.shape == (3, 2) and prediction.member_forces.shape == (3, 8, 3)
    assert not prediction.forces.requires_grad and not prediction.forces_std.requires_grad


def test_a_wrapper_that_is_not_a_sum_spreads_the_wrapped_potential():
    """A recipe's wrapper other than baseline + network (here 2 x network): each member is
    evaluated inside it, so the spread is that of the potential."""

    class Doubled(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, batch):
            return 2.0 * self.model(batch)

    committee = Committee([painn(0), painn(1)])
    batch = to_batch(molecules(("H2O",)))
    bare, doubled = (
        predict_with_spread(committee, batch),
        predict_with_spread(Doubled(committee), batch),
    )
    assert torch.allclose(doubled.energy_std, 2 * bare.energy_std, rtol=1e-9)
    assert torch.allclose(doubled.forces, 2 * bare.forces, rtol=1e-9, atol=1e-12)
    assert len(committee.members) == 2  # restored after member-by-member evaluation


def test_a_delta_committee_shares_the_baseline_and_it_adds_no_spread():
    pytest.importorskip("tblite")
    from pilip.potential.baselines import DeltaModel, resolve_baseline

    baseline = resolve_baseline("gfn2-xtb")
    committee = Committee([painn(0), painn(1)])
    delta = DeltaModel(committee, baseline)
    batch = to_batch(molecules(("H2O", "CH4")))
    prediction = predict_with_spread(delta, batch)
    assert delta.calls == 2  # the baseline once per structure, not once per member
    bare = predict_with_spread(committee, batch)
    assert torch.allclose(prediction.energy_std, bare.energy_std, rtol=1e-9)
    assert torch.allclose(prediction.forces_std, bare.forces_std, rtol=1e-9, atol=1e-12)
    energy, forces = energy_and_forces(delta, batch)  # baseline + mean, as evaluate computes it
    assert torch.allclose(prediction.energy, energy, rtol=0, atol=1e-8)
    assert torch.allclose(prediction.forces, forces, atol=1e-8)
    member = DeltaModel(committee.members[1], baseline)
    member_energy, member_forces = energy_and_forces(member, batch)
    assert torch.allclose(prediction.members[1], member_energy, rtol=0, atol=1e-8)
    assert torch.allclose(prediction.member_forces[1], member_forces, atol=1e-8)
    assert committee_of(delta) is committee


def test_the_calculator_reports_the_committee_spread_in_ev():
    members = [painn(0), painn(1)]
    atoms = molecules(("CH3CH2OH",))[0]
    singles = []
    for member in members:
        single = atoms.copy()
        single.calc = PilipCalculator(member, device="cpu")
        singles.append((single.get_potential_energy(), single.get_forces()))
        assert "energy_std" not in single.calc.results
        with pytest.raises(PropertyNotImplementedError):
            single.calc.get_property("forces_std", single)
    calc = PilipCalculator(Committee(members), device="cpu")
    atoms.calc = calc
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    energy_std = calc.get_property("energy_std", atoms)
    forces_std = calc.get_property("forces_std", atoms)
    assert {"energy", "forces", "energy_std", "forces_std"} <= set(calc.implemented_properties)
    assert isinstance(energy_std, float)
    assert forces_std.shape == (len(atoms), 3) and forces_std.dtype == np.float64
    (e0, f0), (e1, f1) = singles
    assert energy == pytest.approx((e0 + e1) / 2, abs=1e-9)
    assert np.allclose(forces, (f0 + f1) / 2, atol=1e-9)
    # the population standard deviation of two numbers is half their distance (eV, eV/A)
    assert energy_std == pytest.approx(abs(e0 - e1) / 2, rel=1e-9)
    assert np.allclose(forces_std, np.abs(f0 - f1) / 2, atol=1e-9)


# --- checkpoints -----------------------------------------------------------------------------


def member_checkpoint(path, model, recipes=None, name="painn"):
    meta = {"config": {"seed": 0}, "elements": [1, 6, 8], "recipes": recipes or [{"name": "plain"}]}
    save_checkpoint(path, model=model, model_name=name, meta=meta)
    return read_checkpoint(path)


def write_committee(path, payloads):
    torch.save(committee_payload(payloads, payloads[0]["meta"]), path)
    return path


def test_a_committee_checkpoint_loads_as_the_mean_and_old_formats_still_load(tmp_path):
    models = [painn(0), painn(1)]
    payloads = [member_checkpoint(tmp_path / f"m{k}.pt", m) for k, m in enumerate(models)]
    path = write_committee(tmp_path / "committee.pt", payloads)
    model, meta = load_model(path)
    assert isinstance(model, Committee) and meta["format_version"] == 3
    batch = to_batch(molecules())
    expected = (total_energy(models[0], batch) + total_energy(models[1], batch)) / 2
    assert torch.allclose(total_energy(model, batch), expected, rtol=0, atol=1e-9)
    # a format-2 file (a single model's layout is unchanged) still loads
    old = read_checkpoint(tmp_path / "m0.pt")
    old["format_version"] = 2
    torch.save(old, tmp_path / "format2.pt")
    single, _ = load_model(tmp_path / "format2.pt")
    assert torch.equal(total_energy(single, batch), total_energy(models[0], batch))


def test_members_of_another_architecture_are_refused_on_load(tmp_path):
    first = member_checkpoint(tmp_path / "a.pt", painn(0))
    narrow = member_checkpoint(tmp_path / "b.pt", painn(1, n_features=8))
    path = write_committee(tmp_path / "c.pt", [first, narrow])
    with pytest.raises(PilipError, match=r"c.pt: committee member 1 has other hyper-parameters "
                                         r"\(n_features\)"):  # fmt: skip
        load_model(path)
    schnet = build_model("schnet", n_features=8)
    other = member_checkpoint(tmp_path / "s.pt", schnet, name="schnet")
    with pytest.raises(PilipError, match="committee member 1 is a schnet model"):
        load_model(write_committee(tmp_path / "d.pt", [first, other]))
    # weights that do not fit the architecture the member claims
    payload = committee_payload([first, first], first["meta"])
    payload["model"]["members"][1]["state_dict"] = narrow["model"]["state_dict"]
    torch.save(payload, tmp_path / "e.pt")
    with pytest.raises(PilipError, match="member 1's weights do not fit"):
        load_model(tmp_path / "e.pt")


def test_members_of_another_baseline_are_refused_on_load(tmp_path):
    pytest.importorskip("tblite")
    from pilip.potential.baselines import resolve_baseline

    gfn2 = [{"name": "delta", "baseline": resolve_baseline("gfn2-xtb").specification()}]
    gfn1 = [{"name": "delta", "baseline": resolve_baseline("gfn1-xtb").specification()}]
    payloads = [member_checkpoint(tmp_path / "a.pt", painn(0), gfn2),
                member_checkpoint(tmp_path / "b.pt", painn(1), gfn1)]  # fmt: skip
    path = write_committee(tmp_path / "c.pt", payloads)
    with pytest.raises(PilipError, match="member 1 was trained as Delta over GFN1-xTB .* but the "
                                         "committee as Delta over GFN2-xTB"):  # fmt: skip
        load_model(path)


def test_ensemble_below_one_is_refused_by_the_config_schema():
    from pilip.config import validate_config
    from pilip.potential.train_config import TrainConfig

    systems = {"w": {"seed": "H2O"}}
    with pytest.raises(PilipError, match=r"training.ensemble: must be >= 1, got 0"):
        validate_config({"systems": systems, "training": {"ensemble": 0}})
    variant = {"variants": {"small": {"ensemble": 0}}}
    with pytest.raises(PilipError, match=r"training.variants.small.ensemble: must be >= 1"):
        validate_config({"systems": systems, "training": variant})
    with pytest.raises(PilipError, match="--ensemble 0: must be >= 1"):
        TrainConfig(ensemble=0).validate()


# --- pilip train --ensemble ------------------------------------------------------------------


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "water.parquet"
    write_dataset(path)
    return path


def pilip_train(dataset, out, *extra):
    return main(["train", str(dataset), "--out", str(out), *TINY, *extra])


def test_pilip_train_ensemble_writes_one_committee_that_evaluate_and_the_calculator_use(
    dataset, tmp_path
):
    out = tmp_path / "run"
    assert pilip_train(dataset, out, "--ensemble", "2", "--epochs", "3", "--seed", "5") == 0
    payload = read_checkpoint(out / "model.pt")
    assert payload["format_version"] == 3 and len(payload["model"]["members"]) == 2
    model, meta = load_model(out / "model.pt")
    assert isinstance(model, Committee)
    assert meta["config"]["ensemble"] == 2 and meta["config"]["seed"] == 5
    assert [m["seed"] for m in meta["members"]] == [5, 6]
    # the committee is the mean of its members' own checkpoints, which differ
    val = load_dataset(dataset)[VAL]
    mean, _ = predict(model, val, CPU)
    alone = [predict(load_model(out / "members" / str(k) / "model.pt")[0], val, CPU)[0]
             for k in (0, 1)]  # fmt: skip
    assert np.allclose(mean, (alone[0] + alone[1]) / 2, rtol=0, atol=1e-6)  # float32 networks
    assert not np.allclose(alone[0], alone[1])
    rmse = energy_metrics(mean, val.energy.numpy(), val.n_atoms.numpy())["energy_rmse"]
    assert meta["val_energy_rmse"] == pytest.approx(rmse, rel=1e-9)
    # member k is the run of seed + k: member 1 is `pilip train --seed 6`
    assert pilip_train(dataset, tmp_path / "seed6", "--seed", "6", "--epochs", "3") == 0
    assert without_times(read_metrics(tmp_path / "seed6" / "metrics.csv")) == without_times(
        read_metrics(out / "members" / "1" / "metrics.csv")
    )
    # what the rest of pilip reads: member 0's learning curve, the run's settings
    assert read_metrics(out / "metrics.csv") == read_metrics(out / "members" / "0" / "metrics.csv")
    assert json.loads((out / "config.json").read_text())["ensemble"] == 2
    assert main(["evaluate", str(out / "model.pt"), str(dataset), "--out", str(tmp_path / "ev"),
                 "--device", "cpu"]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["ensemble"] == 2 and metrics["plots"]["learning_curve_trained"]
    member_times = [read_metrics(out / "members" / str(k) / "metrics.csv")[-1]["wall_time_s"]
                    for k in (0, 1)]  # fmt: skip
    assert metrics["train_time_s"] == pytest.approx(sum(float(t) for t in member_times))
    # the mean is never worse than its members on average (triangle inequality), per set
    for key in ("energy_rmse", "force_rmse"):
        members = metrics["members"][key]
        assert len(members) == 2 and metrics[key] <= np.mean(members) + 1e-12
    calibration = metrics["calibration"]
    assert calibration["scale_fitted_on"] == "validation energies" and calibration["scale"] > 0
    assert calibration["energy"]["n"] == metrics["n_energy"]
    assert calibration["forces"]["n"] == metrics["n_force_components"]
    assert -1 <= calibration["forces"]["spearman"] <= 1
    assert metrics["plots"]["calibration"] == "calibration.png"
    assert (tmp_path / "ev" / "calibration.png").read_bytes()[:4] == b"\x89PNG"
    # a single member: no spread, so no calibration
    assert main(["evaluate", str(out / "members" / "0" / "model.pt"), str(dataset), "--out",
                 str(tmp_path / "ev0"), "--device", "cpu"]) == 0  # fmt: skip
    single = json.loads((tmp_path / "ev0" / "metrics.json").read_text())
    assert single["ensemble"] == 1 and "calibration" not in single and "members" not in single
    assert not (tmp_path / "ev0" / "calibration.png").exists()
    assert single["force_rmse"] == pytest.approx(metrics["members"]["force_rmse"][0], rel=1e-6)
    atoms = molecules(("H2O",))[0]
    atoms.calc = PilipCalculator(out / "model.pt", device="cpu")
    assert atoms.calc.get_property("forces_std", atoms).shape == (3, 3)
    assert atoms.calc.results["energy_std"] > 0


def test_a_committee_killed_during_member_1_resumes_without_retraining_member_0(
    dataset, tmp_path, monkeypatch
):
    """SIGINT while member 1 trains (as Ctrl-C or SLURM's SIGTERM): exit 130, member 1's
    last.pt at the step reached; the rerun trains only the rest of member 1 and ends with the
    committee of an uninterrupted run."""
    import signal

    import pilip.potential.steps as steps_module

    args = ("--ensemble", "2", "--epochs", "3")
    assert pilip_train(dataset, tmp_path / "full", *args) == 0
    real = steps_module.compute_losses
    calls = {"n": 0, "signal_at": 18}  # 4 steps per epoch: member 0 takes 12, then member 1

    def counting(*a, **kw):
        calls["n"] += 1
        if calls["n"] == calls["signal_at"]:  # member 1, epoch 2, step 2
            signal.raise_signal(signal.SIGINT)
        return real(*a, **kw)

    monkeypatch.setattr(steps_module, "compute_losses", counting)
    out = tmp_path / "cut"
    assert pilip_train(dataset, out, *args) == 128 + signal.SIGINT
    assert not (out / "model.pt").exists() and (out / "members" / "0" / "model.pt").is_file()
    saved = read_checkpoint(out / "members" / "1" / "last.pt")["train_state"]
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 2)
    member0 = (out / "members" / "0" / "metrics.csv").read_text()

    calls["n"], calls["signal_at"] = 0, None
    assert pilip_train(dataset, out, *args) == 0
    assert calls["n"] == 12 - 6  # the rest of member 1; member 0 is not retrained
    assert (out / "members" / "0" / "metrics.csv").read_text() == member0
    full = read_checkpoint(tmp_path / "full" / "model.pt")["model"]["members"]
    cut = read_checkpoint(out / "model.pt")["model"]["members"]
    for a, b in zip(full, cut, strict=True):
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert without_times(read_metrics(out / "members" / "1" / "metrics.csv")) == without_times(
        read_metrics(tmp_path / "full" / "members" / "1" / "metrics.csv")
    )
    # a larger committee later trains only the new member
    calls["n"] = 0
    assert pilip_train(dataset, out, "--ensemble", "3", "--epochs", "3") == 0
    assert calls["n"] == 12 and len(read_checkpoint(out / "model.pt")["model"]["members"]) == 3


def test_fine_tuning_from_a_committee_starts_member_k_from_its_member_k_mod_m(dataset, tmp_path):
    pre = tmp_path / "pre"
    assert pilip_train(dataset, pre, "--ensemble", "2", "--epochs", "2") == 0
    init = [m["state_dict"] for m in read_checkpoint(pre / "model.pt")["model"]["members"]]
    # a learning rate too small to move anything: every member keeps its initial weights
    fine = tmp_path / "fine"
    still = ["--init", str(pre / "model.pt"), "--epochs", "1", "--lr", "1e-12"]
    assert main(["train", str(dataset), "--out", str(fine), "--no-progress", "--ensemble", "3",
                 "--batch-size", "4", *still]) == 0  # fmt: skip
    name = next(k for k in init[0] if "energy_shift" not in k and init[0][k].is_floating_point())

    def starts_from(weights, k):
        return torch.allclose(weights[name], init[k][name], rtol=0, atol=1e-8)

    for k in range(3):
        got = weights(fine / "members" / str(k) / "model.pt")
        assert starts_from(got, k % 2) and not starts_from(got, (k + 1) % 2), k
    single = tmp_path / "single"
    assert main(["train", str(dataset), "--out", str(single), "--no-progress", *still]) == 0
    assert starts_from(weights(single / "model.pt"), 0)


def test_ensemble_zero_and_a_folder_of_the_other_kind_are_refused(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert pilip_train(dataset, out, "--ensemble", "0") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ensemble 0: must be >= 1" in err[0]
    assert not out.exists()
    assert pilip_train(dataset, out, "--epochs", "1") == 0
    assert pilip_train(dataset, out, "--epochs", "1", "--ensemble", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "holds a single-model run (last.pt), not a committee" in err[-1]
    assert "--restart-if-changed" in err[-1]
    assert pilip_train(dataset, out, "--epochs", "1", "--ensemble", "2",
                       "--restart-if-changed") == 0  # fmt: skip
    assert isinstance(load_model(out / "model.pt")[0], Committee)


def test_a_run_folder_of_the_other_kind_is_named(tmp_path):
    from pilip.potential.run_folder import layout_problem

    (tmp_path / "members" / "0").mkdir(parents=True)
    assert "holds a committee run (members/), not a single model" in layout_problem(tmp_path, False)
    assert layout_problem(tmp_path, True) == ""
    (tmp_path / "last.pt").write_bytes(b"")
    assert layout_problem(tmp_path, False) == "" == layout_problem(tmp_path, True)
