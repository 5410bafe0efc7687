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
afresh and overwrite the stored run; more ``--starts`` add runs to those kept.

A run still going is saved too, every ``CHECKPOINT_S`` wall-clock seconds, as its
:class:`RunProgress` (under the same key): ``run-0000.progress.npz`` holds its positions,
momenta, the thermostat's random-number state, the current topology, the run's tallies and
its frames so far, in binary. A rerun continues from there and takes the steps the
uninterrupted run would have taken (the same random numbers, and the same forces where the
calculator is deterministic), losing at most ``CHECKPOINT_S`` of simulation. A finished
run's record replaces its progress file. ``run-0000.log`` says as the run goes what its kept
frames are (step, time, energies, temperature, force spread; :meth:`RunCheckpoint.log`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pilip.atomic_io import atomic_path

if TYPE_CHECKING:  # ase is imported where it is used: ``pilip md --help`` reads RUNS_DIR
    from ase import Atoms

    from pilip.potential.md import MDSettings

RUNS_DIR = "md_runs"
# frame info the run's json holds exactly (extxyz would turn a numeric-looking id into an int)
RUN_INFO = ("run", "system", "config_id")
# the info an MD frame carries (pilip.potential.md._frame; the last is md_spread.FORCE_SPREAD)
FRAME_INFO = ("step", "time_fs", "temperature_K", "force_spread")
# wall-clock seconds between two saves of a running run's progress
CHECKPOINT_S = 120.0
# a running run's log: one line per kept frame (RunCheckpoint.log)
LOG_HEADER = (
    "#     step    time_ps        epot_eV      ekin_eV        etot_eV  temperature_K"
    "  force_spread_eV_per_A\n"
)


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


@dataclass
class RunProgress:
    """A Langevin run between two steps: what its next step and its result depend on.

    ``positions`` (A) and ``momenta`` (ASE units) are (n_atoms, 3) after step ``step``;
    ``rng_state`` is the thermostat generator's ``bit_generator.state``; ``pairs`` and
    ``reference`` the current topology (``pilip.potential.md.bonded_pairs``);
    ``temperatures`` (K) one per finite step; ``max_deviation`` in A; ``wall_time_s`` the
    wall-clock seconds spent so far, over every stretch of the run.
    """

    step: int
    pairs: np.ndarray
    reference: np.ndarray
    frames: list[Atoms]
    positions: np.ndarray | None = None
    momenta: np.ndarray | None = None
    rng_state: dict[str, Any] | None = None
    temperatures: list[float] = field(default_factory=list)
    max_deviation: float = 0.0
    transfers: int = 0
    wall_time_s: float = 0.0


class RunCheckpoint:
    """The saved progress of one unfinished run (see the module docstring)."""

    def __init__(self, path: Path, key: str, start: Atoms, interval_s: float) -> None:
        self.path, self.key, self.start, self.interval_s = path, key, start, interval_s
        self.last_save = time.perf_counter()

    def due(self) -> bool:
        """Whether ``interval_s`` wall-clock seconds have passed since the last save."""
        return time.perf_counter() - self.last_save >= self.interval_s

    def save(self, progress: RunProgress) -> None:
        """Keep ``progress`` (every field set), replacing the previous one."""
        frames = progress.frames
        meta = {
            "key": self.key,
            "step": progress.step,
            "rng_state": progress.rng_state,
            "max_deviation": progress.max_deviation,
            "transfers": progress.transfers,
            "wall_time_s": progress.wall_time_s,
            "frame_info": [{k: f.info[k] for k in FRAME_INFO if k in f.info} for f in frames],
        }
        with atomic_path(self.path) as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle,
                meta=np.array(json.dumps(meta, default=lambda value: value.item())),  # np ints
                positions=progress.positions,
                momenta=progress.momenta,
                pairs=progress.pairs,
                reference=progress.reference,
                temperatures=np.asarray(progress.temperatures, dtype=np.float64),
                frame_positions=np.stack([f.positions for f in frames]),
                frame_momenta=np.stack([f.get_momenta() for f in frames]),
                frame_energies=np.array([f.get_potential_energy() for f in frames]),
                frame_forces=np.stack([f.get_forces() for f in frames]),
            )
        self.last_save = time.perf_counter()

    def load(self) -> RunProgress | None:
        """The saved progress of this run (this key), or None (start from step 0)."""
        try:
            with np.load(self.path) as state:
                meta = json.loads(str(state["meta"]))
                if meta.get("key") != self.key:
                    return None
                arrays = {name: state[name] for name in state.files if name != "meta"}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # absent, not ours
            return None
        return RunProgress(
            step=int(meta["step"]),
            pairs=arrays["pairs"],
            reference=arrays["reference"],
            frames=self._frames(arrays, meta["frame_info"]),
            positions=arrays["positions"],
            momenta=arrays["momenta"],
            rng_state=meta["rng_state"],
            temperatures=arrays["temperatures"].tolist(),
            max_deviation=float(meta["max_deviation"]),
            transfers=int(meta["transfers"]),
            wall_time_s=float(meta["wall_time_s"]),
        )

    def _frames(self, arrays: dict[str, np.ndarray], info: list[dict]) -> list[Atoms]:
        """The kept frames as ``pilip.potential.md`` made them: copies of the start with
        positions, momenta, a single-point energy and forces, and the MD step info."""
        from ase.calculators.singlepoint import SinglePointCalculator

        frames = []
        for i, frame_info in enumerate(info):
            frame = self.start.copy()
            frame.set_constraint()
            frame.positions = arrays["frame_positions"][i]
            frame.set_momenta(arrays["frame_momenta"][i])
            frame.info.update(frame_info)
            frame.calc = SinglePointCalculator(
                frame, energy=float(arrays["frame_energies"][i]), forces=arrays["frame_forces"][i]
            )
            frames.append(frame)
        return frames

    @property
    def log_path(self) -> Path:
        """``run-NNNN.log`` beside the progress file (see :meth:`log`)."""
        return self.path.with_name(self.path.name.replace(".progress.npz", ".log"))

    def start_log(self, frames: list[Atoms]) -> None:
        """Begin the run's log with the frames kept so far: a run continued from its saved
        progress drops the lines of the stretch it takes again."""
        with atomic_path(self.log_path) as tmp:
            tmp.write_text(LOG_HEADER + "".join(_log_line(frame) for frame in frames))

    def log(self, frame: Atoms) -> None:
        """Append one kept frame to the run's log (step, time, potential, kinetic and total
        energy in eV, temperature, a committee's force spread): what ``tail -f`` shows of a
        run still going, like an MD engine's thermo output. Kept when the run finishes."""
        with open(self.log_path, "a") as handle:
            handle.write(_log_line(frame))

    def clear(self) -> None:
        """Remove the saved progress (the run finished; its log stays)."""
        self.path.unlink(missing_ok=True)


def _log_line(frame: Atoms) -> str:
    epot, ekin = frame.get_potential_energy(), frame.get_kinetic_energy()
    spread = frame.info.get(FRAME_INFO[-1])  # None for a single model: nan
    return (
        f"{frame.info['step']:10d} {frame.info['time_fs'] / 1000:10.4f} {epot:14.6f} "
        f"{ekin:12.6f} {epot + ekin:14.6f} {frame.info['temperature_K']:14.2f} "
        f"{math.nan if spread is None else spread:22.4f}\n"
    )


class RunStore:
    """The finished runs of one ``pilip md --out`` folder (see the module docstring)."""

    def __init__(
        self, out: str | Path, model_digest: str, checkpoint_s: float = CHECKPOINT_S
    ) -> None:
        self.folder = Path(out) / RUNS_DIR
        self.model_digest = model_digest
        self.checkpoint_s = checkpoint_s  # wall-clock seconds between saves of a running run

    def _paths(self, k: int) -> tuple[Path, Path]:
        stem = self.folder / f"run-{k:04d}"
        return stem.with_suffix(".json"), stem.with_suffix(".extxyz")

    def checkpoint(self, k: int, start: Atoms, settings: MDSettings) -> RunCheckpoint:
        """Run ``k``'s progress, saved every ``checkpoint_s`` wall-clock seconds while it runs."""
        path = self.folder / f"run-{k:04d}.progress.npz"
        return RunCheckpoint(
            path, run_key(self.model_digest, start, settings), start, self.checkpoint_s
        )

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
        self.checkpoint(k, start, settings).clear()
