"""Multi-fidelity training on acetylacetone: reference energies plus a cheap level's forces.

Reference = the DFT energies of ``train_300K.xyz`` (its DFT forces are read only by the
``ceiling`` variant); cheap level = GFN2-xTB, ``pilip label --reference gfn2-xtb --forces``
once, cached under ``--out``. Test = all 650 frames of ``test_MD_300K.xyz``; their DFT forces
are used for evaluation only. Per seed, 50 structures of ``train_300K`` are the validation
set (reference energies only: model selection), the first n of the other 450 (in the seed's
order) the training set (``benchmarks/acac.py``).

Variants (PaiNN, ``pilip train --cpu-minutes``: the same CPU-time budget per run, 1 thread):
  energy         reference energies only
  weak           + PITC + PISC (pilip's defaults: eps 0.01 A, k 0.5, weights 1 / 0.01)
  delta          --baseline gfn2-xtb: the model learns E_ref - E_xTB; predictions are
                 xTB + model
  delta_weak     delta + PITC + PISC on the total surface (xTB at the perturbed geometries,
                 computed in-process inside the run's budget)
  finetune       --init a model pretrained on xTB energies + forces of the 450 pool
                 structures (per seed; its cost is reported apart), fine-tuned on the n
                 reference energies (per-element energies refitted)
  finetune_weak  finetune + PITC + PISC
  *_paper        the weak variants at the paper's settings (eps 0.05 A, k 0, 1.2 / 0.01)
  ceiling        the n reference energies AND reference forces
and GFN2-xTB alone (no training; its energy shifted by a constant fitted on the n training
structures). Every run is ``pilip train`` then ``pilip evaluate`` on the test frames.

    python -m benchmarks.multifidelity --out benchmarks/out/multifidelity          # all
    python -m benchmarks.multifidelity --out ... --sizes 100 --variants energy,delta
    python -m benchmarks.multifidelity --out ... --table        # the tables from results.json
    python -m benchmarks.multifidelity --out ... --rescore      # re-evaluate every model.pt
    python -m benchmarks.multifidelity --out DIR --smoke        # a tiny grid (tests)

Every finished run is appended to ``--out/results.json`` at once, so an interrupted grid
resumes where it stopped. Skips with exit code 0 when the data are absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import acac
from pilip import tables

E_KEY, F_KEY = "test_energy_rmse_meV", "test_force_rmse_eV_per_A"

# every run's settings: the `training` section of the generated study config
TRAINING = {
    "model": "painn",
    "model_params": {"n_features": 64, "n_interactions": 3, "cutoff": 5.0},
    "lr": 1e-3,
    "lr_patience": 20,
    "patience": 60,
    "ema_decay": 0.99,
    "dtype": "float32",
    "epochs": None,  # the budget is CPU time (--cpu-s), the same for every run
    "checkpoint_interval_s": 1e9,
}
WEAK = {"losses": ["energy", "pitc", "pisc"]}
PAPER = {**WEAK, "eps": 0.05, "k": 0.0, "w_pitc": 1.2, "w_pisc": 0.01}
# name -> (recipe, variant settings); recipe: plain | delta | finetune | ceiling; ``_cpu_s``
# replaces --cpu-s for that variant
VARIANTS: dict[str, tuple[str, dict]] = {
    "energy": ("plain", {"losses": ["energy"]}),
    "weak": ("plain", WEAK),
    "weak_paper": ("plain", PAPER),
    "delta": ("delta", {"losses": ["energy"]}),
    "delta_weak": ("delta", WEAK),
    "delta_weak_paper": ("delta", PAPER),
    "finetune": ("finetune", {"losses": ["energy"]}),
    "finetune_weak": ("finetune", WEAK),
    "finetune_weak_paper": ("finetune", PAPER),
    "ceiling": ("ceiling", {"losses": ["energy", "forces"]}),
    # the cost of the weak losses apart from their effect: 150 epochs whatever the CPU time
    # (the recipes without them stop early, at 100-170 epochs, within the budget)
    "delta_weak_e150": ("delta", {**WEAK, "epochs": 150, "_cpu_s": 1800}),
    "finetune_weak_e150": ("finetune", {**WEAK, "epochs": 150, "_cpu_s": 1800}),
    # tuning rows of the Delta recipe (same budget)
    "delta_patient": ("delta", {"losses": ["energy"], "patience": 1000}),
    "delta_small": (
        "delta",
        {"losses": ["energy"], "model_params": {**TRAINING["model_params"], "n_features": 32}},
    ),
}
PRETRAIN = {"losses": ["energy", "forces"]}
DEFAULT_VARIANTS = [
    "energy", "ceiling", "delta", "finetune", "weak", "delta_weak", "finetune_weak",
]  # fmt: skip
SMOKE = {"sizes": "8", "seeds": "0", "variants": "energy,delta,finetune", "cpu_s": 0.5,
         "pretrain_cpu_s": 0.5, "n_pool": 60, "n_test": 8}  # fmt: skip


class Grid:
    """The tables, study config and datasets of one ``--out`` folder."""

    def __init__(self, data: Path, out: Path, n_pool: int | None, n_test: int | None) -> None:
        self.out = out
        train, test = acac.import_tables(data, out, n_pool, n_test)
        self.xtb = acac.xtb_tables(train, test, out)
        self.pool = tables.read_table(train)
        self.test = tables.read_table(test)
        self.config = acac.study_config(
            out / "study.yaml", TRAINING, {"pretrain": PRETRAIN, **{n: s for n, (_, s) in
                                                                 VARIANTS.items()}}
        )  # fmt: skip

    def dataset(self, size: int | None, seed: int) -> Path:
        """The run's dataset table (DFT labels; xTB labels for the pretraining, size None)."""
        val_idx, pool = acac.split_indices(self.pool.num_rows, seed)
        if size is None:
            path = self.out / "datasets" / f"pretrain-s{seed}.parquet"
            energy, forces = acac.xtb_arrays(self.xtb[0], self.pool)
            labels = (energy, forces, acac.XTB)
            train_idx = pool
        else:
            path = self.out / "datasets" / f"n{size}-s{seed}.parquet"
            labels, train_idx = None, pool[:size]
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            acac.split_dataset(self.pool, self.test, train_idx, val_idx, path, labels)
        return path

    def run_dir(self, variant: str, size: int | None, seed: int) -> Path:
        if variant == "pretrain":
            return self.out / "runs" / f"pretrain-s{seed}"
        return self.out / "runs" / f"{variant}-n{size}-s{seed}"

    def run_one(self, variant: str, size: int | None, seed: int, cpu_s: float) -> dict:
        """``pilip train`` one (variant, size, seed), then ``pilip evaluate`` it."""
        recipe, settings = ("pretrain", PRETRAIN) if variant == "pretrain" else VARIANTS[variant]
        cpu_s = settings.get("_cpu_s", cpu_s)
        dataset = self.dataset(size, seed)
        n_train = self.pool.num_rows - acac.N_VAL if size is None else size
        extra = ["--seed", str(seed), "--batch-size", "16" if n_train <= 100 else "32",
                 "--cpu-minutes", repr(cpu_s / 60.0)]  # fmt: skip
        if recipe == "delta":
            extra += ["--baseline", acac.XTB, "--baseline-labels", *map(str, self.xtb)]
        if recipe == "finetune":
            extra += ["--init", str(self.run_dir("pretrain", None, seed) / "model.pt")]
        run = self.run_dir(variant, size, seed)
        row = {"variant": variant, "size": size, "seed": seed, "n_train": n_train,
               **acac.train(dataset, run, self.config, variant, *extra)}  # fmt: skip
        if recipe != "pretrain":
            row.update(acac.evaluate(run / "model.pt", dataset, run / "test"))
        return row

    def xtb_alone_rows(self, sizes: list[int], seeds: list[int]) -> list[dict]:
        """GFN2-xTB alone against the test frames; energies shifted by the mean offset to the
        reference over the n training structures (all a user with n reference energies can
        do)."""
        e_xtb, _ = acac.xtb_arrays(self.xtb[0], self.pool)
        e_xtb_test, f_xtb_test = acac.xtb_arrays(self.xtb[1], self.test)
        e_ref = np.asarray(self.pool.column("energy").to_pylist())
        e_test = np.asarray(self.test.column("energy").to_pylist())
        f_test = np.concatenate(tables.rows_of(self.test.column("forces")))
        f_xtb = np.concatenate(f_xtb_test)
        f_rmse = float(np.sqrt(np.mean((f_xtb - f_test) ** 2)))
        rows = []
        for size in sizes:
            for seed in seeds:
                _, pool = acac.split_indices(self.pool.num_rows, seed)
                idx = pool[:size]
                offset = float(np.mean(e_ref[idx] - e_xtb[idx]))
                err = e_xtb_test + offset - e_test
                rows.append({
                    "variant": "xtb_alone", "size": size, "seed": seed,
                    E_KEY: 1000 * float(np.sqrt(np.mean(err**2))), F_KEY: f_rmse,
                    "test_force_rms_pred_eV_per_A": float(np.sqrt(np.mean(f_xtb**2))),
                    "train_cpu_s": 0.0, "epochs": 0,
                })  # fmt: skip
        return rows


def summarise(rows: list[dict]) -> str:
    """Markdown: mean ± std over seeds per (n, variant), ratios to energy-only and ceiling."""
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in rows:
        if r["variant"] != "pretrain":
            groups.setdefault((r["size"], r["variant"]), []).append(r)
    order = ["xtb_alone", *VARIANTS]
    stat, mean = acac.stat, acac.mean
    lines = [
        "| n | variant | seeds | test F RMSE (eV/Å) | test E RMSE (meV) | F: energy-only / this "
        "| E / energy-only | F / ceiling | predicted F RMS (eV/Å) | epochs | CPU s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (size, variant), group in sorted(
        groups.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]))
    ):
        base, ceiling = groups.get((size, "energy")), groups.get((size, "ceiling"))
        cut = e_ratio = to_ceiling = "–"
        if base:
            cut = f"{mean(base, F_KEY) / mean(group, F_KEY):.2f}x"
            e_ratio = f"{mean(group, E_KEY) / mean(base, E_KEY):.2f}"
        if ceiling:
            to_ceiling = f"{mean(group, F_KEY) / mean(ceiling, F_KEY):.2f}"
        lines.append(
            f"| {size} | {variant} | {len(group)} | {stat(group, F_KEY, '.3f')} "
            f"| {stat(group, E_KEY, '.1f')} | {cut} | {e_ratio} | {to_ceiling} "
            f"| {stat(group, 'test_force_rms_pred_eV_per_A', '.2f')} "
            f"| {mean(group, 'epochs'):.0f} | {mean(group, 'train_cpu_s'):.0f} |"
        )
    pre = [r for r in rows if r["variant"] == "pretrain"]
    if pre:
        lines.append("")
        lines.append(
            f"Pretraining (xTB energies + forces of the 450 pool structures, per seed): "
            f"{len(pre)} runs, {acac.mean(pre, 'train_cpu_s'):.0f} CPU s and "
            f"{acac.mean(pre, 'epochs'):.0f} epochs each, validation xTB energy RMSE "
            f"{acac.mean(pre, 'val_energy_rmse_meV'):.1f} meV."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=acac.DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=acac.REPO / "benchmarks" / "out" / "multifidelity")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    p.add_argument("--sizes", default="100,50,450")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--cpu-s", type=float, default=40.0, help="CPU seconds per training run")
    p.add_argument("--pretrain-cpu-s", type=float, default=150.0)
    acac.add_grid_options(p, SMOKE)
    p.add_argument("--rescore", action="store_true", help="re-evaluate every run's model.pt")
    args = p.parse_args(argv)
    if acac.nothing_to_run(args, SMOKE, summarise):
        return 0
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    grid = Grid(args.data, args.out, args.n_pool, args.n_test)
    rows = acac.load_rows(args.out)
    if args.rescore:
        for r in rows:
            if r["variant"] not in ("pretrain", "xtb_alone"):
                run = grid.run_dir(r["variant"], r["size"], r["seed"])
                dataset = grid.dataset(r["size"], r["seed"])
                r.update(acac.evaluate(run / "model.pt", dataset, run / "test"))
        acac.write_results(args.out, rows, summarise(rows))
        print(summarise(rows))
        return 0
    rows = [r for r in rows if r["variant"] != "xtb_alone"]
    rows += grid.xtb_alone_rows(sizes, seeds)
    acac.write_results(args.out, rows, summarise(rows))

    specs: list[tuple[str, int | None, int, float]] = []
    if any(VARIANTS[n][0] == "finetune" for n in names):
        specs += [("pretrain", None, s, args.pretrain_cpu_s) for s in seeds]
    specs += [(n, size, seed, args.cpu_s) for size in sizes for seed in seeds for n in names]
    done = {(r["variant"], r.get("size"), r["seed"]) for r in rows}
    pending = [s for s in specs if s[:3] not in done]
    print(f"{len(pending)} runs to do, {len(specs) - len(pending)} done", flush=True)
    t0 = time.perf_counter()
    for variant, size, seed, cpu_s in pending:
        tag = f"{variant} n={size} seed={seed}"
        try:
            row = grid.run_one(variant, size, seed, cpu_s)
        except RuntimeError as exc:
            print(f"FAILED {tag}: {exc}", flush=True)
            continue
        rows.append(row)
        acac.write_results(args.out, rows, summarise(rows))  # an interrupted grid resumes
        print(
            f"[{time.perf_counter() - t0:6.0f} s] {tag}: F {row.get(F_KEY, float('nan')):.3f} "
            f"eV/A, E {row.get(E_KEY, float('nan')):.1f} meV, val E "
            f"{row['val_energy_rmse_meV']:.1f} meV, {row['epochs']} epochs "
            f"({row['stop_reason']}), {row['train_cpu_s']:.0f} CPU s",
            flush=True,
        )
    print(summarise(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
