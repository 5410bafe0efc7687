"""Snakemake's process tree: which stages run, and ``kill -9`` of its whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from tools.fault_campaign.common import PILIP_COMMAND, STAGE_OF


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live process."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields and fields[0] == "Z":  # a zombie is dead, only not yet reaped
            continue
        out[int(entry.name)] = (int(fields[1]), cmdline)
    return out


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of ``root`` and every process below it."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out[pid] = table[pid][1]
        todo += children.get(pid, [])
    return out


def stages_running(procs: dict[int, str]) -> set[str]:
    stages = set()
    for cmdline in procs.values():
        for command in PILIP_COMMAND.findall(cmdline):
            if command in STAGE_OF:
                stages.add(STAGE_OF[command])
        if "psi4_worker" in cmdline:
            stages.add("labelling")
    return stages


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def kill_tree(proc: subprocess.Popen) -> list[str]:
    """kill -9 Snakemake's process group; the command lines of any process that survived."""
    before = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    return [cmd for pid, cmd in before.items() if alive(pid)]
