"""Damaged files (issue 13 item 3): every one is refused in one line or recomputed, never read
as other numbers and never a traceback.

Truncated and bit-flipped Parquet tables, a results JSONL cut mid-line (the partial line is
recomputed) or broken inside (refused), a checkpoint cut short, and a config with a wrong type
in every section. tools/fault_campaign runs the same kinds of damage on the files of a
real DAG run and counts them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from ase.build import molecule

from pilip import keys, tables
from pilip.cli import main
from pilip.config import load_config, load_schema
from pilip.errors import PilipError
from pilip.potential import data
from pilip.potential.checkpoint import load_model, read_checkpoint, save_checkpoint
from pilip.potential.models import build_model
from pilip.reference import labels
from pilip.reference.backends.base import read_results
from pilip.reference.backends.xtb_backend import XTBBackend
from pilip.reference.labelling import label_table


def one_line_refusal(code: int, err: str, names: str) -> str:
    """The error line of a clean refusal: exit 2, no traceback, the last line names ``names``."""
    assert code == 2, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert ": error: " in line and names in line, line
    return line


def rattled_water(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        frames.append(atoms)
    return frames


@pytest.fixture
def configurations(tmp_path) -> Path:
    table = tables.configurations_from_atoms(rattled_water(12), system="water", generator="rattle")
    return tables.write_table(table, tmp_path / "water.parquet", "configurations", {})


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A dataset table: configurations with energies and splits (what pilip collect writes)."""
    table = tables.configurations_from_atoms(rattled_water(12), system="water", generator="rattle")
    energies = pa.array(-2077.0 + np.linspace(0.0, 0.5, table.num_rows))
    splits = pa.array(["train"] * 8 + ["val"] * 2 + ["test"] * 2)
    table = table.append_column(keys.ENERGY, energies).append_column(keys.SPLIT, splits)
    return tables.write_table(table, tmp_path / "dataset.parquet", "dataset", {})


def data_page_offsets(path: Path) -> list[int]:
    """Byte offsets of every column chunk's pages (headers and data) in a Parquet file."""
    meta = pq.ParquetFile(path).metadata
    offsets = []
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            column = meta.row_group(g).column(c)
            start = column.dictionary_page_offset or column.data_page_offset
            offsets += range(start, start + column.total_compressed_size)
    return offsets


def reads_of_flipped(path: Path, offsets, count: int, seed: int, read, error_has: str):
    """Flip one seeded bit of ``path`` at ``count`` of ``offsets`` in turn (from the intact
    bytes each time) and ``read(path)``. A refusal must be a one-line PilipError containing
    ``error_has``. Returns how many were refused and ``(offset, read(path))`` of the others."""
    raw = path.read_bytes()
    rng = np.random.default_rng(seed)
    refused, read_back = 0, []
    for offset in rng.choice(offsets, size=count, replace=False):
        flipped = bytearray(raw)
        flipped[offset] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(flipped))
        try:
            value = read(path)
        except PilipError as exc:
            assert "\n" not in str(exc) and error_has in str(exc)
            refused += 1
            continue
        read_back.append((int(offset), value))
    return refused, read_back


# --- Parquet: truncated, bit-flipped -------------------------------------------------------


@pytest.mark.parametrize("keep", ["half", "footer cut"])
def test_truncated_table_is_refused_by_its_reader(configurations, tmp_path, capsys, keep):
    raw = configurations.read_bytes()
    configurations.write_bytes(raw[: len(raw) // 2] if keep == "half" else raw[:-9])
    code = main(["chunk", str(configurations), "--size", "4", "-o", str(tmp_path / "chunks")])
    line = one_line_refusal(code, capsys.readouterr().err, "water.parquet")
    assert "re-create it" in line
    assert not (tmp_path / "chunks").exists()


def test_truncated_dataset_is_refused_by_training_data_loading(dataset):
    raw = dataset.read_bytes()
    dataset.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PilipError, match="dataset.parquet: not a readable Parquet file"):
        data.load_dataset(dataset)


def test_bit_flips_in_data_pages_are_never_read_as_other_numbers(configurations):
    """Every bit flip inside a page is refused or harmless (the page CRC catches the data)."""
    original = tables.read_table(configurations)
    offsets = data_page_offsets(configurations)
    refused, read_back = reads_of_flipped(
        configurations, offsets, 60, 3, tables.read_table, "water.parquet"
    )
    for offset, table in read_back:
        assert table.equals(original), f"flip at byte {offset} read as other numbers"
    assert refused >= 40  # most flips land in compressed data, covered by the page CRC


def test_bit_flips_in_a_dataset_column_never_reach_training(dataset):
    """pilip.data's column reads check page CRCs too, and fail in one line, never a traceback."""
    want = data.load_dataset(dataset)["train"].energy
    raw = dataset.read_bytes()
    meta = pq.ParquetFile(dataset)
    column = meta.metadata.row_group(0).column(meta.schema_arrow.get_field_index(keys.ENERGY))
    start = column.dictionary_page_offset or column.data_page_offset
    refused = 0
    for offset in range(start, start + column.total_compressed_size):
        flipped = bytearray(raw)
        flipped[offset] ^= 0x10
        dataset.write_bytes(bytes(flipped))
        try:
            got = data.load_dataset(dataset)["train"].energy
        except PilipError as exc:
            assert "\n" not in str(exc) and "dataset.parquet" in str(exc)
            refused += 1
            continue
        assert torch.equal(got, want), f"flip at byte {offset} read as other energies"
    assert refused > column.total_compressed_size // 2


def footer_offsets(path: Path) -> range:
    """Byte offsets of the Parquet footer (schema, encodings, offsets, metadata): no page CRC."""
    raw = path.read_bytes()
    length = int.from_bytes(raw[-8:-4], "little")
    return range(len(raw) - 8 - length, len(raw) - 8)


def same_table(a: pa.Table, b: pa.Table) -> bool:
    """Equal values, field names, types, units and file metadata (a list's item name, which
    Parquet itself renames from ``item`` to ``element``, aside)."""
    return (
        a.equals(b)
        and a.schema.metadata == b.schema.metadata
        and [(f.name, f.nullable, f.metadata) for f in a.schema]
        == [(f.name, f.nullable, f.metadata) for f in b.schema]
    )


def test_bit_flips_in_the_footer_are_never_read_as_other_values(dataset):
    """The footer has no CRC: a flip there could read an energy column with another encoding,
    rename a field or change the provenance. The content checksums catch each of them (before
    them, about one footer flip in seven read back as another table, some as a traceback)."""
    original = tables.read_table(dataset)
    refused, read_back = reads_of_flipped(
        dataset, footer_offsets(dataset), 300, 7, tables.read_table, "dataset.parquet"
    )
    for offset, table in read_back:
        assert same_table(table, original), f"flip at byte {offset} misread"
    assert refused >= 150


def test_bit_flips_in_the_footer_never_reach_training(dataset):
    """Column reads with a row filter (the training forces) verify the columns they read."""
    want = data.load_dataset(dataset)["train"].energy

    def read(path: Path):
        got = data.load_dataset(path)["train"].energy
        return got, tables.read_parquet(path, [keys.ENERGY], [(keys.SPLIT, "=", "val")])

    _, read_back = reads_of_flipped(
        dataset, footer_offsets(dataset), 100, 8, read, "dataset.parquet"
    )
    for offset, (got, rows) in read_back:
        assert torch.equal(got, want), f"flip at byte {offset} read as other energies"
        assert rows.column(keys.ENERGY).to_pylist() == original_val_energies(want)


def original_val_energies(train_energies) -> list[float]:
    """The val energies of the ``dataset`` fixture (rows 8 and 9 of its linspace)."""
    return list(-2077.0 + np.linspace(0.0, 0.5, 12)[8:10])


# --- the results JSONL: cut mid-line, broken inside ------------------------------------------


@pytest.fixture
def labelled(tmp_path, monkeypatch, configurations):
    """Water configurations labelled with GFN2-xTB; the xtb single points are counted."""
    monkeypatch.chdir(tmp_path)
    config = {
        "systems": {"water": {"seed": "H2O"}},
        "references": {"xtb": {"backend": "xtb", "method": "GFN2-xTB"}},
        "labelling": {"reference": "xtb"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    label_table(configurations, "xtb", "labels.parquet", config_path="config.yaml")
    calls: list[str] = []
    original = XTBBackend._single_point

    def counted(self, config, options, gradients):
        calls.append(config["id"])
        return original(self, config, options, gradients)

    monkeypatch.setattr(XTBBackend, "_single_point", counted)
    return tmp_path, calls


def test_results_cut_mid_line_recomputes_only_that_line(labelled, configurations):
    root, calls = labelled
    results = labels.results_path_for(root / "labels.parquet")
    want = pq.read_table(root / "labels.parquet").to_pylist()
    lines = results.read_bytes().split(b"\n")
    results.write_bytes(b"\n".join(lines[:5]) + b"\n" + lines[5][: len(lines[5]) // 2])
    (root / "labels.parquet").unlink()
    report = label_table(configurations, "xtb", "labels.parquet", config_path="config.yaml")
    got = pq.read_table(root / "labels.parquet").to_pylist()
    assert len(calls) == len(want) - 5  # the cut line and the ones after it, nothing else
    assert report.computed == len(calls)
    assert [r[keys.ENERGY] for r in got] == [r[keys.ENERGY] for r in want]
    assert all(r[keys.STATUS] == keys.STATUS_OK for r in got)


def test_results_broken_inside_is_refused_in_one_line(labelled, configurations, capsys):
    root, calls = labelled
    results = labels.results_path_for(root / "labels.parquet")
    lines = results.read_bytes().split(b"\n")
    lines[2] = lines[2][:30]
    results.write_bytes(b"\n".join(lines))
    (root / "labels.parquet").unlink()
    argv = ["label", str(configurations), "--reference", "xtb", "-o", "labels.parquet"]
    line = one_line_refusal(main(argv), capsys.readouterr().err, f"{results.name}:3")
    assert "remove the line or the file" in line
    assert calls == [] and not (root / "labels.parquet").exists()


def test_bit_flips_in_results_lines_never_become_labels(labelled, configurations):
    """A flipped bit in a results line can leave valid JSON with another energy digit; each
    line's CRC-32 makes it a one-line refusal naming the line, or it changed nothing."""
    root, calls = labelled
    results = labels.results_path_for(root / "labels.parquet")
    want = {k: r["energy"] for k, r in read_results(results).items()}
    refused, read_back = reads_of_flipped(
        results,
        len(results.read_bytes()) - 1,  # not the last newline
        200,
        5,
        lambda path: {k: r["energy"] for k, r in read_results(path).items()},
        f"{results}:",
    )
    for offset, got in read_back:
        assert got == want, f"flip at byte {offset} read as other energies"
    assert refused >= 150


def test_results_lines_without_a_crc_still_read(labelled):
    """Results files written before lines carried a CRC-32 resume as before."""
    root, _ = labelled
    results = labels.results_path_for(root / "labels.parquet")
    records = read_results(results)
    results.write_text("".join(json.dumps(r) + "\n" for r in records.values()))
    assert read_results(results) == records


# --- checkpoints cut short -------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    model = build_model("schnet", n_features=8, n_interactions=1, cutoff=3.0)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model=model, model_name="schnet", meta={"config": {}})
    return path


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.99])
def test_checkpoint_cut_short_is_refused_with_what_to_do(checkpoint, fraction):
    raw = checkpoint.read_bytes()
    checkpoint.write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(PilipError) as info:
        load_model(checkpoint)
    text = str(info.value)
    assert "\n" not in text and str(checkpoint) in text
    assert "delete it and rerun `pilip train`" in text


def test_bit_flips_in_a_checkpoint_never_load_as_other_weights(checkpoint):
    """torch.load does not check the zip entries' CRCs: most flips in the weights loaded as
    other weights. Every flip is now refused in one line or loads exactly the same model."""
    want = read_checkpoint(checkpoint)["model"]["state_dict"]
    refused, read_back = reads_of_flipped(
        checkpoint,
        len(checkpoint.read_bytes()),
        150,
        11,
        lambda path: read_checkpoint(path)["model"]["state_dict"],
        "delete it and rerun `pilip train`",
    )
    for offset, got in read_back:
        assert got.keys() == want.keys(), f"flip at byte {offset}"
        for name in want:
            assert torch.equal(got[name], want[name]), f"flip at byte {offset}: other {name}"
    assert refused >= 100


def test_evaluate_refuses_a_checkpoint_cut_short(checkpoint, dataset, tmp_path, capsys):
    raw = checkpoint.read_bytes()
    checkpoint.write_bytes(raw[: len(raw) // 2])
    argv = ["evaluate", str(checkpoint), str(dataset), "--out", str(tmp_path / "eval")]
    one_line_refusal(main(argv), capsys.readouterr().err, "model.pt")
    assert not (tmp_path / "eval" / "metrics.json").exists()


# --- a config with a wrong type in every section ---------------------------------------------

BASE_CONFIG = {
    "systems": {"water": {"seed": "H2O"}},
    "references": {"hf": {"backend": "psi4", "method": "scf/cc-pvdz"}},
    "labelling": {"reference": "hf"},
    "force_validation": {"reference": "hf"},
}


def wrong_type_cases() -> list[tuple[str, dict, str]]:
    """(label, config, key the error must name): the section itself and one key inside it."""
    cases = []
    for section, spec in load_schema()["properties"].items():
        config = json.loads(json.dumps(BASE_CONFIG))
        config[section] = 42
        cases.append((f"{section}: 42", config, section))
        inner = spec.get("properties") or {}
        scalar = [(k, v) for k, v in inner.items() if v.get("type") in ("integer", "number")]
        scalar += [(k, v) for k, v in inner.items() if v.get("type") == "boolean"]
        if scalar:
            key = scalar[0][0]
            config = json.loads(json.dumps(BASE_CONFIG))
            config.setdefault(section, {})[key] = "ten"
            cases.append((f"{section}.{key}: ten", config, f"{section}.{key}"))
    config = json.loads(json.dumps(BASE_CONFIG))
    config["systems"]["water"]["seed"] = [1, 2]
    cases.append(("systems.water.seed: a list", config, "systems.water.seed"))
    config = json.loads(json.dumps(BASE_CONFIG))
    config["references"]["hf"]["method"] = 7
    cases.append(("references.hf.method: 7", config, "references.hf.method"))
    return cases


WRONG_TYPES = wrong_type_cases()


def test_every_config_section_gets_a_wrong_type_case():
    sections = {label.split(":")[0].split(".")[0] for label, _, _ in WRONG_TYPES}
    assert sections == set(load_schema()["properties"])


@pytest.mark.parametrize(("label", "config", "key"), WRONG_TYPES, ids=[c[0] for c in WRONG_TYPES])
def test_wrong_type_in_a_config_section_is_refused_in_one_line(tmp_path, label, config, key):
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(PilipError) as info:
        load_config(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: {key}"), text


def test_sample_refuses_a_wrong_type_before_writing(tmp_path, capsys):
    config = json.loads(json.dumps(BASE_CONFIG))
    config["sampling"] = {"seed": "one"}
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "water.parquet"
    argv = ["sample", "--config", str(tmp_path / "my.yaml"), "--system", "water", "-o", str(out)]
    one_line_refusal(main(argv), capsys.readouterr().err, "sampling.seed")
    assert not out.exists()


def test_positions_column_read_is_exact(configurations):
    """The checked read returns the very numbers written (no conversion on the way)."""
    table = tables.read_table(configurations)
    flat = pc.list_flatten(pc.list_flatten(table.column(keys.POSITIONS))).to_numpy()
    frames = rattled_water(12)
    assert np.array_equal(flat, np.concatenate([a.positions.ravel() for a in frames]))
