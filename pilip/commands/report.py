"""``pilip report --results DIR [DIR ...] -o results/summary.md``: compare training variants."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "side-by-side summary (Markdown) of evaluated variants: errors, MD stability, plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results",
        nargs="+",
        type=Path,
        required=True,
        help="results folders of pilip evaluate (and pilip md), one per variant",
    )
    parser.add_argument("--out", "-o", type=Path, required=True, help="summary file (Markdown)")
    parser.add_argument(
        "--baseline",
        default=None,
        help="variant (folder name) the force RMSE ratios refer to "
        "(default: the one trained on the energy loss alone)",
    )
    parser.add_argument("--title", default="", help="heading of the summary")


def run(args: argparse.Namespace) -> int:
    from pilip.report import write_summary

    write_summary(args.results, args.out, baseline=args.baseline, title=args.title)
    print(f"summary of {len(args.results)} variant(s) -> {args.out}")
    return 0
