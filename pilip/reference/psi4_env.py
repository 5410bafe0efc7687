"""Find the Python interpreter that runs the Psi4 worker.

Psi4 cannot be imported in pilip's main environment (Debian's Psi4 1.3.2 needs NumPy < 2),
so labelling runs ``pilip/reference/worker/psi4_worker.py`` under another interpreter. Candidates,
in
order: the configured one (``labelling.psi4_python``), ``$PILIP_PSI4_PYTHON``, the repository's
``.venv-psi4/bin/python`` (made by ``scripts/setup.sh``), the Python of a conda environment
with psi4 (``$CONDA_PREFIX``, or the interpreter of a ``psi4`` executable on ``PATH``), and
the system ``/usr/bin/python3`` with Debian's psi4 folder on ``PYTHONPATH``.

A candidate is accepted when it can find psi4 and imports NumPy < 2. The probe does not
import psi4 (that takes a second or more); the worker itself reports an import failure.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilip.errors import PilipError

INSTALL_HINT = (
    "install it with `apt-get install -y --no-install-recommends psi4 libopenblas0-openmp` "
    "then `bash scripts/setup.sh`"
)
ENV_VAR = "PILIP_PSI4_PYTHON"
CONFIG_KEY = "labelling.psi4_python"
DEBIAN_PSI4_PARENT = Path("/usr/lib/x86_64-linux-gnu")  # holds Debian's psi4/ package
REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "worker" / "psi4_worker.py"

_PROBE = r"""
import importlib.util, json, os, sys
out = {"python": sys.executable, "numpy": None, "psi4": None, "psi4_version": None}
try:
    import numpy
    out["numpy"] = numpy.__version__
except Exception as exc:
    out["numpy_error"] = repr(exc)
spec = importlib.util.find_spec("psi4")
if spec is not None and spec.origin:
    out["psi4"] = os.path.dirname(spec.origin)
    meta = os.path.join(out["psi4"], "metadata.py")
    if os.path.exists(meta):
        for line in open(meta):
            if line.startswith("__version__"):
                out["psi4_version"] = line.split("=", 1)[1].strip().strip("'\"")
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Psi4Python:
    """An interpreter that finds psi4 with NumPy < 2, and the environment it needs."""

    python: str
    source: str  # where it was found, for messages
    psi4_dir: str
    psi4_version: str
    numpy_version: str
    extra_env: dict[str, str] = field(default_factory=dict)

    def environment(self, threads: int = 1) -> dict[str, str]:
        """Environment for the worker process: threads pinned, OpenMP threads not spinning."""
        env = dict(os.environ)
        env.update(self.extra_env)
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
        return env


def candidates(configured: str | None = None) -> list[tuple[str, str, dict[str, str]]]:
    """(source, interpreter, extra environment) to try, in order of preference."""
    out: list[tuple[str, str, dict[str, str]]] = []
    if configured:
        out.append((CONFIG_KEY, str(configured), {}))
    if os.environ.get(ENV_VAR):
        out.append((ENV_VAR, os.environ[ENV_VAR], {}))
    for root in dict.fromkeys([REPO_ROOT, Path.cwd()]):
        out.append((".venv-psi4", str(root / ".venv-psi4" / "bin" / "python"), {}))
    if os.environ.get("CONDA_PREFIX"):
        out.append(("$CONDA_PREFIX", str(Path(os.environ["CONDA_PREFIX"]) / "bin" / "python"), {}))
    launcher = shutil.which("psi4")
    if launcher:
        try:
            first = Path(launcher).read_text(errors="replace").splitlines()[0]
        except (OSError, IndexError):
            first = ""
        if first.startswith("#!") and "python" in first:
            out.append(("psi4 on PATH", first[2:].strip().split()[0], {}))
    if (DEBIAN_PSI4_PARENT / "psi4" / "__init__.py").exists():
        path = os.pathsep.join(
            filter(None, [str(DEBIAN_PSI4_PARENT), os.environ.get("PYTHONPATH")])
        )
        out.append(("Debian psi4", "/usr/bin/python3", {"PYTHONPATH": path}))
    return out


def probe(python: str, extra_env: dict[str, str] | None = None) -> dict | None:
    """What an interpreter reports about numpy and psi4; None if it does not run."""
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return None
    env = dict(os.environ)
    env.update(extra_env or {})
    try:
        done = subprocess.run(
            [python, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _rejection(info: dict | None) -> str | None:
    if info is None:
        return "not an interpreter that runs"
    if info.get("psi4") is None:
        return "cannot find psi4"
    if info.get("numpy") is None:
        return "cannot import numpy"
    if int(str(info["numpy"]).split(".")[0]) >= 2:
        return f"has NumPy {info['numpy']} (Psi4 1.3.2 reads geometries as zeros under NumPy 2)"
    return None


def find_psi4_python(
    configured: str | None = None,
    *,
    search: list[tuple[str, str, dict[str, str]]] | None = None,
) -> Psi4Python:
    """The first usable candidate; PilipError with the install hint when there is none.

    An explicitly configured interpreter (config or ``$PILIP_PSI4_PYTHON``) that does not
    work is an error of its own: pilip does not silently fall back to another one.
    """
    tried = []
    for source, python, extra in search if search is not None else candidates(configured):
        info = probe(python, extra)
        reason = _rejection(info)
        if reason is None:
            return Psi4Python(
                python=python,
                source=source,
                psi4_dir=str(info["psi4"]),
                psi4_version=str(info.get("psi4_version") or "unknown"),
                numpy_version=str(info["numpy"]),
                extra_env=dict(extra),
            )
        if source in (CONFIG_KEY, ENV_VAR):
            raise PilipError(
                f"{source} = {python}: {reason}; point it at an interpreter that imports psi4 "
                f"with numpy<2, or {INSTALL_HINT}"
            )
        tried.append(f"{python} ({reason})" if info is not None else python)
    raise PilipError(
        f"no Python interpreter that imports Psi4 was found (tried {', '.join(tried) or 'none'}); "
        f"{INSTALL_HINT}, or set {CONFIG_KEY} / ${ENV_VAR}"
    )


@functools.lru_cache(maxsize=8)
def cached_psi4_python(configured: str | None, env_value: str | None) -> Psi4Python:
    """``find_psi4_python`` once per process and setting (the probe costs ~0.1 s)."""
    return find_psi4_python(configured)


def psi4_python(configured: str | None = None) -> Psi4Python:
    """The worker's interpreter for this setting, found once per process."""
    return cached_psi4_python(configured, os.environ.get(ENV_VAR))


# the workflow's rules that lead to Psi4 labels (their jobs run before any label job)
LABELLING_RULES = frozenset(
    {"sample", "chunk", "label", "force_validation_subset", "label_force_validation",
     "sample_extra", "chunk_cheap", "label_cheap_chunk"}
)  # fmt: skip


def workflow_psi4_problem(config: Mapping[str, Any], pending_rules: Iterable[str]) -> str | None:
    """Why the workflow's Psi4 labels could not run on this machine (one line), or None.

    Asked by the Snakefile before its first job, so that a missing Psi4 interpreter is refused
    before sampling and chunking rather than by the first label job. None when no pending job
    leads to labels, or when no reference the DAG labels with runs Psi4.
    """
    if not LABELLING_RULES & set(pending_rules):
        return None
    references = config.get("references") or {}
    used = [config["labelling"]["reference"]]
    force_validation = config.get("force_validation") or {}
    if force_validation.get("enabled", True) and force_validation.get("reference"):
        used.append(force_validation["reference"])
    cheap = config.get("cheap_level") or {}
    if cheap.get("enabled", True) and cheap.get("reference"):  # a Psi4 cheap level (DFT)
        used.append(cheap["reference"])
    psi4 = [name for name in used if (references.get(name) or {}).get("backend") == "psi4"]
    if not psi4:
        return None
    try:
        psi4_python(config["labelling"].get("psi4_python"))
    except PilipError as error:
        return f"references.{psi4[0]} runs Psi4: {error}"
    return None
