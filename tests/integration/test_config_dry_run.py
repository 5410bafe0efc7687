"""A config error stops `snakemake -n` with one line, before any job is planned or run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.workflow


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  reference: mp2_cbs ", "  reference: mp2cbs ", "labelling.reference: 'mp2cbs' is not"),
        ("method: mp2/cc-pvdz ", "method: mp2/cc-pvdzz ", "references.mp2_dz.method: basis set"),
    ],
)
def test_dry_run_refuses_a_misspelt_reference(tmp_path, old, new, message):
    """Issue 14, defect 10: `labelling.reference: mp2cbs` used to fail inside 16 label jobs."""
    text = (REPO / "config.yaml").read_text()
    assert old in text
    (tmp_path / "bad.yaml").write_text(text.replace(old, new, 1))
    done = subprocess.run(
        [str(BIN / "snakemake"), "-n", "-s", str(REPO / "Snakefile"), "--cores", "1",
         "--configfile", "bad.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"pilip: error: {tmp_path / 'bad.yaml'}: {message}" in done.stderr
    assert "Job stats" not in done.stdout + done.stderr  # nothing was planned
