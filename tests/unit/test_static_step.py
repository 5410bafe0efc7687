"""Static-shape training steps: padding changes no loss and no gradient; CUDA graph replay."""

from __future__ import annotations

import pytest
import torch
from model_batches import molecules, to_batch

from pilip import keys
from pilip.potential.data import concat_batches
from pilip.potential.losses import TOTAL, LossTerm, WeakLossOptions, compute_losses
from pilip.potential.models import MODELS, build_model
from pilip.potential.static_step import PAD_NUMBER, StaticShape, StaticStep, batch_shape, pad_batch

TERMS = [
    LossTerm("energy", 1.0, per_atom=True),
    LossTerm("forces", 0.5),
    LossTerm("pitc", 1.2, per_atom=True),
    LossTerm("pisc", 0.01, per_atom=True),
]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def labelled_and_unlabelled() -> dict[str, torch.Tensor]:
    """2 labelled structures (ethanol, water) + 1 unlabelled (methane), float64."""
    labelled = to_batch(molecules(("CH3CH2OH", "H2O")))
    labelled[keys.ENERGY] = torch.tensor([-0.3, 0.2], dtype=torch.float64)
    labelled[keys.FORCES] = torch.randn(labelled[keys.POSITIONS].shape, dtype=torch.float64)
    unlabelled = to_batch(molecules(("CH4",), seed=3))
    return concat_batches(labelled, unlabelled)


def test_padded_batch_has_the_static_shape_and_padding_is_marked():
    batch = labelled_and_unlabelled()
    shape = StaticShape(n_slots=5, max_atoms=9)  # 3 real structures, 2 empty slots
    padded = pad_batch(batch, shape)
    assert padded[keys.POSITIONS].shape == (shape.n_atoms, 3)
    assert padded[keys.N_ATOMS].shape == (shape.n_struct,)
    assert padded[keys.EDGE_INDEX].shape == (2, shape.n_pairs)
    assert int(padded[keys.N_ATOMS].sum()) == shape.n_atoms
    assert padded[keys.STRUCTURE_WEIGHT].tolist() == [1, 1, 1, 0, 0, 0]
    assert padded[keys.ENERGY_WEIGHT].tolist() == [1, 1, 0, 0, 0, 0]
    assert padded[keys.FORCE_WEIGHT].tolist() == [1, 1, 0, 0, 0, 0]
    n_real = batch[keys.POSITIONS].shape[0]
    assert torch.equal(padded[keys.POSITIONS][:n_real], batch[keys.POSITIONS])
    assert (padded[keys.NUMBERS][n_real:] == PAD_NUMBER).all()
    # every pair joins atoms of one structure; pairs of padding atoms are beyond any cutoff
    edges = padded[keys.EDGE_INDEX]
    owner = padded[keys.BATCH]
    assert torch.equal(owner[edges[0]], owner[edges[1]])
    padding_pairs = edges[:, edges[0] >= n_real]
    distance = padded[keys.POSITIONS][padding_pairs[1]] - padded[keys.POSITIONS][padding_pairs[0]]
    assert distance.norm(dim=-1).min() > 100.0
    # a batch that is full still fits, one that is too large does not
    pad_batch(batch, StaticShape(n_slots=3, max_atoms=9))
    with pytest.raises(ValueError, match="does not fit"):
        pad_batch(batch, StaticShape(n_slots=2, max_atoms=9))
    with pytest.raises(ValueError, match="does not fit"):
        pad_batch(batch, StaticShape(n_slots=3, max_atoms=8))


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("mode", ["fused", "three_calls"])
def test_padding_changes_no_loss_and_no_gradient(name, mode):
    torch.manual_seed(0)
    model = build_model(name, cutoff=4.0, n_features=16, n_rbf=8, n_interactions=2, dtype="float64")
    batch = labelled_and_unlabelled()
    options = WeakLossOptions(eps=0.02, k=0.5, mode=mode)
    results = []
    for b in (batch, pad_batch(batch, StaticShape(n_slots=5, max_atoms=10))):
        # on a CPU generator the first atoms draw the same perturbations, padded or not
        losses = compute_losses(model, b, TERMS, torch.Generator().manual_seed(4), options)
        grads = torch.autograd.grad(losses[TOTAL], list(model.parameters()))
        results.append((losses, grads))
    (plain, plain_grads), (padded, padded_grads) = results
    assert set(plain) == set(padded) == {"energy", "forces", "pitc", "pisc", TOTAL}
    for term in plain:
        assert float(plain[term].detach()) > 0
        # rtol: the weak residuals (~1e-8 eV here) are differences of sums of ~1 eV
        torch.testing.assert_close(padded[term], plain[term], rtol=1e-6, atol=0.0)
    for a, b in zip(plain_grads, padded_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-12)


def test_static_step_without_capture_leaves_the_gradients_of_the_plain_step():
    torch.manual_seed(0)
    model = build_model("painn", cutoff=4.0, n_features=16, n_rbf=8, n_interactions=1)
    model.double()
    batch = labelled_and_unlabelled()
    options = WeakLossOptions(eps=0.02, k=0.5, mode="fused")
    losses = compute_losses(model, batch, TERMS, torch.Generator().manual_seed(9), options)
    losses[TOTAL].backward()
    expected = [p.grad.clone() for p in model.parameters()]
    step = StaticStep(model, TERMS, options, torch.Generator().manual_seed(9), capture=False)
    shape = batch_shape(max_atoms=9, batch_size=4, n_train=100, unlabelled_batch_size=1)
    got = step(pad_batch(batch, shape))
    torch.testing.assert_close(got[TOTAL], losses[TOTAL].detach(), rtol=1e-10, atol=0.0)
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-8, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replays_fresh_perturbations_and_matches_the_eager_step():
    """Replays read the default CUDA generator as it stands: the same seed gives the eager
    step's losses and gradients, another seed other perturbations; new inputs are used."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model("painn", cutoff=4.0, n_features=16, n_rbf=8, n_interactions=2)
    model = model.double().to(device)
    batch = labelled_and_unlabelled()
    shape = StaticShape(n_slots=4, max_atoms=9)
    padded = pad_batch(batch, shape)
    generator = torch.cuda.default_generators[torch.cuda.current_device()]
    options = WeakLossOptions(eps=0.02, k=0.5, mode="fused")
    graphed = StaticStep(model, TERMS, options, generator, capture=True)
    eager = StaticStep(model, TERMS, options, generator, capture=False)
    graphed(padded)  # capture

    def run(step, seed, moved=0.0):
        generator.manual_seed(seed)
        inputs = dict(padded)
        inputs[keys.POSITIONS] = padded[keys.POSITIONS] + moved
        losses = {k: v.clone() for k, v in step(inputs).items()}
        return losses, [p.grad.clone() for p in model.parameters()]

    replay, replay_grads = run(graphed, 7)
    plain, plain_grads = run(eager, 7)
    for term in plain:
        torch.testing.assert_close(replay[term], plain[term], rtol=1e-9, atol=1e-14)
    for a, b in zip(replay_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)
    other, _ = run(graphed, 8)
    assert not torch.equal(other["pitc"], replay["pitc"])
    torch.testing.assert_close(other["energy"], replay["energy"], rtol=1e-12, atol=0.0)
    moved, _ = run(graphed, 7, moved=0.01)
    assert not torch.equal(moved["energy"], replay["energy"])  # the new inputs were read


@pytest.mark.parametrize("mode", ["fused", "three_calls"])
def test_padded_step_dispatches_no_host_sync(mode):
    """What a CUDA graph capture needs, checked on the CPU through the dispatched operators:
    every term (weights, per-atom, forces, k = 0.5) on a padded batch."""
    from test_losses import SYNCING_OPS
    from torch.profiler import ProfilerActivity, profile

    model = build_model("painn", cutoff=4.0, n_features=16, n_rbf=8, n_interactions=1)
    batch = labelled_and_unlabelled()
    padded = pad_batch(
        {k: (v.float() if v.is_floating_point() else v) for k, v in batch.items()},
        StaticShape(n_slots=4, max_atoms=9),
    )
    options = WeakLossOptions(eps=0.02, k=0.5, mode=mode)
    generator = torch.Generator().manual_seed(0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        losses = compute_losses(model, padded, TERMS, generator, options)
        losses[TOTAL].backward()
    names = {event.name for event in prof.events()}
    assert "aten::index_select" in names  # the profile saw the step
    assert not names & SYNCING_OPS


def test_a_failed_capture_falls_back_to_the_eager_padded_step():
    """On a machine without CUDA the capture fails: one message, then the same losses as the
    eager padded step, call after call."""
    if torch.cuda.is_available():
        pytest.skip("the capture would succeed here")
    torch.manual_seed(0)
    model = build_model("schnet", cutoff=4.0, n_features=16, n_rbf=8, n_interactions=1)
    model.double()
    padded = pad_batch(labelled_and_unlabelled(), StaticShape(n_slots=4, max_atoms=9))
    options = WeakLossOptions(eps=0.02, k=0.5, mode="fused")
    messages: list[str] = []
    graphed = StaticStep(
        model, TERMS, options, torch.Generator().manual_seed(2), True, messages.append
    )
    eager = StaticStep(model, TERMS, options, torch.Generator().manual_seed(2), False)
    for _ in range(2):
        got, expected = graphed(padded), eager(padded)
        for term in expected:
            torch.testing.assert_close(got[term], expected[term], rtol=1e-12, atol=0.0)
    assert len(messages) == 1 and "CUDA graph capture failed" in messages[0]
    assert not graphed.capture
