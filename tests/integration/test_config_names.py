"""Unsafe names never reach a shell command (issue 13 item 5): the Snakefile's validation
refuses each kind in one line before any job runs, and writes nothing.

Every kind of name is checked in every place by tests/unit/test_config.py through
pilip.config.validate_config (the function the Snakefile calls); here each kind of bad name
goes through Snakemake itself.
"""

from __future__ import annotations

import pytest
from workflow_helpers import snakemake, write_config

pytestmark = pytest.mark.workflow

BASE = {
    "systems": {"water": {"seed": "H2O"}},
    "references": {"xtb": {"backend": "xtb", "method": "GFN2-xTB"}},
    "labelling": {"reference": "xtb"},
    "force_validation": {"reference": "xtb"},
}


def with_name(place: str, name: str) -> dict:
    config = {key: dict(value) for key, value in BASE.items()}
    if place == "systems":
        config["systems"] = {name: {"seed": "H2O"}}
    elif place == "references":
        config["references"] = {**BASE["references"], name: {"backend": "xtb"}}
    elif place == "training.variants":
        config["training"] = {"variants": {name: {"losses": ["energy"]}}}
    elif place == "labelling.reference":
        config["labelling"] = {"reference": name}
    return config


@pytest.mark.parametrize(
    ("place", "name"),
    [
        ("systems", "water dimer"),  # a space splits a shell word
        ("references", "mp2'cbs"),  # a quote ends a quoted word
        ("training.variants", "weak;touch pwned"),  # ; runs a second command
        ("systems", "$(touch pwned)"),  # command substitution
        ("labelling.reference", "../../outside"),  # a path out of the working folder
    ],
    ids=["space", "quote", "semicolon", "substitution", "parent_path"],
)
def test_unsafe_name_stops_the_workflow_in_one_line(tmp_path, place, name):
    write_config(tmp_path, with_name(place, name))
    proc = snakemake(tmp_path, "-n", "--configfile", "config.yaml")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "pilip: error:" in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert f"{place}: {name!r} is not a safe name" in errors[0]
    assert "Traceback" not in proc.stderr
    # before any job: nothing written but the config itself (and Snakemake's own folder)
    assert sorted(p.name for p in tmp_path.iterdir()) in (
        ["config.yaml"],
        [".snakemake", "config.yaml"],
    )
    assert not (tmp_path.parent / "outside").exists()


def test_a_default_reference_that_is_not_defined_stops_the_workflow(tmp_path):
    """Systems but no references: the default labelling.reference (mp2_cbs) would fail in
    every label job; refused in one line before any job instead."""
    write_config(tmp_path, {"systems": {"water": {"seed": "H2O"}}})
    proc = snakemake(tmp_path, "-n", "--configfile", "config.yaml")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "pilip: error:" in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert (
        "labelling.reference: 'mp2_cbs' (the default) is not a name in `references`" in (errors[0])
    )
