"""Config loading: schema defaults are filled, errors are one line naming the key path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pilip.config import (
    SAFE_NAME,
    SCHEMA_PATH,
    check_name,
    config_hash,
    key_path,
    load_config,
    load_schema,
    resolved_config,
    settings_json,
    validate_config,
    write_config,
)
from pilip.errors import PilipError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_default_config_is_valid_and_complete():
    config = load_config(REPO / "config.yaml")
    assert set(config["systems"]) == {"water", "ethanol"}
    sampling = config["sampling"]
    assert sampling["min_distance"] == 0.6
    kinds = [g["kind"] for g in sampling["generators"]]
    assert kinds == ["rattle", "normal_modes", "md"]
    md = sampling["generators"][2]
    assert set(md) == {"kind", "n", "temperature", "calculator", "timestep", "friction"} | {
        "interval",
        "equilibration",
    }


def test_defaults_come_from_the_schema(tmp_path):
    config = load_config(
        write(
            tmp_path,
            "systems: {w: {seed: H2O}}\n"
            "sampling: {generators: [{kind: rattle}, {kind: normal_modes, n: 3}, {kind: md}]}\n",
        )
    )
    assert config["systems"]["w"] == {"seed": "H2O", "charge": 0, "multiplicity": 1}
    assert config["sampling"]["seed"] == 0 and config["sampling"]["min_distance"] == 0.6
    rattle, modes, md = config["sampling"]["generators"]
    assert rattle == {"kind": "rattle", "n": 20, "amplitude": 0.05}
    assert modes == {
        "kind": "normal_modes", "n": 3, "temperature": 300, "calculator": "GFN2-xTB",
        "optimize": True, "fmax": 0.01, "step": 0.005,
    }  # fmt: skip
    assert md["interval"] == 20 and md["timestep"] == 0.5 and md["equilibration"] == 200
    # a kind's defaults never leak into another kind
    assert "temperature" not in rattle and "amplitude" not in md


def test_absent_sampling_section_gets_default_generators(tmp_path):
    config = load_config(write(tmp_path, "systems: {w: {seed: H2O}}\n"))
    assert config["sampling"]["generators"] == [{"kind": "rattle", "n": 20, "amplitude": 0.05}]


def test_defaults_match_the_schema_file():
    schema = load_schema()
    sampling = schema["properties"]["sampling"]["properties"]
    config = validate_config({"systems": {"w": {"seed": "H2O"}}}, schema)
    assert config["sampling"]["min_distance"] == sampling["min_distance"]["default"]
    assert config["sampling"]["seed"] == sampling["seed"]["default"]
    assert SCHEMA_PATH.is_file()


def test_input_is_not_modified():
    raw = {"systems": {"w": {"seed": "H2O"}}}
    validate_config(raw)
    assert raw == {"systems": {"w": {"seed": "H2O"}}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "systems: {w: {seed: H2O}}\nsampling: {generators: [{kind: rattle, amplitude: abc}]}",
            "config.yaml: sampling.generators[0].amplitude: expected number, got 'abc'",
        ),
        (
            "systems: {w: {seed: H2O}}\nsampling: {generators: [{kind: rattle, temperature: 3}]}",
            "config.yaml: sampling.generators[0].temperature: unknown key "
            "(allowed: amplitude, kind, n)",
        ),
        (
            "systems: {w: {seed: H2O}}\nsampling: {generators: [{kind: md, interval: 2.5}]}",
            "config.yaml: sampling.generators[0].interval: expected integer, got 2.5",
        ),
        (
            "systems: {w: {seed: H2O}}\nsampling: {generators: [{kind: langevin}]}",
            "config.yaml: sampling.generators[0].kind: expected one of rattle, normal_modes, md",
        ),
        ("systems: {w: {seed: H2O}}\nsamplng: {}", "config.yaml: samplng: unknown key"),
        ("systems: {w: {seed: H2O, spin: 1}}", "config.yaml: systems.w.spin: unknown key"),
        ("systems: {w: {charge: 1}}", "config.yaml: systems.w.seed: missing (required)"),
        (
            "systems: {w: {seed: H2O, multiplicity: 0}}",
            "systems.w.multiplicity: must be >= 1, got 0",
        ),
        (
            "systems: {w: {seed: H2O}}\nsampling: {min_distance: 0}",
            "sampling.min_distance: must be > 0",
        ),
        ("systems: {'../w': {seed: H2O}}", "config.yaml: systems: '../w' is not a safe name"),
        ("systems: {1: {seed: H2O}}", "config.yaml: systems: 1 is not a safe name"),
        (
            "systems: {w: {seed: H2O, split: holdout}}",
            "systems.w.split: expected one of train, val, test, got 'holdout'",
        ),
        ("labelling: {reference: 'a b'}", "labelling.reference: 'a b' is not a safe name"),
        ("systems: [H2O]", "config.yaml: systems: expected mapping, got a list"),
        (
            "systems: {w: {seed: H2O}}\nsampling: {generators: {kind: md}}",
            "sampling.generators: expected list",
        ),
    ],
)
def test_errors_are_one_line_and_name_the_key(tmp_path, text, message):
    with pytest.raises(PilipError) as info:
        load_config(write(tmp_path, text))
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert text.startswith(str(tmp_path / "config.yaml"))


def test_yaml_syntax_and_file_errors(tmp_path):
    with pytest.raises(PilipError, match=r"config.yaml: invalid YAML at line \d+, column \d+"):
        load_config(write(tmp_path, "systems:\n  w: {seed: H2O\n"))
    with pytest.raises(PilipError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(PilipError, match="no such file"):
        load_config(tmp_path / "absent.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(PilipError, match="binary.yaml: not a text file"):
        load_config(binary)


def test_config_hash_is_canonical():
    a = validate_config({"systems": {"w": {"seed": "H2O"}, "e": {"seed": "CH3CH2OH"}}})
    b = validate_config(yaml.safe_load("systems:\n  e: {seed: CH3CH2OH}\n  w: {seed: H2O}\n"))
    assert config_hash(a) == config_hash(b)
    b["sampling"]["seed"] = 1
    assert config_hash(a) != config_hash(b)


def test_helpers():
    assert key_path(["sampling", "generators", 0, "n"]) == "sampling.generators[0].n"
    assert check_name("mp2_cbs-1", "--reference") == "mp2_cbs-1"
    for bad in ("a/b", "..", "1abc", "", "a b", "a\\b"):
        with pytest.raises(PilipError, match="is not a safe name"):
            check_name(bad, "--reference")


# --- reference names and specs are checked at validation (issue 14, defect 10) ---------------

STUDY = """
systems: {water: {seed: H2O}}
references:
  mp2_cbs: {backend: psi4, method: "mp2/cc-pv[dt]z"}
  mp2_dz: {backend: psi4, method: mp2/cc-pvdz}
  xtb: {backend: xtb, method: GFN2-xTB}
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "labelling: {reference: mp2cbs}",
            "labelling.reference: 'mp2cbs' is not a name in `references` "
            "(did you mean 'mp2_cbs'? known: mp2_cbs, mp2_dz, xtb)",
        ),
        (
            "force_validation: {reference: mp2dz}",
            "force_validation.reference: 'mp2dz' is not a name in `references`",
        ),
    ],
)
def test_misspelt_reference_names_are_refused(tmp_path, extra, message):
    with pytest.raises(PilipError) as err:
        load_config(write(tmp_path, STUDY + extra))
    assert str(err.value).startswith(f"{tmp_path / 'config.yaml'}: {message}")
    assert "\n" not in str(err.value)


def test_a_disabled_section_and_a_label_only_config_need_no_other_names(tmp_path):
    load_config(write(tmp_path, STUDY + "force_validation: {enabled: false, reference: nope}"))
    label_only = "systems: {w: {seed: H2O}}\nreferences: {x: {backend: xtb}}\n"
    load_config(write(tmp_path, label_only + "labelling: {reference: x}"))  # no mp2_dz needed


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('{backend: psi4, method: "mp2/cc-pv[dq]z"}', "references.bad.method: basis series"),
        ("{backend: psi4, method: mp2cbs/cc-pvdz}", "references.bad.method: unknown method"),
        ("{backend: psi4, method: mp2}", "references.bad.method: 'mp2' has no basis"),
        ("{backend: xtb, method: GFN3-xTB}", "references.bad.method: unknown xtb method"),
        ("{backend: turbomole}", "unknown backend 'turbomole'"),
    ],
)
def test_unparseable_reference_specs_are_refused(tmp_path, entry, message):
    text = f"systems: {{w: {{seed: H2O}}}}\nreferences: {{bad: {entry}}}\n"
    with pytest.raises(PilipError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "config.yaml"))


def test_schema_ships_inside_the_package():
    import pilip

    assert SCHEMA_PATH.is_relative_to(Path(pilip.__file__).parent)
    assert load_schema(SCHEMA_PATH)["properties"]["systems"]["propertyNames"]["pattern"] == (
        SAFE_NAME.pattern
    )


# Names reach file names and shell commands (issue 13 item 5): each kind of unsafe name is
# refused in every place a name is defined or referred to, in one line.
UNSAFE_NAMES = ["a b", "it's", 'say"hi"', "a;rm", "$(touch x)", "`id`", "../up", "a/b", "-x"]
NAME_PLACES = {
    "systems": lambda n: {"systems": {n: {"seed": "H2O"}}},
    "references": lambda n: {"references": {n: {"backend": "xtb"}}},
    "training.variants": lambda n: {"training": {"variants": {n: {}}}},
    "labelling.reference": lambda n: {"labelling": {"reference": n}},
    "force_validation.reference": lambda n: {"force_validation": {"reference": n}},
    "report.baseline": lambda n: {"report": {"baseline": n}},
}


@pytest.mark.parametrize("place", sorted(NAME_PLACES))
@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_names_are_refused_in_one_line(place, name):
    with pytest.raises(PilipError) as info:
        validate_config(NAME_PLACES[place](name), source="my.yaml")
    text = str(info.value)
    assert text.startswith(f"my.yaml: {place}") and "is not a safe name" in text
    assert "\n" not in text


def test_label_only_config_validates(tmp_path):
    """The docs' plug-in example has references and labelling, and no systems."""
    text = "references:\n  cheap: {backend: xtb, options: {}}\nlabelling:\n  reference: cheap\n"
    config = load_config(write(tmp_path, text))
    assert "systems" not in config and config["labelling"]["reference"] == "cheap"


def test_settings_json_selects_what_a_rule_reads():
    config = validate_config(
        {"systems": {"w": {"seed": "H2O", "split": "test"}, "e": {"seed": "CH3CH2OH"}}}
    )
    one = settings_json(config, "systems.w", exclude=("split",))
    assert json.loads(one) == {"seed": "H2O", "charge": 0, "multiplicity": 1}
    both = json.loads(settings_json(config, "splits", "systems.*.split"))
    assert both["systems.*.split"] == {"w": "test", "e": None}
    assert both["splits"]["train"] == 0.8
    # canonical: key order in the file does not matter; a changed value does
    reordered = validate_config(
        {"systems": {"e": {"seed": "CH3CH2OH"}, "w": {"seed": "H2O", "split": "test"}}}
    )
    assert settings_json(reordered, "splits", "systems.*.split") == settings_json(
        config, "splits", "systems.*.split"
    )
    reordered["splits"]["val"] = 0.2
    assert settings_json(reordered, "splits") != settings_json(config, "splits")
    assert json.loads(settings_json(config, "training.variants.absent")) is None


def test_resolved_config_reads_the_same_from_anywhere(tmp_path):
    (tmp_path / "mols").mkdir()
    (tmp_path / "mols" / "w.xyz").write_text("3\n\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    config = {"systems": {"w": {"seed": "mols/w.xyz"}, "e": {"seed": "C2H6"}}}  # as written
    resolved = resolved_config(config, tmp_path)
    assert resolved["systems"]["w"]["seed"] == str((tmp_path / "mols" / "w.xyz").resolve())
    assert resolved["systems"]["e"]["seed"] == "C2H6"  # an ASE name stays a name
    assert config["systems"]["w"]["seed"] == "mols/w.xyz"  # the input is not modified

    out = tmp_path / "elsewhere" / "config.resolved.yaml"
    assert write_config(resolved, out, header="# resolved\n")
    assert load_config(out) == validate_config(resolved)
    mtime = out.stat().st_mtime_ns
    assert not write_config(resolved, out, header="# resolved\n")  # same text: untouched
    assert out.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ("s: {teacher: delta}", "training.variants.s.teacher: 'delta' is not another variant"),
        ("s: {teacher: s}", "training.variants.s.teacher: 's' is not another variant"),
        ("e: {losses: [energy]}, s: {teacher: e}", "training.variants.s.teacher: 'e' is no Delta"),
        (
            "d: {baseline: gfn2-xtb}, s: {teacher: d, init: m.pt}",
            "training.variants.s: a distilled student (teacher: d) takes no init",
        ),
        ("e: {reference_weight: 1.0}", "training.variants.e.reference_weight: only a distilled"),
        ("d: {baseline: gfn2-xtb}, s: {teacher: d, reference_weight: -1}", "must be >= 0"),
        ("d: {baseline: gfn2-xtb}, s: {teacher: d, reference_dataset: x}", "unknown key"),
    ],
)
def test_a_student_variant_names_a_delta_teacher(tmp_path, variants, message):
    """A variant with `teacher:` is a distilled student: its teacher must be another variant
    that is a Delta model, refused in one line at config load naming the key."""
    with pytest.raises(PilipError) as info:
        load_config(write(tmp_path, f"training: {{variants: {{{variants}}}}}"))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_student_variant_loads_with_its_settings(tmp_path):
    text = "training: {variants: {d: {baseline: gfn2-xtb}, s: {teacher: d, reference_weight: 2}}}"
    config = load_config(write(tmp_path, text))
    assert config["training"]["variants"]["s"] == {"teacher": "d", "reference_weight": 2}
