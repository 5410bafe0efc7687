"""`pilip label` with the xtb backend: values, units, resume, retry, failures, bad input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from ase import Atoms
from ase.build import molecule
from tblite.ase import TBLite

from pilip import keys, tables
from pilip.cli import main
from pilip.errors import PilipError
from pilip.reference import labels
from pilip.reference.backends.xtb_backend import XTBBackend
from pilip.reference.labelling import label_table, resolve_reference

REFERENCES = {
    "xtb": {"backend": "xtb", "method": "GFN2-xTB"},
    # one SCC iteration never converges: every first attempt fails
    "xtb_broken": {"backend": "xtb", "method": "GFN2-xTB", "options": {"max_iterations": 1}},
    "xtb_rescued": {
        "backend": "xtb",
        "method": "GFN2-xTB",
        "options": {"max_iterations": 1},
        "retry_options": {"max_iterations": 250},
    },
    "gfn1": {"backend": "xtb", "method": "GFN1-xTB"},
}


def write_config(path, references=None, **labelling):
    config = {
        "systems": {"water": {"seed": "H2O"}},
        "references": references or REFERENCES,
        "labelling": {"reference": "xtb", **labelling},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def rattled(name: str, n: int, seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule(name)
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        frames.append(atoms)
    return frames


@pytest.fixture
def study(tmp_path, monkeypatch):
    """A config and a configurations table of 4 water + 2 methanol geometries in tmp_path."""
    monkeypatch.chdir(tmp_path)
    atoms = rattled("H2O", 4, 0) + rattled("CH3OH", 2, 1)
    table = tables.configurations_from_atoms(atoms, system="mixed", generator="rattle")
    tables.write_table(table, tmp_path / "configs.parquet", "configurations", {})
    write_config(tmp_path / "config.yaml")
    return tmp_path, atoms


@pytest.fixture
def count_calls(monkeypatch):
    """Count single-point calculations done by the xtb backend (optionally failing some ids)."""
    calls: list[str] = []
    fail_ids: set[str] = set()
    original = XTBBackend._single_point

    def counted(self, config, options, gradients):
        calls.append(config["id"])
        if config["id"] in fail_ids:
            raise RuntimeError("simulated SCF failure")
        return original(self, config, options, gradients)

    monkeypatch.setattr(XTBBackend, "_single_point", counted)
    return calls, fail_ids


def test_energies_and_forces_equal_direct_tblite_in_ev(study):
    root, atoms = study
    label_table("configs.parquet", "xtb", "labels.parquet", gradients=True)
    table = labels.read_labels(root / "labels.parquet")
    assert table.num_rows == len(atoms)
    assert set(table.column(keys.STATUS).to_pylist()) == {keys.STATUS_OK}
    energies = table.column(keys.ENERGY).to_pylist()
    forces = table.column(keys.FORCES).to_pylist()
    for frame, energy, force in zip(atoms, energies, forces, strict=True):
        frame = frame.copy()
        frame.calc = TBLite(method="GFN2-xTB", verbosity=0)
        assert energy == pytest.approx(frame.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(np.array(force), frame.get_forces(), atol=1e-9)
    # a water molecule's GFN2-xTB energy is about -5.07 Eh = -137.9 eV: eV, not Hartree
    assert -140.0 < energies[0] < -135.0
    assert tables.field_unit(table, keys.ENERGY) == "eV"
    assert tables.field_unit(table, keys.FORCES) == "eV/A"
    assert tables.field_unit(table, keys.COMPONENTS) == "Eh"
    assert table.column(keys.REFERENCE).to_pylist() == ["xtb"] * len(atoms)
    row = table.slice(0, 1).to_pylist()[0]
    assert row[keys.PROGRAM] == "tblite" and row[keys.METHOD] == "GFN2-xTB"
    assert row[keys.THREADS] == 1 and row[keys.ATTEMPTS] == 1 and row[keys.HOST]


def test_energy_only_by_default_and_gfn1_differs(study):
    root, _ = study
    label_table("configs.parquet", "xtb", "gfn2.parquet")
    label_table("configs.parquet", "gfn1", "gfn1.parquet")
    gfn2 = labels.read_labels(root / "gfn2.parquet")
    gfn1 = labels.read_labels(root / "gfn1.parquet")
    assert gfn2.column(keys.FORCES).null_count == gfn2.num_rows
    difference = np.subtract(gfn1.column(keys.ENERGY), gfn2.column(keys.ENERGY))
    assert np.all(np.abs(difference) > 0.1)  # eV: the option reached tblite


def test_resume_after_crash_recomputes_only_unfinished(study, count_calls):
    root, atoms = study
    calls, _ = count_calls
    label_table("configs.parquet", "xtb", "labels.parquet")
    assert len(calls) == len(atoms)
    reference = labels.read_labels(root / "labels.parquet")

    # simulate kill -9 mid-run: no table yet, 3 finished lines and half of the fourth
    results = labels.results_path_for(root / "labels.parquet")
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:3]) + lines[3][:40])
    (root / "labels.parquet").unlink()
    calls.clear()

    label_table("configs.parquet", "xtb", "labels.parquet")
    assert len(calls) == len(atoms) - 3
    resumed = labels.read_labels(root / "labels.parquet")
    assert resumed.column(keys.ENERGY).to_pylist() == reference.column(keys.ENERGY).to_pylist()
    ids = [json.loads(line)["config_id"] for line in results.read_text().splitlines()]
    assert sorted(ids) == sorted(reference.column(keys.CONFIG_ID).to_pylist())

    calls.clear()
    label_table("configs.parquet", "xtb", "labels.parquet")
    assert calls == []  # everything finished: a rerun computes nothing


def test_failures_are_rows_and_retry_failed_recomputes_only_them(study, count_calls):
    root, atoms = study
    calls, fail_ids = count_calls
    configs = tables.read_table(root / "configs.parquet")
    ids = configs.column(keys.ID).to_pylist()
    fail_ids.update(ids[1:3])

    report = label_table("configs.parquet", "xtb", "labels.parquet")
    assert report.counts == {"ok": 4, "failed": 2, "timeout": 0}
    table = labels.read_labels(root / "labels.parquet")
    assert table.column(keys.CONFIG_ID).to_pylist() == ids  # every row, in input order
    failed = table.filter(pa.compute.equal(table.column(keys.STATUS), keys.STATUS_FAILED))
    assert failed.column(keys.CONFIG_ID).to_pylist() == ids[1:3]
    assert failed.column(keys.ENERGY).null_count == 2
    assert all("simulated SCF failure" in e for e in failed.column(keys.ERROR).to_pylist())

    # a plain rerun keeps the failures (they are results, not missing work)
    calls.clear()
    label_table("configs.parquet", "xtb", "labels.parquet")
    assert calls == []

    fail_ids.clear()
    report = label_table("configs.parquet", "xtb", "labels.parquet", retry_failed=True)
    assert sorted(calls) == sorted(ids[1:3])
    assert report.retried == 2 and report.counts["ok"] == len(atoms)


def test_retry_failed_works_from_the_table_alone(study, count_calls):
    root, atoms = study
    calls, fail_ids = count_calls
    fail_ids.add(tables.read_table(root / "configs.parquet").column(keys.ID)[0].as_py())
    label_table("configs.parquet", "xtb", "labels.parquet")
    labels.results_path_for(root / "labels.parquet").unlink()
    fail_ids.clear()
    calls.clear()
    assert main(["label", "configs.parquet", "--reference", "xtb", "-o", "labels.parquet",
                 "--retry-failed"]) == 0  # fmt: skip
    assert len(calls) == 1
    table = labels.read_labels(root / "labels.parquet")
    assert table.column(keys.STATUS).to_pylist() == [keys.STATUS_OK] * len(atoms)


def test_unconverged_scf_is_failed_row_with_error_text(study):
    root, atoms = study
    write_config(root / "config.yaml", retry=False)
    report = label_table("configs.parquet", "xtb_broken", "labels.parquet")
    assert report.counts["failed"] == len(atoms)
    table = labels.read_labels(root / "labels.parquet")
    assert table.column(keys.ENERGY).null_count == len(atoms)
    assert all("not converged" in e for e in table.column(keys.ERROR).to_pylist())
    assert table.column(keys.ATTEMPTS).to_pylist() == [1] * len(atoms)


def test_retry_with_fallback_options_rescues_the_row(study):
    root, atoms = study
    label_table("configs.parquet", "xtb_rescued", "rescued.parquet")
    label_table("configs.parquet", "xtb", "plain.parquet")
    rescued = labels.read_labels(root / "rescued.parquet")
    plain = labels.read_labels(root / "plain.parquet")
    assert rescued.column(keys.ATTEMPTS).to_pylist() == [2] * len(atoms)
    np.testing.assert_allclose(
        rescued.column(keys.ENERGY).to_numpy(), plain.column(keys.ENERGY).to_numpy(), atol=1e-6
    )


def test_forces_requested_later_recompute_energy_only_rows(study, count_calls):
    root, atoms = study
    calls, _ = count_calls
    label_table("configs.parquet", "xtb", "labels.parquet")
    calls.clear()
    label_table("configs.parquet", "xtb", "labels.parquet", gradients=True)
    assert len(calls) == len(atoms)
    table = labels.read_labels(root / "labels.parquet")
    assert table.column(keys.FORCES).null_count == 0


def test_results_of_another_method_or_options_are_not_reused(study):
    root, _ = study
    label_table("configs.parquet", "xtb", "labels.parquet")
    with pytest.raises(PilipError, match="holds tblite 'GFN2-xTB' results, not tblite 'GFN1-xTB'"):
        label_table("configs.parquet", "gfn1", "labels.parquet")
    references = {**REFERENCES, "xtb": {**REFERENCES["xtb"], "options": {"accuracy": 0.1}}}
    write_config(root / "config.yaml", references=references)
    with pytest.raises(PilipError, match="computed with options {}, not {'accuracy': 0.1}"):
        label_table("configs.parquet", "xtb", "labels.parquet")


def test_inline_psi4_method_string_runs_with_psi4_defaults(study):
    ref = resolve_reference("mp2/cc-pv[dt]z", None, "config.yaml")
    assert ref.inline and ref.name == "mp2/cc-pv[dt]z"
    assert ref.spec == {"backend": "psi4", "method": "mp2/cc-pv[dt]z"}  # no options at all
    config = {"references": {"mp2/cc-pvdz": {"backend": "xtb"}}}
    assert not resolve_reference("mp2/cc-pvdz", config, "c.yaml").inline  # a name wins
    with pytest.raises(PilipError, match=r"neither a reference in nope.yaml \(not found\)"):
        resolve_reference("xtb", None, "nope.yaml")


def run_cli_error(capsys, root, *args):
    """Run `pilip label` expecting a one-line error; return it. Nothing may be written."""
    before = set(root.iterdir())
    code = main(["label", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("pilip label: error: ")
    assert "Traceback" not in err
    assert set(root.iterdir()) == before, "no output or results file after bad input"
    return err


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ({"backend": "turbomole"}, "unknown backend 'turbomole'; known backends: "),
        ({"backend": "xtb", "method": "GFN3-xTB"}, "references.bad.method: unknown xtb method"),
        (
            {"backend": "xtb", "options": {"acuracy": 1}},
            "references.bad.options: unknown xtb option",
        ),
        ({"backend": "xtb", "retry_options": {"maxiter": 9}}, "references.bad.retry_options"),
        ({"backend": "xtb", "basis": "cc-pvdz"}, "references.bad.basis: xtb has no basis"),
    ],
)
def test_bad_reference_spec(study, capsys, reference, expected):
    root, _ = study
    write_config(root / "config.yaml", references={"bad": reference})
    err = run_cli_error(capsys, root, "configs.parquet", "--reference", "bad", "-o", "l.parquet")
    assert expected in err


def test_unknown_reference_name(study, capsys):
    root, _ = study
    err = run_cli_error(capsys, root, "configs.parquet", "--reference", "xtbb", "-o", "l.parquet")
    assert "--reference 'xtbb' is neither a reference in config.yaml (known: gfn1, xtb," in err


def test_odd_electron_count_with_singlet(study, capsys):
    root, _ = study
    radical = Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]])
    table = tables.configurations_from_atoms([radical], system="oh", generator="seed")
    tables.write_table(table, root / "oh.parquet", "configurations", {})
    err = run_cli_error(capsys, root, "oh.parquet", "--reference", "xtb", "-o", "l.parquet")
    assert "9 electrons (charge 0) cannot have multiplicity 1" in err


def test_missing_and_wrong_input_tables(study, capsys):
    root, _ = study
    err = run_cli_error(capsys, root, "nope.parquet", "--reference", "xtb", "-o", "l.parquet")
    assert "nope.parquet: no such file" in err
    (root / "garbage.parquet").write_bytes(b"\x00\x01 not parquet")
    err = run_cli_error(capsys, root, "garbage.parquet", "--reference", "xtb", "-o", "l.parquet")
    assert "garbage.parquet: not a readable Parquet file" in err


def test_nan_positions(study, capsys):
    root, _ = study
    table = tables.read_table(root / "configs.parquet").slice(0, 1)
    bad = [[[np.nan, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]]
    index = table.schema.get_field_index(keys.POSITIONS)
    table = table.set_column(index, table.schema.field(index), pa.array(bad, tables.VECTOR3_LIST))
    pq.write_table(table, root / "nan.parquet")
    err = run_cli_error(capsys, root, "nan.parquet", "--reference", "xtb", "-o", "l.parquet")
    assert "NaN or infinite positions" in err


def test_threads_must_be_positive(study, capsys):
    root, _ = study
    err = run_cli_error(
        capsys, root, "configs.parquet", "--reference", "xtb", "-o", "l.parquet", "--threads", "0"
    )
    assert "--threads must be at least 1" in err
    err = run_cli_error(
        capsys, root, "configs.parquet", "--reference", "xtb", "-o", "l.parquet", "--mem-mb", "5"
    )
    assert "--mem-mb must be at least 100" in err


def test_empty_configurations_give_an_empty_labels_table(study):
    root, _ = study
    empty = tables.read_table(root / "configs.parquet").slice(0, 0)
    tables.write_table(empty, root / "empty.parquet", "configurations", {})
    report = label_table("empty.parquet", "xtb", "labels.parquet")
    assert report.counts == {"ok": 0, "failed": 0, "timeout": 0}
    assert labels.read_labels(root / "labels.parquet").num_rows == 0


# --- inline tight binding, dataset input, part of a table (issues 10 and 14) -----------------


def displaced(atoms: Atoms, moves, h: float) -> list[Atoms]:
    """``atoms`` and, per (atom, axis) move, copies displaced by +h and -h Angstrom."""
    frames = [atoms]
    for atom, axis in moves:
        for sign in (+1, -1):
            copy = atoms.copy()
            copy.positions[atom, axis] += sign * h
            frames.append(copy)
    return frames


@pytest.mark.parametrize("method", ["gfn2-xtb", "gfn1-xtb"])
def test_inline_xtb_without_config_writes_forces_equal_to_finite_differences(
    tmp_path, monkeypatch, method
):
    monkeypatch.chdir(tmp_path)  # no config.yaml here
    h, moves = 1e-3, [(0, 0), (1, 2), (4, 1)]
    frames = displaced(rattled("CH3OH", 1, 3)[0], moves, h)
    table = tables.configurations_from_atoms(frames, system="methanol", generator="rattle")
    tables.write_table(table, tmp_path / "c.parquet", "configurations", {})
    assert main(["label", "c.parquet", "--reference", method.upper(), "-o", "L.parquet"]) == 0
    out = labels.read_labels(tmp_path / "L.parquet")
    assert set(out.column(keys.STATUS).to_pylist()) == {keys.STATUS_OK}
    assert set(out.column(keys.REFERENCE).to_pylist()) == {method}
    assert out.column(keys.FORCES).null_count == 0  # forces without --forces
    energies = out.column(keys.ENERGY).to_pylist()
    forces = np.asarray(out.column(keys.FORCES)[0].as_py())
    for k, (atom, axis) in enumerate(moves):
        up, down = energies[1 + 2 * k], energies[2 + 2 * k]
        assert forces[atom, axis] == pytest.approx(-(up - down) / (2 * h), abs=2e-4)
    assert np.abs(forces).max() > 0.1  # eV/A: a rattled molecule is far from a minimum
    direct = frames[0].copy()
    direct.calc = TBLite(method=method.upper().replace("XTB", "xTB"), verbosity=0)
    assert energies[0] == pytest.approx(direct.get_potential_energy(), abs=1e-9)  # eV


def test_inline_xtb_failure_is_a_failed_row(study, count_calls):
    root, atoms = study
    calls, fail_ids = count_calls
    ids = tables.read_table(root / "configs.parquet").column(keys.ID).to_pylist()
    fail_ids.add(ids[1])
    assert main(["label", "configs.parquet", "--reference", "gfn2-xtb", "-o", "L.parquet"]) == 0
    out = labels.read_labels(root / "L.parquet").to_pylist()
    assert [r[keys.STATUS] for r in out] == ["ok", "failed"] + ["ok"] * (len(atoms) - 2)
    assert out[1][keys.ERROR] == "RuntimeError: simulated SCF failure"
    assert out[1][keys.ENERGY] is None and out[1][keys.FORCES] is None


def test_dataset_labelled_then_collected_keeps_ids_and_splits(tmp_path, monkeypatch):
    """Cheap labels of an imported dataset become a dataset: ids join back, splits are kept."""
    monkeypatch.chdir(tmp_path)
    frames = rattled("H2O", 5, 7)
    configurations = tables.configurations_from_atoms(frames, system="water", generator="md")
    split = ["test", "train", "val", "train", "test"]
    dataset = tables.dataset_table(
        configurations, [-1.0] * 5, [None] * 5, reference="dft", split=split
    )
    tables.write_table(dataset, tmp_path / "d.parquet", "dataset", {})
    report = label_table("d.parquet", "gfn2-xtb", "L.parquet", config_path=None)
    assert report.counts["ok"] == 5
    assert main(
        ["collect", "--configurations", "d.parquet", "--labels", "L.parquet", "-o", "x.parquet"]
    ) == 0  # fmt: skip
    cheap = tables.read_table(tmp_path / "x.parquet", kind="dataset")
    assert cheap.column(keys.ID).to_pylist() == dataset.column(keys.ID).to_pylist()
    assert cheap.column(keys.SPLIT).to_pylist() == split
    assert set(cheap.column(keys.REFERENCE).to_pylist()) == {"gfn2-xtb"}
    assert cheap.column(keys.POSITIONS).equals(dataset.column(keys.POSITIONS))
    labelled = labels.read_labels(tmp_path / "L.parquet")
    assert cheap.column(keys.ENERGY).to_pylist() == labelled.column(keys.ENERGY).to_pylist()
    assert cheap.column(keys.FORCES).null_count == 0
    # --splits asks for fresh ones from the id hash
    main(["collect", "--configurations", "d.parquet", "--labels", "L.parquet", "-o", "y.parquet",
          "--splits", "0,0,1"])  # fmt: skip
    fresh = tables.read_table(tmp_path / "y.parquet")
    assert fresh.column(keys.SPLIT).to_pylist() == ["test"] * 5


def test_ids_and_limit_label_part_of_a_table(study, count_calls, capsys):
    root, _ = study
    calls, _ = count_calls
    ids = tables.read_table(root / "configs.parquet").column(keys.ID).to_pylist()
    main(["label", "configs.parquet", "--reference", "xtb", "-o", "a.parquet",
          "--ids", f"{ids[3]},{ids[1]}"])  # fmt: skip
    assert labels.read_labels(root / "a.parquet").column(keys.CONFIG_ID).to_pylist() == [
        ids[1],
        ids[3],
    ]
    assert sorted(calls) == sorted([ids[1], ids[3]])
    (root / "ids.txt").write_text(f"# two of them\n{ids[0]}\n{ids[5]}  # methanol\n")
    main(["label", "configs.parquet", "--reference", "xtb", "-o", "b.parquet",
          "--ids", "ids.txt", "--limit", "1"])  # fmt: skip
    assert labels.read_labels(root / "b.parquet").column(keys.CONFIG_ID).to_pylist() == [ids[0]]
    main(["label", "configs.parquet", "--reference", "xtb", "-o", "c.parquet", "--limit", "2"])
    assert labels.read_labels(root / "c.parquet").column(keys.CONFIG_ID).to_pylist() == ids[:2]
    capsys.readouterr()
    err = run_cli_error(capsys, root, "configs.parquet", "--reference", "xtb", "-o", "d.parquet",
                        "--ids", f"{ids[0]},deadbeef")  # fmt: skip
    assert "--ids: configuration deadbeef is not in configs.parquet" in err
    err = run_cli_error(capsys, root, "configs.parquet", "--reference", "xtb", "-o", "d.parquet",
                        "--limit", "0")  # fmt: skip
    assert "--limit must be at least 1, got 0" in err


def test_psi4_python_setting_reaches_the_backend_without_touching_the_environment(
    study, capsys, monkeypatch
):
    """Issue 11: labelling.psi4_python is passed to the Psi4 backend, not via os.environ."""
    import os

    root, _ = study
    monkeypatch.delenv("PILIP_PSI4_PYTHON", raising=False)
    write_config(root / "config.yaml", psi4_python=str(root / "no-python"))
    err = run_cli_error(
        capsys, root, "configs.parquet", "--reference", "scf/sto-3g", "-o", "l.parquet"
    )
    assert f"labelling.psi4_python = {root / 'no-python'}: not an interpreter that runs" in err
    assert "PILIP_PSI4_PYTHON" not in os.environ


def test_commands_create_the_output_folder(study):
    """Issue 14, defect 1: every command writes into a folder that does not exist yet."""
    root, _ = study
    steps = [
        ["label", "configs.parquet", "--reference", "xtb", "-o", "a/b/l.parquet"],
        ["collect", "--configurations", "configs.parquet", "--labels", "a/b/l.parquet",
         "-o", "c/d/data.parquet"],
        ["export", "c/d/data.parquet", "-o", "e/f/data.xyz"],
        ["import", "e/f/data.xyz", "-o", "g/h/back.parquet"],
        ["chunk", "configs.parquet", "--size", "2", "-o", "i/j/chunks"],
    ]  # fmt: skip
    for argv in steps:
        assert main(argv) == 0, argv
    assert labels.read_labels(root / "a" / "b" / "l.parquet").num_rows == 6
    assert tables.read_table(root / "g" / "h" / "back.parquet").num_rows == 6
    assert len(list((root / "i" / "j" / "chunks").glob("*.parquet"))) == 3
