"""Labelling overhead and 2-core throughput of pilip's Psi4 backend.

    .venv/bin/python -m benchmarks.label_overhead [--repeats 3] [--n 20] [--method mp2/cc-pv[dt]z]
    .venv/bin/python -m benchmarks.label_overhead --smoke --out DIR   # seconds (tests)

1. Overhead: a chunk of ``n`` rattled water geometries labelled through pilip
   (``Psi4Backend.run``: worker process start-up, psi4 import, JSON request and results,
   CBS arithmetic, unit conversion) against the same geometries in a bare Psi4 loop in one
   process (``psi4.energy(method)`` per geometry; its wall time includes that process's own
   start-up and import, and the loop alone is reported too).
2. Throughput on 2 cores: two single-thread chunks of ``n/2`` side by side against one
   two-thread chunk of ``n``.

Runs alternate (bare, pilip, bare, pilip, ...) so that load drift from other users of the
machine hits both; the load average is printed. Prints a Markdown table of medians;
``--out DIR`` also writes every timing to ``DIR/label_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from pilip.reference import cbs
from pilip.reference.backends import make_backend
from pilip.reference.psi4_env import psi4_python

WATER = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]])

BARE = """
import json, sys, time
t_import = time.perf_counter()
import psi4
t_loop = time.perf_counter()
psi4.core.set_output_file(sys.argv[2], False)
psi4.core.set_num_threads(1, True)
jobs = json.loads(sys.argv[4])  # []: psi4.energy(method string); else (method, basis) runs
energies = []
for xyz in json.load(open(sys.argv[1])):
    lines = ["0 1"] + [f"{s} {x!r} {y!r} {z!r}" for s, (x, y, z) in zip("OHH", xyz)]
    mol = psi4.geometry("\\n".join(lines + ["units angstrom", "symmetry c1", "no_com",
                                             "no_reorient"]))
    if not jobs:
        energies.append(psi4.energy(sys.argv[3], molecule=mol))
    for method, basis in jobs:
        psi4.core.set_global_option("BASIS", basis)
        psi4.energy(method, molecule=mol)
        psi4.core.clean()
        psi4.core.clean_variables()
    psi4.core.clean()
t_end = time.perf_counter()
print(json.dumps({"import": t_loop - t_import, "loop": t_end - t_loop, "energies": energies}))
"""


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children, seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def geometries(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        xyz = WATER + rng.normal(scale=0.05, size=WATER.shape)
        out.append(
            {
                "id": f"w{i:03d}",
                "numbers": [8, 1, 1],
                "positions": xyz.tolist(),
                "charge": 0,
                "multiplicity": 1,
            }
        )
    return out


def bare(configs: list[dict], method: str, folder: Path, jobs: list | None = None) -> dict:
    """Wall and CPU time of one bare Psi4 process over all geometries (start-up included).

    ``jobs`` None: ``psi4.energy(method)`` per geometry (Psi4's own ``cbs()`` for a bracket
    string); else the (method, basis) calculations of pilip's plan, one after the other.
    """
    interpreter = psi4_python()
    inp = folder / "bare.json"
    inp.write_text(json.dumps([c["positions"] for c in configs]))
    env = interpreter.environment(threads=1)
    env["PSI_SCRATCH"] = str(folder)
    cpu = cpu_seconds()
    start = time.perf_counter()
    done = subprocess.run(
        [
            interpreter.python,
            "-c",
            BARE,
            str(inp),
            str(folder / "bare.out"),
            method,
            json.dumps(jobs or []),
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bare Psi4 loop failed: {done.stderr[-3000:]}")
    wall = time.perf_counter() - start
    info = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall": wall, "cpu": cpu_seconds() - cpu, **info}


def through_pilip(configs: list[dict], method: str, folder: Path, threads: int = 1) -> dict:
    """Wall and CPU time (main process + worker) of ``Psi4Backend.run`` over the chunk."""
    backend = make_backend("bench", {"backend": "psi4", "method": method})
    results = folder / f"chunk-{configs[0]['id']}-{threads}.results.jsonl"
    results.unlink(missing_ok=True)
    cpu = cpu_seconds()
    own = time.process_time()
    start = time.perf_counter()
    backend.run(
        configs,
        results,
        threads=threads,
        gradients=False,
        scratch=folder / "scratch",
        retry_options=None,
        timeout_s=None,
    )
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert all(r["status"] == "ok" for r in rows), rows
    from pilip.units import HARTREE_TO_EV

    return {
        "wall": wall,
        "cpu": cpu_seconds() - cpu,
        "main_cpu": time.process_time() - own,  # pilip's own side, worker excluded
        "energies": [r["energy"] / HARTREE_TO_EV for r in rows],
    }


def side_by_side(chunks: list[list[dict]], method: str, folder: Path) -> dict:
    """Wall and CPU time of single-thread chunks run at the same time."""
    walls: list[float] = []
    threads = [
        threading.Thread(target=lambda c=c: walls.append(through_pilip(c, method, folder)["wall"]))
        for c in chunks
    ]
    cpu = cpu_seconds()
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(walls) == len(chunks)
    return {"wall": time.perf_counter() - start, "cpu": cpu_seconds() - cpu}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--method", default="mp2/cc-pv[dt]z")
    parser.add_argument("--out", type=Path, help="also write DIR/label_overhead.json")
    parser.add_argument(
        "--smoke", action="store_true", help="--n 2 --repeats 1 --method scf/sto-3g (tests)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.repeats, args.method = 2, 1, "scf/sto-3g"
    configs = geometries(args.n)
    halves = [configs[: args.n // 2], configs[args.n // 2 :]]
    psi4_python()  # found once, outside the timings
    recipe = make_backend("b", {"backend": "psi4", "method": args.method}).recipe
    plan = [[job.method, job.basis] for job in cbs.plan_jobs(recipe, gradients=False)]
    names = {
        "bare": "bare Psi4 `psi4.energy(method)` loop, one process (start-up included)",
        "bare_jobs": "bare Psi4 loop over pilip's calculations ("
        + ", ".join("/".join(j) for j in plan)
        + "), one process",
        "pilip": "pilip `Psi4Backend.run` (worker start-up, JSON, CBS arithmetic)",
        "two_1t": f"2 x 1-thread pilip chunks of {args.n // 2}, side by side",
        "one_2t": f"1 x 2-thread pilip chunk of {args.n}",
    }
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    loops: dict[str, list[float]] = {"bare": [], "bare_jobs": []}
    main_cpu: list[float] = []
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="pilip-bench-") as tmp:
        folder = Path(tmp)
        for repeat in range(args.repeats):
            got = {
                "bare": bare(configs, args.method, folder),
                "bare_jobs": bare(configs, args.method, folder, plan),
                "pilip": through_pilip(configs, args.method, folder),
                "two_1t": side_by_side(halves, args.method, folder),
                "one_2t": through_pilip(configs, args.method, folder, threads=2),
            }
            diff = np.max(np.abs(np.array(got["bare"]["energies"]) - got["pilip"]["energies"]))
            assert diff < 1e-8, f"pilip and bare Psi4 disagree by {diff} Eh"
            for key, value in got.items():
                wall[key].append(value["wall"])
                cpu[key].append(value["cpu"])
            for key in loops:
                loops[key].append(got[key]["loop"])
            main_cpu.append(got["pilip"]["main_cpu"])
            print(
                f"repeat {repeat}: "
                + ", ".join(
                    f"{k} {v['wall']:.2f} s wall / {v['cpu']:.2f} s cpu" for k, v in got.items()
                )
                + f"; max |dE| {diff:.1e} Eh; load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    n = args.n
    print(f"\nload average after: {os.getloadavg()}")
    print(
        f"\n| {args.method}, {n} water geometries, median of {args.repeats} | wall (s) | "
        "wall / bare | CPU (s) | CPU / bare |"
    )
    print("|---|---|---|---|---|")
    for key in ("bare", "bare_jobs", "pilip"):
        print(
            f"| {names[key]} | {med_wall[key]:.2f} | {med_wall[key] / med_wall['bare']:.3f} | "
            f"{med_cpu[key]:.2f} | {med_cpu[key] / med_cpu['bare']:.3f} |"
        )
    print(
        f"\npilip / bare loop over the same calculations: wall "
        f"{med_wall['pilip'] / med_wall['bare_jobs']:.3f}, CPU "
        f"{med_cpu['pilip'] / med_cpu['bare_jobs']:.3f}; bare loops alone (no start-up): "
        f"{statistics.median(loops['bare']):.2f} s and "
        f"{statistics.median(loops['bare_jobs']):.2f} s"
    )
    print(f"pilip's main-process CPU (worker excluded): {statistics.median(main_cpu):.3f} s")
    print(f"\n| throughput, {n} geometries | wall (s) | geometries/s | CPU (s) |")
    print("|---|---|---|---|")
    for key in ("two_1t", "one_2t"):
        print(
            f"| {names[key]} | {med_wall[key]:.2f} | {n / med_wall[key]:.2f} | {med_cpu[key]:.2f} |"
        )
    print(f"\n1 x 2 threads / 2 x 1 thread wall: {med_wall['one_2t'] / med_wall['two_1t']:.2f}")
    print("\nper repeat, wall:", json.dumps({k: [round(x, 2) for x in v] for k, v in wall.items()}))
    print("per repeat, CPU:", json.dumps({k: [round(x, 2) for x in v] for k, v in cpu.items()}))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {"method": args.method, "n": n, "repeats": args.repeats, "names": names,
                  "median_wall_s": med_wall, "median_cpu_s": med_cpu, "wall_s": wall,
                  "cpu_s": cpu, "pilip_main_cpu_s": statistics.median(main_cpu)}  # fmt: skip
        (args.out / "label_overhead.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
