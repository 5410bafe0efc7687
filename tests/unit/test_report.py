"""pilip report: rows, numbers, ratio and links from fake metrics.json / md.json files."""

import json

import pytest

from pilip.cli import main
from pilip.report import choose_baseline, load_variant, write_summary


def metrics(force_rmse, energy_rmse_mev, losses, train_time=95.0, per_element=None):
    return {
        "energy_rmse": energy_rmse_mev * 9 / 1000,
        "energy_mae": 0.8 * energy_rmse_mev * 9 / 1000,
        "energy_rmse_mev_per_atom": energy_rmse_mev,
        "energy_mae_mev_per_atom": 0.8 * energy_rmse_mev,
        "force_rmse": force_rmse,
        "force_mae": 0.7 * force_rmse,
        "force_rmse_per_element": per_element or {"H": force_rmse, "O": 2 * force_rmse},
        "n_energy": 12,
        "n_force_structures": 4,
        "n_force_components": 84,
        "energy_reference": ["mp2_cbs"],
        "force_reference": ["mp2_dz"],
        "losses": losses,
        "train_time_s": train_time,
        "epochs": 40,
        "dataset": "datasets/mp2_cbs.parquet",
        "plots": {
            "parity_energy": "parity_energy.png",
            "parity_forces": "parity_forces.png",
            "learning_curve": "learning_curve.png",
        },
        "units": {},
    }


def md(n_stable, n_runs=2, failure=None):
    return {
        "n_runs": n_runs,
        "n_stable": n_stable,
        "min_time_to_failure_ps": failure,
        "settings": {"steps": 2000, "timestep": 0.5},
    }


@pytest.fixture
def results(tmp_path):
    def make(name, m, md_summary=None):
        folder = tmp_path / "results" / name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(m))
        if md_summary is not None:
            (folder / "md.json").write_text(json.dumps(md_summary))
        return folder

    return make


def _row(text, name):
    return next(line for line in text.splitlines() if line.startswith(f"| {name} |"))


def test_summary_table_rows_and_ratio(results, tmp_path):
    weak_metrics = metrics(0.25, 10.0, ["energy", "pitc", "pisc"], 130.0)
    weak_metrics.update(loss_weights={"energy": 1.0, "pitc": 1.2, "pisc": 0.01}, weak_eps=0.01)
    weak_metrics["weak_k"] = 0.5
    weak = results("weak", weak_metrics, md(2))
    energy = results("energy", metrics(0.80, 12.5, ["energy"], 6.04), md(1, failure=0.123))
    out = tmp_path / "results" / "summary.md"
    # the baseline is found by its losses even when it is not listed first
    text = write_summary([weak, energy], out)
    assert out.read_text() == text
    row = _row(text, "weak").split("|")
    cells = [c.strip() for c in row[1:-1]]
    assert cells[1] == "energy, pitc x1.2, pisc x0.01 (eps 0.01 A, k 0.5)"
    assert cells[2] == "10.00"  # energy RMSE meV/atom
    assert cells[4] == "90.0"  # energy RMSE meV (10 meV/atom x 9 atoms)
    assert cells[5] == "0.250"  # force RMSE eV/A
    assert cells[7] == "3.20"  # 0.80 / 0.25
    assert cells[8] == "2/2 stable over 1 ps"
    assert cells[9] == "2.2 min"
    energy_cells = [c.strip() for c in _row(text, "energy").split("|")[1:-1]]
    assert energy_cells[1] == "energy"
    assert energy_cells[7] == "1.00"
    assert energy_cells[9] == "6.0 s"
    assert "1/2 stable over 1 ps; first failure at 0.123 ps" == energy_cells[8]
    assert "ratio energy/weak = **3.20**" in text
    assert "3.20x more accurate" in text
    assert "energy RMSE 12.50 -> 10.00 meV/atom" in text
    # per-element table and relative plot links
    assert "| weak | 0.250 | 0.500 |" in text
    assert "![weak force parity](weak/parity_forces.png)" in text
    assert "Baseline: **energy**" in text and "4 structures with reference forces" in text


def test_a_variant_that_makes_forces_worse_is_said_so(results, tmp_path):
    energy = results("energy", metrics(0.50, 12.0, ["energy"]))
    weak = results("weak", metrics(0.80, 12.0, ["energy", "pitc"]))
    text = write_summary([energy, weak], tmp_path / "summary.md")
    assert "ratio energy/weak = **0.62**" in text
    assert "1.60x LESS accurate" in text and "did not help" in text
    assert "| not run |" in text  # no md.json
    assert "![weak energy parity](results/weak/parity_energy.png)" in text


def test_a_ratio_that_rounds_to_one_is_no_difference(results, tmp_path):
    """0.914 vs 0.915 eV/A reads 1.00 in the table: the sentence must not call it less accurate."""
    energy = results("energy", metrics(0.914, 12.0, ["energy"]))
    weak = results("weak", metrics(0.915, 12.0, ["energy", "pitc"]))
    text = write_summary([energy, weak], tmp_path / "summary.md")
    assert "ratio energy/weak = **1.00**" in text
    assert "no difference in the forces at this precision" in text
    assert "LESS" not in text and "more accurate" not in text


def test_explicit_baseline_and_errors(results, tmp_path, capsys):
    a = results("a", metrics(0.4, 5.0, ["energy", "pitc"]))
    b = results("b", metrics(0.2, 5.0, ["energy", "pisc"]))
    variants = [load_variant(a), load_variant(b)]
    assert choose_baseline(variants).name == "a"  # no energy-only variant: the first
    assert choose_baseline(variants, "b").name == "b"
    out = tmp_path / "summary.md"
    assert main(["report", "--results", str(a), str(b), "-o", str(out), "--baseline", "c"]) == 2
    assert "--baseline 'c'" in capsys.readouterr().err
    assert main(["report", "--results", str(a), str(tmp_path / "none"), "-o", str(out)]) == 2
    assert "none/metrics.json: no such file" in capsys.readouterr().err
    assert not out.exists()
    assert main(["report", "--results", str(a), str(b), "-o", str(out), "--baseline", "b"]) == 0
    assert "ratio b/a = **0.50**" in out.read_text()


def test_recipes_are_named_and_the_plain_energy_run_is_the_baseline(results, tmp_path):
    delta = metrics(0.20, 5.0, ["energy"])
    delta["recipe"] = "Delta over GFN2-xTB (tblite 0.4.0)"
    cheap = metrics(0.45, 9.0, [])
    cheap["recipe"] = "GFN2-xTB (tblite 0.4.0) alone"
    dirs = [
        results("delta", delta),
        results("xtb", cheap),
        results("energy", metrics(0.80, 12.0, ["energy"])),
    ]
    text = write_summary(dirs, tmp_path / "summary.md")
    assert "Baseline: **energy**" in text  # not the Delta run, though its losses are energy
    assert _row(text, "delta").split("|")[-2].strip() == "Delta over GFN2-xTB (tblite 0.4.0)"
    assert _row(text, "xtb").split("|")[-2].strip() == "GFN2-xTB (tblite 0.4.0) alone"
    assert _row(text, "energy").split("|")[-2].strip() == "plain"
    assert "ratio energy/delta = **4.00**" in text


def test_the_reference_run_comes_first_and_a_recipe_worse_than_its_cheap_level_is_named(
    results, tmp_path
):
    cheap = metrics(0.44, 9.0, [])
    cheap["recipes"] = [{"name": "delta", "alone": True, "baseline": {}}]
    cheap["recipe"] = "GFN2-xTB (tblite 0.8.0) alone"
    delta = {**metrics(0.52, 3.0, ["energy"]), "recipe": "Delta over GFN2-xTB"}
    folders = [
        results("delta", delta),
        results("energy", metrics(1.90, 18.0, ["energy"])),
        results("finetune", metrics(0.35, 4.0, ["energy"])),
        results("cheap_level", cheap),
    ]
    text = write_summary(folders, tmp_path / "summary.md")
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    # the reference run first, the rest in the order given (the config's, in the workflow)
    assert rows[1:5] == ["energy", "delta", "finetune", "cheap_level"]
    assert "**delta**'s forces (0.520 eV/A) are worse than the cheap level alone" in text
    assert "**finetune**'s forces" not in text and "**energy**'s forces (1.900" in text


def test_a_student_is_shown_beside_its_teacher_with_md_steps_per_second(results, tmp_path):
    delta = {**metrics(0.16, 3.0, ["energy"]), "model": "models/delta/model.pt"}
    delta["recipes"] = [{"name": "delta", "baseline": {}}]
    student = metrics(0.18, 3.5, ["energy", "forces"])
    student["model"] = "models/distilled/model.pt"
    student["recipes"] = [
        {"name": "distilled", "teacher": {"path": "models/./delta/model.pt", "recipe": "Delta"}}
    ]

    def timed(steps, seconds):  # md.json of pilip md: no steps_per_s key, runs with times
        runs = [{"steps_done": steps, "wall_time_s": seconds}] * 2
        return {**md(2), "runs": runs}

    folders = [
        results("energy", metrics(0.80, 12.0, ["energy"]), md(2)),
        results("delta", delta, timed(2000, 16.0)),
        results("distilled", student, timed(2000, 8.0)),
    ]
    text = write_summary(folders, tmp_path / "summary.md")
    assert "## Teachers and students" in text
    row = next(line for line in text.splitlines() if line.startswith("| distilled | delta |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[2:] == ["0.180 / 0.160", "1.12", "3.50 / 3.00", "250 (2.0x the teacher's) / 125"]
    # a teacher over a baseline from labels tables has no MD; a summary without students has
    # no such section; an md.json with steps_per_s is read as it says
    delta["recipes"][0]["tabled"] = True
    (tmp_path / "results" / "delta" / "metrics.json").write_text(json.dumps(delta))
    (tmp_path / "results" / "delta" / "md.json").unlink()
    (tmp_path / "results" / "distilled" / "md.json").write_text(
        json.dumps({**md(2), "steps_per_s": 300.0})
    )
    text = write_summary(folders, tmp_path / "summary.md")
    row = next(line for line in text.splitlines() if line.startswith("| distilled | delta |"))
    assert row.endswith("| 300 / cannot run MD (baseline from labels tables) |")
    assert "Teachers and students" not in write_summary(folders[:2], tmp_path / "s.md")
