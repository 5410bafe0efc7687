"""The Psi4 backend and worker against Psi4 itself (tiny molecules, sub-second methods)."""

import json
import subprocess
import zlib

import numpy as np
import pytest

from pilip import units
from pilip.errors import PilipError
from pilip.reference import psi4_env
from pilip.reference.backends import make_backend
from pilip.reference.backends.base import read_results

pytestmark = pytest.mark.psi4

EH = units.HARTREE_TO_EV
FORCE = units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
WATER = [[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]]


def water(config_id: str, shift=(0.0, 0.0, 0.0)) -> dict:
    rng = np.random.default_rng(zlib.crc32(config_id.encode()))
    xyz = np.array(WATER) + rng.normal(scale=0.03, size=(3, 3))
    xyz[0] += shift
    return {
        "id": config_id,
        "numbers": [8, 1, 1],
        "positions": xyz.tolist(),
        "charge": 0,
        "multiplicity": 1,
    }


def label(tmp_path, configs, name="r", gradients=False, retry=None, timeout=None, **spec):
    backend = make_backend(name, {"backend": "psi4", **spec})
    backend.check(configs)
    results = tmp_path / f"{name}.results.jsonl"
    backend.run(
        configs,
        results,
        threads=1,
        gradients=gradients,
        scratch=tmp_path / f"scratch-{name}",
        retry_options=retry,
        timeout_s=timeout,
    )
    return read_results(results), results


MOVES = [(0, 2), (1, 1), (2, 0)]  # (atom, axis) displaced for finite differences


def forces_and_finite_differences(tmp_path, base: dict, h: float, method: str):
    """Analytic forces (eV/A) of ``base`` and central differences -dE/dx (eV/A) of its
    energies at +-h Angstrom along each of ``MOVES``, all labelled in one tight-SCF chunk."""
    configs = [base]
    for atom, axis in MOVES:
        for sign in (+1, -1):
            xyz = np.array(base["positions"])
            xyz[atom, axis] += sign * h
            configs.append({**base, "id": f"fd{atom}{axis}{sign}", "positions": xyz.tolist()})
    tight = {"e_convergence": 1e-10, "d_convergence": 1e-10}
    rows, _ = label(tmp_path, configs, gradients=True, method=method, options=tight)
    differences = {}
    for atom, axis in MOVES:
        up, down = (rows[f"fd{atom}{axis}{s}"]["energy"] for s in (+1, -1))
        differences[atom, axis] = -(up - down) / (2 * h)
    return np.array(rows[base["id"]]["forces"]), differences


DIRECT = """
def molecule(positions):
    lines = ["0 1"] + [
        f"{s} {x:.15f} {y:.15f} {z:.15f}" for s, (x, y, z) in zip(["O", "H", "H"], positions)
    ]
    return psi4.geometry("\\n".join(lines + ["units angstrom", "symmetry c1", "no_com",
                                             "no_reorient"]))
result = []
for item in payload:
    mol = molecule(item["positions"])
    if item["kind"] == "energy":
        value = psi4.energy(item["method"], molecule=mol)
    elif item["kind"] == "cbs":
        value = psi4.energy(psi4.cbs, cbs_metadata=item["metadata"], molecule=mol)
    else:
        value = psi4.gradient(item["method"], molecule=mol).np.tolist()
    psi4.core.clean()
    psi4.core.clean_variables()
    result.append(value)
"""


@pytest.fixture(scope="module")
def chunk():
    return [water("a"), water("b"), water("c")]


COMPOSITE = {
    "scf": {"basis": "cc-pv[dt]z"},
    "corl": {"method": "mp2", "basis": "cc-pv[dt]z"},
    "delta": [{"method": "ccsd(t)", "basis": "cc-pvdz"}],
}
COMPOSITE_PSI4 = [
    {"wfn": "hf", "basis": "cc-pv[dt]z"},
    {"wfn": "mp2", "basis": "cc-pv[dt]z"},
    {"wfn": "ccsd(t)", "basis": "cc-pvdz"},
]


@pytest.fixture(scope="module")
def psi4_direct(run_psi4, chunk):
    """Psi4's own numbers for the chunk, from plain psi4.energy/gradient calls."""
    payload = [{"kind": "energy", "method": "mp2/cc-pv[dt]z", **c} for c in chunk[:2]]
    payload.append({"kind": "cbs", "metadata": COMPOSITE_PSI4, **chunk[0]})
    payload.append({"kind": "gradient", "method": "mp2/cc-pv[dt]z", **chunk[0]})
    payload.append({"kind": "energy", "method": "scf/sto-3g", **chunk[1]})
    out = run_psi4(DIRECT, payload)
    return {
        "mp2_cbs": out[:2],
        "composite": out[2],
        "cbs_gradient": np.array(out[3]),
        "scf_sto3g": out[4],
    }


@pytest.fixture(scope="module")
def mp2_cbs_rows(tmp_path_factory, chunk):
    rows, _ = label(tmp_path_factory.mktemp("mp2cbs"), chunk[:2], method="mp2/cc-pv[dt]z")
    return rows


def test_inline_method_string_equals_psi4_energy(mp2_cbs_rows, psi4_direct, chunk):
    for config, expected in zip(chunk[:2], psi4_direct["mp2_cbs"], strict=True):
        row = mp2_cbs_rows[config["id"]]
        assert row["status"] == "ok" and row["error"] is None
        assert row["energy"] / EH == pytest.approx(expected, abs=1e-8)
        assert row["program"] == "psi4" and row["program_version"] == "1.3.2"
        assert row["method"] == "mp2/cc-pv[dt]z" and row["threads"] == 1
        assert row["wall_time"] > 0 and row["attempts"] == 1


def test_components_reproduce_psi4_cbs_to_1e8(mp2_cbs_rows, psi4_direct, chunk):
    from pilip.reference import cbs

    recipe = cbs.parse_method_string("mp2/cc-pv[dt]z")
    for config, expected in zip(chunk[:2], psi4_direct["mp2_cbs"], strict=True):
        components = mp2_cbs_rows[config["id"]]["components"]
        assert set(components) == {
            "scf/cc-pvdz",
            "scf/cc-pvtz",
            "mp2_corl/cc-pvdz",
            "mp2_corl/cc-pvtz",
        }
        assert recipe.total_from_components(components) == pytest.approx(expected, abs=1e-8)
        # the SCF part of mp2/cc-pv[dt]z is the cc-pVTZ value, not an extrapolated one
        scf_cbs = cbs.scf_xtpl_helgaker_2(
            (2, 3), [components["scf/cc-pvdz"], components["scf/cc-pvtz"]]
        )
        assert abs(expected - components["scf/cc-pvtz"] - (expected - scf_cbs)) > 1e-4


@pytest.mark.slow
def test_composite_recipe_equals_psi4_cbs(tmp_path, psi4_direct, chunk):
    rows, _ = label(tmp_path, chunk[:1], cbs=COMPOSITE)
    row = rows[chunk[0]["id"]]
    assert row["status"] == "ok"
    assert row["energy"] / EH == pytest.approx(psi4_direct["composite"], abs=1e-8)
    assert {"ccsd(t)_corl/cc-pvdz", "ccsd_corl/cc-pvdz", "mp2_corl/cc-pvdz"} <= set(
        row["components"]
    )


def test_cbs_gradient_equals_psi4_gradient(tmp_path, psi4_direct, chunk):
    rows, _ = label(tmp_path, chunk[:1], gradients=True, method="mp2/cc-pv[dt]z")
    forces = np.array(rows[chunk[0]["id"]]["forces"])
    assert forces == pytest.approx(-psi4_direct["cbs_gradient"] * FORCE, abs=1e-6)


@pytest.mark.slow
def test_mp2_forces_match_finite_differences(tmp_path):
    forces, differences = forces_and_finite_differences(tmp_path, water("fd"), 1e-3, "mp2/cc-pvdz")
    assert forces.shape == (3, 3)
    for (atom, axis), difference in differences.items():
        assert forces[atom, axis] == pytest.approx(difference, abs=2e-4)
    assert np.abs(forces.sum(axis=0)).max() < 1e-5  # no net force on a free molecule


def test_scf_failure_is_a_row_and_fallback_rescues_it(tmp_path, psi4_direct, chunk):
    clash = water("clash")
    clash["positions"][1] = list(clash["positions"][0])  # two atoms on one spot
    configs = [chunk[0], clash, chunk[1]]
    rows, _ = label(
        tmp_path, configs, name="nofallback", method="scf/sto-3g", options={"maxiter": 1}
    )
    for config in configs:
        row = rows[config["id"]]
        assert row["status"] == "failed" and row["energy"] is None
    assert "SCFConvergenceError: Could not converge SCF iterations in 1" in rows["a"]["error"]
    assert rows["clash"]["error"].startswith("ValidationError")
    rows, _ = label(
        tmp_path,
        configs,
        name="fallback",
        method="scf/sto-3g",
        options={"maxiter": 1},
        retry={"maxiter": 100, "damping_percentage": 20},
    )
    assert rows["b"]["status"] == "ok" and rows["b"]["attempts"] == 2
    # damping takes another path to the same minimum: equal within Psi4's SCF e_convergence
    assert rows["b"]["energy"] / EH == pytest.approx(psi4_direct["scf_sto3g"], abs=2e-6)
    assert rows["clash"]["status"] == "failed"  # no option rescues a broken geometry


def test_timeout_is_a_status(tmp_path, chunk):
    rows, _ = label(tmp_path, chunk[:2], method="mp2/cc-pv[dt]z", timeout=0.05)
    for config in chunk[:2]:
        assert rows[config["id"]]["status"] == "timeout"
        assert "timeout of 0.05 s" in rows[config["id"]]["error"]


def test_resume_computes_only_missing_geometries(tmp_path, chunk):
    results = tmp_path / "r.results.jsonl"
    sentinel = {"config_id": "a", "status": "ok", "energy": 123.0, "components": {}}
    half = json.dumps({"config_id": "b", "status": "ok", "energy": 7.0})[:25]
    results.write_text(json.dumps(sentinel) + "\n" + half)
    rows, _ = label(tmp_path, chunk, method="scf/sto-3g")
    assert rows["a"]["energy"] == 123.0  # not recomputed
    assert rows["b"]["status"] == "ok" and rows["b"]["energy"] < -2000
    assert rows["c"]["status"] == "ok"
    lines = results.read_text().splitlines()
    assert [json.loads(line)["config_id"] for line in lines] == ["a", "b", "c"]
    assert not results.with_suffix(".psi4.jsonl").exists()  # raw worker file cleaned up


def test_worker_skips_done_ids_and_ignores_a_truncated_line(tmp_path, psi4_interpreter, chunk):
    raw = tmp_path / "raw.jsonl"
    done = {"config_id": "a", "plan": "p", "status": "ok", "energies": [{"hf": -1.0}]}
    raw.write_text(json.dumps(done) + "\n" + '{"config_id": "b", "plan": "p", "sta')
    request = {
        "configs": chunk,
        "jobs": [{"method": "hf", "basis": "sto-3g", "variables": {"hf": "HF TOTAL ENERGY"}}],
        "results": str(raw),
        "scratch": str(tmp_path / "scratch"),
        "plan": "p",
    }
    (tmp_path / "req.json").write_text(json.dumps(request))
    proc = subprocess.run(
        [psi4_interpreter.python, str(psi4_env.WORKER), str(tmp_path / "req.json")],
        env=psi4_interpreter.environment(1),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in raw.read_text().splitlines()]
    assert [line["config_id"] for line in lines] == ["a", "b", "c"]
    assert lines[0]["energies"] == [{"hf": -1.0}]
    assert lines[1]["status"] == "ok" and lines[1]["energies"][0]["hf"] < -74
    assert list((tmp_path / "scratch").iterdir()) == []  # its scratch folder is gone
    assert not (tmp_path / "timer.dat").exists()


def test_rejected_psi4_option_stops_before_any_geometry(tmp_path, chunk):
    with pytest.raises(PilipError) as err:
        label(tmp_path, chunk, method="scf/sto-3g", options={"no_such_option": 1})
    message = str(err.value)
    assert "\n" not in message and message.startswith("references.r: the Psi4 worker")
    assert "NO_SUCH_OPTION is not a valid option" in message
    assert read_results(tmp_path / "r.results.jsonl") == {}


def test_job_memory_reaches_psi4_and_a_memory_option_overrides_it(tmp_path, chunk):
    """pilip label gives Psi4 80 % of the job's memory (labelling.mem_mb / --mem-mb); the
    reference's `memory` option wins; neither is part of what identifies the results."""
    outputs = {}
    for name, options in (("job", {}), ("option", {"memory": "600 MB"})):
        backend = make_backend(
            name, {"backend": "psi4", "method": "scf/sto-3g", "options": options}
        )
        backend.memory_mb = 1000
        backend.check(chunk[:1])
        results = tmp_path / f"{name}.results.jsonl"
        backend.run(
            chunk[:1], results, threads=1, gradients=False, scratch=tmp_path / name,
            retry_options=None, timeout_s=None,
        )  # fmt: skip
        assert read_results(results)[chunk[0]["id"]]["status"] == "ok"
        outputs[name] = results.with_suffix(".psi4.out").read_text()
    assert "Memory set to 762.939 MiB" in outputs["job"]  # 800 MB
    assert "Memory set to 572.205 MiB" in outputs["option"]  # 600 MB
