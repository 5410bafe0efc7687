"""Chunking, collecting labels into the dataset table, splits, force validation, summary."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
import yaml

from pilip import keys, splits, tables
from pilip.chunks import write_chunks
from pilip.cli import main
from pilip.collect import collect, force_validation_subset, summary_text
from pilip.errors import PilipError
from pilip.reference import labels
from pilip.rows import FIT, SELECT, RowFlags, stage_rows


def configurations(system: str, n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    base = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    positions = [base + rng.normal(0, 0.05, base.shape) for _ in range(n)]
    return tables.configurations_table(
        [[8, 1, 1]] * n, positions, system=system, generator="rattle", seed=seed
    )


def record(config_id, status="ok", energy=-2000.0, forces=None, error=None, wall=1.5):
    return {
        "config_id": config_id,
        "status": status,
        "energy": energy if status == "ok" else None,
        "forces": forces,
        "components": {"scf/cc-pvdz": energy / 27.211386245988} if status == "ok" else {},
        "error": error,
        "wall_time": wall,
        "attempts": 1,
        "program": "psi4",
        "program_version": "1.3.2",
        "method": "mp2/cc-pv[dt]z",
        "options": {},
        "threads": 1,
        "host": "h",
        "date": "2026-01-01T00:00:00+00:00",
    }


@pytest.fixture
def study(tmp_path):
    water = configurations("water", 30, 0)
    other = configurations("wet", 10, 1)
    tables.write_table(water, tmp_path / "water.parquet", "configurations", {})
    tables.write_table(other, tmp_path / "wet.parquet", "configurations", {})
    ids = water.column(keys.ID).to_pylist() + other.column(keys.ID).to_pylist()
    records = [record(i, energy=-2000.0 - k) for k, i in enumerate(ids)]
    records[3] = record(ids[3], "failed", error="SCFConvergenceError: did not converge in 100")
    records[4] = record(ids[4], "failed", error="SCFConvergenceError: did not converge in 200")
    records[5] = record(ids[5], "timeout", error="timed out after 10 s")
    # labels in two chunk files, the last configuration never labelled
    first = labels.labels_table(records[:20], "mp2_cbs")
    second = labels.labels_table(records[20:-1], "mp2_cbs")
    labels.write_labels(first, tmp_path / "labels" / "chunk-0000.parquet", {})
    labels.write_labels(second, tmp_path / "labels" / "chunk-0001.parquet", {})
    return tmp_path, ids, records


def test_chunks_cover_the_table_in_order(tmp_path):
    table = configurations("water", 7, 0)
    tables.write_table(table, tmp_path / "c.parquet", "configurations", {})
    paths = write_chunks(tmp_path / "c.parquet", tmp_path / "chunks", 3)
    assert [p.name for p in paths] == [f"chunk-000{i}.parquet" for i in range(3)]
    parts = [tables.read_table(p, kind="configurations") for p in paths]
    assert [p.num_rows for p in parts] == [3, 3, 1]
    joined = pa.concat_tables(parts)
    assert joined.column(keys.ID).to_pylist() == table.column(keys.ID).to_pylist()
    np.testing.assert_array_equal(
        tables.positions_to_numpy(joined.column(keys.POSITIONS))[0],
        tables.positions_to_numpy(table.column(keys.POSITIONS))[0],
    )
    # re-chunking replaces the folder: no stale chunk-0002 left behind
    write_chunks(tmp_path / "c.parquet", tmp_path / "chunks", 4)
    assert sorted(p.name for p in (tmp_path / "chunks").iterdir()) == [
        "chunk-0000.parquet",
        "chunk-0001.parquet",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_chunk_errors(tmp_path):
    tables.write_table(configurations("w", 2, 0), tmp_path / "c.parquet", "configurations", {})
    with pytest.raises(PilipError, match="must be at least 1"):
        write_chunks(tmp_path / "c.parquet", tmp_path / "chunks", 0)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(PilipError, match="holds files other than chunks"):
        write_chunks(tmp_path / "c.parquet", tmp_path / "mine", 2)
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_collect_keeps_ok_rows_with_their_energies_and_hash_splits(study):
    root, ids, records = study
    collected = collect(
        [root / "water.parquet", root / "wet.parquet"], [root / "labels"], (0.8, 0.1, 0.1)
    )
    table = collected.table
    expected = [r for r in records[:-1] if r["status"] == "ok"]
    assert table.column(keys.ID).to_pylist() == [r["config_id"] for r in expected]
    assert table.column(keys.ENERGY).to_pylist() == [r["energy"] for r in expected]
    assert table.column(keys.SPLIT).to_pylist() == splits.assign_splits(
        [r["config_id"] for r in expected], (0.8, 0.1, 0.1)
    )
    assert set(table.column(keys.REFERENCE).to_pylist()) == {"mp2_cbs"}
    assert not any(table.column(keys.FORCE_VALIDATION).to_pylist())
    assert table.column(keys.FORCES).null_count == table.num_rows
    assert collected.status_counts == {"ok": 36, "failed": 2, "timeout": 1}
    assert collected.unlabelled == 1
    assert collected.failures == {
        "failed: SCFConvergenceError": 2,
        "timeout: timed out after 10 s": 1,
    }
    assert table.schema == tables.DATASET_SCHEMA


def test_collect_is_deterministic_and_splits_do_not_depend_on_fractions_of_others(study):
    root, _, _ = study
    inputs = ([root / "water.parquet", root / "wet.parquet"], [root / "labels"])
    a = collect(*inputs, (0.8, 0.1, 0.1)).table
    b = collect(*inputs, (0.8, 0.1, 0.1)).table
    assert a.equals(b)
    c = collect(*inputs, (0.5, 0.25, 0.25)).table
    assert c.column(keys.SPLIT).to_pylist() != a.column(keys.SPLIT).to_pylist()


def test_summary_reports_counts_failures_energy_range_and_wall_time(study):
    root, ids, records = study
    collected = collect([root / "water.parquet", root / "wet.parquet"], [root / "labels"])
    text = summary_text(collected, "datasets/mp2_cbs.parquet")
    assert "reference mp2_cbs" in text
    assert "configurations: 40 (water 30, wet 10)" in text
    assert "labels: ok 36, failed 2, timeout 1, unlabelled 1" in text
    assert "2  failed: SCFConvergenceError" in text
    water = [r["energy"] for r in records[:30] if r["status"] == "ok"]
    assert f"water: {min(water):.6f} .. {max(water):.6f}" in text
    assert f"wall time: {1.5 * 39:.1f} s total" in text
    n = Counter(collected.table.column(keys.SPLIT).to_pylist())
    assert f"dataset rows: 36 (train {n['train']}, val {n['val']}, test {n['test']})" in text


def test_force_validation_subset_and_flags(study, tmp_path):
    root, ids, records = study
    fractions = (0.5, 0.2, 0.3)
    subset = force_validation_subset(
        [root / "water.parquet", root / "wet.parquet"], fractions, "test", 2
    )
    chosen = subset.column(keys.ID).to_pylist()
    in_split = splits.assign_splits(ids, fractions)
    test_ids = [i for i, s in zip(ids, in_split, strict=True) if s == "test"]
    water_test = sorted(i for i in test_ids if i in ids[:30])[:2]
    wet_test = sorted(i for i in test_ids if i in ids[30:])[:2]
    assert sorted(chosen) == sorted(water_test + wet_test)

    forces = {i: np.full((3, 3), 0.5 + k) for k, i in enumerate(chosen)}
    fv = labels.labels_table(
        [record(i, energy=-1.0, forces=forces[i].tolist()) for i in chosen], "mp2_dz"
    )
    labels.write_labels(fv, tmp_path / "fv.parquet", {})
    collected = collect(
        [root / "water.parquet", root / "wet.parquet"],
        [root / "labels"],
        fractions,
        [tmp_path / "fv.parquet"],
    )
    table = collected.table
    flags = dict(
        zip(
            table.column(keys.ID).to_pylist(),
            table.column(keys.FORCE_VALIDATION).to_pylist(),
            strict=True,
        )
    )
    ok_chosen = [i for i in chosen if i in flags]  # a chosen row whose label failed is absent
    assert ok_chosen
    assert {i for i, f in flags.items() if f} == set(ok_chosen)
    row = table.column(keys.ID).to_pylist().index(ok_chosen[0])
    np.testing.assert_array_equal(
        np.array(table.column(keys.FORCES)[row].as_py()), forces[ok_chosen[0]]
    )
    # the energy stays the training reference's, not the force-validation level's
    assert table.column(keys.ENERGY)[row].as_py() != -1.0
    # training and model selection never read a force-validation row (pilip.rows)
    split = np.asarray(table.column(keys.SPLIT).to_pylist(), dtype=object)
    fv = np.asarray(table.column(keys.FORCE_VALIDATION).to_pylist(), dtype=bool)
    used = np.concatenate([stage_rows(s, RowFlags(split, fv)) for s in (FIT, SELECT)])
    assert not fv[used].any() and fv.sum() == len(ok_chosen)
    assert collected.force_validation_rows == len(ok_chosen)
    assert "force validation: " in summary_text(collected, "d.parquet")


def test_merge_prefers_ok_rows_and_refuses_mixed_references():
    failed = labels.labels_table([record("a", "failed", error="x")], "ref")
    ok = labels.labels_table([record("a", energy=-3.0)], "ref")
    merged = labels.merge_labels([ok, failed])
    assert merged.num_rows == 1 and merged.column(keys.STATUS).to_pylist() == ["ok"]
    other = labels.labels_table([record("b")], "other")
    with pytest.raises(PilipError, match="different references"):
        labels.merge_labels([ok, other])


def test_collect_cli_writes_dataset_and_summary(study, capsys):
    root, _, _ = study
    config = {
        "systems": {"water": {"seed": "H2O"}},
        "splits": {"train": 0.6, "val": 0.2, "test": 0.2},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    out = root / "datasets" / "mp2_cbs.parquet"
    code = main([
        "collect", "--configurations", str(root / "water.parquet"), str(root / "wet.parquet"),
        "--labels", str(root / "labels"), "--config", str(root / "config.yaml"), "-o", str(out),
    ])  # fmt: skip
    assert code == 0
    table = tables.read_table(out, kind="dataset")
    assert tables.field_unit(table, keys.ENERGY) == "eV"
    assert table.column(keys.SPLIT).to_pylist() == splits.assign_splits(
        table.column(keys.ID).to_pylist(), (0.6, 0.2, 0.2)
    )
    summary = (root / "datasets" / "mp2_cbs.summary.txt").read_text()
    assert "labels: ok 36, failed 2, timeout 1" in summary
    assert tables.table_provenance(table)["splits"] == {"train": 0.6, "val": 0.2, "test": 0.2}


def test_collect_cli_bad_input(study, capsys, monkeypatch):
    root, _, _ = study
    monkeypatch.chdir(root)  # no config.yaml here: default fractions
    out = root / "d.parquet"
    code = main(["collect", "--configurations", str(root / "water.parquet"), "--labels",
                 str(root / "nothing"), "-o", str(out), "--splits", "0.8,0.1"])  # fmt: skip
    assert code == 2 and not out.exists()
    assert "--splits: expected three fractions" in capsys.readouterr().err
    code = main(["collect", "--configurations", str(root / "water.parquet"),
                 "--labels", str(root / "nothing.parquet"), "-o", str(out)])  # fmt: skip
    assert code == 2 and not out.exists()
    assert "nothing.parquet: no such file" in capsys.readouterr().err


def test_force_validation_subset_of_an_empty_split_is_empty(study):
    root, _, _ = study
    subset = force_validation_subset([root / "water.parquet"], (1.0, 0.0, 0.0), "test", 3)
    assert subset.num_rows == 0 and subset.schema.names == tables.CONFIGURATION_SCHEMA.names


def test_splits_set_by_hand_win_over_the_hash_everywhere(study, tmp_path):
    """A held-back molecule (systems.<name>.split) and single rows (splits.by_id) land in the
    split the user named, in collect and in the force-validation pick alike."""
    root, ids, _ = study
    water_ids, wet_ids = ids[:30], ids[30:]
    paths = [root / "water.parquet", root / "wet.parquet"]
    fractions = (0.8, 0.1, 0.1)
    chosen = water_ids[0]
    hashed = splits.assign_splits([chosen], fractions)[0]
    moved_to = "val" if hashed != "val" else "test"
    collected = collect(
        paths, [root / "labels"], fractions,
        split_of_system={"wet": "test"}, split_of_id={chosen: moved_to},
    )  # fmt: skip
    rows = dict(
        zip(
            collected.table.column(keys.ID).to_pylist(),
            collected.table.column(keys.SPLIT).to_pylist(),
            strict=True,
        )
    )
    assert {rows[i] for i in wet_ids if i in rows} == {"test"}
    assert rows[chosen] == moved_to
    others = [i for i in water_ids if i in rows and i != chosen]
    assert [rows[i] for i in others] == splits.assign_splits(others, fractions)
    assert collected.fixed_splits == sum(1 for i in wet_ids if i in rows) + 1
    assert "splits set by hand:" in summary_text(collected, "d.parquet")

    subset = force_validation_subset(paths, fractions, "test", 50, split_of_system={"wet": "test"})
    picked = subset.column(keys.ID).to_pylist()
    assert set(wet_ids) <= set(picked)  # every wet configuration is now a test row
    assert all(rows.get(i, "test") == "test" for i in picked)

    with pytest.raises(PilipError, match="no configurations of system 'dry'"):
        collect(paths, [root / "labels"], fractions, split_of_system={"dry": "test"})
    with pytest.raises(PilipError, match="'feedbeef' is not the id of any configuration"):
        collect(paths, [root / "labels"], fractions, split_of_id={"feedbeef": "val"})


def test_collect_cli_splits_from_config_and_options(study, capsys):
    root, ids, _ = study
    config = {
        "systems": {"water": {"seed": "H2O"}, "wet": {"seed": "H2O", "split": "val"}},
        "splits": {"by_id": {ids[0]: "test"}},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    out = root / "d.parquet"
    tables_in = [str(root / "water.parquet"), str(root / "wet.parquet")]
    base = ["collect", "--configurations", *tables_in, "--labels", str(root / "labels"),
            "--config", str(root / "config.yaml"), "-o", str(out)]  # fmt: skip
    assert main(base) == 0
    table = tables.read_table(out, kind="dataset")
    split = dict(zip(table[keys.ID].to_pylist(), table[keys.SPLIT].to_pylist(), strict=True))
    assert split[ids[0]] == "test" and {split[i] for i in ids[30:-1]} == {"val"}
    # options override the config
    assert main([*base, "--system-split", "wet=train", "--id-split", f"{ids[0]}=val"]) == 0
    table = tables.read_table(out, kind="dataset")
    split = dict(zip(table[keys.ID].to_pylist(), table[keys.SPLIT].to_pylist(), strict=True))
    assert split[ids[0]] == "val" and {split[i] for i in ids[30:-1]} == {"train"}
    assert main([*base, "--system-split", "wet:train"]) == 2
    assert "--system-split: expected NAME=SPLIT" in capsys.readouterr().err


def test_collect_warns_about_splits_a_stage_cannot_use(study, capsys):
    """8 structures at 0.8/0.1/0.1 used to give val 0 without a word (issue 14)."""
    root, _, _ = study
    out = root / "d.parquet"
    code = main(["collect", "--configurations", str(root / "water.parquet"), "--labels",
                 str(root / "labels"), "-o", str(out), "--config", str(root / "absent.yaml"),
                 "--splits", "1,0,0", "--force-validation", str(root / "labels")])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "dataset rows: 27 (train 27, val 0, test 0)" in err
    assert "warning: val split has 0 rows (train 27, val 0, test 0): training needs" in err
    assert "warning: test split has 0 rows" in err and "evaluation needs at least 1" in err
    assert "warning: train split" not in err
    assert "warning: force validation has 0 rows with forces" in err
    summary = (root / "d.summary.txt").read_text()
    assert summary.count("warning:") == 3
    # enough rows in every split: no warning
    assert main(["collect", "--configurations", str(root / "water.parquet"), "--labels",
                 str(root / "labels"), "-o", str(out), "--splits", "0.4,0.3,0.3"]) == 0  # fmt: skip
    assert "warning" not in capsys.readouterr().err


def test_force_subset_warns_when_a_system_gets_no_configuration(study, capsys):
    root, _, _ = study
    config = {"splits": {"train": 1.0, "val": 0.0, "test": 0.0}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    out = root / "fv.parquet"
    code = main(["force-subset", str(root / "water.parquet"), "--config",
                 str(root / "config.yaml"), "-o", str(out)])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "0 configurations from the test split" in err
    assert "warning: system water has no configuration in the test split" in err


def test_force_validation_pick_uses_the_split_collect_writes(study, tmp_path):
    """A dataset table given as configurations keeps its splits in collect; the
    force-validation pick must draw from those same splits, not from the id hash."""
    root, ids, _ = study
    water = tables.read_table(root / "water.parquet", kind="configurations")
    n = water.num_rows
    stored = ["test" if k < 5 else "train" for k in range(n)]
    dataset = tables.dataset_table(water, [-2000.0] * n, [None] * n, reference="dft", split=stored)
    tables.write_table(dataset, tmp_path / "data.parquet", "dataset", {})
    subset = force_validation_subset([tmp_path / "data.parquet"], (1.0, 0.0, 0.0), "test", 10)
    assert sorted(subset.column(keys.ID).to_pylist()) == sorted(ids[:5])
    collected = collect([tmp_path / "data.parquet"], [root / "labels"], (1.0, 0.0, 0.0))
    split = dict(
        zip(
            collected.table[keys.ID].to_pylist(),
            collected.table[keys.SPLIT].to_pylist(),
            strict=True,
        )
    )
    assert {split[i] for i in subset.column(keys.ID).to_pylist() if i in split} == {"test"}
