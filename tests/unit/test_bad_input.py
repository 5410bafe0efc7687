"""Bad input through the command line: exit 2, one line naming the file or key, no output file.

One test per case of the foundation issue (item 7), for each kind of file pilip reads:
structure files given to ``pilip import``, seed files and config keys given to ``pilip sample``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pilip.cli import main

WATER = "O 0.0 0.0 0.119262\nH 0.0 0.763239 -0.477047\nH 0.0 -0.763239 -0.477047\n"
HEADER = "Properties=species:S:1:pos:R:3:forces:R:3"


def xyz(atom_lines: str, comment: str = "energy=-2000.5", n: int | None = None) -> str:
    lines = atom_lines.strip("\n").splitlines()
    return f"{len(lines) if n is None else n}\n{comment}\n" + "\n".join(lines) + "\n"


def labelled_water(forces: str = "0.1 0.2 0.3", energy: str = "-2000.5") -> str:
    atoms = [line + " " + forces for line in WATER.strip().splitlines()]
    return xyz("\n".join(atoms), f"{HEADER} energy={energy}")


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


def assert_clean_failure(code: int, err: str, names: str, output: Path) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert names in lines[0], lines[0]
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}")]


# --- structure files given to `pilip import` -------------------------------------------------

IMPORT_CASES = {
    "malformed": (b"hello world\nthis is not xyz\n", "cannot read as extxyz"),
    "truncated": (xyz(WATER, n=5).encode(), "truncated"),
    "truncated_line": (xyz(WATER + "H 0.0 0.5\n").encode(), "truncated"),
    "binary": (bytes(range(256)) * 4, "binary content"),
    "empty": (b"", "empty file"),
    "blank": (b"\n\n  \n", "empty file"),
    "unknown_element": (xyz(WATER.replace("O ", "Xx ")).encode(), "unknown element symbol 'Xx'"),
    "dummy_element": (xyz(WATER.replace("O ", "X ")).encode(), "is not a real element"),
    "nan_coordinate": (xyz(WATER.replace("0.119262", "nan")).encode(), "non-finite coordinate"),
    "inf_coordinate": (xyz(WATER.replace("0.763239", "inf", 1)).encode(), "non-finite coordinate"),
    "nan_energy": (labelled_water(energy="nan").encode(), "energy is nan"),
    "inf_energy": (labelled_water(energy="-inf").encode(), "energy is -inf"),
    "text_energy": (labelled_water(energy="abc").encode(), "energy 'abc' is not a number"),
    "nan_forces": (
        labelled_water(forces="0.1 nan 0.3").encode(),
        "forces on atom 0 are not finite",
    ),
    "inf_forces": (labelled_water(forces="inf 0 0").encode(), "forces on atom 0 are not finite"),
    "atoms_too_close": (
        xyz(WATER + "H 0.0 0.0 0.3\n", "charge=1").encode(),
        "atoms 0 and 3 are 0.181 A apart, closer than min_distance 0.6 A",
    ),
    "charge_multiplicity": (
        xyz(WATER, "energy=-2000.5 multiplicity=2").encode(),
        "charge 0 and multiplicity 2 do not fit 10 electrons",
    ),
    "charge_too_large": (xyz(WATER, "charge=11 multiplicity=1").encode(), "leaves -1 electrons"),
    "periodic": (
        xyz(WATER, 'energy=1.0 pbc="T T T" Lattice="9 0 0 0 9 0 0 0 9"').encode(),
        "periodic",
    ),
}


@pytest.mark.parametrize("case", sorted(IMPORT_CASES))
def test_import_rejects_bad_structure_file(tmp_path, capsys, case):
    content, message = IMPORT_CASES[case]
    source = tmp_path / f"{case}.xyz"
    source.write_bytes(content)
    out = tmp_path / "out" / "data.parquet"
    out.parent.mkdir()
    code, err = run(["import", str(source), "-o", str(out), "--reference", "ref"], capsys)
    assert_clean_failure(code, err, f"{case}.xyz", out)
    assert message in err


def test_import_rejects_mixed_labelled_and_unlabelled_frames(tmp_path, capsys):
    source = tmp_path / "mixed.xyz"
    source.write_text(xyz(WATER) + xyz(WATER.replace("0.119262", "0.2"), "comment"))
    out = tmp_path / "data.parquet"
    code, err = run(["import", str(source), "-o", str(out), "--reference", "ref"], capsys)
    assert_clean_failure(code, err, "mixed.xyz frame 1", out)
    assert "give every frame an energy or none" in err


def test_import_names_the_bad_frame(tmp_path, capsys):
    source = tmp_path / "frames.xyz"
    source.write_text(xyz(WATER) + xyz(WATER) + xyz(WATER.replace("0.119262", "nan")))
    out = tmp_path / "data.parquet"
    code, err = run(["import", str(source), "-o", str(out), "--reference", "ref"], capsys)
    assert_clean_failure(code, err, "frames.xyz frame 2: atom 0 has a non-finite coordinate", out)


def test_import_missing_file(tmp_path, capsys):
    out = tmp_path / "data.parquet"
    code, err = run(["import", str(tmp_path / "absent.xyz"), "-o", str(out)], capsys)
    assert_clean_failure(code, err, "absent.xyz: no such file", out)


@pytest.mark.parametrize("name", ["../escape", "a/b", "mp2 cbs", "1st"])
def test_import_rejects_unsafe_reference_name(tmp_path, capsys, name):
    source = tmp_path / "good.xyz"
    source.write_text(labelled_water())
    out = tmp_path / "data.parquet"
    code, err = run(["import", str(source), "-o", str(out), "--reference", name], capsys)
    assert_clean_failure(code, err, f"--reference: {name!r} is not a safe name", out)


def test_import_rejects_unsafe_system_name(tmp_path, capsys):
    source = tmp_path / "good.xyz"
    source.write_text(labelled_water())
    out = tmp_path / "data.parquet"
    code, err = run(
        ["import", str(source), "-o", str(out), "--reference", "r", "--system", "x/../y"], capsys
    )
    assert_clean_failure(code, err, "--system: 'x/../y' is not a safe name", out)


def test_import_requires_a_reference_for_energies(tmp_path, capsys):
    source = tmp_path / "good.xyz"
    source.write_text(labelled_water())
    out = tmp_path / "data.parquet"
    code, err = run(["import", str(source), "-o", str(out)], capsys)
    assert_clean_failure(code, err, "good.xyz: the file has energies; name their reference", out)


def test_import_rejects_bad_split_fractions(tmp_path, capsys):
    source = tmp_path / "good.xyz"
    source.write_text(labelled_water())
    out = tmp_path / "data.parquet"
    code, err = run(
        ["import", str(source), "-o", str(out), "--reference", "r", "--splits", "0.9,0.2,0"], capsys
    )
    assert_clean_failure(code, err, "--splits: fractions must be >= 0 and sum to 1", out)


def test_export_rejects_a_non_parquet_input(tmp_path, capsys):
    source = tmp_path / "table.parquet"
    source.write_text("not parquet")
    out = tmp_path / "out.xyz"
    code, err = run(["export", str(source), "-o", str(out)], capsys)
    assert_clean_failure(code, err, "table.parquet: not a readable Parquet file", out)


# --- config and seed files given to `pilip sample` -------------------------------------------

GOOD_SAMPLING = "sampling: {generators: [{kind: rattle, n: 2}]}\n"

SAMPLE_CASES = {
    "unknown_top_key": (
        "systems: {water: {seed: H2O}}\nsamples: {}\n",
        "config.yaml: samples: unknown key",
    ),
    "unknown_nested_key": (
        "systems: {water: {seed: H2O}}\nsampling: {generators: [{kind: md, amplitude: 0.1}]}\n",
        "config.yaml: sampling.generators[0].amplitude: unknown key",
    ),
    "wrong_type": (
        "systems: {water: {seed: H2O}}\nsampling: {generators: [{kind: rattle, amplitude: abc}]}\n",
        "config.yaml: sampling.generators[0].amplitude: expected number, got 'abc'",
    ),
    "wrong_type_system": (
        "systems: {water: {seed: H2O, charge: one}}\n" + GOOD_SAMPLING,
        "config.yaml: systems.water.charge: expected integer, got 'one'",
    ),
    "unsafe_system_name": (
        "systems: {'wat/er': {seed: H2O}, water: {seed: H2O}}\n" + GOOD_SAMPLING,
        "config.yaml: systems: 'wat/er' is not a safe name",
    ),
    "yaml_syntax": ("systems: {water: {seed: H2O}\n", "config.yaml: invalid YAML"),
    "unknown_molecule": (
        "systems: {water: {seed: H2Oo}}\n" + GOOD_SAMPLING,
        "systems.water.seed: 'H2Oo' is neither an ASE molecule name",
    ),
    "seed_charge_multiplicity": (
        "systems: {water: {seed: H2O, charge: 0, multiplicity: 2}}\n" + GOOD_SAMPLING,
        "systems.water.seed 'H2O': charge 0 and multiplicity 2 do not fit 10 electrons",
    ),
    "seed_too_close_for_min_distance": (
        "systems: {water: {seed: H2O}}\n"
        "sampling: {min_distance: 1.2, generators: [{kind: rattle}]}\n",
        "systems.water.seed 'H2O': atoms 0 and 1 are 0.969 A apart, closer than min_distance 1.2 A",
    ),
}


@pytest.mark.parametrize("case", sorted(SAMPLE_CASES))
def test_sample_rejects_bad_config(tmp_path, capsys, case):
    text, message = SAMPLE_CASES[case]
    (tmp_path / "config.yaml").write_text(text)
    out = tmp_path / "configurations" / "water.parquet"
    out.parent.mkdir()
    code, err = run(
        ["sample", "--config", str(tmp_path / "config.yaml"), "--system", "water", "-o", str(out)],
        capsys,
    )
    assert_clean_failure(code, err, message, out)


SEED_FILE_CASES = {
    "empty": (b"", "empty file"),
    "malformed": (b"three\natoms\n", "malformed or truncated"),
    "truncated": (xyz(WATER, n=4).encode(), "truncated"),
    "binary": (bytes(range(256)), "binary content"),
    "unknown_element": (xyz(WATER.replace("O ", "Qq ")).encode(), "unknown element symbol 'Qq'"),
    "nan_coordinate": (
        xyz(WATER.replace("-0.477047", "nan", 1), "c").encode(),
        "non-finite coordinate",
    ),
    "atoms_too_close": (
        xyz(WATER.replace("0.763239 -0.477047", "0.1 0.2", 1), "c").encode(),
        "closer than min_distance",
    ),
}


@pytest.mark.parametrize("case", sorted(SEED_FILE_CASES))
def test_sample_rejects_bad_seed_file(tmp_path, capsys, case):
    content, message = SEED_FILE_CASES[case]
    (tmp_path / "seed.xyz").write_bytes(content)
    (tmp_path / "config.yaml").write_text("systems: {water: {seed: seed.xyz}}\n" + GOOD_SAMPLING)
    out = tmp_path / "configurations" / "water.parquet"
    out.parent.mkdir()
    code, err = run(
        ["sample", "--config", str(tmp_path / "config.yaml"), "--system", "water", "-o", str(out)],
        capsys,
    )
    assert_clean_failure(code, err, "seed.xyz", out)
    assert message in err


def test_sample_rejects_a_system_not_in_the_config(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("systems: {water: {seed: H2O}}\n" + GOOD_SAMPLING)
    out = tmp_path / "ethanol.parquet"
    code, err = run(
        [
            "sample",
            "--config",
            str(tmp_path / "config.yaml"),
            "--system",
            "ethanol",
            "-o",
            str(out),
        ],
        capsys,
    )
    assert_clean_failure(
        code, err, "--system: 'ethanol' is not in the config's systems (water)", out
    )
