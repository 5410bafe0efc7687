"""MACE against PaiNN on acetylacetone, in every recipe, at the same CPU budget per run.

Data as in ``benchmarks/multifidelity.py`` (``benchmarks/acac.py``): reference = the DFT
energies of ``train_300K.xyz``; per seed its 50 validation structures (energies only: model
selection) and the first n of the other 450 (in the seed's order) for training; test = the
650 frames of ``test_MD_300K.xyz``, whose DFT forces only ``pilip evaluate`` reads. Cheap
level = GFN2-xTB (``pilip label --reference gfn2-xtb --forces``, once, cached in ``--out``).

Recipes (``--recipes``), each for both models (``--models painn,mace``):
  energy     the n reference energies
  delta      --baseline gfn2-xtb: the model learns E_ref - E_xTB (predictions xTB + model)
  finetune   --init the run ``pretrain``: the model pretrained on the xTB energies and
             forces of the 450 pool structures (per model and seed, its own budget:
             ``--pretrain-cpu-minutes``), fine-tuned on the n reference energies
  ceiling    the n reference energies AND reference forces
  distilled  a student (``pilip distill``) of the delta run (the same model's, or
             ``--teacher``'s): the teacher labels every train_300K frame outside validation
             (the n it was trained on and the 450 - n others) with energies and forces, the
             50 validation frames for model selection; the student (no baseline at run time)
             learns them, losses energy + forces
Models at their default size (``README.md`` "Models"): PaiNN 128 features, 3 blocks, lr 1e-3;
MACE 32x0e+32x1o, 2 interactions, correlation 2, lr 1e-2 (``--lr-painn``, ``--lr-mace``).
float32, batch 16 (32 above 100 structures), ``--cpu-minutes`` of training CPU per run (1
thread), early stopping at pilip's defaults. Runs go ``--jobs`` at a time (processes), each
as soon as the run it starts from (pretrain, the teacher) has finished.

    python -m benchmarks.mace_acac --out benchmarks/out/mace_acac --jobs 2    # the grid
    python -m benchmarks.mace_acac --out ... --recipes ceiling --sizes 100 --seeds 0
    python -m benchmarks.mace_acac --out ... --table          # the tables from results.json
    python -m benchmarks.mace_acac --out LONG --recipes ceiling,distilled --cpu-minutes 60 \
        --reuse benchmarks/out/mace_acac     # students at 60 minutes of the 10-minute teachers
    python -m benchmarks.mace_acac --out DIR --smoke           # a tiny grid (tests)

Every finished run is appended to ``--out/results.json`` at once (an interrupted grid
resumes where it stopped); ``results.md`` holds the tables, ``summary.json`` the medians over
seeds and each seed's value. Skips with exit code 0 when the data are absent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import acac
from pilip import tables

E_KEY, F_KEY = "test_energy_rmse_meV", "test_force_rmse_eV_per_A"
MODELS = ("painn", "mace")
RECIPES = ("energy", "delta", "finetune", "ceiling", "distilled")
LOSSES = {
    "energy": ["energy"], "delta": ["energy"], "finetune": ["energy"],
    "ceiling": ["energy", "forces"], "distilled": ["energy", "forces"],
    "pretrain": ["energy", "forces"],
}  # fmt: skip
# the `training` section of the generated study config: pilip's defaults otherwise (patience
# 100 epochs, lr halved after 25 without a better validation energy, EMA 0.99)
TRAINING = {"dtype": "float32", "epochs": None, "checkpoint_interval_s": 1e9}
SMOKE = {"sizes": "8", "seeds": "0", "recipes": ",".join(RECIPES), "cpu_minutes": 0.01,
         "pretrain_cpu_minutes": 0.01, "n_pool": 60, "n_test": 8, "jobs": 2}  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One training run of the grid; ``size`` None for a pretraining run (the 450 pool)."""

    recipe: str
    model: str
    size: int | None
    seed: int

    @property
    def name(self) -> str:
        if self.recipe == "pretrain":
            return f"pretrain-{self.model}-s{self.seed}"
        return f"{self.recipe}-{self.model}-n{self.size}-s{self.seed}"


def variant(recipe: str, model: str) -> str:
    return f"{model}_{recipe}"


def starts_from(run: Run, teacher: str = "same") -> Run | None:
    """The run ``run`` starts from: the pretraining run, the teacher (``--teacher``: the
    student's own model's Delta run, or this model's), or none."""
    if run.recipe == "finetune":
        return Run("pretrain", run.model, None, run.seed)
    if run.recipe == "distilled":
        return Run("delta", run.model if teacher == "same" else teacher, run.size, run.seed)
    return None


class Grid:
    """The tables, study config and datasets of one ``--out`` folder."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.out: Path = args.out
        train, test = acac.import_tables(args.data, self.out, args.n_pool, args.n_test)
        self.xtb = acac.xtb_tables(train, test, self.out)
        self.pool = tables.read_table(train)
        self.test = tables.read_table(test)
        self.teacher = args.teacher
        self.cpu_minutes = args.cpu_minutes
        self.pretrain_cpu_minutes = args.pretrain_cpu_minutes
        lr = {"painn": args.lr_painn, "mace": args.lr_mace}
        variants = {
            variant(recipe, model): {"model": model, "lr": lr[model], "losses": losses}
            for recipe, losses in LOSSES.items()
            for model in MODELS
        }
        self.config = acac.study_config(self.out / "study.yaml", TRAINING, variants)

    def dataset(self, run: Run) -> Path:
        """The run's dataset table: DFT labels of its n training and the 50 validation frames
        and the test frames; xTB labels of the whole pool for a pretraining run."""
        val_idx, pool = acac.split_indices(self.pool.num_rows, run.seed)
        if run.recipe == "pretrain":
            path = self.out / "datasets" / f"pretrain-s{run.seed}.parquet"
            energy, forces = acac.xtb_arrays(self.xtb[0], self.pool)
            labels, train_idx = (energy, forces, acac.XTB), pool
        else:
            path = self.out / "datasets" / f"n{run.size}-s{run.seed}.parquet"
            labels, train_idx = None, pool[: run.size]
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            acac.split_dataset(self.pool, self.test, train_idx, val_idx, path, labels)
        return path

    def student_pool(self, seed: int) -> Path:
        """Every train_300K frame as a dataset table: the 450 outside validation as train,
        the 50 as val (``pilip distill`` keeps those splits and leaves the test rows out)."""
        val_idx, pool = acac.split_indices(self.pool.num_rows, seed)
        path = self.out / "datasets" / f"student-pool-s{seed}.parquet"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            acac.split_dataset(self.pool, self.test, pool, val_idx, path)
        return path

    def needs(self, run: Run) -> Run | None:
        return starts_from(run, self.teacher)

    def run_dir(self, run: Run) -> Path:
        return self.out / "runs" / run.name

    def train_one(self, run: Run) -> dict[str, Any]:
        """``pilip train`` (``pilip distill`` for a student) of one run, then ``pilip
        evaluate`` on the test frames (not for a pretraining run)."""
        dataset = self.dataset(run)
        n_train = self.pool.num_rows - acac.N_VAL if run.size is None else run.size
        minutes = self.pretrain_cpu_minutes if run.recipe == "pretrain" else self.cpu_minutes
        extra = ["--seed", str(run.seed), "--cpu-minutes", repr(minutes), "--device", "cpu",
                 "--batch-size", "16" if n_train <= 100 else "32"]  # fmt: skip
        if run.recipe == "delta":
            extra += ["--baseline", acac.XTB, "--baseline-labels", *map(str, self.xtb)]
        if run.recipe == "finetune":
            extra += ["--init", str(self.run_dir(self.needs(run)) / "model.pt")]
        out = self.run_dir(run)
        row: dict[str, Any] = {"recipe": run.recipe, "model": run.model, "size": run.size,
                               "seed": run.seed, "n_train": n_train}  # fmt: skip
        config_variant = variant(run.recipe, run.model)
        if run.recipe == "distilled":
            teacher = self.needs(run)
            pool = self.student_pool(run.seed)
            row.update(teacher=teacher.name, n_train=self.pool.num_rows - acac.N_VAL)
            trained = acac.train(
                pool, out, self.config, config_variant, *extra,
                command=("distill", str(self.run_dir(teacher) / "model.pt")),
            )  # fmt: skip
        else:
            trained = acac.train(dataset, out, self.config, config_variant, *extra)
        row.update(trained)
        if run.recipe != "pretrain":
            row.update(acac.evaluate(out / "model.pt", dataset, out / "test"))
        return row


def plan(recipes: list[str], models: list[str], sizes: list[int], seeds: list[int],
         teacher: str = "same") -> list[Run]:  # fmt: skip
    """Every run the grid needs, those it starts from first; the costliest first within."""
    runs = [Run(r, m, n, s) for n in sorted(sizes, reverse=True) for s in seeds
            for r in recipes for m in models]  # fmt: skip
    needed = [starts_from(r, teacher) for r in runs]
    first = list(dict.fromkeys(n for n in needed if n is not None and n not in runs))
    return first + runs


def reuse_runs(runs: list[Run], rows: list[dict], source: Path, out: Path,
               teacher: str = "same") -> list[dict]:  # fmt: skip
    """The runs that ``runs`` start from (pretraining, teachers) taken from the grid at
    ``source`` (the same data and splits): their rows and run directories copied into
    ``out`` (this grid's ``--out``) instead of trained again, so that only the runs built on
    them change. Exits naming the run when ``source`` has not finished one."""
    have = {row_run(r) for r in rows}
    theirs = {row_run(r): r for r in acac.load_rows(source)}
    needed = (starts_from(run, teacher) for run in runs)
    for need in dict.fromkeys(n for n in needed if n is not None):
        if need in have:
            continue
        if need not in theirs or not (source / "runs" / need.name / "model.pt").is_file():
            raise SystemExit(
                f"--reuse {source}: no finished run {need.name} in its results.json and "
                "runs/; run it there first, or leave out --reuse to train it here"
            )
        dest = out / "runs" / need.name
        tmp = dest.with_name(dest.name + ".reusing")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source / "runs" / need.name, tmp)
        shutil.rmtree(dest, ignore_errors=True)  # a run of it started here and not finished
        tmp.rename(dest)
        rows.append({**theirs[need], "reused_from": str(source)})
        print(f"{need.name}: reused from {source}", flush=True)
    return rows


def row_run(row: dict) -> Run:
    """The run a row of results.json is of."""
    return Run(row["recipe"], row["model"], row["size"], row["seed"])


def run_grid(grid: Grid, runs: list[Run], rows: list[dict], jobs: int) -> list[dict]:
    """Train and evaluate ``runs`` (those not in ``rows`` yet), ``jobs`` at a time, each as
    soon as the run it needs has finished; ``rows`` grows and is written after every run."""
    done = {row_run(r) for r in rows}
    finished = {run for run in runs if run in done}
    pending = [run for run in runs if run not in finished]
    failed: set[Run] = set()
    print(f"{len(pending)} runs to do, {len(finished)} done, {jobs} at a time", flush=True)
    t0 = time.perf_counter()
    running: dict[Future, Run] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            for run in list(pending):
                need = grid.needs(run)
                if need in failed:
                    print(f"SKIPPED {run.name}: {need.name} failed", flush=True)
                    pending.remove(run)
                    failed.add(run)
                elif (need is None or need in finished) and len(running) < jobs:
                    pending.remove(run)
                    running[pool.submit(grid.train_one, run)] = run
            if not running:
                if pending:  # plan() puts every needed run in the grid: cannot happen
                    raise RuntimeError(f"runs waiting on runs not planned: {pending}")
                break
            complete, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in complete:
                run = running.pop(future)
                try:
                    row = future.result()
                except RuntimeError as exc:
                    print(f"FAILED {run.name}: {exc}", flush=True)
                    failed.add(run)
                    continue
                finished.add(run)
                rows.append(row)
                acac.write_results(grid.out, rows, summarise(rows))
                write_summary(grid.out, rows)
                print(
                    f"[{time.perf_counter() - t0:6.0f} s] {run.name}: F "
                    f"{row.get(F_KEY, float('nan')):.3f} eV/A, E "
                    f"{row.get(E_KEY, float('nan')):.1f} meV, {row['epochs']} epochs "
                    f"({row['stop_reason']}), {row['train_cpu_s']:.0f} CPU s",
                    flush=True,
                )
    return rows


# --- results ---------------------------------------------------------------------------------


def medians(rows: list[dict]) -> list[dict[str, Any]]:
    """Per (n, recipe, model): the median over seeds and each seed's value of the test force
    and energy RMSE, the epochs, the best (saved) epoch and the training CPU seconds (the
    summary.json entries)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["recipe"] != "pretrain":
            groups.setdefault((r["size"], r["recipe"], r["model"]), []).append(r)
    order = {name: i for i, name in enumerate(RECIPES)}
    out = []
    for (size, recipe, model), group in sorted(
        groups.items(), key=lambda kv: (kv[0][0], order[kv[0][1]], kv[0][2])
    ):
        group = sorted(group, key=lambda r: r["seed"])
        entry: dict[str, Any] = {"size": size, "recipe": recipe, "model": model,
                                 "seeds": [r["seed"] for r in group]}  # fmt: skip
        for k in (F_KEY, E_KEY, "epochs", "best_epoch", "train_cpu_s"):
            values = [r[k] for r in group if r.get(k) is not None]
            entry[k] = {"median": float(np.median(values)) if values else None,
                        "per_seed": [r.get(k) for r in group]}  # fmt: skip
        out.append(entry)
    return out


def _median(entry: dict | None, key: str, fmt: str) -> str:
    if entry is None or entry[key]["median"] is None:
        return "–"
    return f"{entry[key]['median']:{fmt}}"


def _epochs(entry: dict | None) -> str:
    """Median epochs and median best epoch: ``300 (298)`` says the run was still improving."""
    return f"{_median(entry, 'epochs', '.0f')} ({_median(entry, 'best_epoch', '.0f')})"


def _cell(entry: dict | None, key: str, fmt: str) -> str:
    """``median (seed 0, seed 1, ...)``; the value alone for one seed."""
    median = _median(entry, key, fmt)
    if entry is None or len(entry[key]["per_seed"]) == 1:
        return median
    values = entry[key]["per_seed"]
    return f"{median} ({', '.join('–' if v is None else f'{v:{fmt}}' for v in values)})"


def summarise(rows: list[dict]) -> str:
    """Markdown: per (n, recipe), PaiNN and MACE side by side, the median over seeds and each
    seed's value in brackets, and PaiNN's force RMSE over MACE's (> 1: MACE is better)."""
    entries = {(e["size"], e["recipe"], e["model"]): e for e in medians(rows)}
    lines = [
        "| n | recipe | seeds | PaiNN test F RMSE (eV/Å) | MACE test F RMSE (eV/Å) "
        "| F PaiNN / MACE | PaiNN test E RMSE (meV) | MACE test E RMSE (meV) "
        "| epochs (best) PaiNN / MACE | CPU s PaiNN / MACE |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, recipe in dict.fromkeys((e[0], e[1]) for e in entries):
        painn, mace = entries.get((size, recipe, "painn")), entries.get((size, recipe, "mace"))
        ratio = "–"
        if painn and mace and painn[F_KEY]["median"] and mace[F_KEY]["median"]:
            ratio = f"{painn[F_KEY]['median'] / mace[F_KEY]['median']:.2f}"
        seeds = max(len((e or {"seeds": []})["seeds"]) for e in (painn, mace))
        lines.append(
            f"| {size} | {recipe} | {seeds} | {_cell(painn, F_KEY, '.3f')} "
            f"| {_cell(mace, F_KEY, '.3f')} | {ratio} | {_cell(painn, E_KEY, '.1f')} "
            f"| {_cell(mace, E_KEY, '.1f')} "
            f"| {_epochs(painn)} / {_epochs(mace)} "
            f"| {_median(painn, 'train_cpu_s', '.0f')} / {_median(mace, 'train_cpu_s', '.0f')} |"
        )
    pre = [r for r in rows if r["recipe"] == "pretrain"]
    for model in MODELS:
        mine = [r for r in pre if r["model"] == model]
        if mine:
            lines.append("")
            lines.append(
                f"Pretraining {model} (xTB energies + forces of the 450 pool structures, per "
                f"seed): {len(mine)} runs, median {np.median([r['train_cpu_s'] for r in mine]):.0f}"
                f" CPU s and {np.median([r['epochs'] for r in mine]):.0f} epochs, validation "
                f"xTB energy RMSE {np.median([r['val_energy_rmse_meV'] for r in mine]):.1f} meV."
            )
    return "\n".join(lines)


def write_summary(out: Path, rows: list[dict]) -> None:
    from pilip.atomic_io import atomic_path

    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps({"entries": medians(rows)}, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=acac.DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=acac.REPO / "benchmarks" / "out" / "mace_acac")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--sizes", default="100,450")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--cpu-minutes", type=float, default=10.0,
                   help="training CPU minutes per run (default: 10)")  # fmt: skip
    p.add_argument("--pretrain-cpu-minutes", type=float, default=10.0,
                   help="CPU minutes of each pretraining run (default: 10)")  # fmt: skip
    p.add_argument("--lr-painn", type=float, default=1e-3)
    p.add_argument("--lr-mace", type=float, default=1e-2)
    p.add_argument("--teacher", choices=("same", *MODELS), default="same",
                   help="the delta run a distilled student learns from: the student's own "
                   "model's (same) or this model's")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    p.add_argument("--reuse", type=Path, metavar="DIR",
                   help="take the pretraining runs and teachers from the grid at DIR (its "
                   "--out) instead of training them: fine-tunes or students at another "
                   "budget, of the same starting runs")  # fmt: skip
    acac.add_grid_options(p, SMOKE)
    args = p.parse_args(argv)
    if acac.nothing_to_run(args, SMOKE, summarise):
        return 0
    recipes, models = args.recipes.split(","), args.models.split(",")
    for given, known, what in ((recipes, RECIPES, "recipe"), (models, MODELS, "model")):
        unknown = [n for n in given if n not in known]
        if unknown:
            p.error(f"unknown {what}(s) {unknown}; known: {', '.join(known)}")
    if "mace" in models:
        from pilip.potential.models import missing_extra

        if missing_extra("mace"):
            p.error(missing_extra("mace"))
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    runs = plan(recipes, models, sizes, seeds, args.teacher)
    rows = acac.load_rows(args.out)
    if args.reuse:  # before the grid's import and xTB labels: a missing run fails at once
        rows = reuse_runs(runs, rows, args.reuse, args.out, args.teacher)
    grid = Grid(args)
    rows = run_grid(grid, runs, rows, max(1, args.jobs))
    acac.write_results(args.out, rows, summarise(rows))
    write_summary(args.out, rows)
    print(summarise(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
