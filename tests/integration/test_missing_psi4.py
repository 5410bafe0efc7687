"""A Psi4 interpreter that cannot run is refused before the first job (issue 13 item 4), not by
the first label job after sampling and chunking; a DAG that labels nothing with Psi4 runs."""

from __future__ import annotations

import pytest
from workflow_helpers import snakemake, write_config

from pilip.reference.psi4_env import workflow_psi4_problem

pytestmark = pytest.mark.workflow

PSI4_CONFIG = {
    "systems": {"water": {"seed": "H2O"}},
    "sampling": {"generators": [{"kind": "rattle", "n": 2}]},
    "references": {"mp2": {"backend": "psi4", "method": "mp2/cc-pvdz"}},
    "labelling": {"reference": "mp2", "psi4_python": "no-such-env/bin/python"},
    "force_validation": {"enabled": False},
}


def test_missing_psi4_interpreter_stops_the_workflow_before_any_job(tmp_path):
    write_config(tmp_path, PSI4_CONFIG)
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", "config.yaml")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "pilip: error:" in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith("pilip: error: references.mp2 runs Psi4: labelling.psi4_python")
    assert "no-such-env/bin/python" in errors[0] and "apt-get install" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "configurations").exists()  # sampling never ran
    assert not (tmp_path / "logs").exists()


def test_no_check_when_nothing_leads_to_psi4_labels():
    bad = {**PSI4_CONFIG, "labelling": dict(PSI4_CONFIG["labelling"])}
    assert workflow_psi4_problem(bad, {"train", "evaluate"}) is None  # labels exist already
    assert "no-such-env" in workflow_psi4_problem(bad, {"sample"})
    xtb = {
        **bad,
        "references": {"xtb": {"backend": "xtb", "method": "GFN2-xTB"}},
        "labelling": {**bad["labelling"], "reference": "xtb"},
    }
    assert workflow_psi4_problem(xtb, {"sample", "label"}) is None


def test_a_psi4_cheap_level_is_checked_before_its_label_jobs():
    config = {
        **PSI4_CONFIG,
        "references": {
            "xtb": {"backend": "xtb", "method": "GFN2-xTB"},
            "dft": {"backend": "psi4", "method": "b3lyp/def2-svp"},
        },
        "labelling": {**PSI4_CONFIG["labelling"], "reference": "xtb"},
        "cheap_level": {"enabled": True, "reference": "dft"},
    }
    problem = workflow_psi4_problem(config, {"chunk_cheap", "label_cheap_chunk"})
    assert problem.startswith("references.dft runs Psi4") and "no-such-env" in problem
    off = {**config, "cheap_level": {"enabled": False, "reference": "dft"}}
    assert workflow_psi4_problem(off, {"sample"}) is None
