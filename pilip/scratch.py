"""Scratch folders that a killed job does not leak.

``kill -9`` (a scheduler's time limit, an out-of-memory kill, a user) gives a job no chance
to remove its scratch folder, and quantum-chemistry scratch files can be gigabytes. Each
folder is therefore named after its host and process id (``pilip-label-<host>-<pid>-XXXX``),
and the next job on the same host removes the folders of processes that are gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path


def host_name() -> str:
    """This host's name, safe inside a file name (no '-' so that the pid parses back)."""
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale(root: Path, prefix: str) -> list[Path]:
    """Remove ``root``'s folders ``<prefix>-<this host>-<pid>-*`` whose process is gone."""
    removed = []
    head = f"{prefix}-{host_name()}-"
    for folder in Path(root).glob(f"{head}*"):
        pid_text = folder.name[len(head) :].split("-", 1)[0]
        if not pid_text.isdigit() or not folder.is_dir() or process_alive(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


@contextlib.contextmanager
def scratch_folder(prefix: str, root: str | os.PathLike | None = None) -> Iterator[Path]:
    """A private folder under ``root`` (default: the system temporary folder), removed after.

    Folders this prefix left behind by dead processes on this host are removed first.
    """
    root = Path(root) if root else Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    remove_stale(root, prefix)
    with tempfile.TemporaryDirectory(
        prefix=f"{prefix}-{host_name()}-{os.getpid()}-", dir=root
    ) as d:
        yield Path(d)
