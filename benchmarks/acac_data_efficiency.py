"""Data efficiency of the weak losses on acetylacetone: energy-only training, forces for testing.

Trains PaiNN on ENERGIES ONLY of 50 / 100 / 450 structures of ``train_300K.xyz`` (with a
fixed validation set of 50 more, energies only, for model selection), with and without
PITC + PISC, under the same budget, for several seeds, and reports energy and force RMSE on
``test_MD_300K.xyz`` (its forces are used for evaluation only, never in training). Every run
is ``pilip train`` then ``pilip evaluate`` (``benchmarks/acac.py``).

Variants (``--variants``; each is a variant of the generated study config's ``training``):
  energy        energies only
  weak          energies + PITC + PISC on the labelled structures (pilip's defaults)
  weak_unl      as weak, plus PITC + PISC on the remaining train_300K structures WITHOUT
                their energies (``pilip train --unlabelled``); for n = 450 the pool is empty
                and the row is skipped
  paper         the paper's settings: eps 0.05 A, first order (k 0), weights 1.2 / 0.01
  ... and the grid of the eps / k / weight study (``--grid study``).

Usage (GPU, the full grid; see benchmarks/README.md for the time estimate):
    python -m benchmarks.acac_data_efficiency --device cuda --grid full --out results/acac
CPU study, and a tiny grid in seconds (tests):
    python -m benchmarks.acac_data_efficiency --device cpu --sizes 50,100 --seeds 0 \\
        --epochs 100 --variants energy,weak,weak_unl,paper,eps0.02_k0 --out /tmp/acac
    python -m benchmarks.acac_data_efficiency --out DIR --smoke

Reads the data in place (``--data``, default ../shared/data/acac next to the repository);
skips with a message and exit code 0 when it is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from benchmarks import acac
from pilip import tables

E_KEY, F_KEY = "test_energy_rmse_meV", "test_force_rmse_eV_per_A"

# Budget and model shared by every run (the comparison is at equal epochs; wall time is
# recorded per run, and --minutes-per-run caps it as a safety net). Batch size: 16 up to 100
# training structures, 32 above (fewer, equally cheap steps on a GPU; the same for every
# variant of one size).
TRAINING = {
    "model": "painn",
    "model_params": {"n_features": 64, "n_interactions": 3, "cutoff": 5.0},
    "unlabelled_batch_size": 16,
    "lr": 1e-3,
    "lr_patience": 20,
    "patience": 60,
    "ema_decay": 0.99,
    "dtype": "float64",
    "checkpoint_interval_s": 1e9,
}

WEAK = {"losses": ["energy", "pitc", "pisc"]}
VARIANTS: dict[str, dict] = {
    "energy": {"losses": ["energy"]},
    "weak": dict(WEAK),  # pilip's TrainConfig defaults for eps, k and the weights
    "weak_unl": {**WEAK, "_unlabelled": True},
    "paper": {**WEAK, "eps": 0.05, "k": 0.0, "w_pitc": 1.2, "w_pisc": 0.01},
}
# The study: eps x k on the labelled structures, then weights, per-atom normalisation and the
# unlabelled pool at the promising settings. Names: eps<A>_k<k>[_w<w_pitc>][_pa][_unl].
STUDY: dict[str, dict] = {"energy": VARIANTS["energy"], "paper": VARIANTS["paper"]}
for _eps in (0.002, 0.005, 0.01, 0.02, 0.05):
    for _k in (0.0, 0.5):
        STUDY[f"eps{_eps:g}_k{_k:g}"] = {**WEAK, "eps": _eps, "k": _k, "w_pitc": 1.2}
for _eps, _k, _w in (
    (0.01, 0.0, 0.1),
    (0.01, 0.0, 10.0),
    (0.02, 0.0, 10.0),
    (0.05, 0.5, 100.0),
    (0.1, 0.5, 100.0),
):
    STUDY[f"eps{_eps:g}_k{_k:g}_w{_w:g}"] = {**WEAK, "eps": _eps, "k": _k, "w_pitc": _w}
STUDY["eps0.01_k0_pa"] = {**WEAK, "eps": 0.01, "k": 0.0, "w_pitc": 1.2, "per_atom": True}
for _eps, _k, _w in ((0.01, 0.0, 1.2), (0.02, 0.0, 1.2), (0.05, 0.5, 100.0), (0.1, 0.5, 100.0)):
    STUDY[f"eps{_eps:g}_k{_k:g}_w{_w:g}_unl"] = {**WEAK, "eps": _eps, "k": _k, "w_pitc": _w,
                                                 "_unlabelled": True}  # fmt: skip
GRIDS = {
    "small": ["energy", "weak", "paper"],
    "full": ["energy", "weak", "weak_unl", "paper"],
    "study": list(STUDY),
}


SMOKE = {"sizes": "8", "seeds": "0", "variants": "energy,weak_unl", "epochs": 2, "n_pool": 60,
         "n_test": 8}  # fmt: skip


def run_one(spec: dict) -> dict:
    """``pilip train`` one (variant, size, seed), then ``pilip evaluate`` it on the test set."""
    out = Path(spec["out"])
    pool, test = tables.read_table(spec["pool"]), tables.read_table(spec["test"])
    val_idx, order = acac.split_indices(pool.num_rows, spec["seed"])
    size, seed = spec["size"], spec["seed"]
    dataset = out / "datasets" / f"n{size}-s{seed}.parquet"
    if not dataset.is_file():
        dataset.parent.mkdir(parents=True, exist_ok=True)
        acac.split_dataset(pool, test, order[:size], val_idx, dataset)
    extra = ["--seed", str(seed), "--batch-size", "16" if size <= 100 else "32",
             "--device", spec["device"]]  # fmt: skip
    if spec["epochs"] is not None:
        extra += ["--epochs", str(spec["epochs"])]
    if spec["minutes"] is not None:
        extra += ["--minutes", repr(spec["minutes"])]
    n_unlabelled = 0
    if spec["unlabelled"]:
        # the unlabelled pool: the remaining train_300K geometries, their energies never read
        unlabelled = out / "datasets" / f"unlabelled-n{size}-s{seed}.parquet"
        if not unlabelled.is_file():
            acac.configurations(pool, order[size:], unlabelled)
        extra += ["--unlabelled", str(unlabelled)]
        n_unlabelled = len(order) - size
    run = out / "runs" / f"{spec['variant']}-n{size}-s{seed}"
    trained = acac.train(dataset, run, out / "study.yaml", spec["variant"], *extra)
    return {
        "variant": spec["variant"], "size": size, "seed": seed, "n_unlabelled": n_unlabelled,
        **acac.evaluate(run / "model.pt", dataset, run / "test", spec["device"]),
        **trained,
        "train_s": trained["train_wall_s"],
        "config": json.loads((run / "config.json").read_text()),
    }  # fmt: skip


def summarise(rows: list[dict]) -> str:
    """Markdown table: mean ± std over seeds per (size, variant), and ratios to energy-only
    (target of the weak losses: F ratio <= 0.5 with E ratio <= 1)."""
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["size"], r["variant"]), []).append(r)
    stat, mean = acac.stat, acac.mean
    lines = [
        "| n train | variant | seeds | test E RMSE (meV) | test F RMSE (eV/Å) | F / energy-only "
        "| E / energy-only | predicted F RMS (eV/Å) | val E RMSE (meV) | epochs | s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (size, variant), group in sorted(groups.items()):
        base = groups.get((size, "energy"))
        f_ratio = e_ratio = "–"
        if base:
            f_ratio = f"{mean(group, F_KEY) / mean(base, F_KEY):.2f}"
            e_ratio = f"{mean(group, E_KEY) / mean(base, E_KEY):.2f}"
        lines.append(
            f"| {size} | {variant} | {len(group)} | {stat(group, E_KEY, '.1f')} "
            f"| {stat(group, F_KEY, '.3f')} | {f_ratio} | {e_ratio} "
            f"| {stat(group, 'test_force_rms_pred_eV_per_A', '.2f')} "
            f"| {stat(group, 'val_energy_rmse_meV', '.1f')} "
            f"| {mean(group, 'epochs'):.0f} | {mean(group, 'train_s'):.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=acac.DEFAULT_DATA)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--grid", choices=sorted(GRIDS), default="small")
    p.add_argument("--variants", help="comma list overriding --grid (names in VARIANTS/STUDY)")
    p.add_argument("--sizes", default="50,100,450")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--minutes-per-run", type=float, default=None)
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    p.add_argument("--n-pool", type=int, help="the first N frames of train_300K only (smoke)")
    p.add_argument("--n-test", type=int, help="the first N test frames only (default: all 650)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="set a training key for every run (e.g. --set lr=5e-4)",
    )
    p.add_argument("--smoke", action="store_true", help="a tiny grid in seconds (tests): " +
                   ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in SMOKE.items()))  # fmt: skip
    p.add_argument(
        "--rescore", action="store_true", help="recompute test metrics of the runs in --out"
    )
    args = p.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    if args.rescore:
        rows = acac.load_rows(args.out)
        for r in rows:
            run = args.out / "runs" / f"{r['variant']}-n{r['size']}-s{r['seed']}"
            dataset = args.out / "datasets" / f"n{r['size']}-s{r['seed']}.parquet"
            r.update(acac.evaluate(run / "model.pt", dataset, run / "test", args.device))
        acac.write_results(args.out, rows, summarise(rows))
        print(summarise(rows))
        return 0
    if not acac.available(args.data):
        print(f"skipped: no acac data at {args.data} (pass --data)")
        return 0

    names = args.variants.split(",") if args.variants else GRIDS[args.grid]
    table = {**VARIANTS, **STUDY}
    unknown = [n for n in names if n not in table]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {sorted(table)}")
    common = {}
    for item in args.set:
        key, _, value = item.partition("=")
        common[key] = json.loads(value)
    args.out.mkdir(parents=True, exist_ok=True)
    pool, test = acac.import_tables(args.data, args.out, args.n_pool, args.n_test)
    n_pool = tables.read_table(pool).num_rows
    acac.study_config(args.out / "study.yaml", {**TRAINING, **common},
                      {name: table[name] for name in names})  # fmt: skip
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    specs = []
    for size in sizes:
        for seed in seeds:
            for name in names:
                unlabelled = table[name].get("_unlabelled", False)
                if unlabelled and size >= n_pool - acac.N_VAL:
                    continue  # no unlabelled structures left
                specs.append({
                    "variant": name, "size": size, "seed": seed, "unlabelled": unlabelled,
                    "energy_only": table[name].get("losses") == ["energy"],
                    "out": str(args.out), "device": args.device, "epochs": args.epochs,
                    "minutes": args.minutes_per_run, "pool": str(pool), "test": str(test),
                })  # fmt: skip
    # longest runs first, so that parallel jobs finish together
    specs.sort(key=lambda s: (-s["size"], s["energy_only"]))
    rows = acac.load_rows(args.out)
    done = {(r["variant"], r["size"], r["seed"]) for r in rows}
    pending = [s for s in specs if (s["variant"], s["size"], s["seed"]) not in done]
    print(
        f"{len(pending)} runs to do ({len(specs) - len(pending)} already in "
        f"{args.out / 'results.json'}), {args.jobs} at a time, device {args.device}",
        flush=True,
    )
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_one, spec): spec for spec in pending}
        for future in as_completed(futures):
            spec = futures[future]
            tag = f"{spec['variant']} n={spec['size']} seed={spec['seed']}"
            try:
                row = future.result()
            except RuntimeError as exc:
                print(f"FAILED {tag}: {exc}", flush=True)
                continue
            rows.append(row)
            # written after every run, so an interrupted grid continues where it stopped
            acac.write_results(args.out, rows, summarise(rows))
            print(
                f"[{time.perf_counter() - t0:6.0f} s] {tag}: test E {row[E_KEY]:.1f} meV, "
                f"F {row[F_KEY]:.3f} eV/A, val E {row['val_energy_rmse_meV']:.1f} meV, "
                f"{row['epochs']} epochs ({row['stop_reason']}, best {row['best_epoch']}), "
                f"{row['train_s']:.0f} s",
                flush=True,
            )
    acac.write_results(args.out, rows, summarise(rows))
    print(summarise(rows))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
