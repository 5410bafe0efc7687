"""``pilip export``: a configurations or dataset table -> extended XYZ (or any ASE format)."""

from __future__ import annotations

import argparse
import sys

HELP = "export a configurations or dataset table to extended XYZ (lossless floats)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="configurations or dataset table (Parquet)")
    parser.add_argument(
        "-o", "--output", required=True, help="file to write: .xyz/.extxyz, or any ASE format"
    )


def run(args: argparse.Namespace) -> int:
    from pilip import tables
    from pilip.extxyz import export_table

    table = tables.read_table(args.table, kind=("configurations", "dataset"))
    export_table(table, args.output)
    print(f"pilip export: {table.num_rows} structures -> {args.output}", file=sys.stderr)
    return 0
