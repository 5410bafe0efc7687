"""Cost of the content checksums on reading and writing a large dataset table.

    .venv/bin/python -m benchmarks.table_checksums [--rows 50000] [--atoms 20] [--repeats 5]
    .venv/bin/python -m benchmarks.table_checksums --smoke --out DIR     # seconds (tests)

A synthetic dataset table (random positions and forces, one energy per row) is written with
``pilip.tables.write_table`` and read back three ways, side by side in one run: pilip's read
(page CRCs and content checksums verified), pyarrow's read with page CRCs only, and the
checksums alone. Prints medians over ``--repeats`` (``--out DIR``: also
``DIR/table_checksums.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pilip import keys, tables
from pilip.table_checksums import checksums


def synthetic_dataset(rows: int, atoms: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    offsets = np.arange(0, (rows + 1) * atoms, atoms)
    return pa.table(
        {
            keys.ID: pa.array([f"{i:016x}" for i in range(rows)]),
            keys.NUMBERS: pa.array([[6] * atoms] * rows, pa.list_(pa.int32())),
            keys.POSITIONS: tables.numpy_to_positions(rng.normal(size=(rows * atoms, 3)), offsets),
            keys.ENERGY: pa.array(rng.normal(size=rows)),
            keys.FORCES: tables.numpy_to_positions(rng.normal(size=(rows * atoms, 3)), offsets),
            keys.SPLIT: pa.array(["train"] * rows),
        }
    )


def median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50000)
    parser.add_argument("--atoms", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write DIR/table_checksums.json")
    parser.add_argument("--smoke", action="store_true", help="100 rows, 1 repeat (tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.repeats = 100, 1
    table = synthetic_dataset(args.rows, args.atoms)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dataset.parquet"
        tables.write_table(table, path, "dataset", {})
        size = os.path.getsize(path) / 1e6
        timings = {
            "write_table (checksums computed)": lambda: tables.write_table(
                table, path, "dataset", {}
            ),
            "read_table (page CRCs + checksums)": lambda: tables.read_table(path),
            "pq.read_table (page CRCs only)": lambda: pq.read_table(
                path, page_checksum_verification=True
            ),
            "checksums alone": lambda: checksums(table),
        }
        print(f"{args.rows} rows, {args.rows * args.atoms} atoms, {size:.1f} MB file")
        medians = {}
        for name, call in timings.items():
            medians[name] = median_seconds(call, args.repeats)
            print(f"  {name:38s} {medians[name]:.3f} s (median)")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {"rows": args.rows, "atoms": args.atoms, "repeats": args.repeats,
                  "file_mb": size, "median_s": medians}  # fmt: skip
        (args.out / "table_checksums.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
