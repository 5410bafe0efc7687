"""The acetylacetone dataset as pilip tables, and the runs the acac benchmarks make of it.

``../shared/data/acac`` (DFT energies and forces; read in place, never copied) is imported
once with ``pilip import`` into ``OUT/tables/`` (``train_300K`` as split ``train``,
``test_MD_300K`` as split ``test``). Each run gets a dataset table of its own, written with
``pilip.tables``: per seed, the 50 validation structures and the first n of the other 450
(in the seed's order) of ``train_300K`` in file order, and all 650 test frames, whose forces
only ``pilip evaluate`` reads. Training and evaluation go through the ``pilip`` command
(``pilip train``, ``pilip evaluate``), each in its own process with one thread.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from pilip import keys, tables

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "acac"
TRAIN_FILE, TEST_FILE = "train_300K.xyz", "test_MD_300K.xyz"
N_VAL = 50
XTB = "gfn2-xtb"
CONFIGURATION_COLUMNS = [f.name for f in tables.CONFIGURATION_FIELDS]


def available(data: Path) -> bool:
    return (data / TRAIN_FILE).is_file() and (data / TEST_FILE).is_file()


def split_indices(n_total: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation indices, training pool in the seed's order) of train_300K."""
    order = np.random.default_rng(1000 + seed).permutation(n_total)
    return np.sort(order[:N_VAL]), order[N_VAL:]


# --- the pilip command -----------------------------------------------------------------------


@dataclass
class Finished:
    """A finished ``pilip`` command: its stderr and the CPU seconds of its process tree."""

    stderr: str
    cpu_s: float
    wall_s: float


def pilip(*argv: str, threads: int = 1) -> Finished:
    """``pilip ARGV`` in its own process (``threads`` OpenMP/torch threads); exit on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pilip.cli", *argv], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)  # this process's own CPU time, also in threads
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"pilip {' '.join(argv)} failed ({proc.returncode}):\n{stderr}")
    return Finished(stderr, usage.ru_utime + usage.ru_stime, time.perf_counter() - start)


# --- tables ----------------------------------------------------------------------------------


def import_tables(
    data: Path, out: Path, n_pool: int | None = None, n_test: int | None = None
) -> tuple[Path, Path]:
    """``pilip import`` of the training pool and the test frames (once; cached in out), or of
    their first ``n_pool`` / ``n_test`` frames (smoke runs)."""
    return (
        import_table(data / TRAIN_FILE, out, "train", n_pool),
        import_table(data / TEST_FILE, out, "test", n_test),
    )


def import_table(xyz: Path, out: Path, split: str, first: int | None = None) -> Path:
    """``pilip import`` of one extended-XYZ file as split ``split`` into ``out/tables/`` (once),
    or a table of its first ``first`` frames."""
    path = out / "tables" / f"{xyz.stem}.parquet"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        pilip("import", str(xyz), "-o", str(path), "--reference", "dft", "--split", split)
    if first is not None:
        part = path.with_name(f"{path.stem}-first{first}.parquet")
        if not part.is_file():
            table = tables.read_table(path).slice(0, first)
            tables.write_table(table, part, "dataset", {"command": "benchmarks/acac.py"})
        path = part
    return path


def xtb_tables(train: Path, test: Path, out: Path) -> tuple[Path, Path]:
    """GFN2-xTB energies and forces of both tables: ``pilip label --reference gfn2-xtb``."""
    paths = []
    for table in (train, test):
        path = out / "tables" / f"{table.stem}.{XTB}.parquet"
        if not path.is_file():
            done = pilip("label", str(table), "--reference", XTB, "--forces", "-o", str(path))
            print(f"GFN2-xTB of {table.name}: {done.cpu_s:.0f} CPU s", flush=True)
        paths.append(path)
    return paths[0], paths[1]


def xtb_arrays(labels: Path, table: pa.Table) -> tuple[np.ndarray, list[np.ndarray]]:
    """Energies (n,) eV and forces [(n_atoms, 3)] eV/A of a labels table, in ``table``'s order."""
    got = tables.read_table(labels)
    if set(got.column(keys.STATUS).to_pylist()) != {keys.STATUS_OK}:
        raise SystemExit(f"{labels}: GFN2-xTB failed on some structures")
    row = {i: r for r, i in enumerate(got.column(keys.CONFIG_ID).to_pylist())}
    order = [row[i] for i in table.column(keys.ID).to_pylist()]
    energy = np.asarray(got.column(keys.ENERGY).to_pylist(), dtype=np.float64)[order]
    forces = tables.rows_of(got.column(keys.FORCES))
    return energy, [forces[i] for i in order]


def split_dataset(
    pool: pa.Table,
    test: pa.Table,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    path: Path,
    labels: tuple[np.ndarray, list[np.ndarray], str] | None = None,
) -> Path:
    """A dataset table of ``pool``'s rows ``train_idx`` (split train) and ``val_idx`` (val), in
    file order, then every row of ``test``. ``labels`` (energies, forces, reference) replace
    the pool's DFT labels (the test rows keep theirs)."""
    idx = np.concatenate([np.sort(train_idx), np.sort(val_idx)]).astype(np.int64)
    split = ["train"] * len(train_idx) + ["val"] * len(val_idx)
    rows = pool.take(pa.array(idx))
    if labels is None:
        energy = rows.column(keys.ENERGY).to_pylist()
        forces: list = tables.rows_of(rows.column(keys.FORCES))
        reference: str = rows.column(keys.REFERENCE)[0].as_py()
    else:
        energy = [float(labels[0][i]) for i in idx]
        forces = [labels[1][i] for i in idx]
        reference = labels[2]
    part = tables.dataset_table(
        rows.select(CONFIGURATION_COLUMNS), energy, forces, reference=reference, split=split
    )
    test_rows = test.set_column(
        test.schema.get_field_index(keys.SPLIT), keys.SPLIT, pa.array(["test"] * test.num_rows)
    ).cast(tables.DATASET_SCHEMA)
    tables.write_table(
        pa.concat_tables([part, test_rows]), path, "dataset", {"command": "benchmarks/acac.py"}
    )
    return path


def configurations(pool: pa.Table, idx: np.ndarray, path: Path) -> Path:
    """A configurations table of ``pool``'s rows ``idx`` in file order (an unlabelled pool)."""
    rows = pool.take(pa.array(np.sort(idx).astype(np.int64))).select(CONFIGURATION_COLUMNS)
    tables.write_table(rows, path, "configurations", {"command": "benchmarks/acac.py"})
    return path


def frames(path: Path) -> list[dict[str, Any]]:
    """Rows of a dataset table as dicts: numbers (n,), positions (n, 3) A, energy eV, forces."""
    table = tables.read_table(path)
    positions = tables.rows_of(table.column(keys.POSITIONS))
    forces = tables.rows_of(table.column(keys.FORCES))
    return [
        {"numbers": np.asarray(z, dtype=np.int64), "positions": p, "energy": e, "forces": f}
        for z, p, e, f in zip(
            table.column(keys.NUMBERS).to_pylist(), positions,
            table.column(keys.ENERGY).to_pylist(), forces, strict=True,
        )
    ]  # fmt: skip


# --- a training run and its evaluation ---------------------------------------------------------


def study_config(path: Path, training: dict[str, Any], variants: dict[str, dict]) -> Path:
    """A study config with only a ``training`` section: every run's settings, by variant."""
    variants = {name: {k: v for k, v in spec.items() if not k.startswith("_")}
                for name, spec in variants.items()}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"training": {**training, "variants": variants}}))
    return path


def train(
    dataset: Path,
    run: Path,
    config: Path,
    variant: str,
    *extra: str,
    command: tuple[str, ...] = ("train",),
) -> dict[str, Any]:
    """``pilip train`` of one variant into ``run``; what its metrics.csv and train.log say.
    ``command``: the words before ``dataset`` (``("distill", TEACHER)``: a student of TEACHER
    on the pool ``dataset``)."""
    done = pilip(
        *command, str(dataset), "--out", str(run), "--config", str(config), "--variant", variant,
        "--threads", "1", "--no-progress", "--no-resume", *extra,
    )  # fmt: skip
    with open(run / "metrics.csv", newline="") as handle:
        log = list(csv.DictReader(handle))
    # the saved model's epoch: the last one flagged best (selected on the validation energy
    # RMSE, or on the validation loss where the run trains forces and has validation forces)
    best = [r for r in log if r["best"] == "1"][-1]
    stopped = re.findall(r"stopped \((\w+)\)", (run / "train.log").read_text())
    return {
        "val_energy_rmse_meV": 1000 * float(best["val_energy_rmse"]),
        "best_epoch": int(best["epoch"]),
        "epochs": int(log[-1]["epoch"]),
        "stop_reason": stopped[-1] if stopped else None,
        # the training loop's CPU time (what --cpu-minutes counts); the whole process beside it
        "train_cpu_s": round(float(log[-1]["cpu_time_s"]), 1),
        "process_cpu_s": round(done.cpu_s, 1),
        "train_wall_s": round(float(log[-1]["wall_time_s"]), 1),
    }


def evaluate(model: Path, dataset: Path, out: Path, device: str = "cpu") -> dict[str, Any]:
    """``pilip evaluate`` on the dataset's test rows: energy (meV) and force (eV/A) RMSE, and
    the size of the predicted forces and their cosine to the reference (from metrics.json)."""
    pilip("evaluate", str(model), str(dataset), "--out", str(out), "--device", device)
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "test_energy_rmse_meV": 1000 * metrics["energy_rmse"],
        "test_force_rmse_eV_per_A": metrics["force_rmse"],
        **force_shape(model, dataset, device),
    }


def force_shape(model: Path, dataset: Path, device: str = "cpu") -> dict[str, float]:
    """RMS of the model's test forces (the reference's is 1.04 eV/A: a flattened surface shows
    here first) and their cosine to the reference, through ``PilipCalculator``."""
    from ase import Atoms

    from pilip.calculator import PilipCalculator

    calc = PilipCalculator(str(model), device=device)
    table = tables.read_table(dataset)
    rows = [i for i, s in enumerate(table.column(keys.SPLIT).to_pylist()) if s == "test"]
    numbers = table.column(keys.NUMBERS).to_pylist()
    positions = tables.rows_of(table.column(keys.POSITIONS))
    reference = tables.rows_of(table.column(keys.FORCES))
    pred, ref = [], []
    for i in rows:
        atoms = Atoms(numbers=numbers[i], positions=positions[i])
        atoms.calc = calc
        pred.append(atoms.get_forces())
        ref.append(reference[i])
    p, r = np.concatenate(pred), np.concatenate(ref)
    return {
        "test_force_rms_pred_eV_per_A": float(np.sqrt(np.mean(p**2))),
        "test_force_cosine": float((p * r).sum() / (np.linalg.norm(p) * np.linalg.norm(r))),
    }


# --- the command line -----------------------------------------------------------------------


def add_grid_options(p: argparse.ArgumentParser, smoke: dict[str, Any]) -> None:
    """The options every acac benchmark has: --n-pool, --n-test, --smoke (``smoke``: the
    options it sets) and --table."""
    p.add_argument("--n-pool", type=int, help="the first N frames of train_300K only (smoke)")
    p.add_argument("--n-test", type=int, help="the first N test frames only (default: all 650)")
    p.add_argument("--smoke", action="store_true", help="a tiny grid in seconds (tests): " +
                   ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in smoke.items()))  # fmt: skip
    p.add_argument("--table", action="store_true", help="print the tables of results.json")


def nothing_to_run(args: argparse.Namespace, smoke: dict[str, Any], summarise: Any) -> bool:
    """Apply --smoke; True when the benchmark is done already: --table printed the tables of
    ``--out``'s results.json, or the data are absent (skipped, exit code 0)."""
    if args.smoke:
        vars(args).update(smoke)
    if args.table:
        print(summarise(load_rows(args.out)))
        return True
    if not available(args.data):
        print(f"skipped: no acac data at {args.data} (pass --data)")
        return True
    return False


# --- results ---------------------------------------------------------------------------------


def load_rows(out: Path) -> list[dict[str, Any]]:
    path = out / "results.json"
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def write_results(out: Path, rows: list[dict[str, Any]], table: str) -> None:
    """results.json (every run) and results.md (the table), each replaced atomically."""
    from pilip.atomic_io import atomic_path

    for name, text in (
        ("results.json", json.dumps({"rows": rows}, indent=1)),
        ("results.md", table + "\n"),
    ):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)


def merge_results(out: Path, rows: list[dict[str, Any]], key: Callable[[dict], tuple],
                  summarise: Callable[[list[dict]], str]) -> None:  # fmt: skip
    """Add to ``rows`` (in place) the rows another process of the same ``out`` has written
    since (those whose ``key`` is not among ``rows``'), then write the results: two stages
    or runs of one benchmark side by side keep each other's rows. Read and write hold a
    lock on ``out/results.lock``."""
    import fcntl

    with open(out / "results.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mine = {key(r) for r in rows}
        rows += [r for r in load_rows(out) if key(r) not in mine]
        write_results(out, rows, summarise(rows))


def stat(group: list[dict], key: str, fmt: str) -> str:
    """mean ± std over the rows that have ``key``; the value alone for one row."""
    v = np.array([r[key] for r in group if r.get(key) is not None])
    if len(v) == 0:
        return "–"
    return f"{v.mean():{fmt}} ± {v.std():{fmt}}" if len(v) > 1 else f"{v.mean():{fmt}}"


def mean(group: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in group]))
