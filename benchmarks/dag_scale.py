"""How large a study Snakemake can plan: `snakemake -n` time and SLURM job count vs. size.

    .venv/bin/python -m benchmarks.dag_scale [--sizes 10000,100000] [--systems 10]
    .venv/bin/python -m benchmarks.dag_scale --smoke --out DIR     # seconds (tests)

For each size N: N water configurations spread over `--systems` systems are synthesised
(random rattles, no QM; real pilip configuration tables), split into chunks by pilip's own
chunking (`labelling.chunk_size` of config.yaml unless `--chunk-size`), and the whole
default DAG is dry-run (`snakemake -n`, every job printed, as a user sees it). Labels exist
for no chunk, so every label job is planned; sampling and chunking are done.

Reported: the dry-run wall time, the jobs in the DAG, and the SLURM jobs they become with
workflow/profiles/slurm: every job but the local `all`, label chunks `group-components` to a
job (ceil(label jobs / group-components); the SLURM test checks that a real run groups so).
The dry run is made without the profile: Snakemake 9.27's dry run of grouped jobs after a
checkpoint prints the same group jobs thousands of times (minutes for 1,000 chunks), a
dry-run-only defect; the DAG is the same with and without the profile.

Prints a Markdown table (``--out DIR``: also ``DIR/dag_scale.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from pilip import tables
from pilip.chunks import write_chunks

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm"
WATER = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]])


def synthesise(root: Path, n: int, n_systems: int, chunk_size: int, seed: int = 0) -> float:
    """Configurations and chunks of n rattled waters in n_systems systems; returns seconds."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    names = [f"water{i:03d}" for i in range(n_systems)]
    config["systems"] = {name: {"seed": "H2O"} for name in names}
    config["labelling"]["chunk_size"] = chunk_size
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for i, name in enumerate(names):
        rows = n // n_systems + (i < n % n_systems)
        positions = WATER + rng.normal(0.0, 0.05, (rows, 3, 3))
        table = tables.configurations_table(
            [np.array([8, 1, 1])] * rows, list(positions), system=name, generator="rattle"
        )
        path = root / "configurations" / f"{name}.parquet"
        tables.write_table(table, path, "configurations", {"command": "dag_scale.py"})
        write_chunks(path, root / "chunks" / name, chunk_size)
    return time.perf_counter() - start


def dry_run(root: Path, per_group: int) -> dict[str, float | int]:
    """Time `snakemake -n`; count its jobs and the SLURM jobs they become with the profile."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    command = [sys.executable, "-m", "snakemake", "-n", "-s", str(REPO / "Snakefile"),
               "-d", str(root)]  # fmt: skip
    start = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"snakemake -n failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    text = out.stdout + out.stderr
    stats = text[text.index("Job stats:") :]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    jobs = counts.pop("total")
    groups = math.ceil(counts.get("label", 0) / per_group)
    slurm_jobs = jobs - counts.get("all", 0) - counts.get("label", 0) + groups
    return {"seconds": seconds, "jobs": jobs, "label": counts.get("label", 0),
            "groups": groups, "slurm_jobs": slurm_jobs}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="configurations per study")
    parser.add_argument("--systems", type=int, default=10, help="systems per study")
    parser.add_argument("--chunk-size", type=int, help="default: labelling.chunk_size")
    parser.add_argument("--out", type=Path, help="also write DIR/dag_scale.json")
    parser.add_argument("--smoke", action="store_true", help="20 configurations, 2 systems")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.systems = "20", 2
    chunk_size = (
        args.chunk_size
        or yaml.safe_load((REPO / "config.yaml").read_text())["labelling"]["chunk_size"]
    )
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    per_group = profile["group-components"][profile["groups"]["label"]]
    print(f"load average {os.getloadavg()[0]:.1f}; chunk size {chunk_size}; "
          f"{per_group} label chunks per SLURM job")  # fmt: skip
    print("| configurations | systems | chunks = label jobs | jobs in DAG | SLURM jobs |"
          " synthesis + chunking | `snakemake -n` |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="pilip-dag-") as tmp:
            made = synthesise(Path(tmp), n, args.systems, chunk_size)
            r = dry_run(Path(tmp), per_group)
        rows.append({"configurations": n, "systems": args.systems, "synthesis_s": made, **r})
        print(f"| {n:,} | {args.systems} | {r['label']:,} | {r['jobs']:,} | {r['slurm_jobs']:,} "
              f"({r['groups']:,} label groups) | {made:.0f} s | {r['seconds']:.1f} s |",
              flush=True)  # fmt: skip
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "dag_scale.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
