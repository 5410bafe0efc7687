"""The ``pilip`` command line: one subcommand per workflow stage.

Each subcommand lives in ``pilip.commands.<module>`` and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Modules import heavy libraries (torch,
pyarrow) inside ``run`` so that ``pilip --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from pilip import __version__
from pilip.errors import PilipError

# subcommand name -> module under pilip.commands
COMMANDS: dict[str, str] = {
    "label": "label",
    "chunk": "chunk",
    "collect": "collect",
    "force-subset": "force_subset",
    "reextrapolate": "reextrapolate",
    "evaluate": "evaluate",
    "md": "md",
    "report": "report",
    "sample": "sample",
    "import": "import_xyz",
    "export": "export_xyz",
    "train": "train",
    "baseline-model": "baseline_model",
    "distill": "distill",
    "export-model": "export_model",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pilip",
        description="Interatomic potentials from energy-only quantum chemistry.",
    )
    parser.add_argument("--version", action="version", version=f"pilip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"pilip.commands.{module_name}")
        cmd = sub.add_parser(
            name, help=module.HELP, description=module.HELP, epilog=getattr(module, "EPILOG", None)
        )
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except PilipError as exc:
        print(f"pilip {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # a full disk met outside pilip's own writers: still one line, naming the file if known
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            f"pilip {args.command}: error: {where}no space left on device: free some space "
            "and rerun; finished work is kept",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"pilip {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
