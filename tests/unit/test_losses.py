"""Loss terms: the weak losses against hand computations, fused == three calls, labels."""

from __future__ import annotations

import copy

import pytest
import torch
from model_batches import molecules, to_batch
from torch import nn

from pilip import keys
from pilip.errors import PilipError
from pilip.potential.forces import energy_and_forces
from pilip.potential.losses import (
    LossTerm,
    WeakLossOptions,
    check_terms,
    compute_losses,
    draw_perturbations,
    make_terms,
)
from pilip.potential.models import MODELS, build_model
from pilip.potential.neighbors import molecular_pairs, segment_sum

PAPER = {"eps": 0.05, "k": 0.0}  # the paper's weak-loss settings, which these tests use


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class Harmonic(nn.Module):
    """E_s = 0.5 (R - R0)^T H_s (R - R0) + e0_s per structure: exact Taylor residuals."""

    def __init__(self, batch: dict, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.sizes = batch[keys.N_ATOMS].tolist()
        hessians = []
        for n in self.sizes:
            a = torch.randn(3 * n, 3 * n, generator=g, dtype=torch.float64)
            hessians.append(a @ a.T + torch.eye(3 * n, dtype=torch.float64))  # SPD, eV/A^2
        self.hessians = hessians
        self.minimum = batch[keys.POSITIONS] + 0.1 * torch.randn(
            batch[keys.POSITIONS].shape, generator=g, dtype=torch.float64
        )
        self.offset = nn.Parameter(torch.tensor(-3.0, dtype=torch.float64))

    def forward(self, batch: dict) -> torch.Tensor:
        x = batch[keys.POSITIONS] - self.minimum.repeat(
            batch[keys.POSITIONS].shape[0] // self.minimum.shape[0], 1
        )
        energies, start = [], 0
        for n in batch[keys.N_ATOMS].tolist():
            h = self.hessians[len(energies) % len(self.hessians)]
            xs = x[start : start + n].reshape(-1)
            energies.append(0.5 * xs @ h @ xs + self.offset)
            start += n
        return torch.stack(energies)

    def curvature(self, d: torch.Tensor) -> torch.Tensor:
        """0.5 d_s^T H_s d_s per structure, (n_struct,) eV."""
        out, start = [], 0
        for n, h in zip(self.sizes, self.hessians, strict=True):
            ds = d[start : start + n].reshape(-1)
            out.append(0.5 * ds @ h @ ds)
            start += n
        return torch.stack(out)


WEAK = [LossTerm("pitc", 1.2), LossTerm("pisc", 0.01)]


def _harmonic_setup(eps: float = 0.05, seed: int = 3):
    batch = to_batch(molecules(("CH3CH2OH", "H2O", "CH4")))
    model = Harmonic(batch)
    d1, d2 = draw_perturbations(batch, eps, True, torch.Generator().manual_seed(seed))
    return batch, model, d1, d2


@pytest.mark.parametrize("mode", ["fused", "three_calls"])
def test_first_order_residuals_are_the_curvature_term_per_structure(mode):
    batch, model, d1, d2 = _harmonic_setup()
    losses = compute_losses(
        model, batch, WEAK, torch.Generator().manual_seed(3), WeakLossOptions(**PAPER, mode=mode)
    )
    losses = {name: value.detach() for name, value in losses.items()}
    # by hand: E(C) - E(A) + F(A).d1 = 0.5 d1^T H d1 ; E(C) - E(B) + F(B).(d1-d2) = 0.5 D^T H D
    pitc_residual = model.curvature(d1)
    pisc_residual = model.curvature(d1 - d2)
    assert float(losses["pitc"].detach()) == pytest.approx(
        float((pitc_residual**2).mean()), rel=1e-10
    )
    assert float(losses["pisc"].detach()) == pytest.approx(
        float((pisc_residual**2).mean()), rel=1e-10
    )
    assert float(losses["total"].detach()) == pytest.approx(
        1.2 * float(losses["pitc"].detach()) + 0.01 * float(losses["pisc"].detach()), rel=1e-12
    )
    # the authors' slip: summing the work over the whole batch mixes structures
    whole_batch = float((pisc_residual.sum()) ** 2 / len(pisc_residual))
    assert abs(float(losses["pisc"].detach()) - whole_batch) > 0.1 * whole_batch


def test_per_atom_normalised_weak_losses():
    batch, model, d1, _ = _harmonic_setup()
    terms = [LossTerm("pitc", 1.0, per_atom=True)]
    losses = compute_losses(
        model, batch, terms, torch.Generator().manual_seed(3), WeakLossOptions(**PAPER)
    )
    n = batch[keys.N_ATOMS].double()
    expected = float(((model.curvature(d1) / n) ** 2).mean())
    assert float(losses["pitc"].detach()) == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["fused", "three_calls"])
def test_second_order_factor_one_half_removes_the_quadratic_residual(mode):
    batch, model, _, _ = _harmonic_setup(eps=0.2)
    options = WeakLossOptions(eps=0.2, k=0.5, mode=mode)
    losses = compute_losses(model, batch, WEAK, torch.Generator().manual_seed(3), options)
    first_order = compute_losses(
        model,
        batch,
        WEAK,
        torch.Generator().manual_seed(3),
        WeakLossOptions(eps=0.2, k=0.0, mode=mode),
    )
    assert float(first_order["pitc"].detach()) > 1e-2
    assert float(losses["pitc"].detach()) < 1e-20 and float(losses["pisc"].detach()) < 1e-20


def test_perturbations_are_fresh_uniform_and_centred_per_structure():
    batch = to_batch(molecules(("CH3CH2OH", "H2O", "CH4")))
    generator = torch.Generator().manual_seed(0)
    d1, d2 = draw_perturbations(batch, 0.05, False, generator)
    assert d1.abs().max() <= 0.05 and d1.abs().max() > 0.04
    assert not torch.allclose(d1, d2)
    e1, _ = draw_perturbations(batch, 0.05, False, generator)
    assert not torch.allclose(d1, e1)  # fresh each call
    c1, c2 = draw_perturbations(batch, 0.05, True, torch.Generator().manual_seed(0))
    for centred, raw in ((c1, d1), (c2, d2)):
        sums = segment_sum(centred, batch[keys.BATCH], 3)
        torch.testing.assert_close(sums, torch.zeros_like(sums), atol=1e-14, rtol=0)
        # centring subtracts only the structure's mean
        mean = segment_sum(raw, batch[keys.BATCH], 3) / batch[keys.N_ATOMS][:, None]
        torch.testing.assert_close(centred, raw - mean[batch[keys.BATCH]])


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("k", [0.0, 0.5])
def test_fused_equals_three_calls_in_float32(name, k):
    torch.manual_seed(0)
    model = build_model(name, cutoff=4.0, n_features=32, n_rbf=16, n_interactions=2)
    batch = to_batch(molecules(("CH3CH2OH", "H2O", "CH4", "C6H6")), dtype=torch.float32)
    batch[keys.ENERGY] = torch.tensor([1.0, -2.0, 0.5, 3.0])
    batch[keys.FORCES] = torch.randn_like(batch[keys.POSITIONS])
    terms = [LossTerm("energy", 1.0), LossTerm("forces", 1.0), *WEAK]
    results = {}
    for mode in ("fused", "three_calls"):
        losses = compute_losses(
            model,
            batch,
            terms,
            torch.Generator().manual_seed(11),
            WeakLossOptions(eps=0.05, k=k, mode=mode),
        )
        grads = torch.autograd.grad(losses["total"], list(model.parameters()))
        results[mode] = (losses, grads)
    fused, three = results["fused"], results["three_calls"]
    assert set(fused[0]) == {"energy", "forces", "pitc", "pisc", "total"}
    for term in fused[0]:
        torch.testing.assert_close(fused[0][term], three[0][term], rtol=2e-5, atol=1e-7)
    assert float(fused[0]["pitc"].detach()) > 0
    scale = max(float(g.abs().max()) for g in three[1])
    for g_fused, g_three in zip(fused[1], three[1], strict=True):
        torch.testing.assert_close(g_fused, g_three, rtol=1e-4, atol=1e-5 * scale)


def test_supervised_terms_by_hand_with_missing_labels():
    batch = to_batch(molecules(("CH3CH2OH", "H2O", "CH4")))
    torch.manual_seed(0)
    model = build_model("schnet", cutoff=4.0, n_features=16, n_rbf=8, dtype="float64")
    energy, forces = energy_and_forces(model, batch)
    reference_energy = energy + torch.tensor([0.3, 0.0, -0.5], dtype=torch.float64)
    reference_energy[1] = float("nan")  # an unlabelled structure
    reference_forces = forces + 0.1
    reference_forces[batch[keys.BATCH] == 2] = float("nan")  # no force labels
    batch.update(
        {
            keys.ENERGY: reference_energy,
            keys.ENERGY_WEIGHT: torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64),
            keys.FORCES: reference_forces,
            keys.FORCE_WEIGHT: torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64),
        }
    )
    terms = [LossTerm("energy", 2.0), LossTerm("forces", 3.0)]
    losses = compute_losses(model, batch, terms)
    assert float(losses["energy"].detach()) == pytest.approx((0.3**2 + 0.5**2) / 2)
    assert float(losses["forces"].detach()) == pytest.approx(0.01)
    assert float(losses["total"].detach()) == pytest.approx(2 * (0.3**2 + 0.5**2) / 2 + 3 * 0.01)
    per_atom = compute_losses(model, batch, [LossTerm("energy", 1.0, per_atom=True)])
    assert float(per_atom["energy"].detach()) == pytest.approx(
        ((0.3 / 9) ** 2 + (0.5 / 5) ** 2) / 2
    )
    params = list(model.parameters())
    grads = torch.autograd.grad(losses["total"], params)
    assert all(torch.isfinite(g).all() for g in grads)


def test_zero_force_weight_needs_no_force_labels_and_weak_losses_need_no_labels():
    batch = to_batch(molecules(("CH3CH2OH", "H2O")))
    model = build_model("painn", cutoff=4.0, n_features=16, n_rbf=8, dtype="float64")
    weak_only = compute_losses(
        model, batch, WEAK, torch.Generator().manual_seed(0), WeakLossOptions(**PAPER)
    )
    assert set(weak_only) == {"pitc", "pisc", "total"}
    batch[keys.ENERGY] = torch.zeros(2, dtype=torch.float64)
    terms = [LossTerm("energy", 1.0), LossTerm("forces", 0.0), *WEAK]
    losses = compute_losses(
        model, batch, terms, torch.Generator().manual_seed(0), WeakLossOptions(**PAPER)
    )
    assert "forces" not in losses and float(losses["total"].detach()) > 0
    with pytest.raises(PilipError, match="forces"):
        compute_losses(model, batch, [LossTerm("forces", 1.0)])
    with pytest.raises(PilipError, match="Generator"):
        compute_losses(model, batch, WEAK, options=WeakLossOptions(**PAPER))


@pytest.mark.parametrize("mode", ["fused", "three_calls"])
def test_losses_under_no_grad_give_the_same_values(mode):
    batch = to_batch(molecules(("CH3CH2OH", "H2O")))
    model = build_model("painn", cutoff=4.0, n_features=16, n_rbf=8, dtype="float64")
    terms = [LossTerm("forces"), *WEAK]
    batch[keys.FORCES] = torch.zeros_like(batch[keys.POSITIONS])
    options = WeakLossOptions(**PAPER, mode=mode)
    with_grad = compute_losses(model, batch, terms, torch.Generator().manual_seed(0), options)
    with torch.no_grad():
        without = compute_losses(model, batch, terms, torch.Generator().manual_seed(0), options)
    assert not without["total"].requires_grad
    torch.testing.assert_close(without["total"], with_grad["total"].detach())


def test_terms_from_names_and_bad_specifications():
    weights = {"energy": 1.0, "forces": 2.0, "pitc": 0.5, "pisc": 0.01}
    terms = make_terms(["energy", "pitc", "pisc"], weights, per_atom=True)
    assert terms == [
        LossTerm("energy", 1.0, True),
        LossTerm("pitc", 0.5, True),
        LossTerm("pisc", 0.01, True),
    ]
    assert make_terms(["energy", "forces"], weights, True)[1] == LossTerm("forces", 2.0, False)
    with pytest.raises(PilipError, match="unknown loss 'pitcc' in --losses"):
        make_terms(["energy", "pitcc"], weights, False)
    for terms, message in (
        ([LossTerm("energy"), LossTerm("energy")], "given twice"),
        ([LossTerm("energy", -1.0)], ">= 0"),
        ([LossTerm("energy", 0.0)], "no loss term with a positive weight"),
        ([LossTerm("forces", 1.0, per_atom=True)], "no per-atom option"),
    ):
        with pytest.raises(PilipError, match=message):
            check_terms(terms)
    batch = to_batch(molecules(("H2O",)))
    model = build_model("schnet", dtype="float64")
    for options, message in (
        (WeakLossOptions(eps=0.05, k=1.5), r"\[0, 1\]"),
        (WeakLossOptions(eps=0.0, k=0.0), "eps"),
        (WeakLossOptions(**PAPER, mode="two"), "mode"),
    ):
        with pytest.raises(PilipError, match=message):
            compute_losses(model, batch, WEAK, torch.Generator(), options)


# operators that make a CUDA device wait for the host (or the host for the device)
SYNCING_OPS = {
    "aten::item",
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "aten::is_nonzero",
    "aten::repeat_interleave",
    "aten::masked_select",
    "aten::unique",
    "aten::_unique2",
    "aten::equal",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_step_with_precomputed_pairs_has_no_host_sync(name):
    # what a CUDA graph capture of the whole step needs; checked on the CPU through the
    # operators that the step dispatches
    from torch.profiler import ProfilerActivity, profile

    model = build_model(name, cutoff=4.0, n_features=16, n_rbf=8)
    batch = to_batch(molecules(("CH3CH2OH", "H2O")), dtype=torch.float32)
    batch[keys.EDGE_INDEX] = molecular_pairs(batch[keys.N_ATOMS])
    batch[keys.ENERGY] = torch.zeros(2)
    generator = torch.Generator().manual_seed(0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        losses = compute_losses(
            model, batch, [LossTerm("energy"), *WEAK], generator, WeakLossOptions(**PAPER)
        )
        losses["total"].backward()  # (AdamW(capturable=True) makes the optimizer step safe)
    names = {event.name for event in prof.events()}
    assert "aten::index_select" in names  # the profile saw the step
    assert not names & SYNCING_OPS
    # without precomputed pairs, the model builds (and prunes) them: that syncs
    del batch[keys.EDGE_INDEX]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        compute_losses(model, batch, WEAK, generator, WeakLossOptions(**PAPER))
    assert {event.name for event in prof.events()} & SYNCING_OPS


def test_auto_mode_gives_the_same_losses_as_both_explicit_modes():
    batch = to_batch(molecules(("CH3CH2OH", "H2O")))
    model = build_model("schnet", cutoff=4.0, n_features=16, n_rbf=8, dtype="float64")
    values = {
        mode: compute_losses(
            model,
            batch,
            WEAK,
            torch.Generator().manual_seed(0),
            WeakLossOptions(**PAPER, mode=mode),
        )["total"].detach()
        for mode in ("auto", "fused", "three_calls")
    }
    torch.testing.assert_close(values["auto"], values["fused"], rtol=1e-12, atol=0)
    torch.testing.assert_close(values["auto"], values["three_calls"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("mode", ["fused", "three_calls"])
def test_float32_weak_losses_match_float64_with_realistic_energy_shifts(name, mode):
    """Totals of ~-4000 eV have a float32 resolution of ~5e-4 eV, far above the weak residuals
    at small eps: the per-element reference must stay out of the residuals (it cancels)."""
    torch.manual_seed(0)
    model32 = build_model(name, cutoff=4.0, n_features=32, n_rbf=16, n_interactions=2)
    shifts = {1: -13.6, 6: -1029.8, 8: -2041.5}  # eV per atom, the size of real ones
    for z, value in shifts.items():
        model32.energy_shift.shift[z] = value
    model32.energy_shift.scale.fill_(0.05)
    model64 = copy.deepcopy(model32).double()
    batch32 = to_batch(molecules(("CH3CH2OH", "H2O", "CH4", "C6H6")), dtype=torch.float32)
    batch64 = {k: (v.double() if v.is_floating_point() else v) for k, v in batch32.items()}
    with torch.no_grad():
        exact = model64(batch64)
    labels = exact + torch.tensor([0.01, -0.02, 0.005, 0.03], dtype=torch.float64)
    assert float(exact.abs().min()) > 100.0  # the totals are large
    terms = [LossTerm("energy", 1.0), *WEAK]
    options = WeakLossOptions(eps=0.005, k=0.0, mode=mode)
    values = {}
    for dtype, model, batch in (
        (torch.float32, model32, batch32),
        (torch.float64, model64, batch64),
    ):
        batch = {**batch, keys.ENERGY: labels.to(dtype)}
        values[dtype] = compute_losses(
            model, batch, terms, torch.Generator().manual_seed(5), options
        )
    for term in ("energy", "pitc", "pisc"):
        expected = float(values[torch.float64][term].detach())
        assert expected > 0
        assert float(values[torch.float32][term].detach()) == pytest.approx(expected, rel=1e-2), (
            term
        )
