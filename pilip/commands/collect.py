"""``pilip collect``: configurations + ok labels -> dataset table with splits, and a summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "join configurations and ok labels into a dataset table with splits and a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configurations",
        nargs="+",
        required=True,
        help="configurations tables, or dataset tables whose rows keep their split unless "
        "--splits is given (Parquet)",
    )
    parser.add_argument(
        "--labels", nargs="+", required=True, help="labels tables of one reference, or folders"
    )
    parser.add_argument(
        "--force-validation",
        nargs="*",
        default=[],
        help="labels tables with forces, for evaluation only (force_validation = true)",
    )
    parser.add_argument("-o", "--output", required=True, help="dataset table to write (Parquet)")
    parser.add_argument("--summary", help="summary text file (default: OUTPUT with .summary.txt)")
    parser.add_argument(
        "--config", default="config.yaml", help="config file whose `splits` are used"
    )
    parser.add_argument(
        "--splits", help="train,val,test fractions, e.g. 0.8,0.1,0.1 (overrides the config)"
    )


def fractions_from(args: argparse.Namespace) -> tuple[float, float, float]:
    from pilip import splits

    if args.splits:
        return splits.parse_fractions(args.splits)
    if Path(args.config).is_file():
        from pilip.config import load_config

        section = load_config(args.config)["splits"]
        return splits.check_fractions(
            [section["train"], section["val"], section["test"]], f"{args.config}: splits"
        )
    return splits.DEFAULT_FRACTIONS


def run(args: argparse.Namespace) -> int:
    from pilip import tables
    from pilip.atomic_io import atomic_path
    from pilip.collect import collect, dataset_provenance, summary_text

    output = Path(args.output)
    summary = Path(args.summary) if args.summary else output.with_name(f"{output.stem}.summary.txt")
    fractions = fractions_from(args)
    collected = collect(
        args.configurations,
        args.labels,
        fractions,
        args.force_validation,
        keep_splits=args.splits is None,
    )
    text = summary_text(collected, output)
    tables.write_table(
        collected.table,
        output,
        kind="dataset",
        provenance=dataset_provenance(
            collected,
            fractions,
            configurations=[str(p) for p in args.configurations],
            labels=[str(p) for p in args.labels],
        ),
    )
    with atomic_path(summary) as tmp:
        tmp.write_text(text, encoding="utf-8")
    sys.stderr.write(text)
    return 0
