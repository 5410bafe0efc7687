"""pilip distill: a teacher labels a pool, a standalone student learns it."""

from __future__ import annotations

import numpy as np
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
