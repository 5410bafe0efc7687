"""Fixtures shared by the unit, Psi4 and integration tests."""

from __future__ import annotations

import gc
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def mount_tmpfs(tmp_path) -> Iterator[Callable[[str], Path]]:
    """``mount_tmpfs(size)``: a new tmpfs of ``size`` (mount's syntax: ``256k``, ``2m``) under
    ``tmp_path``, for real ENOSPC; unmounted after the test. Skips the test without root."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        path = tmp_path / f"tmpfs-{len(mounted)}"
        path.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    gc.collect()  # a failed writer held by a traceback may still hold its file open
    for path in mounted:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def pytest_collection_modifyitems(config, items) -> None:
    """Tests parametrized with the ``mace`` model skip where mace-torch (the ``mace`` extra)
    is not installed; ``scripts/setup.sh`` installs it, so CI runs them."""
    import importlib.util

    if importlib.util.find_spec("mace") is not None:
        return
    skip = pytest.mark.skip(reason="mace-torch not installed: pip install 'pilip[mace]'")
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "mace" in params.values():
            item.add_marker(skip)
