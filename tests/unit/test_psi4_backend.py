"""Psi4 backend input checks and worker refusals that need no Psi4 (they run before any QM)."""

import json
import subprocess
import sys

import pytest

from pilip import units
from pilip.errors import PilipError
from pilip.reference import psi4_env
from pilip.reference.backends import make_backend
from pilip.reference.backends.base import read_results
from pilip.reference.backends.psi4_backend import Psi4Backend, basis_elements, canonical_basis_name

WATER = {
    "id": "w",
    "numbers": [8, 1, 1],
    "positions": [[0, 0, 0.117], [0, 0.757, -0.467], [0, -0.757, -0.467]],
    "charge": 0,
    "multiplicity": 1,
}


def backend(**spec):
    return make_backend("ref", {"backend": "psi4", **spec})


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(PilipError) as err:
        call(*args, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_registry_gives_the_psi4_backend():
    b = backend(method="mp2/cc-pv[dt]z", options={"freeze_core": True})
    assert isinstance(b, Psi4Backend)
    assert b.recipe.label == "mp2/cc-pv[dt]z"
    assert b.options == {"freeze_core": True}
    assert b.provenance()["method"] == "mp2/cc-pv[dt]z"


def test_method_and_basis_keys_combine():
    assert backend(method="mp2", basis="cc-pVDZ").recipe.label == "mp2/cc-pVDZ"


def test_misspelt_basis_lists_close_matches():
    message = one_line_error(backend, method="mp2/cc-pvdzz")
    assert "references.ref.method" in message
    assert "'cc-pvdzz'" in message and "cc-pvdz" in message.split("did you mean")[1]
    message = one_line_error(backend, method="mp2/aug-cc-pv[dt]zz")
    assert "did you mean aug-cc-pvtz," in message


def test_unknown_method_and_unsupported_extrapolation():
    assert "unknown method 'mp9'" in one_line_error(backend, method="mp9/cc-pvdz")
    message = one_line_error(
        backend, cbs={"scf": {"basis": "cc-pv[dt]z", "scheme": "scf_xtpl_nobody_2"}}
    )
    assert "references.ref.cbs.scf" in message and "unsupported extrapolation" in message
    message = one_line_error(backend, method="mp2/cc-pv[dtq]z")
    assert "no extrapolation of a corl energy over 3 basis sets" in message


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({}, "references.ref.method is missing"),
        ({"method": "mp2/cc-pvdz", "basis": "cc-pvtz"}, "already names a basis"),
        ({"method": "mp2"}, "has no basis"),
        ({"method": "mp2/cc-pvdz", "cbs": {"corl": {}}}, "either `method` or a `cbs`"),
        ({"method": "mp2/cc-pvdz", "options": {"basis": "sto-3g"}}, "not as an option"),
        ({"method": "mp2/cc-pvdz", "options": {"x": {"a": 1}}}, "not a Psi4 option value"),
        ({"method": "mp2/cc-pvdz", "solver": 1}, "references.ref.solver: not a psi4"),
    ],
)
def test_bad_specs(spec, match):
    assert match in one_line_error(backend, **spec)


def test_odd_electron_count_with_closed_shell_method(monkeypatch):
    monkeypatch.setattr(
        "pilip.reference.backends.psi4_backend.psi4_python", lambda configured=None: None
    )
    radical = {**WATER, "id": "oh", "numbers": [8, 1], "positions": WATER["positions"][:2]}
    message = one_line_error(backend(method="mp2/cc-pvdz").check, [{**radical}])
    assert "cannot have multiplicity 1" in message  # 9 electrons, singlet
    doublet = {**radical, "multiplicity": 2}
    message = one_line_error(backend(method="mp2/cc-pvdz").check, [doublet])
    assert "closed-shell" in message and "oh" in message
    backend(method="mp2/cc-pvdz", options={"reference": "uhf"}).check([doublet])


def test_elements_outside_the_basis(monkeypatch):
    monkeypatch.setattr(
        "pilip.reference.backends.psi4_backend.psi4_python", lambda configured=None: None
    )
    iodide = {**WATER, "id": "hi", "numbers": [53, 1], "positions": WATER["positions"][:2]}
    message = one_line_error(backend(method="mp2/cc-pvdz").check, [iodide])
    assert "cc-pvdz has no functions for I" in message
    backend(method="scf/sto-3g").check([iodide])


def test_basis_names_follow_psi4_file_names():
    assert canonical_basis_name("6-31+G(d,p)") == "6-31pg_d_p_"
    assert canonical_basis_name("6-31G*") == "6-31gs"
    assert basis_elements("cc-pVDZ") >= {1, 6, 7, 8, 9, 16, 17}
    assert 19 not in basis_elements("cc-pvdz")  # no potassium in Psi4's cc-pVDZ
    backend(method="scf/6-31G*")  # accepted


def test_reextrapolate_formulas():
    b = backend(method="mp2/cc-pv[dt]z")
    components = {
        "scf/cc-pvdz": -76.02682326796962,
        "scf/cc-pvtz": -76.05724229056756,
        "mp2_corl/cc-pvdz": -0.20383549300571,
        "mp2_corl/cc-pvtz": -0.27492713780633,
    }
    assert b.extrapolate(components, None) == pytest.approx(-76.36210275250048, abs=1e-10)
    # {scf: scheme} on a one-basis SCF stage takes the correlation stage's two bases
    own_scf = b.extrapolate(components, {"scf": "scf_xtpl_helgaker_2"})
    assert own_scf < -76.36210275250048 - 1e-3
    same = b.extrapolate(
        components,
        {"cbs": {"scf": {"basis": "cc-pv[dt]z"}, "corl": {"method": "mp2", "basis": "cc-pv[dt]z"}}},
    )
    assert same == pytest.approx(own_scf, abs=1e-12)
    tz_only = b.extrapolate(components, {"method": "mp2/cc-pvtz"})
    assert tz_only == pytest.approx(-76.05724229056756 - 0.27492713780633, abs=1e-12)
    message = one_line_error(b.extrapolate, components, {"method": "mp2/cc-pv[tq]z"})
    assert "mp2_corl/cc-pvqz" in message
    assert "not in recipe" in one_line_error(b.extrapolate, components, {"delta1": "x"})


def test_forces_are_minus_the_cbs_weighted_gradient():
    b = backend(method="mp2/cc-pv[dt]z")
    from pilip.reference import cbs

    jobs = cbs.plan_jobs(b.recipe, gradients=True)
    grads = {
        ("hf", "cc-pvtz"): [[0.0, 0.0, 0.01]],
        ("hf", "cc-pvdz"): [[0.0, 0.0, 0.02]],
        ("mp2", "cc-pvdz"): [[0.0, 0.0, 0.03]],
        ("mp2", "cc-pvtz"): [[0.0, 0.0, 0.05]],
    }
    energies = {
        ("hf", "cc-pvtz"): {"hf": -1.0},
        ("hf", "cc-pvdz"): {"hf": -0.9},
        ("mp2", "cc-pvdz"): {"hf": -0.9, "mp2": -1.1},
        ("mp2", "cc-pvtz"): {"hf": -1.0, "mp2": -1.3},
    }
    raw = {
        "config_id": "x",
        "status": "ok",
        "energies": [energies[(j.method, j.basis)] for j in jobs],
        "gradients": [grads[(j.method, j.basis)] for j in jobs],
        "wall_time": 1.0,
        "attempts": 1,
        "psi4_version": "1.3.2",
    }
    record = b.record_from_raw(raw, jobs, threads=1, gradients=True)
    dedz = 0.01 + (27 * 0.05 - 8 * 0.03) / 19 - (27 * 0.01 - 8 * 0.02) / 19  # Eh/Bohr
    assert record["forces"][0][2] == pytest.approx(
        -dedz * units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, rel=1e-12
    )
    e = -1.0 + (27 * -0.3 - 8 * -0.2) / 19
    assert record["energy"] == pytest.approx(e * units.HARTREE_TO_EV, rel=1e-14)
    assert record["components"]["mp2_corl/cc-pvtz"] == pytest.approx(-0.3)
    assert record["status"] == "ok" and record["program_version"] == "1.3.2"


def test_psi4_interpreter_missing_gives_the_install_hint(monkeypatch, tmp_path):
    message = one_line_error(
        psi4_env.find_psi4_python, search=[("nowhere", str(tmp_path / "python"), {})]
    )
    assert "apt-get install -y --no-install-recommends psi4 libopenblas0-openmp" in message
    assert "bash scripts/setup.sh" in message
    monkeypatch.setenv("PILIP_PSI4_PYTHON", str(tmp_path / "nope"))
    message = one_line_error(psi4_env.find_psi4_python)
    assert message.startswith(f"PILIP_PSI4_PYTHON = {tmp_path / 'nope'}: not an interpreter")
    message = one_line_error(psi4_env.find_psi4_python, sys.executable)
    assert message.startswith("labelling.psi4_python") and "cannot find psi4" in message


def test_worker_refuses_numpy_2(tmp_path):
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {
                "configs": [WATER],
                "jobs": [
                    {"method": "hf", "basis": "sto-3g", "variables": {"hf": "HF TOTAL ENERGY"}}
                ],
                "results": str(tmp_path / "raw.jsonl"),
                "scratch": str(tmp_path / "scratch"),
            }
        )
    )
    done = subprocess.run(
        [sys.executable, str(psi4_env.WORKER), str(request)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.startswith("psi4_worker: error: NumPy 2.")
    assert "reads geometries as zeros under NumPy >= 2" in done.stderr
    assert not (tmp_path / "raw.jsonl").exists() and not (tmp_path / "scratch").exists()


def test_worker_rejects_a_broken_request(tmp_path):
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"configs": []}))
    done = subprocess.run(
        [sys.executable, str(psi4_env.WORKER), str(request)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"psi4_worker: error: request {request} lacks jobs, results, scratch"
    )


def test_dft_functionals_are_one_stage_recipes_with_their_total_as_component():
    from pilip.reference import cbs

    dft = backend(method="wB97X-D/def2-SVP")
    assert [(s.name, s.method, s.bases) for s in dft.recipe.stages] == [
        ("dft", "wb97x-d", ("def2-svp",))
    ]
    jobs = cbs.plan_jobs(dft.recipe, gradients=True)
    assert jobs == [cbs.Job("wb97x-d", "def2-svp", True)]
    assert jobs[0].provides == {"wb97x-d": "CURRENT ENERGY"}  # what psi4.energy returns
    raw = {"config_id": "w", "status": "ok", "energies": [{"wb97x-d": -76.3}],
           "gradients": [[[0.0, 0.0, 0.01], [0.0, 0.0, -0.01], [0.0, 0.0, 0.0]]]}  # fmt: skip
    record = dft.record_from_raw(raw, jobs, threads=1, gradients=True)
    assert record["energy"] == pytest.approx(-76.3 * units.HARTREE_TO_EV)
    assert record["components"] == {"wb97x-d/def2-svp": -76.3}
    assert record["forces"][0][2] == pytest.approx(
        -0.01 * units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
    )
    assert dft.extrapolate(record["components"], None) == pytest.approx(-76.3)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"method": "b3lyp/cc-pv[dt]z"}, "DFT energies are not extrapolated; give one basis"),
        ({"method": "b3lpy/def2-svp"}, "unknown method 'b3lpy'; did you mean b3lyp"),
        ({"method": "b3lyp/def2-svp+D:ccsd(t)/cc-pvdz"}, "takes no '+D:' delta"),
        ({"cbs": {"corl": {"method": "pbe0", "basis": "cc-pv[dt]z"}}}, "is a DFT functional"),
    ],
)
def test_bad_dft_specs(spec, match):
    assert match in one_line_error(backend, **spec)


def test_d3_dispersion_needs_the_dftd3_program(monkeypatch, tmp_path):
    class Interpreter:
        def environment(self, threads=1):
            return {"PATH": str(tmp_path)}

    monkeypatch.setattr(
        "pilip.reference.backends.psi4_backend.psi4_python", lambda configured=None: Interpreter()
    )
    message = one_line_error(backend(method="b3lyp-d3bj/def2-svp").check, [WATER])
    assert "b3lyp-d3bj needs the 'dftd3' program" in message and "wb97x-d" in message
    backend(method="b3lyp-d2/def2-svp").check([WATER])  # Psi4 computes -D2 itself
    program = tmp_path / "dftd3"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    backend(method="b3lyp-d3bj/def2-svp").check([WATER])
    assert "'gcp' program" in one_line_error(backend(method="hf-3c/minix").check, [WATER])


def test_reextrapolated_table_says_what_it_now_holds(tmp_path, monkeypatch):
    """Issue 14, defect 9: new per-row and provenance `method`, a new `created`."""
    from pilip import keys, tables
    from pilip.cli import main
    from pilip.reference import labels

    monkeypatch.chdir(tmp_path)
    components = {"scf/cc-pvdz": -76.0268, "scf/cc-pvtz": -76.0572,
                  "mp2_corl/cc-pvdz": -0.2038, "mp2_corl/cc-pvtz": -0.2749}  # fmt: skip
    old_created = "2020-01-01T00:00:00+00:00"
    records = [
        {"config_id": "a", "status": "ok", "energy": -2000.0, "components": components,
         "method": "mp2/cc-pv[dt]z", "program": "psi4"},
        {"config_id": "b", "status": "failed", "error": "SCF", "method": "mp2/cc-pv[dt]z"},
    ]  # fmt: skip
    spec = {"backend": "psi4", "method": "mp2/cc-pv[dt]z"}
    labels.write_labels(
        labels.labels_table(records, "mp2_cbs"),
        "l.parquet",
        provenance={
            "reference": "mp2_cbs",
            "spec": spec,
            "method": "mp2/cc-pv[dt]z",
            "created": old_created,
        },  # fmt: skip
    )
    assert main(["reextrapolate", "l.parquet", "-o", "tz.parquet",
                 "--formula", "{method: 'mp2/cc-pvtz'}"]) == 0  # fmt: skip
    new = labels.read_labels("tz.parquet")
    assert new.column(keys.METHOD).to_pylist() == ["mp2/cc-pvtz", "mp2/cc-pvtz"]
    assert new.column(keys.REFERENCE).to_pylist() == ["mp2_cbs_rx"] * 2
    assert new.column(keys.ENERGY)[0].as_py() == pytest.approx(
        (-76.0572 - 0.2749) * units.HARTREE_TO_EV, abs=1e-9
    )
    provenance = tables.table_provenance(new)
    assert provenance["method"] == "mp2/cc-pvtz"
    assert provenance["original_method"] == "mp2/cc-pv[dt]z"
    assert provenance["created"] != old_created and provenance["original_created"] == old_created
    assert main(["reextrapolate", "l.parquet", "-o", "s.parquet", "--formula",
                 "{scf: scf_xtpl_helgaker_2}"]) == 0  # fmt: skip
    described = labels.read_labels("s.parquet").column(keys.METHOD)[0].as_py()
    assert (
        described == "hf/cc-pv[dt]z (scf_xtpl_helgaker_2) + mp2/cc-pv[dt]z (corl_xtpl_helgaker_2)"
    )


def test_worker_stopped_by_its_disk_records_no_failed_geometry(tmp_path, monkeypatch):
    """Psi4 1.3.2 may abort on its way out after the worker said the disk failed it (exit
    status -6, not 4): the worker's ``disk:`` line still stops labelling with the disk's
    error, and the geometry is left to compute again rather than recorded as failed."""
    fake = tmp_path / "fake-python"
    fake.write_text(
        "#!/bin/sh\n"
        # the worker's scratch folder lies in the request's `scratch`
        """scratch=$(sed 's/.*"scratch": "\\([^"]*\\)".*/\\1/' "$2")\n"""
        """progress=$(sed 's/.*"progress": "\\([^"]*\\)".*/\\1/' "$2")\n"""
        'echo w >> "$progress"\n'  # started geometry w
        'echo "psi4_worker: error: disk: $scratch/psi4-worker-1: PSIO Error" >&2\n'
        "kill -ABRT $$\n"
    )
    fake.chmod(0o755)
    interpreter = psi4_env.Psi4Python(str(fake), "test", "", "1.3.2", "1.26")
    ref = backend(method="scf/cc-pvdz")
    monkeypatch.setattr(ref, "interpreter", lambda: interpreter)
    scratch = tmp_path / "scratch"
    results = tmp_path / "r.results.jsonl"
    message = one_line_error(
        ref.run,
        [WATER],
        results,
        threads=1,
        gradients=False,
        scratch=scratch,
        retry_options=None,
        timeout_s=None,
    )
    assert message.startswith(f"{scratch}: Psi4 could not write its files (PSIO Error)")
    assert "settings.scratch" in message and "rerun" in message
    assert not results.exists() or results.read_text() == ""


FAKE_WORKER_KILLED_BETWEEN_GEOMETRIES = """\
import json, os, signal, sys
request = json.load(open(sys.argv[2]))
marker = request["results"] + ".killed-once"
done = set()
if os.path.exists(request["results"]):
    done = {json.loads(line)["config_id"] for line in open(request["results"]) if line.strip()}
energies = [{method: -76.0 for method in job["variables"]} for job in request["jobs"]]
with open(request["results"], "a") as out, open(request["progress"], "a") as progress:
    for config in request["configs"]:
        if config["id"] in done:
            continue
        progress.write(config["id"] + "\\n")
        progress.flush()
        line = {"config_id": config["id"], "status": "ok", "energies": energies,
                "gradients": [None] * len(energies), "plan": request["plan"]}
        out.write(json.dumps(line) + "\\n")
        out.flush()
        if not os.path.exists(marker):  # the first worker dies after its first geometry
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
"""


def test_worker_killed_between_geometries_costs_no_geometry(tmp_path, monkeypatch):
    """Killed after writing a geometry's line and before starting the next one, the worker
    has no geometry in flight: a new worker computes the rest and no row is failed."""
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!{sys.executable}\n" + FAKE_WORKER_KILLED_BETWEEN_GEOMETRIES)
    fake.chmod(0o755)
    interpreter = psi4_env.Psi4Python(str(fake), "test", "", "1.3.2", "1.26")
    ref = backend(method="scf/cc-pvdz")
    monkeypatch.setattr(ref, "interpreter", lambda: interpreter)
    configs = [{**WATER, "id": name} for name in ("a", "b", "c")]
    results = tmp_path / "r.results.jsonl"
    ref.run(
        configs,
        results,
        threads=1,
        gradients=False,
        scratch=tmp_path / "scratch",
        retry_options=None,
        timeout_s=None,
    )
    rows = read_results(results)
    assert {k: r["status"] for k, r in rows.items()} == {"a": "ok", "b": "ok", "c": "ok"}
    assert len(results.read_text().splitlines()) == 3  # nothing computed twice
    assert (tmp_path / "r.results.psi4.jsonl.killed-once").exists()  # it was killed
