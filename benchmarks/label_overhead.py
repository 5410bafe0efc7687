"""Labelling overhead and 2-core throughput of pilip's Psi4 backend.

    .venv/bin/python benchmarks/label_overhead.py [--repeats 3] [--n 20] [--method mp2/cc-pv[dt]z]

1. Overhead: a chunk of ``n`` rattled water geometries labelled through pilip
   (``Psi4Backend.run``: worker process start-up, psi4 import, JSON request and results,
   CBS arithmetic, unit conversion) against the same geometries in a bare Psi4 loop in one
   process (``psi4.energy(method)`` per geometry; its wall time includes that process's own
   start-up and import, and the loop alone is reported too).
2. Throughput on 2 cores: two single-thread chunks of ``n/2`` side by side against one
   two-thread chunk of ``n``.

Runs alternate (bare, pilip, bare, pilip, ...) so that load drift from other users of the
machine hits both; the load average is printed. Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from pilip import cbs
from pilip.backends import make_backend
from pilip.psi4_env import psi4_python

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
        psi4.core.clean_variables()
    psi4.core.clean()
t_end = time.perf_counter()
print(json.dumps({"import": t_loop - t_import, "loop": t_end - t_loop, "energies": energies}))
"""


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
    """Wall time of one bare Psi4 process over all geometries (start-up included).

    ``jobs`` None: ``psi4.energy(method)`` per geometry (Psi4's own ``cbs()`` for a bracket
    string); else the (method, basis) calculations of pilip's plan, one after the other.
    """
    interpreter = psi4_python()
    inp = folder / "bare.json"
    inp.write_text(json.dumps([c["positions"] for c in configs]))
    env = interpreter.environment(threads=1)
    env["PSI_SCRATCH"] = str(folder)
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
        check=True,
    )
    wall = time.perf_counter() - start
    info = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall": wall, **info}


def through_pilip(configs: list[dict], method: str, folder: Path, threads: int = 1) -> dict:
    """Wall time of ``Psi4Backend.run`` over the chunk, and its energies (Hartree)."""
    backend = make_backend("bench", {"backend": "psi4", "method": method})
    results = folder / f"chunk-{configs[0]['id']}-{threads}.results.jsonl"
    results.unlink(missing_ok=True)
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

    return {"wall": wall, "energies": [r["energy"] / HARTREE_TO_EV for r in rows]}


def side_by_side(chunks: list[list[dict]], method: str, folder: Path) -> float:
    """Wall time of single-thread chunks run at the same time."""
    walls: list[float] = []
    threads = [
        threading.Thread(target=lambda c=c: walls.append(through_pilip(c, method, folder)["wall"]))
        for c in chunks
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(walls) == len(chunks)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--method", default="mp2/cc-pv[dt]z")
    args = parser.parse_args()
    configs = geometries(args.n)
    halves = [configs[: args.n // 2], configs[args.n // 2 :]]
    psi4_python()  # found once, outside the timings
    recipe = make_backend("b", {"backend": "psi4", "method": args.method}).recipe
    plan = [[job.method, job.basis] for job in cbs.plan_jobs(recipe, gradients=False)]
    keys = ("bare", "bare_loop", "bare_jobs", "bare_jobs_loop", "pilip", "two_1t", "one_2t")
    rows: dict[str, list[float]] = {k: [] for k in keys}
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="pilip-bench-") as tmp:
        folder = Path(tmp)
        for repeat in range(args.repeats):
            b = bare(configs, args.method, folder)
            bj = bare(configs, args.method, folder, plan)
            p = through_pilip(configs, args.method, folder)
            diff = np.max(np.abs(np.array(b["energies"]) - np.array(p["energies"])))
            assert diff < 1e-8, f"pilip and bare Psi4 disagree by {diff} Eh"
            two = side_by_side(halves, args.method, folder)
            one = through_pilip(configs, args.method, folder, threads=2)["wall"]
            values = (b["wall"], b["loop"], bj["wall"], bj["loop"], p["wall"], two, one)
            for key, value in zip(keys, values, strict=True):
                rows[key].append(value)
            print(
                f"repeat {repeat}: psi4.energy loop {b['wall']:.2f} s (import {b['import']:.2f},"
                f" loop {b['loop']:.2f}), same calculations as pilip {bj['wall']:.2f} s (loop "
                f"{bj['loop']:.2f}), pilip {p['wall']:.2f} s, 2x1 threads {two:.2f} s, "
                f"1x2 threads {one:.2f} s, max |dE| {diff:.1e} Eh, "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    med = {k: statistics.median(v) for k, v in rows.items()}
    n = args.n
    jobs = ", ".join("/".join(j) for j in plan)
    table = [
        ("bare Psi4 `psi4.energy(method)` loop, one process", med["bare"], med["bare"]),
        ("  its loop only (no start-up, no import)", med["bare_loop"], med["bare"]),
        (f"bare Psi4 loop over pilip's calculations ({jobs})", med["bare_jobs"], med["bare"]),
        ("  its loop only", med["bare_jobs_loop"], med["bare"]),
        ("pilip `Psi4Backend.run` (worker start-up, JSON, CBS)", med["pilip"], med["bare"]),
    ]
    print(f"\nload average after: {os.getloadavg()}")
    print(
        f"\n| {args.method}, {n} water geometries, median of {args.repeats} | wall (s) | "
        "/ first row |"
    )
    print("|---|---|---|")
    for name, value, base in table:
        print(f"| {name} | {value:.2f} | {value / base:.3f} |")
    print(
        f"\npilip / bare loop over the same calculations, one process: "
        f"{med['pilip'] / med['bare_jobs']:.3f}"
    )
    print(f"pilip / that loop alone: {med['pilip'] / med['bare_jobs_loop']:.3f}")
    print(f"pilip / psi4.energy loop alone: {med['pilip'] / med['bare_loop']:.3f}")
    print(
        f"2 x 1-thread chunks of {n // 2} side by side: {med['two_1t']:.2f} s "
        f"({n / med['two_1t']:.2f} geometries/s); 1 x 2-thread chunk of {n}: "
        f"{med['one_2t']:.2f} s ({n / med['one_2t']:.2f} geometries/s); ratio "
        f"{med['one_2t'] / med['two_1t']:.2f}"
    )
    print("\nper repeat:", json.dumps({k: [round(x, 3) for x in v] for k, v in rows.items()}))


if __name__ == "__main__":
    main()
