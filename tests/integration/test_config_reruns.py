"""Config edits rerun exactly the jobs that read the edited settings (issue 11, defect 1), a
user's --configfile replaces the repository's config.yaml and --config overrides reach the
commands (issue 14, defects 2 and 3).

One cheap study (two molecules, GFN2-xTB labels, a one-epoch SchNet) runs once; every test
then edits a copy of its config and reads the jobs `snakemake -n` plans.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from workflow_helpers import dry_run_jobs, snakemake, write_config

pytest.importorskip("tblite")
pytestmark = [pytest.mark.workflow, pytest.mark.slow]

STUDY = {
    "systems": {"water": {"seed": "H2O"}, "ethanol": {"seed": "CH3CH2OH"}},
    "sampling": {"seed": 3, "generators": [{"kind": "rattle", "n": 5, "amplitude": 0.03}]},
    "references": {"xtb": {"backend": "xtb", "method": "GFN2-xTB"}},
    "labelling": {"reference": "xtb", "chunk_size": 4},
    "splits": {"train": 0.5, "val": 0.25, "test": 0.25},
    "force_validation": {"reference": "xtb", "per_system": 1},
    "training": {
        "model": "schnet",
        "model_params": {"n_features": 8, "n_interactions": 1, "cutoff": 4.0},
        "epochs": 1,
        "minutes": None,
        "batch_size": 4,
        "threads": 1,
    },
    "md": {"steps": 5, "trajectory_interval": 5, "threads": 2},  # 2 runs side by side
}

RUNS = ("energy", "weak")
TRAINED = {f"{rule}[run={run}]" for rule in ("train", "evaluate", "md") for run in RUNS} | {
    "report"
}
# the cheap level alone (cheap_level is on by default): rebuilt from the dataset and its labels
CHEAP_ROW = {"baseline_model", "evaluate[run=cheap_level]", "md[run=cheap_level]"}
COLLECTED = {"collect[reference=xtb]"} | TRAINED | CHEAP_ROW
FORCE_VALIDATED = {"force_validation_subset", "label_force_validation[reference=xtb]"} | COLLECTED


def cheap_labels(*systems):
    return {f"label_cheap[system={s}, pool=sampled]" for s in systems}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("reruns")
    write_config(root, STUDY)
    proc = snakemake(root, "--cores", "2", "--configfile", "config.yaml")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert dry_run_jobs(root, "--configfile", "config.yaml") == set()
    return root


def edited(root, edit) -> set[str]:
    """The jobs planned after ``edit(config)``; the config file is restored afterwards."""
    config = copy.deepcopy(STUDY)
    edit(config)
    write_config(root, config)
    try:
        return dry_run_jobs(root, "--configfile", "config.yaml")
    finally:
        write_config(root, STUDY)


def test_edits_that_change_no_setting_rerun_nothing(study):
    def placement(config):
        config["training"].update(threads=2, mem_mb=3000, runtime=30, device="cpu")
        config["labelling"].update(threads=2, mem_mb=3000, runtime=30)
        config["training"]["checkpoint_interval_s"] = 5.0
        config["md"]["threads"] = 1  # pilip md --jobs: the same runs

    assert edited(study, placement) == set()
    text = yaml.safe_dump(STUDY, sort_keys=False)
    (study / "config.yaml").write_text("# a comment\n" + text.replace("\n", "  # note\n", 3))
    try:
        assert dry_run_jobs(study, "--configfile", "config.yaml") == set()
    finally:
        write_config(study, STUDY)


def test_sampling_edit_reruns_every_system_from_sampling_on(study):
    def edit(config):
        config["sampling"]["generators"][0]["amplitude"] = 0.02

    expected = {f"{rule}[system={s}]" for rule in ("sample", "chunk") for s in ("water", "ethanol")}
    expected |= cheap_labels("water", "ethanol")
    assert edited(study, edit) == expected | FORCE_VALIDATED


def test_system_edit_reruns_only_that_system(study):
    def edit(config):
        config["systems"]["ethanol"]["seed"] = "CH3OH"

    expected = {"sample[system=ethanol]", "chunk[system=ethanol]"} | cheap_labels("ethanol")
    assert edited(study, edit) == expected | FORCE_VALIDATED


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["splits"].update(train=0.4, val=0.35),
        lambda c: c["systems"]["water"].update(split="test"),  # a held-back molecule
    ],
    ids=["fractions", "system_split"],
)
def test_split_edit_reruns_from_collect_not_labelling(study, edit):
    assert edited(study, edit) == FORCE_VALIDATED


def test_force_validation_edit_reruns_from_its_subset(study):
    def edit(config):
        config["force_validation"]["per_system"] = 2

    assert edited(study, edit) == FORCE_VALIDATED


def test_training_edits_rerun_training_and_after(study):
    assert edited(study, lambda c: c["training"].update(lr=0.001)) == TRAINED

    def variant(config):
        config["training"]["variants"] = {
            "energy": {"losses": ["energy"]},
            "weak": {"losses": ["energy", "pitc", "pisc"], "w_pitc": 0.5},
        }

    assert edited(study, variant) == {
        "train[run=weak]",
        "evaluate[run=weak]",
        "md[run=weak]",
        "report",
    }


def test_md_edits_rerun_md_and_a_threshold_only_committee_runs(study):
    md_jobs = {f"md[run={run}]" for run in (*RUNS, "cheap_level")} | {"report"}
    assert edited(study, lambda c: c["md"].update(steps=6)) == md_jobs
    # no run here is a committee: the spread threshold reaches no `pilip md` (which would
    # refuse it), so nothing reruns
    assert edited(study, lambda c: c["md"].update(spread_threshold=0.2)) == set()
    for run in (*RUNS, "cheap_level"):  # the rule's outputs, written for single models too
        assert (study / "results" / run / "md_spread.csv").is_file()
        assert (study / "results" / run / "md_candidates.parquet").is_file()


def test_user_configfile_replaces_the_default(study, tmp_path):
    """Issue 14 defect 2: a config.yaml in the working folder (as in the repository root) is
    not merged into the user's --configfile."""
    write_config(tmp_path, {"systems": {"water": {"seed": "H2O"}}})  # the "default"
    mine = copy.deepcopy(STUDY)
    mine["systems"] = {"methanol": {"seed": "CH3OH"}}
    write_config(tmp_path, mine, "my.yaml")
    jobs = dry_run_jobs(tmp_path, "--configfile", "my.yaml")
    assert {"sample[system=methanol]", "chunk[system=methanol]"} <= jobs
    assert not any("water" in job for job in jobs)
    (written,) = (tmp_path / ".pilip").glob("config-*.yaml")  # what the commands read
    resolved = yaml.safe_load(written.read_text())
    assert list(resolved["systems"]) == ["methanol"]


def test_command_line_overrides_reach_the_commands(study):
    """Issue 14 defect 3: `--config training=...` reruns training, and trains what it says."""
    override = 'training={"model": "painn", "model_params": {"n_features": 8, "cutoff": 4.0}}'
    args = ("--configfile", "config.yaml", "--config", override)
    before = {p: p.read_bytes() for p in (study / ".pilip").glob("config-*.yaml")}
    assert dry_run_jobs(study, *args) == TRAINED
    # the overridden config is a new file: jobs of a run started with the study's own config
    # keep reading theirs, whatever another snakemake (even a dry run) is started with
    after = {p: p.read_bytes() for p in (study / ".pilip").glob("config-*.yaml")}
    assert {p: after[p] for p in before} == before
    (new,) = set(after) - set(before)
    assert yaml.safe_load(new.read_text())["training"]["model"] == "painn"
    proc = snakemake(study, "models/energy/model.pt", "--cores", "1", *args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    trained = json.loads((study / "models" / "energy" / "config.json").read_text())
    assert trained["model"] == "painn"
    assert trained["model_params"]["n_features"] == 8
    # without the override, the study's own config is back in force: SchNet again
    assert "train[run=energy]" in dry_run_jobs(study, "--configfile", "config.yaml")


def test_label_only_config_labels_the_configurations_it_finds(tmp_path):
    """Issue 14: a config with references and labelling only (the docs' plug-in example)
    validates, and the workflow labels the configurations tables already there."""
    from ase.build import molecule

    from pilip import tables

    frames = []
    for shift in (0.0, 0.02, 0.04, 0.06):
        atoms = molecule("H2O")
        atoms.positions[0, 0] += shift
        frames.append(atoms)
    table = tables.configurations_from_atoms(frames, system="water", generator="import")
    tables.write_table(table, tmp_path / "configurations" / "water.parquet", "configurations", {})
    write_config(
        tmp_path,
        {
            "references": {"cheap": {"backend": "xtb", "method": "GFN2-xTB"}},
            "labelling": {"reference": "cheap", "chunk_size": 3},
        },
    )
    planned = dry_run_jobs(tmp_path, "--configfile", "config.yaml")
    assert "chunk[system=water]" in planned and "collect[reference=cheap]" in planned
    assert not any(job.startswith(("sample", "label_force_validation")) for job in planned)
    proc = snakemake(
        tmp_path, "datasets/cheap.parquet", "--cores", "2", "--configfile", "config.yaml"
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    dataset = tables.read_table(tmp_path / "datasets" / "cheap.parquet", kind="dataset")
    assert dataset.num_rows == 4
    assert len(list((tmp_path / "labels" / "cheap" / "water").glob("chunk-*.parquet"))) == 2


def test_seed_file_is_found_beside_its_config_and_reruns_sampling(tmp_path):
    """A seed file is relative to the config that names it (here in a subfolder, run from
    the working folder), and a changed file reruns that system's sampling."""
    study = tmp_path / "study"
    study.mkdir()
    seed = study / "w.xyz"
    seed.write_text("3\n\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    write_config(
        study,
        {
            "systems": {"w": {"seed": "w.xyz"}, "e": {"seed": "CH3CH2OH"}},
            "sampling": {"generators": [{"kind": "rattle", "n": 2}]},
            "references": {"xtb": {"backend": "xtb"}},
            "labelling": {"reference": "xtb"},
            "force_validation": {"enabled": False},
        },
        "my.yaml",
    )
    args = ("--configfile", "study/my.yaml")
    proc = snakemake(tmp_path, "configurations/w.parquet", "configurations/e.parquet",
                     "--cores", "2", *args)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not {"sample[system=w]", "sample[system=e]"} & dry_run_jobs(tmp_path, *args)
    seed.write_text("3\n\nO 0 0 0\nH 0.97 0 0\nH -0.24 0.93 0\n")
    planned = dry_run_jobs(tmp_path, *args)
    assert "sample[system=w]" in planned and "sample[system=e]" not in planned
