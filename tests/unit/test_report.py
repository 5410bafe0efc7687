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
    weak_metrics["model_name"] = "painn"
    weak = results("weak", weak_metrics, md(2))
    energy = results("energy", metrics(0.80, 12.5, ["energy"], 6.04), md(1, failure=0.123))
    out = tmp_path / "results" / "summary.md"
    # the baseline is found by its losses even when it is not listed first
    text = write_summary([weak, energy], out)
    assert out.read_text() == text
    row = _row(text, "weak").split("|")
    cells = [c.strip() for c in row[1:-1]]
    assert cells[1] == "painn"  # the architecture (metrics.json's model_name)
    assert cells[2] == "energy, pitc x1.2, pisc x0.01 (eps 0.01 A, k 0.5)"
    assert cells[3] == "10.00"  # energy RMSE meV/atom
    assert cells[5] == "90.0"  # energy RMSE meV (10 meV/atom x 9 atoms)
    assert cells[6] == "0.250"  # force RMSE eV/A
    assert cells[8] == "3.20"  # 0.80 / 0.25
    assert cells[9] == "2/2 over 1 ps"  # MD stable
    assert cells[10] == "—"  # first failure: none
    assert cells[11:13] == ["n/a", "n/a"]  # an md.json from before h(r) and steps/s
    assert cells[13] == "2.2 min"
    energy_cells = [c.strip() for c in _row(text, "energy").split("|")[1:-1]]
    assert energy_cells[2] == "energy"
    assert energy_cells[8] == "1.00"
    assert energy_cells[13] == "6.0 s"
    assert energy_cells[9:11] == ["1/2 over 1 ps", "0.123"]
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
    assert "| not run | n/a | n/a | n/a |" in text  # no md.json
    assert "MD: Langevin" not in text  # nothing to explain
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
    delta["model_name"] = "mace"
    cheap = metrics(0.45, 9.0, [])
    cheap["recipe"] = "GFN2-xTB (tblite 0.4.0) alone"
    cheap["model_name"] = "painn"  # pilip baseline-model's zero network: no model is trained
    cheap["recipes"] = [{"name": "delta", "alone": True}]
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
    models = {name: _row(text, name).split("|")[2].strip() for name in ("delta", "xtb", "energy")}
    assert models == {"delta": "mace", "xtb": "none", "energy": "n/a"}
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


def test_md_columns_of_the_fu_et_al_protocol(results, tmp_path):
    """h(r) MAE, steps/s and time to first failure from a new md.json; the noise floor said."""
    new = {
        **md(1, n_runs=3, failure=0.0421),
        "hr_mae": 0.01234,
        "hr_mae_reference_halves": 0.0101,
        "steps_per_s": 412.6,
        "median_time_to_failure_ps": None,
    }
    new["settings"].update(temperature=500.0, bond_threshold=0.5)
    stable = {**md(3, n_runs=3), "hr_mae": 0.5, "hr_mae_reference_halves": 0.0101}
    stable["steps_per_s"] = 1999.5
    folders = [
        results("energy", metrics(0.8, 12.0, ["energy"]), new),
        results("delta", metrics(0.3, 4.0, ["energy"]), stable),
    ]
    text = write_summary(folders, tmp_path / "summary.md")
    header = [c.strip() for c in text.splitlines()[4].split("|")[1:-1]]
    assert header[9:13] == ["MD stable", "MD first failure (ps)", "h(r) MAE", "MD steps/s"]
    energy = [c.strip() for c in _row(text, "energy").split("|")[1:-1]]
    delta = [c.strip() for c in _row(text, "delta").split("|")[1:-1]]
    assert len(energy) == len(header) == 16
    assert energy[9:13] == ["1/3 over 1 ps", "0.042", "0.012", "413"]
    assert delta[9:13] == ["3/3 over 1 ps", "—", "0.500", "2000"]
    assert "Langevin NVT at 500.0 K" in text and "more than 0.5 A" in text
    assert "two halves of the test structures differ by 0.010" in text


def test_a_committee_measures_which_differences_one_seed_could_make(results, tmp_path):
    committee = metrics(0.30, 4.0, ["energy"])
    committee["members"] = {"force_rmse": [0.32, 0.34, 0.36], "energy_rmse": [0.04] * 3}
    committee["calibration"] = {
        "scale": 1.7,
        "forces": {"spearman": 0.41, "spearman_ideal": 0.7, "miscalibration_area": 0.21,
                   "miscalibration_area_scaled": 0.08},
        "energy": {"spearman": 0.2},
    }  # fmt: skip
    committee["plots"]["calibration"] = "calibration.png"
    folders = [
        results("energy", metrics(0.80, 12.0, ["energy"])),
        results("finetune", metrics(0.83, 9.0, ["energy"])),  # +0.03: inside 2 x 0.02
        results("weak", metrics(1.60, 27.0, ["energy", "pitc", "pisc"])),
        results("delta", committee),
    ]
    text = write_summary(folders, tmp_path / "summary.md")
    assert "One training run (one seed) per variant" not in text
    assert "The 3 members of **delta** differ only in their seed" in text
    assert "span 0.320-0.360 eV/A (standard deviation 0.020)" in text
    assert "committee, reaches 0.300 eV/A" in text
    assert (
        "Differences in force RMSE from **energy** larger than twice that (0.040 eV/A): weak "
        "+0.800, delta -0.500; within twice that (0.040 eV/A), so possibly one seed's luck: "
        "finetune +0.030"
    ) in text
    assert "Other pairs of runs within twice the spread" not in text  # only finetune is close
    assert "0.41 over the force components (at best 0.70" in text
    assert "0.210 as is, 0.080 after the scale 1.70" in text
    assert "![delta committee calibration](results/delta/calibration.png)" in text
    assert "| energy |" in text and text.count("| n/a |") >= 3  # single models: no calibration
    folders.append(results("student", metrics(0.32, 5.0, ["energy", "forces"])))
    text = write_summary(folders, tmp_path / "summary.md")
    assert "Other pairs of runs within twice the spread: delta and student (0.020)" in text
    # without a committee: the seed noise is not measured, and the summary says how to
    text = write_summary(folders[:3], tmp_path / "single.md")
    assert "One training run (one seed) per variant" in text and "`ensemble: N`" in text


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
