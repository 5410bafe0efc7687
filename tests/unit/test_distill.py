"""pilip distill: a teacher labels a pool, a standalone student learns it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from test_multifidelity import write_water
from test_tabled_baseline import LEVEL, write_labels

from pilip import keys, tables
from pilip.cli import main
from pilip.potential.checkpoint import load_model, read_checkpoint
from pilip.potential.data import load_dataset
from pilip.potential.distill import POOL_FILE
from pilip.potential.evaluate import predict
from pilip.potential.models.common import ShiftedEnergyModel

pytest.importorskip("tblite")
torch.set_num_threads(1)
TINY = ["--n-features", "8", "--n-interactions", "1", "--cutoff", "4.0", "--no-progress"]


@pytest.fixture
def teacher(tmp_path):
    """A Delta-over-GFN2-xTB teacher trained on a small water dataset."""
    dataset = write_water(tmp_path / "water.parquet", n_train=8, n_val=4, n_test=3)
    run = tmp_path / "teacher"
    args = ["train", str(dataset), "--out", str(run), *TINY, "--epochs", "2", "--baseline",
            "gfn2-xtb", "--dtype", "float64"]  # fmt: skip
    assert main(args) == 0
    return dataset, run / "model.pt"


def test_the_student_learns_the_teachers_labels_and_needs_no_baseline(teacher, tmp_path):
    dataset, teacher_path = teacher
    student = tmp_path / "student"
    args = ["distill", str(teacher_path), str(dataset), "--out", str(student), *TINY,
            "--epochs", "30", "--lr", "5e-3", "--dtype", "float64"]  # fmt: skip
    assert main(args) == 0
    # the pool: the dataset's train and val rows (test and force-validation rows left out),
    # labelled with the teacher's energies and forces
    pool = tables.read_table(student / POOL_FILE, kind="dataset")
    assert sorted(set(pool.column(keys.SPLIT).to_pylist())) == ["train", "val"]
    assert pool.num_rows == 12
    model, _ = load_model(teacher_path)
    data = load_dataset(student / POOL_FILE, forces=True)
    energy, forces = predict(model, data["train"], torch.device("cpu"), forces=True)
    np.testing.assert_allclose(data["train"].energy.numpy(), energy, atol=1e-9)
    np.testing.assert_allclose(data["train"].forces.numpy(), forces, atol=1e-9)
    # the student is a plain model that records its teacher
    meta = read_checkpoint(student / "model.pt")["meta"]
    (record,) = meta["recipes"]
    assert record["name"] == "distilled" and record["pool"] == [str(dataset)]
    assert record["teacher"]["recipe"].startswith("Delta over GFN2-xTB")
    assert meta["config"]["losses"] == ["energy", "forces"]
    student_model, _ = load_model(student / "model.pt")
    assert isinstance(student_model, ShiftedEnergyModel)  # no baseline at run time
    # on the pool's validation rows it reproduces the teacher within its recorded error
    val = load_dataset(student / POOL_FILE)["val"]
    predicted, _ = predict(student_model, val, torch.device("cpu"))
    rmse = float(np.sqrt(np.mean((predicted - val.energy.numpy()) ** 2)))
    assert rmse == pytest.approx(meta["val_energy_rmse"], rel=1e-6)
    # the student trained: its force error against the teacher fell below the teacher's spread
    _, student_forces = predict(student_model, data["train"], torch.device("cpu"), forces=True)
    error = float(np.sqrt(np.mean((student_forces - forces) ** 2)))
    assert error < float(np.sqrt(np.mean((forces - forces.mean()) ** 2)))
    out = tmp_path / "md"
    assert main(["md", str(student / "model.pt"), str(dataset), "--out", str(out),
                 "--steps", "2", "--device", "cpu"]) == 0  # fmt: skip
    # a rerun reuses the pool's labels (and resumes the finished student)
    stamp = (student / POOL_FILE).stat().st_mtime_ns
    assert main(args) == 0
    assert (student / POOL_FILE).stat().st_mtime_ns == stamp


def test_a_tabled_teacher_distils_from_its_labels(tmp_path, capsys):
    dataset = write_water(tmp_path / "water.parquet", n_train=8, n_val=4, n_test=3)
    table = write_labels(dataset, tmp_path / "dft.parquet")
    run = tmp_path / "teacher"
    assert main(["train", str(dataset), "--out", str(run), *TINY, "--epochs", "2",
                 "--baseline", LEVEL, "--baseline-labels", str(table)]) == 0  # fmt: skip
    student = tmp_path / "student"
    base = ["distill", str(run / "model.pt"), str(dataset), "--out", str(student), *TINY,
            "--epochs", "2"]  # fmt: skip
    capsys.readouterr()
    assert main(base) == 2
    assert "pass its labels of the pool with --baseline-labels" in capsys.readouterr().err
    partial = write_labels(dataset, tmp_path / "part.parquet", skip=3)
    assert main([*base, "--baseline-labels", str(partial)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the pool's note
    assert err.startswith("pilip distill: error: 3 of the 12 pool structures have no")
    assert not (student / POOL_FILE).exists()
    assert main([*base, "--baseline-labels", str(table)]) == 0
    assert read_checkpoint(student / "model.pt")["meta"]["recipes"][0]["name"] == "distilled"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--model", "transformer"], "invalid choice"),
        (["--out", "{teacher_dir}"], "cannot distil from itself"),
        (["--elements-pool"], "not trained on"),
    ],
)
def test_bad_distillation_input_is_one_line_before_any_work(
    teacher, tmp_path, capsys, extra, words
):
    dataset, teacher_path = teacher
    pool = dataset
    if extra == ["--elements-pool"]:
        pool = write_water(tmp_path / "uranium.parquet", numbers=(92, 1, 1))
        extra = []
    extra = [e.format(teacher_dir=teacher_path.parent) for e in extra]
    out = tmp_path / "student"
    args = ["distill", str(teacher_path), str(pool), "--out", str(out), *TINY, "--epochs", "1"]
    capsys.readouterr()
    with_out = args[:4] + extra[1:] if extra[:1] == ["--out"] else [*args, *extra]
    try:
        code = main(with_out)
    except SystemExit as exit_:  # argparse refuses an unknown --model choice
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert words in err
    assert not (out / POOL_FILE).exists()


def test_a_variant_with_recipe_settings_is_refused_for_the_student(teacher, tmp_path, capsys):
    dataset, teacher_path = teacher
    config = tmp_path / "c.yaml"
    config.write_text("training:\n  variants:\n    d: {baseline: gfn2-xtb}\n")
    out = tmp_path / "student"
    args = ["distill", str(teacher_path), str(dataset), "--out", str(out), *TINY,
            "--config", str(config), "--variant", "d"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 2
    assert "the student takes no recipe settings" in capsys.readouterr().err
    assert not (out / POOL_FILE).exists()


def _first_epoch(run):
    import csv

    with open(run / "metrics.csv") as handle:
        return next(csv.DictReader(handle))


def test_the_student_also_fits_the_teachers_reference_energies_at_a_weight(teacher, tmp_path):
    dataset, teacher_path = teacher
    base = ["distill", str(teacher_path), str(dataset), *TINY, "--epochs", "1",
            "--dtype", "float64"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    # the teacher's checkpoint records its training set: W alone finds it
    assert main([*base, "--out", str(tmp_path / "weighted"), "--reference-weight", "2"]) == 0
    plain = read_checkpoint(tmp_path / "plain" / "model.pt")["meta"]
    weighted = read_checkpoint(tmp_path / "weighted" / "model.pt")["meta"]
    record = weighted["recipes"][0]["reference"]
    assert record["dataset"] == str(dataset) and record["weight"] == 2.0
    assert record["n_structures"] == 8  # the teacher's train split, energies only
    assert "reference" not in plain["recipes"][0]
    assert weighted["n_train"] == plain["n_train"] + 8
    # the student's energies stand for the teacher's reference (no mismatch warning)
    assert weighted["reference"] == read_checkpoint(teacher_path)["meta"]["reference"]
    # the same seed and pool: the extra rows change the losses of the first epoch
    assert _first_epoch(tmp_path / "weighted") != _first_epoch(tmp_path / "plain")


def test_a_student_variant_takes_its_weight_from_the_config_and_pilip_train_refuses_it(
    teacher, tmp_path, capsys
):
    dataset, teacher_path = teacher
    config = tmp_path / "c.yaml"
    config.write_text(
        "training:\n  variants:\n    d: {baseline: gfn2-xtb}\n"
        "    s: {teacher: d, reference_weight: 0.5, epochs: 1}\n"
    )
    out = tmp_path / "student"
    args = ["distill", str(teacher_path), str(dataset), "--out", str(out), *TINY, "--config",
            str(config), "--variant", "s", "--reference-dataset", str(dataset)]  # fmt: skip
    assert main(args) == 0
    meta = read_checkpoint(out / "model.pt")["meta"]
    assert meta["recipes"][0]["reference"]["weight"] == 0.5
    assert meta["config"]["losses"] == ["energy", "forces"] and meta["config"]["epochs"] == 1
    capsys.readouterr()
    train = ["train", str(dataset), "--out", str(tmp_path / "t"), "--config", str(config),
             "--variant", "s", *TINY]  # fmt: skip
    assert main(train) == 2
    err = capsys.readouterr().err.strip()
    assert "training.variants.s is a distilled student" in err and "pilip distill" in err
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--reference-weight", "-1"], "--reference-weight -1.0: must be a finite number >= 0"),
        (["--reference-weight", "nan"], "must be a finite number"),
        (["--reference-dataset", "{dataset}"], "give --reference-weight W > 0"),
        (["--reference-weight", "1", "--reference-dataset", "nothere.parquet"], "not here"),
        (["--reference-weight", "1", "--moved"], "(recorded in"),
        (["--reference-weight", "1", "--reference-dataset", "{other}"], "energies of y, but"),
    ],
)
def test_a_bad_reference_weight_or_dataset_is_one_line_before_any_work(
    teacher, tmp_path, capsys, extra, words
):
    dataset, teacher_path = teacher
    pool = tmp_path / "pool.parquet"
    pool.write_bytes(dataset.read_bytes())
    other = write_water(tmp_path / "other.parquet", n_train=3, n_val=1)
    table = tables.read_table(other, kind="dataset")
    reference = table.schema.get_field_index(keys.REFERENCE)
    table = table.set_column(reference, keys.REFERENCE, pa.array(["y"] * table.num_rows))
    tables.write_table(table, other, "dataset", {"command": "test"})
    if "--moved" in extra:
        dataset.rename(tmp_path / "moved.parquet")
        extra = [e for e in extra if e != "--moved"]
    extra = [e.format(dataset=pool, other=other) for e in extra]
    out = tmp_path / "student"
    args = ["distill", str(teacher_path), str(pool), "--out", str(out), *TINY, "--epochs", "1"]
    capsys.readouterr()
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("pilip distill: error:") and words in err
    assert not (out / POOL_FILE).exists()


def test_the_teachers_md_frames_are_a_pool_without_their_starts_and_failing_frames(
    teacher, tmp_path
):
    import json

    from pilip.potential.distill import read_frames

    dataset, teacher_path = teacher
    md = tmp_path / "md"
    assert main(["md", str(teacher_path), str(dataset), "--out", str(md), "--steps", "20",
                 "--trajectory-interval", "5", "--device", "cpu"]) == 0  # fmt: skip
    notes = []
    frames = read_frames(md / "md.extxyz", notes.append)
    assert frames.num_rows == 4  # steps 5, 10, 15, 20 of the one run; step 0 is a test row
    assert "1 start left out" in notes[0]
    params = [json.loads(p) for p in frames.column(keys.GENERATOR_PARAMS).to_pylist()]
    assert [p["step"] for p in params] == [5, 10, 15, 20]
    # a run that failed at step 20 (md.json says so): its failing frame is left out too
    summary = json.loads((md / "md.json").read_text())
    summary["runs"][0].update(stable=False, steps_done=20)
    (md / "md.json").write_text(json.dumps(summary))
    assert read_frames(md / "md.extxyz", notes.append).num_rows == 3
    # the frames are a pool: the teacher labels them, the student trains on them
    student = tmp_path / "student"
    assert main(["distill", str(teacher_path), str(md / "md.extxyz"), str(dataset), "--out",
                 str(student), *TINY, "--epochs", "1"]) == 0  # fmt: skip
    pool = tables.read_table(student / POOL_FILE, kind="dataset")
    assert pool.num_rows == 3 + 12


def test_reference_rows_weigh_w_in_the_energy_loss_and_nothing_in_the_forces_loss():
    """What --reference-weight W means: each reference energy's squared error counts W times
    a pool energy's in the energy term's weighted mean; its (absent) forces count nothing."""
    from pilip.potential.data import structures_from_arrays
    from pilip.potential.losses import Evaluations, LossTerm, energy_term, forces_term
    from pilip.potential.recipes.distilled import with_reference
    from pilip.potential.static_step import batch_shape, pad_batch
    from pilip.potential.train_config import TrainConfig

    rng = np.random.default_rng(1)
    z = np.array([8, 1, 1])
    positions = [rng.normal(size=(3, 3)) for _ in range(3)]
    pool_forces = [rng.normal(size=(3, 3)) for _ in range(2)]
    pool = structures_from_arrays([z, z], positions[:2], np.array([1.0, 2.0]), pool_forces)
    reference = structures_from_arrays([z], positions[2:], np.array([3.0]))
    joined = with_reference(pool, reference, 2.5)
    assert torch.equal(joined.positions, torch.from_numpy(np.concatenate(positions)))
    batch = joined.batch(torch.tensor([2, 0, 1]))  # reference row first: order does not matter
    options = TrainConfig().weak_options()
    ev = Evaluations(energy_a=torch.tensor([2.0, 1.5, 2.0], dtype=torch.float64),
                     forces_a=torch.zeros((9, 3), dtype=torch.float64))  # fmt: skip
    energy = energy_term(ev, batch, LossTerm("energy"), options)
    assert float(energy) == pytest.approx((2.5 * 1.0**2 + 0.5**2 + 0.0) / (2.5 + 1 + 1))
    forces = forces_term(ev, batch, LossTerm("forces"), options)
    assert float(forces) == pytest.approx(float(np.mean(np.concatenate(pool_forces) ** 2)))
    # the padded step (static shapes) sees the same weights
    padded = pad_batch(batch, batch_shape(3, 4, 3))
    n_atoms = padded["positions"].shape[0]
    ev_padded = Evaluations(
        energy_a=torch.cat([ev.energy_a, torch.zeros(len(padded["n_atoms"]) - 3)]),
        forces_a=torch.zeros((n_atoms, 3), dtype=torch.float64),
    )
    assert float(energy_term(ev_padded, padded, LossTerm("energy"), options)) == pytest.approx(
        float(energy)
    )


def test_a_pool_file_rewritten_in_place_is_labelled_again(teacher, tmp_path):
    """The teacher's MD is rerun into the same md.extxyz: the student's pool is relabelled."""
    dataset, teacher_path = teacher
    md = tmp_path / "md"
    run_md = ["md", str(teacher_path), str(dataset), "--out", str(md), "--steps", "10",
              "--trajectory-interval", "5", "--device", "cpu"]  # fmt: skip
    assert main(run_md) == 0
    student = tmp_path / "student"
    args = ["distill", str(teacher_path), str(md / "md.extxyz"), str(dataset), "--out",
            str(student), *TINY, "--epochs", "1", "--restart-if-changed"]  # fmt: skip
    assert main(args) == 0
    before = tables.read_table(student / POOL_FILE, kind="dataset").column(keys.ID).to_pylist()
    assert main([*run_md[:-4], "--seed", "7", *run_md[-4:]]) == 0  # other frames, same file
    assert main(args) == 0
    after = tables.read_table(student / POOL_FILE, kind="dataset").column(keys.ID).to_pylist()
    assert len(after) == len(before) and after != before
