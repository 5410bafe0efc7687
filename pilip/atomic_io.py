"""Crash-safe file writing: write to a temporary name in the same folder, then rename.

The temporary name carries the host and process id (``.<name>.<host>-<pid>-XXXX.tmp``), so a
writer killed with ``kill -9`` (no chance to clean up) leaves debris the next writer of the
same file on that host recognises and removes.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pilip.errors import PilipError
from pilip.scratch import host_name, process_alive

# below this many free bytes a failed write is taken for a full disk, whatever the library
# raised (torch reports ENOSPC as "unexpected pos" or "file write failed")
NEARLY_FULL_BYTES = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    An interrupted or failed write leaves ``path`` untouched (old content or absent) and
    removes the temporary file. A write that fails on a full disk raises a one-line
    PilipError naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    prefix = f".{path.name}.{host_name()}-{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would
    os.chmod(tmp_path, 0o666 & ~_umask())
    full_disk = None
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except Exception as exc:
        if not disk_full(exc, path.parent):
            raise
        full_disk = no_space_message(path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    if full_disk:
        # raised here, not inside `except`: the failed writer (and its open file) goes now
        raise PilipError(full_disk)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove temporaries of ``path`` left by killed writers on this host (dead process ids)."""
    path = Path(path)
    head = f".{path.name}.{host_name()}-"
    removed = []
    for candidate in path.parent.glob(f"{glob.escape(head)}*.tmp"):
        pid = candidate.name[len(head) :].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed.append(candidate)
    return removed


def disk_full(exc: BaseException, folder: str | os.PathLike) -> bool:
    """Whether ``exc``, raised while writing into ``folder``, means the disk (or quota) is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left on device" in str(exc):
        return True
    return disk_nearly_full(folder)


def no_space_message(path: str | os.PathLike) -> str:
    """The one-line error for a write to ``path`` that found its disk full."""
    try:
        free = f"{shutil.disk_usage(Path(path).parent).free // 1024} KB free"
    except OSError:
        free = "free space unknown"
    return (
        f"{path}: no space left on device ({free}): free some space and rerun; finished work "
        "is kept and nothing is left half-written"
    )


def disk_nearly_full(folder: str | os.PathLike) -> bool:
    """Whether ``folder``'s filesystem has less than ``NEARLY_FULL_BYTES`` free."""
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def append_bytes(fd: int, data: bytes, name: str | os.PathLike) -> None:
    """Append ``data`` to the open file ``fd`` whole or not at all, and push it to disk.

    A failed write (a full disk) cuts the file back to where ``data`` started, so no half
    line is left; a full disk is a one-line PilipError naming ``name``.
    """
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        if disk_full(exc, Path(name).parent):
            raise PilipError(no_space_message(name)) from None
        raise


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` to ``path`` (created if absent) whole or not at all (see append_bytes)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        append_bytes(fd, text.encode("utf-8"), path)
    finally:
        os.close(fd)
