"""Ethanol with MP2 as the reference: Delta over GFN2-xTB and over a DFT level, their
students, and the ceiling (issue 19's benchmark).

Data (``--stage data``; cached under ``--out``, every step resumes):
  configurations  ``pilip sample`` of ethanol with pilip's default samplers (rattle, normal
                  modes at 500 K, GFN2-xTB Langevin MD at 500 K), more of each (``SAMPLING``)
  splits          in a seeded order of the configuration ids: ``N_TEST`` test, ``N_VAL``
                  validation, ``N_TRAIN`` training structures (the *labelled* set); the
                  rest is the unlabelled *pool* a teacher labels for its student
  reference       MP2/cc-pVDZ (DF, frozen core) energies **and gradients** of the labelled
                  set (``pilip label --forces``): energies train every model, the test
                  gradients evaluate them, the training gradients only the ceiling
  cheap levels    GFN2-xTB (tblite) and B3LYP/def2-SVP (Psi4) energies and forces of every
                  structure, labelled set and pool (``pilip label --forces``)
Psi4 runs ``--jobs`` label processes side by side, one thread each.

Runs (``--stage train``; PaiNN, ``pilip train --cpu-minutes``: the same CPU budget per run,
one thread; seeds change the initial weights and batch order, not the data):
  energy       the MP2 energies only
  delta_xtb    Delta over GFN2-xTB (tabled baseline)
  delta_dft    Delta over B3LYP/def2-SVP (tabled baseline: a Psi4 level cannot run in process)
  ceiling      the MP2 energies and forces of the same training structures
  student_xtb  ``pilip distill`` of delta_xtb on the pool (its own budget, ``--student-cpu-s``)
  student_dft  ``pilip distill`` of delta_dft on the pool
  xtb, dft     the cheap level alone (``pilip baseline-model``: + per-element energies)
and a learning curve of the DFT teacher's student against pool size (nested random subsets
of the pool, seed 0) and a MACE student of the DFT teacher (``student_dft_mace``, lr 1e-2).

MD (``--stage md``): ``pilip md`` at 500 K, Langevin, 0.5 fs, ``--starts`` starts from the test
structures, ``--md-ps`` ps each, for the models that run without a table (Delta over DFT
cannot: that is what its student is for).

    OMP_NUM_THREADS=1 python -m benchmarks.ethanol_mp2 --out benchmarks/out/ethanol_mp2
    python -m benchmarks.ethanol_mp2 --out DIR --stage data --jobs 2
    python -m benchmarks.ethanol_mp2 --out DIR --stage train --runs energy,delta_xtb --seeds 0
    python -m benchmarks.ethanol_mp2 --out DIR --table
    python -m benchmarks.ethanol_mp2 --out DIR --smoke      # a tiny run (xTB as "MP2")

Every finished run is appended to ``--out/results.json`` at once, so an interrupted benchmark
resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from benchmarks import acac
from pilip import keys, tables

N_TEST, N_VAL, N_TRAIN = 60, 20, 100
SAMPLING = [
    {"kind": "rattle", "n": 50, "amplitude": 0.05},
    {"kind": "normal_modes", "n": 180, "temperature": 500, "calculator": "GFN2-xTB"},
    {"kind": "md", "n": 270, "temperature": 500, "calculator": "GFN2-xTB", "interval": 20},
]
PSI4_DF = {"scf_type": "df", "mp2_type": "df", "freeze_core": True}
REFERENCES = {
    "mp2_dz": {"backend": "psi4", "method": "mp2/cc-pvdz", "options": PSI4_DF},
    "b3lyp_svp": {"backend": "psi4", "method": "b3lyp/def2-svp", "options": {"scf_type": "df"}},
    "xtb": {"backend": "xtb", "method": "GFN2-xTB"},
}
# every run's settings (the `training` section of the study config)
TRAINING = {
    "model": "painn",
    "model_params": {"n_features": 64, "n_interactions": 3, "cutoff": 5.0},
    "lr": 1e-3,
    "lr_patience": 20,
    "patience": 1000,  # no early stop: every run spends its CPU budget (the best val. epoch kept)
    "ema_decay": 0.99,
    "batch_size": 16,
    "epochs": None,  # the budget is CPU time
    "checkpoint_interval_s": 1e9,
}
VARIANTS = {
    "energy": {"losses": ["energy"]},
    "delta": {"losses": ["energy"]},
    "ceiling": {"losses": ["energy", "forces"]},
    "student": {"losses": ["energy", "forces"], "batch_size": 32},
}
# run name -> (study variant, cheap level or None)
RUNS = {
    "energy": ("energy", None),
    "delta_xtb": ("delta", "xtb"),
    "delta_dft": ("delta", "b3lyp_svp"),
    "ceiling": ("ceiling", None),
    "student_xtb": ("student", "xtb"),
    "student_dft": ("student", "b3lyp_svp"),
    "xtb": (None, "xtb"),
    "dft": (None, "b3lyp_svp"),
}
TIMESTEP_FS = 0.5
SMOKE = {"n_test": 3, "n_val": 3, "n_train": 6, "n_pool": 8, "reference": "xtb",
         "cpu_s": 1.0, "student_cpu_s": 1.0, "seeds": "0", "md_ps": 0.01, "starts": 1,
         "pool_sizes": "8", "seed0_runs": "student_dft_mace", "mace_cpu_s": 1.0,
         "md_runs": "student_xtb,delta_xtb"}  # fmt: skip


class Data:
    """The tables of one ``--out`` folder (``--stage data`` makes them)."""

    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        self.out, self.args = out, args
        self.tables = out / "tables"
        self.study = out / "study.yaml"
        self.configurations = self.tables / "configurations.parquet"
        self.labelled = self.tables / "labelled.parquet"
        self.pool = self.tables / "pool.parquet"
        self.dataset = self.tables / "dataset.parquet"

    def labels(self, subset: str, level: str) -> list[Path]:
        """The labels tables of ``subset`` (labelled | pool) at ``level`` (one per job)."""
        return sorted(self.tables.glob(f"{subset}.{level}.part*.parquet"))

    def write_study(self) -> None:
        a = self.args
        study = {
            "systems": {"ethanol": {"seed": "CH3CH2OH"}},
            "sampling": {"seed": 0, "generators": SAMPLING if not a.smoke else
                         [{"kind": "md", "n": a.n_test + a.n_val + a.n_train + a.n_pool,
                           "interval": 5, "equilibration": 10}]},
            "references": REFERENCES,
            "labelling": {"threads": 1, "mem_mb": 2000},
            "training": {**TRAINING, "variants": VARIANTS},
        }  # fmt: skip
        self.tables.mkdir(parents=True, exist_ok=True)
        self.study.write_text(yaml.safe_dump(study, sort_keys=False))

    def make(self) -> None:
        """Sample, split, label (MP2 with gradients, both cheap levels) and collect."""
        a = self.args
        self.write_study()
        if not self.configurations.is_file():
            done = acac.pilip("sample", "--config", str(self.study), "--system", "ethanol",
                              "-o", str(self.configurations))  # fmt: skip
            print(f"sampled: {done.wall_s:.0f} s", flush=True)
        if not self.pool.is_file():
            self.split()
        reference = "mp2_dz" if a.reference == "mp2" else a.reference
        self.label("labelled", reference, "reference")
        if not self.dataset.is_file():
            self.collect()
        for level in ("xtb", "b3lyp_svp"):
            for subset in ("labelled", "pool"):
                self.label(subset, level, level)

    def split(self) -> None:
        """Test, validation and training ids from a seeded order; the rest is the pool."""
        a = self.args
        table = tables.read_table(self.configurations)
        order = np.random.default_rng(19).permutation(table.num_rows)
        n_labelled = a.n_test + a.n_val + a.n_train
        if table.num_rows < n_labelled + a.n_pool:
            raise SystemExit(f"{self.configurations}: {table.num_rows} configurations, "
                             f"{n_labelled + a.n_pool} needed")  # fmt: skip
        ids = table.column(keys.ID).to_pylist()
        split = {}
        for name, lo, hi in (("test", 0, a.n_test), ("val", a.n_test, a.n_test + a.n_val),
                             ("train", a.n_test + a.n_val, n_labelled)):  # fmt: skip
            split.update({ids[i]: name for i in order[lo:hi]})
        (self.tables / "splits.json").write_text(json.dumps(split, indent=0))
        acac.configurations(table, order[:n_labelled], self.labelled)
        acac.configurations(table, order[n_labelled : n_labelled + a.n_pool], self.pool)

    def label(self, subset: str, reference: str, level: str) -> None:
        """``pilip label --forces`` of a subset in ``--jobs`` processes (resumable)."""
        table = self.labelled if subset == "labelled" else self.pool
        ids = tables.read_table(table).column(keys.ID).to_pylist()
        jobs = max(1, min(self.args.jobs, len(ids)))
        parts = [ids[k::jobs] for k in range(jobs)]

        def one(k: int) -> float:
            ids_file = self.tables / f"{subset}.{level}.part{k}.ids"
            ids_file.write_text("\n".join(parts[k]) + "\n")
            out = self.tables / f"{subset}.{level}.part{k}.parquet"
            return acac.pilip("label", str(table), "--reference", reference, "--forces",
                              "--config", str(self.study), "--ids", str(ids_file),
                              "-o", str(out)).wall_s  # fmt: skip

        start = time.perf_counter()
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, range(jobs)))
        failed = [
            f"{path.name}: {row[keys.STATUS]} {row.get(keys.ERROR)}"
            for path in self.labels(subset, level)
            for row in tables.read_table(path).to_pylist()
            if row[keys.STATUS] != keys.STATUS_OK
        ]
        print(f"{subset} at {level}: {time.perf_counter() - start:.0f} s wall, "
              f"{len(failed)} failed {failed[:3]}", flush=True)  # fmt: skip

    def collect(self) -> None:
        """The reference dataset: MP2 energies and forces of the labelled set, in its splits."""
        split = json.loads((self.tables / "splits.json").read_text())
        acac.pilip("collect", "--configurations", str(self.labelled),
                   "--labels", *map(str, self.labels("labelled", "reference")),
                   "-o", str(self.dataset),
                   *[a for i, s in split.items() for a in ("--id-split", f"{i}={s}")])  # fmt: skip

    def cheap(self, level: str, subsets: tuple[str, ...]) -> list[str]:
        """The labels tables (paths) of ``subsets`` at the cheap ``level``."""
        return [str(p) for s in subsets for p in self.labels(s, level)]


def evaluate(model: Path, dataset: Path, out: Path, baseline: list[str]) -> dict[str, Any]:
    """``pilip evaluate`` on the test structures (MP2 gradients): energy (meV), force RMSE."""
    extra = ["--baseline-labels", *baseline] if baseline else []
    acac.pilip("evaluate", str(model), str(dataset), "--out", str(out), "--device", "cpu", *extra)
    return test_errors(out / "metrics.json")


def test_errors(metrics_json: Path) -> dict[str, float]:
    """Energy RMSE (meV), force RMSE and MAE (eV/A) of an evaluation's metrics.json."""
    metrics = json.loads(metrics_json.read_text())
    return {E_KEY: 1000 * metrics["energy_rmse"], F_KEY: metrics["force_rmse"],
            FMAE_KEY: metrics["force_mae"]}  # fmt: skip


E_KEY, F_KEY = "test_energy_rmse_meV", "test_force_rmse_eV_per_A"
FMAE_KEY = "test_force_mae_eV_per_A"
E_MD_KEY, F_MD_KEY = "md_frames_energy_rmse_meV", "md_frames_force_rmse_eV_per_A"


def as_md_frames(errors: dict[str, float]) -> dict[str, float]:
    """An evaluation's errors on the test MD frames, under the keys of that column."""
    return {E_MD_KEY: errors[E_KEY], F_MD_KEY: errors[F_KEY]}


class Runs:
    """Training, evaluation and MD runs of one ``--out`` folder; ``results.json`` rows."""

    def __init__(self, data: Data, args: argparse.Namespace) -> None:
        self.data, self.args = data, args
        self.rows = acac.load_rows(data.out)
        self.lock = threading.Lock()
        self.t0 = time.perf_counter()
        for row in self.rows:  # rows from before a key was added, from the evaluations' files
            run = self.run_dir(row["run"], row["seed"])
            if row["kind"] == "train" and FMAE_KEY not in row:
                row.update(test_errors(run / "test" / "metrics.json"))
            if row["kind"] == "train" and F_MD_KEY not in row:
                md_frames = run / "test-md-frames" / "metrics.json"
                if md_frames.is_file():
                    row.update(as_md_frames(test_errors(md_frames)))

    def rescore(self) -> None:
        """Add the errors on the test MD frames to rows that lack them."""
        for row in self.rows:
            if row["kind"] == "train" and F_MD_KEY not in row:
                baseline = self.evaluation_baseline(row["run"])
                row.update(self.evaluate_md_frames(row["run"], row["seed"], baseline))
                self.record(None, f"rescored {row['run']} seed {row['seed']}")

    def evaluate_md_frames(self, name: str, seed: int, baseline: list[str]) -> dict[str, float]:
        """Test errors on the test structures from GFN2-xTB MD only (the 500 K frames, as in
        an MD data set; normal-mode samples at 500 K reach far-off geometries)."""
        path = self.data.tables / "dataset-md-test.parquet"
        if not path.is_file():
            table = tables.read_table(self.data.dataset)
            split = table.column(keys.SPLIT).to_pylist()
            md = [g == "md" for g in table.column("generator").to_pylist()]
            if not any(s == "test" and m for s, m in zip(split, md, strict=True)):
                return {}  # no MD frame among the test structures
            keep = [s != "test" or m for s, m in zip(split, md, strict=True)]
            tables.write_table(table.filter(pa.array(keep)), path, "dataset",
                               {"command": "benchmarks/ethanol_mp2.py"})  # fmt: skip
        run = self.run_dir(name, seed)
        return as_md_frames(evaluate(run / "model.pt", path, run / "test-md-frames", baseline))

    def evaluation_baseline(self, name: str) -> list[str]:
        """The labels tables ``pilip evaluate`` needs for a run: the cheap level's of the
        labelled set for a Delta run or the cheap level alone; none for a plain model."""
        recipe, level = RUNS[parse_run(name)[0]]
        return self.data.cheap(level, ("labelled",)) if recipe in (None, "delta") else []

    def done(self, kind: str, name: str, seed: int) -> bool:
        return any((r["kind"], r["run"], r["seed"]) == (kind, name, seed) for r in self.rows)

    def record(self, row: dict[str, Any] | None, what: str) -> None:
        """Append ``row`` (None: rows changed in place) and rewrite the results at once."""
        with self.lock:
            if row is not None:
                self.rows.append(row)
            # another process of the same --out (an MD stage beside a train stage) may have
            # written rows since: keep them
            acac.merge_results(self.data.out, self.rows,
                               lambda r: (r["kind"], r["run"], r["seed"]), summarise)  # fmt: skip
            print(f"[{time.perf_counter() - self.t0:6.0f} s] {what}", flush=True)

    def run_dir(self, name: str, seed: int) -> Path:
        return self.data.out / "runs" / name / f"s{seed}"

    def train(self, name: str, seed: int) -> None:
        """Train (or distil) one run and evaluate it on the test structures."""
        if self.done("train", name, seed):
            return
        d, a = self.data, self.args
        run = self.run_dir(name, seed)
        base, n_pool, model = parse_run(name)
        recipe, level = RUNS[base]
        budget = a.student_cpu_s if recipe == "student" else a.cpu_s
        extra: tuple[str, ...] = ()
        if model == "mace":  # lr 1e-2: MACE's (README); float32 and its small-molecule defaults
            budget, extra = a.mace_cpu_s, ("--model", "mace", "--lr", "0.01")
        budget = cpu_budget(name, budget)
        common = ("--seed", str(seed), "--cpu-minutes", repr(budget / 60.0), *extra)
        baseline = self.evaluation_baseline(name)
        row: dict[str, Any] = {"kind": "train", "run": name, "seed": seed, "cpu_s": budget}
        if recipe is None:  # the cheap level alone
            acac.pilip("baseline-model", str(d.dataset), "--baseline", level, "--out", str(run),
                       "--config", str(d.study), "--baseline-labels", *baseline)  # fmt: skip
            row["cpu_s"] = 0.0
        elif recipe == "student":
            teacher = self.run_dir(f"delta_{base.split('_')[1]}", seed) / "model.pt"
            pool, n_pool = self.pool(n_pool)
            row.update(n_pool=n_pool, **acac.train(
                pool, run, d.study, recipe, *common, "--baseline-labels",
                *d.cheap(level, ("pool",)), command=("distill", str(teacher))))  # fmt: skip
        elif recipe == "delta":
            row.update(acac.train(d.dataset, run, d.study, recipe, *common,
                                  "--baseline", level, "--baseline-labels", *baseline))  # fmt: skip
        else:
            row.update(acac.train(d.dataset, run, d.study, recipe, *common))
        row.update(evaluate(run / "model.pt", d.dataset, run / "test", baseline))
        row.update(self.evaluate_md_frames(name, seed, baseline))
        self.record(row, f"{name} seed {seed}: F {row[F_KEY]:.3f} eV/A, E {row[E_KEY]:.1f} meV")

    def pool(self, n: int | None) -> tuple[Path, int]:
        """The student's pool: all of it (``n`` None), or ``n`` of its structures, the first
        ``n`` of one seeded order (nested subsets; the pool's file order is by sampler)."""
        table = tables.read_table(self.data.pool)
        if n is None:
            return self.data.pool, table.num_rows
        path = self.data.tables / f"pool-subset{n}.parquet"
        if not path.is_file():
            order = np.random.default_rng(0).permutation(table.num_rows)
            acac.configurations(table, order[:n], path)
        return path, n

    def md(self, name: str, seed: int) -> None:
        """``pilip md`` at 500 K from the test structures; what its md.json says."""
        if self.done("md", name, seed):
            return
        a = self.args
        steps = max(1, round(a.md_ps * 1000 / TIMESTEP_FS))
        run = self.run_dir(name, seed)
        out = run / f"md-500K-{a.md_ps:g}ps"
        acac.pilip("md", str(run / "model.pt"), str(self.data.dataset), "--out", str(out),
                   "--device", "cpu", "--temperature", "500", "--steps", str(steps),
                   "--timestep", str(TIMESTEP_FS), "--starts", str(a.starts),
                   "--trajectory-interval", str(max(1, steps // 400)))  # fmt: skip
        md = json.loads((out / "md.json").read_text())
        row = {"kind": "md", "run": name, "seed": seed, "md_ps": a.md_ps,
               **{k: md.get(k) for k in ("n_stable", "n_runs", "min_time_to_failure_ps",
                                         "median_time_to_failure_ps", "hr_mae",
                                         "hr_mae_reference_halves", "steps_per_s")}}  # fmt: skip
        self.record(row, f"md {name} seed {seed}: {row['n_stable']}/{row['n_runs']} stable, "
                    f"{row['steps_per_s']:.0f} steps/s")  # fmt: skip

    def parallel(self, work: list[tuple[Any, ...]]) -> None:
        """Run ``(method, name, seed)`` items ``--jobs`` at a time."""
        with ThreadPoolExecutor(max(1, self.args.jobs)) as pool:
            for future in [pool.submit(f, n, s) for f, n, s in work]:
                future.result()


def parse_run(name: str) -> tuple[str, int | None, str]:
    """A run name's (entry of ``RUNS``, pool size or None, model): ``student_dft_p75`` is
    student_dft on 75 pool structures (``Runs.pool``), ``student_dft_mace`` a MACE student;
    ``_cpuN`` (last) sets the run's CPU budget to N s (``cpu_budget``)."""
    name = name.split("_cpu")[0]
    model = "mace" if name.endswith("_mace") else "painn"
    base = name.removesuffix("_mace")
    n_pool = None
    if "_p" in base:
        base, n = base.rsplit("_p", 1)
        n_pool = int(n)
    if base not in RUNS:
        raise SystemExit(f"unknown run {name!r}: one of {', '.join(RUNS)} (+ _pN, _mace)")
    return base, n_pool, model


def cpu_budget(name: str, default: float) -> float:
    """The CPU seconds of a run: ``_cpuN`` at the end of its name, else ``default``."""
    return float(name.split("_cpu")[1]) if "_cpu" in name else default


def summarise(rows: list[dict[str, Any]]) -> str:
    """Test errors per run (mean ± std over seeds), ratios to the targets' references, MD."""
    trained = [r for r in rows if r["kind"] == "train"]
    names = list(dict.fromkeys(r["run"] for r in trained))
    order = [n for n in RUNS if n in names] + sorted(n for n in names if n not in RUNS)
    lines = ["| run | seeds | test energy RMSE (meV) | test force RMSE (eV/A) | test force MAE "
             "(eV/A) | MD test frames: energy RMSE (meV) | MD test frames: force RMSE (eV/A) "
             "| CPU s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name in order:
        group = [r for r in trained if r["run"] == name]
        pool = f" (pool {group[0]['n_pool']})" if "n_pool" in group[0] else ""
        lines.append(f"| {name}{pool} | {len(group)} | {acac.stat(group, E_KEY, '.1f')} | "
                     f"{acac.stat(group, F_KEY, '.3f')} | {acac.stat(group, FMAE_KEY, '.3f')} | "
                     f"{acac.stat(group, E_MD_KEY, '.1f')} | {acac.stat(group, F_MD_KEY, '.3f')} | "
                     f"{group[0]['cpu_s']:.0f} |")  # fmt: skip
    for key, what in ((F_KEY, "all test structures"), (F_MD_KEY, "MD test frames")):
        by = {(r["run"], r["seed"]): r[key] for r in trained if key in r}
        ratios = []
        for a, b in (("delta_dft", "delta_xtb"), ("delta_dft", "ceiling"),
                     ("student_xtb", "delta_xtb"), ("student_dft", "delta_dft")):  # fmt: skip
            pairs = [by[(a, s)] / by[(b, s)] for (n, s) in by if n == a and (b, s) in by]
            if pairs:
                ratios.append(f"{a} / {b}: {', '.join(f'{x:.2f}' for x in pairs)}")
        if ratios:
            lines += ["", f"Force RMSE ratios per seed ({what}): " + "; ".join(ratios) + "."]
    md = [r for r in rows if r["kind"] == "md"]
    if md:
        lines += ["", "| run (500 K) | seeds | ps per run | stable | first failure (ps) | "
                  "h(r) MAE (floor) | steps/s |", "|---|---:|---:|---:|---:|---|---:|"]  # fmt: skip
        for name in [n for n in order if any(r["run"] == n for r in md)]:
            group = [r for r in md if r["run"] == name]
            failures = [r["min_time_to_failure_ps"] for r in group
                        if r["min_time_to_failure_ps"] is not None]  # fmt: skip
            lines.append(
                f"| {name} | {len(group)} | {group[0]['md_ps']:g} | "
                f"{sum(r['n_stable'] for r in group)}/{sum(r['n_runs'] for r in group)} | "
                f"{min(failures) if failures else '–'} | {acac.stat(group, 'hr_mae', '.3f')} "
                f"({acac.stat(group, 'hr_mae_reference_halves', '.3f')}) | "
                f"{acac.stat(group, 'steps_per_s', '.0f')} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=acac.REPO / "benchmarks" / "out" / "ethanol_mp2")
    p.add_argument("--stage", choices=("data", "train", "md", "all"), default="all")
    p.add_argument("--jobs", type=int, default=2, help="processes side by side (1 thread each)")
    p.add_argument("--n-test", type=int, default=N_TEST)
    p.add_argument("--n-val", type=int, default=N_VAL)
    p.add_argument("--n-train", type=int, default=N_TRAIN)
    p.add_argument("--n-pool", type=int, default=300, help="unlabelled pool structures")
    p.add_argument("--reference", default="mp2", help="mp2 (MP2/cc-pVDZ) or xtb (smoke)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--runs", default="energy,delta_xtb,delta_dft,ceiling,xtb,dft",
                   help="teachers, models and cheap levels of the train stage")  # fmt: skip
    p.add_argument(
        "--students",
        default="student_xtb,student_dft",
        help="students of the train stage (student_dft_pN: on N pool structures)",
    )
    p.add_argument("--cpu-s", type=float, default=180.0, help="CPU seconds per training run")
    p.add_argument("--student-cpu-s", type=float, default=300.0, help="per student")
    p.add_argument("--pool-sizes", default="100,200", help="learning curve of student_dft")
    p.add_argument(
        "--seed0-runs",
        default="student_dft_mace,student_dft_cpu900",
        help="more runs, first seed only (e.g. student_dft_mace, student_xtb_p75, "
        "student_dft_cpu900: 900 CPU s)",
    )
    p.add_argument("--mace-cpu-s", type=float, default=600.0, help="per MACE student")
    p.add_argument("--md-runs", default="student_xtb,student_dft,delta_xtb,ceiling,energy")
    p.add_argument("--md-seeds", default="0")
    p.add_argument("--md-ps", type=float, default=20.0, help="ps per MD run")
    p.add_argument("--starts", type=int, default=5, help="MD runs per model")
    p.add_argument("--smoke", action="store_true", help="a tiny run in seconds (tests)")
    p.add_argument("--table", action="store_true", help="print the tables of results.json")
    p.add_argument(
        "--rescore",
        action="store_true",
        help="add the errors on the test MD frames to runs evaluated without them",
    )
    args = p.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    data = Data(args.out, args)
    if args.table:
        print(summarise(Runs(data, args).rows))
        return 0
    if args.rescore:
        Runs(data, args).rescore()
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage in ("data", "all"):
        data.make()
    data.write_study()
    runs = Runs(data, args)
    seeds = [int(s) for s in str(args.seeds).split(",")]
    if args.stage in ("train", "all"):
        runs.parallel([(runs.train, n, s) for s in seeds for n in args.runs.split(",") if n])
        students = [n for n in args.students.split(",") if n]
        later = [f"student_dft_p{n}" for n in str(args.pool_sizes).split(",") if n]
        later += [n for n in args.seed0_runs.split(",") if n]
        runs.parallel([(runs.train, n, s) for s in seeds for n in students]
                      + [(runs.train, n, seeds[0]) for n in later])  # fmt: skip
    if args.stage in ("md", "all"):
        md_seeds = [int(s) for s in str(args.md_seeds).split(",")]
        runs.parallel([(runs.md, n, s) for n in args.md_runs.split(",") for s in md_seeds
                       if (runs.run_dir(n, s) / "model.pt").is_file()])  # fmt: skip
    print(summarise(runs.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
