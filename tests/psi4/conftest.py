"""Real-Psi4 tests: skipped cleanly when no interpreter that imports psi4 is found."""

import json
import os
import subprocess
import tempfile

import pytest

from pilip.errors import PilipError


@pytest.fixture(scope="session")
def psi4_interpreter():
    """The worker's interpreter (``pilip.reference.psi4_env``), or skip."""
    from pilip.reference.psi4_env import find_psi4_python

    try:
        return find_psi4_python()
    except PilipError as exc:
        pytest.skip(f"no Psi4 interpreter: {exc}")


@pytest.fixture(autouse=True)
def _skip_without_psi4(psi4_interpreter):
    """Every test here needs Psi4, whether or not it asks for the interpreter itself."""


@pytest.fixture(scope="session")
def run_psi4(psi4_interpreter):
    """Run a script under the Psi4 interpreter with a JSON payload; return its JSON output.

    The script gets ``payload`` and must set ``result``; it runs in a scratch folder, with
    one thread. This is "Psi4 called directly", independent of pilip's worker.
    """

    def run(script: str, payload) -> object:
        with tempfile.TemporaryDirectory(prefix="pilip-psi4-test-") as folder:
            env = psi4_interpreter.environment(threads=1)
            env["PSI_SCRATCH"] = folder
            program = (
                "import json, sys\n"
                "payload = json.load(open(sys.argv[1]))\n"
                "import psi4\n"
                "psi4.core.be_quiet()\n"
                "psi4.core.set_num_threads(1, True)\n"
                f"{script}\n"
                "json.dump(result, open(sys.argv[2], 'w'))\n"
            )
            inp, out = os.path.join(folder, "in.json"), os.path.join(folder, "out.json")
            with open(inp, "w") as fh:
                json.dump(payload, fh)
            done = subprocess.run(
                [psi4_interpreter.python, "-c", program, inp, out],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            with open(out) as fh:
                return json.load(fh)

    return run
