"""Every benchmark runs, at a tiny size (``--smoke``), and writes its results file.

Each is run as a user runs it, ``python -m benchmarks.NAME`` from the repository root in its
own process, into ``tmp_path``; the numbers are not checked, only that the file is there with
its keys. The acac benchmarks skip without ``../shared/data/acac``, the Psi4 one without a
Psi4 interpreter; the GPU modes of step_time are not run here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ACAC = REPO.parent / "shared" / "data" / "acac"
needs_acac = pytest.mark.skipif(
    not (ACAC / "train_300K.xyz").is_file(), reason=f"no acac data at {ACAC}"
)


def run(name: str, *argv: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *argv],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def skip_without_psi4() -> None:
    from pilip.errors import PilipError
    from pilip.reference.psi4_env import find_psi4_python

    try:
        find_psi4_python()
    except PilipError as exc:
        pytest.skip(f"no Psi4 interpreter: {exc}")


def test_table_checksums(tmp_path):
    run("table_checksums", "--smoke", "--out", str(tmp_path))
    record = json.loads((tmp_path / "table_checksums.json").read_text())
    assert record["rows"] == 100
    assert set(record["median_s"]) == {
        "write_table (checksums computed)", "read_table (page CRCs + checksums)",
        "pq.read_table (page CRCs only)", "checksums alone",
    }  # fmt: skip


@pytest.mark.slow
def test_step_time_cpu(tmp_path):
    run("step_time", "--device", "cpu", "--smoke", "--out", str(tmp_path))
    record = json.loads((tmp_path / "step_time.json").read_text())
    assert not record["failures"]
    modes = {(r["model"], r["mode"]) for r in record["results"]}
    assert modes == {
        (m, mode) for m in ("painn", "schnet")
        for mode in ("energy", "energy+forces", "weak_three_calls", "weak_fused")
    }  # fmt: skip
    assert all(r["median_s"] > 0 and r["peak_memory_mb"] > 0 for r in record["results"])
    assert "| painn | 2 | weak_fused |" in (tmp_path / "step_time.md").read_text()


@pytest.mark.slow
@pytest.mark.workflow
def test_dag_scale(tmp_path):
    run("dag_scale", "--smoke", "--out", str(tmp_path))
    (row,) = json.loads((tmp_path / "dag_scale.json").read_text())["rows"]
    assert row["configurations"] == 20 and row["label"] == 2
    assert {"seconds", "jobs", "groups", "slurm_jobs", "synthesis_s"} <= set(row)


@pytest.mark.slow
@pytest.mark.psi4
def test_label_overhead(tmp_path):
    skip_without_psi4()
    run("label_overhead", "--smoke", "--out", str(tmp_path))
    record = json.loads((tmp_path / "label_overhead.json").read_text())
    assert record["method"] == "scf/sto-3g" and record["n"] == 2
    assert set(record["median_wall_s"]) == {"bare", "bare_jobs", "pilip", "two_1t", "one_2t"}


@pytest.mark.slow
@pytest.mark.psi4
def test_ethanol_mp2(tmp_path):
    skip_without_psi4()
    out = run("ethanol_mp2", "--smoke", "--out", str(tmp_path))
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    trained = {r["run"] for r in rows if r["kind"] == "train"}
    students = {"student_xtb", "student_dft", "student_dft_p8", "student_dft_mace"}
    assert trained == {"energy", "delta_xtb", "delta_dft", "ceiling", "xtb", "dft", *students}
    assert all(r["test_force_rmse_eV_per_A"] >= 0 and r["md_frames_force_rmse_eV_per_A"] >= 0
               for r in rows if r["kind"] == "train")  # fmt: skip
    md = [r for r in rows if r["kind"] == "md"]
    assert {r["run"] for r in md} == {"student_xtb", "delta_xtb"}
    assert all(r["n_runs"] == 1 and r["steps_per_s"] > 0 for r in md)
    assert "student_dft / delta_dft" in out


@needs_acac
def test_weak_precision(tmp_path):
    run("weak_precision", "--smoke", "--out", str(tmp_path))
    text = (tmp_path / "weak_precision.md").read_text()
    assert "2 acac structures" in text
    assert text.count("\n| 0.") == 6  # the six (eps, k) rows


@needs_acac
@pytest.mark.slow
def test_train_throughput(tmp_path):
    run("train_throughput", "--device", "cpu", "--smoke", "--out", str(tmp_path))
    results = json.loads((tmp_path / "train_throughput.json").read_text())
    assert [r["way"] for r in results] == ["three_calls", "fused", "fused_static"]
    assert all(r["structures_per_s"] > 0 for r in results)


RUN_KEYS = {
    "variant", "size", "seed", "test_energy_rmse_meV", "test_force_rmse_eV_per_A",
    "test_force_rms_pred_eV_per_A", "test_force_cosine", "val_energy_rmse_meV", "best_epoch",
    "epochs", "stop_reason", "train_cpu_s", "train_wall_s",
}  # fmt: skip


@needs_acac
@pytest.mark.slow
def test_multifidelity(tmp_path):
    run("multifidelity", "--smoke", "--out", str(tmp_path))
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    by_variant = {r["variant"]: r for r in rows}
    assert set(by_variant) == {"xtb_alone", "pretrain", "energy", "delta", "finetune"}
    for variant in ("energy", "delta", "finetune"):
        assert RUN_KEYS <= set(by_variant[variant]), variant
        assert by_variant[variant]["stop_reason"] == "cpu_minutes"
    assert "| 8 | delta | 1 |" in (tmp_path / "results.md").read_text()
    # the tables come back from results.json alone
    assert "| 8 | finetune | 1 |" in run("multifidelity", "--out", str(tmp_path), "--table")


@needs_acac
@pytest.mark.slow
def test_acac_data_efficiency(tmp_path):
    run("acac_data_efficiency", "--smoke", "--device", "cpu", "--out", str(tmp_path))
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {r["variant"] for r in rows} == {"energy", "weak_unl"}
    for row in rows:
        assert RUN_KEYS | {"n_unlabelled", "train_s", "config"} <= set(row)
        assert row["epochs"] == 2 and row["stop_reason"] == "epochs"
    unl = next(r for r in rows if r["variant"] == "weak_unl")
    assert unl["n_unlabelled"] == 60 - 50 - 8  # the smoke pool: 60 frames, 50 of them val
    assert unl["config"]["losses"] == ["energy", "pitc", "pisc"]


def test_md_engines(tmp_path):
    pytest.importorskip("openmm")
    pytest.importorskip("openmmml")
    run("md_engines", "--smoke", "--out", str(tmp_path))
    results = json.loads((tmp_path / "md_engines.json").read_text())["steps_per_s"]
    assert results and all(
        {"ase", "openmm-reference", "model-traced"} <= set(modes) for modes in results.values()
    )


@needs_acac
def test_mace_step_time():
    pytest.importorskip("mace")
    xyz = str(ACAC / "train_300K.xyz")
    out = run("mace_step_time", "--xyz", xyz, "--smoke")
    assert out.count("| painn |") == 3 and out.count("| mace |") == 3  # the three modes


@needs_acac
@pytest.mark.slow
def test_mace_acac(tmp_path):
    pytest.importorskip("mace")
    pytest.importorskip("tblite")
    out = run("mace_acac", "--smoke", "--out", str(tmp_path))
    assert "FAILED" not in out and "SKIPPED" not in out
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    runs = {(r["recipe"], r["model"]): r for r in rows}
    recipes = ("energy", "delta", "finetune", "ceiling", "distilled")
    assert set(runs) == {(r, m) for r in (*recipes, "pretrain") for m in ("painn", "mace")}
    for (recipe, model), row in runs.items():
        keys = RUN_KEYS - {"variant"} | {"recipe", "model"}
        if recipe == "pretrain":
            keys -= {k for k in keys if k.startswith("test_")}
        assert keys <= set(row), (recipe, model)
        assert row["stop_reason"] == "cpu_minutes"
    assert runs[("distilled", "mace")]["teacher"] == "delta-mace-n8-s0"
    assert runs[("distilled", "mace")]["n_train"] == 60 - 50  # the smoke pool, 50 of it val
    config = json.loads((tmp_path / "runs" / "finetune-mace-n8-s0" / "config.json").read_text())
    assert config["model"] == "mace"
    summary = json.loads((tmp_path / "summary.json").read_text())["entries"]
    assert len(summary) == 10 and all(e["seeds"] == [0] for e in summary)
    ceiling = next(e for e in summary if (e["recipe"], e["model"]) == ("ceiling", "mace"))
    assert ceiling["test_force_rmse_eV_per_A"]["per_seed"] == [
        runs[("ceiling", "mace")]["test_force_rmse_eV_per_A"]
    ]
    assert "| 8 | distilled | 1 |" in (tmp_path / "results.md").read_text()
    # the tables come back from results.json alone, also through the older shell interface
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "mace_acac.sh"), str(tmp_path), "8", "0", "0.01",
         "energy", "1", "--table"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| 8 | finetune | 1 |" in proc.stdout
    # students of the same teachers at another budget: --reuse copies the teacher, not trains it
    again = tmp_path / "again"
    run("mace_acac", "--out", str(again), "--recipes", "distilled", "--models", "painn",
        "--sizes", "8", "--seeds", "0", "--cpu-minutes", "0.02", "--n-pool", "60",
        "--n-test", "8", "--reuse", str(tmp_path))  # fmt: skip
    rows = json.loads((again / "results.json").read_text())["rows"]
    assert [(r["recipe"], r.get("reused_from")) for r in rows] == [
        ("delta", str(tmp_path)),
        ("distilled", None),
    ]
    assert rows[0] == {**runs[("delta", "painn")], "reused_from": str(tmp_path)}
    assert (again / "runs" / "delta-painn-n8-s0" / "model.pt").is_file()
    assert rows[1]["teacher"] == "delta-painn-n8-s0" and rows[1]["stop_reason"] == "cpu_minutes"


def test_mace_acac_reuse_names_a_run_it_lacks(tmp_path):
    from benchmarks import mace_acac

    runs = mace_acac.plan(["finetune", "distilled"], ["mace"], [8], [0], teacher="painn")
    assert runs[:2] == [mace_acac.Run("pretrain", "mace", None, 0),
                        mace_acac.Run("delta", "painn", 8, 0)]  # fmt: skip
    with pytest.raises(SystemExit, match="no finished run pretrain-mace-s0 .* --reuse"):
        mace_acac.reuse_runs(runs, [], tmp_path / "other", tmp_path / "out", teacher="painn")
    # what this grid has finished already is not taken again
    done = [{"recipe": "pretrain", "model": "mace", "size": None, "seed": 0},
            {"recipe": "delta", "model": "painn", "size": 8, "seed": 0}]  # fmt: skip
    assert mace_acac.reuse_runs(runs, list(done), tmp_path / "other", tmp_path / "out",
                                teacher="painn") == done  # fmt: skip
    assert not (tmp_path / "out").exists()


@needs_acac
@pytest.mark.slow
def test_committee_md(tmp_path):
    out = run("committee_md", "--smoke", "--out", str(tmp_path))
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    trained = {r["variant"] for r in rows if r["kind"] == "train"}
    assert trained == {"pretrain", "energy", "delta", "finetune", "ceiling", "committee"}
    committee = next(r for r in rows if r["variant"] == "committee")
    assert len(committee["member_force_rmse"]) == 2 and committee["spearman_forces"] is not None
    md = [r for r in rows if r["kind"] == "md"]
    assert {r["variant"] for r in md} == {"delta", "committee"}
    assert all(r["n_runs"] == 1 and r["steps_per_s"] > 0 for r in md)
    assert next(r for r in md if r["variant"] == "committee")["force_spread_max"] > 0
    assert "| committee | 300 |" in out
    # a part of a test (--runs; --smoke has one start): rows of their own, the others kept
    run("committee_md", "--smoke", "--out", str(tmp_path), "--runs", "0")
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    part = [r for r in rows if r["kind"] == "md" and r.get("runs") == "0"]
    assert {r["variant"] for r in part} == {"delta", "committee"}
    assert all(r["n_runs"] == 1 for r in part)
    assert len([r for r in rows if r["kind"] == "md"]) == len(md) + 2
    # what its spread ranks, from the same committee
    ranked = run("committee_ranking", "--out", str(tmp_path), "--size", "8", "--seeds", "0",
                 "--n-test", "8")  # fmt: skip
    assert ranked.splitlines()[-1].startswith("| 0 | ")


def test_md_table_counts_each_run_once():
    """A test run in parts (--runs 0-1, then 2-4) and then summarised whole (no --runs, which
    only reads the saved runs) counts its five runs once; a seed with parts only sums them;
    a whole test of fewer starts counts with the parts it lacks."""
    from benchmarks.committee_md import summarise

    def md(seed: int, runs: str | None, n: int, transfers: int) -> dict:
        return {"kind": "md", "variant": "committee", "seed": seed, "temperature": 300,
                "md_ps": 50.0, "proton_transfer": "allow", "runs": runs, "n_runs": n,
                "n_stable": n, "min_time_to_failure_ps": None, "n_proton_transfers": transfers,
                "hr_mae": 0.19, "hr_mae_reference_halves": 0.095, "steps_per_s": 30.0,
                "force_spread_mean": 0.23, "force_spread_max": 0.4}  # fmt: skip

    parts = [md(2, "0-1", 2, 7), md(2, "2-4", 3, 14)]
    assert "| committee | 300 | 50 | allow | 5/5 | – | 21 |" in summarise(parts)
    whole = [*parts, md(2, None, 5, 21)]
    assert "| committee | 300 | 50 | allow | 5/5 | – | 21 |" in summarise(whole)
    other_seed = [*whole, md(1, "0", 1, 3)]
    assert "| committee | 300 | 50 | allow | 6/6 | – | 24 |" in summarise(other_seed)
    # a first test of one start (run 0, summarised whole), then the other four as parts
    first_then_parts = [md(2, None, 1, 19), md(2, "1-2", 2, 70), md(2, "3-4", 2, 61)]
    assert "| committee | 300 | 50 | allow | 5/5 | – | 150 |" in summarise(first_then_parts)


def test_committee_ranking_tells_a_site_effect_from_a_geometry_effect():
    """Spreads that know only which atom sites are hard rank atoms well and geometries not at
    all; spreads that follow each geometry's errors rank both."""
    import numpy as np

    from benchmarks.committee_ranking import rankings

    rng = np.random.default_rng(0)
    hardness = np.linspace(0.1, 1.0, 15)[None, :, None]  # 15 sites, the last ten times harder
    scale = hardness * rng.uniform(0.2, 5.0, size=(400, 15, 1))  # varies with the geometry
    error = rng.normal(size=(400, 15, 3)) * scale
    sites_only = rankings(error, hardness * rng.uniform(0.9, 1.1, size=error.shape))
    assert sites_only["site_means"] > 0.95 and sites_only["per_atom"] > 0.3
    assert abs(sites_only["site_normalised"]) < 0.1 and abs(sites_only["within_site_median"]) < 0.1
    following = rankings(error, scale * rng.uniform(0.9, 1.1, size=error.shape))
    assert following["site_normalised"] > 0.5 and following["within_site_median"] > 0.5


def test_results_of_two_processes_side_by_side_are_kept(tmp_path):
    """Two benchmark processes of one --out (MD of different recipes, one per core) each
    rewrite results.json after every run: neither may drop the other's rows."""
    from benchmarks import acac

    def key(row: dict) -> tuple:
        return row["kind"], row["variant"]

    def table(rows: list[dict]) -> str:
        return " ".join(sorted(r["variant"] for r in rows))

    first = acac.load_rows(tmp_path)  # both start from the same (empty) results
    second = acac.load_rows(tmp_path)
    first.append({"kind": "md", "variant": "delta"})
    acac.merge_results(tmp_path, first, key, table)
    second.append({"kind": "md", "variant": "ceiling"})
    acac.merge_results(tmp_path, second, key, table)
    first.append({"kind": "md", "variant": "energy"})
    acac.merge_results(tmp_path, first, key, table)
    assert sorted(key(r) for r in acac.load_rows(tmp_path)) == [
        ("md", "ceiling"), ("md", "delta"), ("md", "energy")]  # fmt: skip
    assert (tmp_path / "results.md").read_text() == "ceiling delta energy\n"
