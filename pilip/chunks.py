"""Split a configurations table into fixed-size chunk tables, one label job each.

Chunk ``i`` holds rows ``[i * size, (i + 1) * size)`` of the input, in input order, and is
written as ``chunk-0000.parquet``, ``chunk-0001.parquet``, ... The folder appears complete
or not at all: chunks are written into a temporary sibling folder that is then renamed.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from pilip import tables
from pilip.errors import PilipError

CHUNK_NAME = re.compile(r"^chunk-\d{4,}\.parquet$")


def chunk_name(index: int) -> str:
    """``chunk-0007.parquet`` for index 7 (more digits beyond 9999 chunks)."""
    return f"chunk-{index:04d}.parquet"


def write_chunks(
    configs_path: str | os.PathLike, out_dir: str | os.PathLike, size: int
) -> list[Path]:
    """Write the chunks of ``configs_path`` into ``out_dir``; returns their paths.

    An existing ``out_dir`` is replaced, but only if it holds nothing except chunk tables.
    An empty configurations table gives an empty folder.
    """
    if size < 1:
        raise PilipError(f"--size (labelling.chunk_size) must be at least 1, got {size}")
    out_dir = Path(out_dir)
    table = tables.read_table(configs_path, kind="configurations")
    if out_dir.exists():
        strangers = [p.name for p in out_dir.iterdir() if not CHUNK_NAME.match(p.name)]
        if not out_dir.is_dir() or strangers:
            raise PilipError(
                f"{out_dir}: exists and holds files other than chunks "
                f"({', '.join(strangers[:3])}); choose an empty or new folder"
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        names = []
        for index, start in enumerate(range(0, table.num_rows, size)):
            name = chunk_name(index)
            tables.write_table(
                table.slice(start, size),
                staging / name,
                kind="configurations",
                provenance={
                    "command": "pilip chunk",
                    "source": str(configs_path),
                    "chunk": index,
                    "rows": [start, min(start + size, table.num_rows)],
                },
            )
            names.append(name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return [out_dir / name for name in names]
