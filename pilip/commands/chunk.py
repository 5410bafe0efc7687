"""``pilip chunk``: split a configurations table into fixed-size chunks for label jobs."""

from __future__ import annotations

import argparse
import sys

HELP = "split a configurations table into chunk-NNNN.parquet tables of a fixed size"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configurations", help="configurations table (Parquet)")
    parser.add_argument("-o", "--output", required=True, help="folder for the chunk tables")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, help="configurations per chunk")
    size.add_argument(
        "--config",
        default="config.yaml",
        help="take the size from labelling.chunk_size of this config (default config.yaml)",
    )


def run(args: argparse.Namespace) -> int:
    from pilip.chunks import write_chunks

    size = args.size
    if size is None:
        from pilip.config import load_config

        size = int(load_config(args.config)["labelling"]["chunk_size"])
    paths = write_chunks(args.configurations, args.output, size)
    print(f"pilip chunk: {len(paths)} chunks of up to {size} -> {args.output}", file=sys.stderr)
    return 0
