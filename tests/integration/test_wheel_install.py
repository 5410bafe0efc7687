"""A non-editable install loads configs: the schema ships inside the package (issue 11, 2).

Builds a wheel from a copy of the sources, installs it into a fresh virtual environment whose
dependencies come from the test interpreter's site-packages (no network, no editable pilip on
the path), and runs `pilip sample --config ...` there, outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def run(*command, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, **kwargs
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def test_wheel_install_samples_from_a_config(tmp_path):
    source = tmp_path / "source"  # a copy, so the build leaves no build/ in the repository
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    shutil.copytree(REPO / "pilip", source / "pilip", ignore=shutil.ignore_patterns("__pycache__"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", tmp_path / "dist", source, cwd=tmp_path, timeout=300)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("pilip-*.whl")
    assert "pilip/schemas/config.schema.yaml" in zipfile.ZipFile(wheel).namelist()

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path)
        .stdout.strip()
    )  # fmt: skip
    # the dependencies (torch, pyarrow, ase, ...) from this interpreter, appended after the
    # fresh site-packages; its own .pth files (the editable pilip) are not processed
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "-q", wheel, cwd=tmp_path, timeout=300)  # fmt: skip

    where = run(python, "-c", "import pilip.config as c; print(c.SCHEMA_PATH)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(site)

    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "systems": {"water": {"seed": "H2O"}},
                "sampling": {"generators": [{"kind": "rattle", "n": 3}]},
            }
        )
    )
    out = tmp_path / "configurations" / "water.parquet"
    sampled = run(venv / "bin" / "pilip", "sample", "--config", "config.yaml", "--system",
                  "water", "-o", out, cwd=tmp_path, timeout=300)  # fmt: skip
    assert "4 configurations" in sampled.stderr and out.is_file()
    bad = subprocess.run(
        [venv / "bin" / "pilip", "sample", "--config", "config.yaml", "--system", "x", "-o", out],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "not in the config's systems" in bad.stderr
