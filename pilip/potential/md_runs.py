"""Finished MD runs kept on disk: an interrupted ``pilip md`` resumes where it stopped.

A stability test of 50 ps from five starts runs for hours; a job killed in run four (a
cluster's time limit, a reboot) should not redo runs one to three. :class:`RunStore` keeps
each finished run in ``<out>/md_runs/``::

    run-0000.extxyz   its kept frames (written first)
    run-0000.json     {"key": ..., "run": the run's md.json entry} (written last: the run is
                      finished only when this file exists)

both written to a temporary name and renamed. A later ``pilip md`` with the same ``--out``
takes a stored run instead of simulating it again only when its key matches: a digest of the
model file's bytes, the start structure (numbers, positions, charge, multiplicity) and every
MD setting with the run's own seed. Another model, other settings or another start simulate
afresh and overwrite the stored run; more ``--starts`` add runs to those kept. Runs are
reused whole: a run interrupted midway starts again from its first step.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from pilip.atomic_io import atomic_path

if TYPE_CHECKING:  # ase is imported where it is used: ``pilip md --help`` reads RUNS_DIR
    from ase import Atoms

    from pilip.potential.md import MDSettings

RUNS_DIR = "md_runs"
# frame info the run's json holds exactly (extxyz would turn a numeric-looking id into an int)
RUN_INFO = ("run", "system", "config_id")


def run_key(model_digest: str, start: Atoms, settings: MDSettings) -> str:
    """What one MD run is a result of: model bytes, start structure and settings (an
    ``MDSettings`` with the run's seed), as a sha256 hex digest."""
    h = hashlib.sha256()
    description = {
        "model": model_digest,
        "settings": asdict(settings),
        "numbers": start.numbers.tolist(),
        "charge": start.info.get("charge"),
        "multiplicity": start.info.get("multiplicity"),
    }
    h.update(json.dumps(description, sort_keys=True, default=str).encode())
    h.update(start.positions.astype("<f8").tobytes())
    return h.hexdigest()


class RunStore:
    """The finished runs of one ``pilip md --out`` folder (see the module docstring)."""

    def __init__(self, out: str | Path, model_digest: str) -> None:
        self.folder = Path(out) / RUNS_DIR
        self.model_digest = model_digest

    def _paths(self, k: int) -> tuple[Path, Path]:
        stem = self.folder / f"run-{k:04d}"
        return stem.with_suffix(".json"), stem.with_suffix(".extxyz")

    def load(self, k: int, start: Atoms, settings: MDSettings) -> tuple[dict, list[Atoms]] | None:
        """Run ``k``'s md.json entry and frames if it finished with this model, start and
        ``settings`` (the run's seed included); None otherwise (simulate it)."""
        import ase.io

        record_path, frames_path = self._paths(k)
        try:
            record = json.loads(record_path.read_text())
            if record.get("key") != run_key(self.model_digest, start, settings):
                return None
            frames = ase.io.read(frames_path, index=":", format="extxyz")
        except (OSError, ValueError, KeyError):  # absent, cut short or not ours: simulate
            return None
        run = record["run"]
        for frame in frames:
            frame.info.update({name: run[name] for name in RUN_INFO})
        return run, frames

    def save(
        self, k: int, start: Atoms, settings: MDSettings, run: dict, frames: list[Atoms]
    ) -> None:
        """Keep finished run ``k`` (its md.json entry ``run`` and its ``frames``)."""
        import ase.io

        record_path, frames_path = self._paths(k)
        with atomic_path(frames_path) as tmp:
            ase.io.write(tmp, frames, format="extxyz")
        record = {"key": run_key(self.model_digest, start, settings), "run": run}
        with atomic_path(record_path) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
