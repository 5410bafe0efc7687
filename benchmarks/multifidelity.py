"""Multi-fidelity training on acetylacetone: reference energies plus a cheap level's forces.

Reference = the DFT energies of ``train_300K.xyz`` (its DFT forces are read only by the
``ceiling`` variant); cheap level = GFN2-xTB through tblite, computed here once and cached
under ``--out`` (git-ignored ``benchmarks/out/``). Test = all 650 frames of
``test_MD_300K.xyz``; their DFT forces are used for evaluation only. Per seed, 50 structures
of ``train_300K`` are the validation set (reference energies only: model selection), the
first n of the other 450 (in the seed's order) the training set.

Variants (PaiNN, the same CPU-time budget per run, 1 thread):
  energy         reference energies only
  weak           + PITC + PISC (pilip's defaults: eps 0.01 A, k 0.5, weights 1 / 0.01)
  delta          the model learns E_ref - E_xTB; predictions are xTB + model
  delta_weak     delta + PITC + PISC on the total surface (xTB at the perturbed geometries,
                 computed in-process inside the run's budget)
  finetune       start from a model pretrained on xTB energies + forces of the 450 pool
                 structures (per seed; its cost is reported apart), fine-tune on the n
                 reference energies (per-element energies refitted)
  finetune_weak  finetune + PITC + PISC
  *_paper        the weak variants at the paper's settings (eps 0.05 A, k 0, 1.2 / 0.01)
  ceiling        the n reference energies AND reference forces
and GFN2-xTB alone (no training; its energy shifted by a constant fitted on the n training
structures).

    python benchmarks/multifidelity.py --out benchmarks/out/multifidelity          # all
    python benchmarks/multifidelity.py --out ... --sizes 100 --variants energy,delta
    python benchmarks/multifidelity.py --out ... --table        # the tables from results.json
    python benchmarks/multifidelity.py --out ... --rescore      # re-evaluate every model.pt

Every finished run is appended to ``--out/results.json`` at once, so an interrupted grid
resumes where it stopped. Skips with exit code 0 when the data are absent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from acac_data_efficiency import read_extxyz, split_indices  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "acac"
E_KEY, F_KEY = "test_energy_rmse_meV", "test_force_rmse_eV_per_A"
BASELINE = "gfn2-xtb"

BASE = {
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
# name -> (recipe, TrainConfig overrides); recipe: plain | delta | finetune | ceiling
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
        {"losses": ["energy"], "model_params": {**BASE["model_params"], "n_features": 32}},
    ),
}
DEFAULT_VARIANTS = [
    "energy", "ceiling", "delta", "finetune", "weak", "delta_weak", "finetune_weak",
]  # fmt: skip


# --- data and the cheap level ----------------------------------------------------------------


def frames_of(data: Path) -> tuple[list[dict], list[dict]]:
    return read_extxyz(data / "train_300K.xyz"), read_extxyz(data / "test_MD_300K.xyz")


def xtb_labels(data: Path, out: Path) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """GFN2-xTB energies (eV) and forces (eV/A) of train_300K and test_MD_300K, computed once
    through pilip.potential.baselines (cached, resumable: out/xtb/baseline.parquet)."""
    from pilip.potential.baselines import compute_labels, resolve_baseline

    train, test = frames_of(data)
    configs = []
    for tag, frames in (("train", train), ("test", test)):
        for i, f in enumerate(frames):
            configs.append(
                {
                    "id": f"{tag}-{i:04d}",
                    "numbers": f["numbers"].tolist(),
                    "positions": f["positions"].tolist(),
                    "charge": 0,
                    "multiplicity": 1,
                }
            )
    t0 = time.process_time()
    labels = compute_labels(resolve_baseline(BASELINE), configs, out / "xtb")
    if not labels.ok.all():
        raise SystemExit(f"xTB failed on {sorted(labels.errors)}")
    spent = time.process_time() - t0
    if spent > 1:
        print(f"GFN2-xTB on {len(configs)} structures: {spent:.0f} CPU s", flush=True)
    n = len(train)
    return {
        "train": (labels.energy[:n], labels.forces[:n]),
        "test": (labels.energy[n:], labels.forces[n:]),
    }


def structures(frames, idx, energy=None, forces=None):
    from pilip.potential.data import structures_from_arrays

    return structures_from_arrays(
        [frames[i]["numbers"] for i in idx],
        [frames[i]["positions"] for i in idx],
        None if energy is None else np.asarray([energy[i] for i in idx]),
        None if forces is None else [forces[i] for i in idx],
    )


# --- one run (in its own process) ------------------------------------------------------------


class _CPUClock:
    """Stands in for the ``time`` module inside pilip.potential.train: its monotonic clock becomes
    this
    process's CPU time, so ``minutes`` is a CPU-time budget that other users of the machine
    cannot shorten."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def monotonic() -> float:
        return time.process_time()


def run_dir(spec: dict) -> Path:
    if spec["variant"] == "pretrain":
        return Path(spec["out"]) / "runs" / f"pretrain-s{spec['seed']}"
    return Path(spec["out"]) / "runs" / f"{spec['variant']}-n{spec['size']}-s{spec['seed']}"


def run_one(spec: dict) -> dict:
    """Train one (variant, size, seed) run and evaluate it on the test frames."""
    import torch

    import pilip.potential.train as pilip_train
    from pilip.potential.data import TRAIN, VAL
    from pilip.potential.train import TrainConfig

    torch.set_num_threads(1)
    pilip_train.time = _CPUClock()
    data, out = Path(spec["data"]), Path(spec["out"])
    frames, test = frames_of(data)
    xtb = xtb_labels(data, out)
    e_ref = np.array([f["energy"] for f in frames])
    f_ref = [f["forces"] for f in frames]
    val_idx, pool = split_indices(len(frames), spec["seed"])
    e_xtb, f_xtb = xtb["train"]

    if spec["variant"] == "pretrain":
        recipe, overrides = "pretrain", {"losses": ["energy", "forces"]}
        train_idx = np.sort(pool)
        train_s = structures(frames, train_idx, e_xtb, f_xtb)
        val_s = structures(frames, val_idx, e_xtb)
    else:
        recipe, overrides = VARIANTS[spec["variant"]]
        overrides = dict(overrides)
        spec = {**spec, "cpu_s": overrides.pop("_cpu_s", spec["cpu_s"])}
        train_idx = np.sort(pool[: spec["size"]])
        target = e_ref - e_xtb if recipe == "delta" else e_ref
        train_s = structures(frames, train_idx, target, f_ref if recipe == "ceiling" else None)
        val_s = structures(frames, val_idx, target)
    config = TrainConfig.from_dict(
        {
            **BASE,
            "batch_size": 16 if len(train_idx) <= 100 else 32,
            **overrides,
            "seed": spec["seed"],
            "minutes": spec["cpu_s"] / 60.0,
        }
    )
    init_weights, total_surface, meta = None, None, {}
    if recipe == "finetune":
        from pilip.potential.finetune import init_checkpoint
        from pilip.potential.finetune import init_weights as weights_of

        pretrained = run_dir({**spec, "variant": "pretrain"}) / "model.pt"
        init_weights = weights_of(init_checkpoint(pretrained), config.dtype)
        meta["init"] = str(pretrained)
    if recipe == "delta":
        setup = delta_setup(frames, {TRAIN: train_idx, VAL: val_idx}, xtb["train"])
        meta.update(setup.meta())
        total_surface = setup if config.weak else None
    surfaces = []  # the total surface the loop trains (delta + weak): its baseline's cost
    if total_surface is not None:
        make = total_surface.model
        total_surface.model = lambda model, dtype: (
            surfaces.append(make(model, dtype)) or surfaces[-1]
        )
    directory = run_dir(spec)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    result = pilip_train.train(
        config, {TRAIN: train_s, VAL: val_s}, directory, init_weights=init_weights, meta=meta,
        total_surface=total_surface, resume=False, progress=False,
    )  # fmt: skip
    cpu_s = time.process_time() - t_cpu
    row = {
        "variant": spec["variant"],
        "size": spec.get("size"),
        "seed": spec["seed"],
        "n_train": len(train_idx),
        "val_energy_rmse_meV": 1000 * result.best_val_energy_rmse,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "stop_reason": result.stop_reason,
        "train_cpu_s": round(cpu_s, 1),
        "train_wall_s": round(time.perf_counter() - t_wall, 1),
        "config": config.to_dict(),
    }
    if surfaces:
        row["baseline_calls"] = surfaces[0].calls
        row["baseline_cpu_s"] = round(surfaces[0].seconds, 1)
    if recipe != "pretrain":
        row.update(test_metrics(directory / "model.pt", test, xtb["test"], recipe == "delta"))
    return row


def delta_setup(frames, splits: dict, xtb_train):
    """The DeltaSetup pilip train builds for --baseline gfn2-xtb, from the cached labels."""
    from pilip.potential.baselines import BaselineLabels, resolve_baseline
    from pilip.potential.multifidelity import DeltaSetup

    setup = DeltaSetup(resolve_baseline(BASELINE), {}, {}, {})
    for split, idx in splits.items():
        setup.configs[split] = [
            {"id": f"train-{i:04d}", "numbers": frames[i]["numbers"].tolist(),
             "positions": frames[i]["positions"].tolist(), "charge": 0, "multiplicity": 1}
            for i in idx
        ]  # fmt: skip
        setup.labels[split] = BaselineLabels(
            [c["id"] for c in setup.configs[split]],
            xtb_train[0][idx],
            [xtb_train[1][i] for i in idx],
            {},
        )
        setup.dropped[split] = []
    return setup


def test_metrics(model_path: Path, test: list[dict], xtb_test, delta: bool) -> dict:
    """Energy and force errors on the test frames (their forces: evaluation only). A Delta
    model is evaluated as xTB + model, xTB read from the cache."""
    import torch

    from pilip.potential.baselines import BaselineCache, DeltaModel, resolve_baseline
    from pilip.potential.checkpoint import load_model
    from pilip.potential.data import structures_from_arrays
    from pilip.potential.forces import energy_and_forces

    model, meta = load_model(model_path, "cpu")
    dtype = next(model.parameters()).dtype
    test_s = structures_from_arrays(
        [f["numbers"] for f in test],
        [f["positions"] for f in test],
        np.array([f["energy"] for f in test]),
        [f["forces"] for f in test],
    )
    if delta:
        if not isinstance(model, DeltaModel):
            model = DeltaModel(model, resolve_baseline(BASELINE))
        cache = BaselineCache()
        for f, e, forces in zip(test, xtb_test[0], xtb_test[1], strict=True):
            cache.add(f["numbers"], f["positions"].astype(np.dtype(str(dtype)[6:])), e, forces)
        model.cache = cache
    test_s = test_s.to("cpu", dtype)
    e_pred, f_pred = [], []
    for batch in test_s.batches(128):
        e, f = energy_and_forces(model, batch)
        e_pred.append(e.detach().double())
        f_pred.append(f.detach().double())
    f_pred = torch.cat(f_pred)
    f_ref = test_s.forces.double()
    e_err = torch.cat(e_pred) - test_s.energy.double()
    return {
        E_KEY: 1000 * float(e_err.square().mean().sqrt()),
        F_KEY: float((f_pred - f_ref).square().mean().sqrt()),
        "test_force_rms_pred_eV_per_A": float(f_pred.square().mean().sqrt()),
    }


def xtb_alone_rows(data: Path, out: Path, sizes: list[int], seeds: list[int]) -> list[dict]:
    """GFN2-xTB alone against the test frames; energies shifted by the mean offset to the
    reference over the n training structures (all a user with n reference energies can do)."""
    frames, test = frames_of(data)
    xtb = xtb_labels(data, out)
    e_ref = np.array([f["energy"] for f in frames])
    e_test = np.array([f["energy"] for f in test])
    f_test = np.concatenate([f["forces"] for f in test])
    f_xtb = np.concatenate(xtb["test"][1])
    f_rmse = float(np.sqrt(np.mean((f_xtb - f_test) ** 2)))
    rows = []
    for size in sizes:
        for seed in seeds:
            _, pool = split_indices(len(frames), seed)
            idx = pool[:size]
            offset = float(np.mean(e_ref[idx] - xtb["train"][0][idx]))
            err = xtb["test"][0] + offset - e_test
            rows.append({
                "variant": "xtb_alone", "size": size, "seed": seed,
                E_KEY: 1000 * float(np.sqrt(np.mean(err**2))), F_KEY: f_rmse,
                "test_force_rms_pred_eV_per_A": float(np.sqrt(np.mean(f_xtb**2))),
                "train_cpu_s": 0.0, "epochs": 0,
            })  # fmt: skip
    return rows


# --- the grid --------------------------------------------------------------------------------


def summarise(rows: list[dict]) -> str:
    """Markdown: mean ± std over seeds per (n, variant), ratios to energy-only and ceiling."""
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in rows:
        if r["variant"] != "pretrain":
            groups.setdefault((r["size"], r["variant"]), []).append(r)
    order = ["xtb_alone", *VARIANTS]

    def stat(group, key, fmt):
        v = np.array([r[key] for r in group if key in r])
        if len(v) == 0:
            return "–"
        return f"{v.mean():{fmt}} ± {v.std():{fmt}}" if len(v) > 1 else f"{v.mean():{fmt}}"

    def mean(group, key):
        return float(np.mean([r[key] for r in group]))

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
            f"{len(pre)} runs, {np.mean([r['train_cpu_s'] for r in pre]):.0f} CPU s and "
            f"{np.mean([r['epochs'] for r in pre]):.0f} epochs each, validation xTB energy RMSE "
            f"{np.mean([r['val_energy_rmse_meV'] for r in pre]):.1f} meV."
        )
    return "\n".join(lines)


def write_results(out: Path, rows: list[dict]) -> None:
    """results.json (every run) and results.md (the table), each replaced atomically."""
    from pilip.atomic_io import atomic_path

    for name, text in (
        ("results.json", json.dumps({"rows": rows}, indent=1)),
        ("results.md", summarise(rows) + "\n"),
    ):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)


def rescore(out: Path, data: Path) -> None:
    rows = json.loads((out / "results.json").read_text())["rows"]
    xtb = xtb_labels(data, out)
    _, test = frames_of(data)
    for r in rows:
        if r["variant"] in ("pretrain", "xtb_alone"):
            continue
        recipe = VARIANTS[r["variant"]][0]
        spec = {"out": str(out), **r}
        r.update(test_metrics(run_dir(spec) / "model.pt", test, xtb["test"], recipe == "delta"))
    write_results(out, rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "multifidelity")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    p.add_argument("--sizes", default="100,50,450")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--cpu-s", type=float, default=60.0, help="CPU seconds per training run")
    p.add_argument("--pretrain-cpu-s", type=float, default=240.0)
    p.add_argument("--table", action="store_true", help="print the table of results.json")
    p.add_argument("--rescore", action="store_true", help="re-evaluate every run's model.pt")
    p.add_argument("--_one", help=argparse.SUPPRESS)  # internal: one run spec (JSON)
    args = p.parse_args(argv)
    if args._one:
        print(json.dumps(run_one(json.loads(args._one))), flush=True)
        return 0
    if not (args.data / "train_300K.xyz").is_file():
        print(f"skipped: no acac data at {args.data} (pass --data)")
        return 0
    if args.rescore:
        rescore(args.out, args.data)
    if args.table or args.rescore:
        print(summarise(json.loads((args.out / "results.json").read_text())["rows"]))
        return 0

    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    rows = json.loads(results_path.read_text())["rows"] if results_path.is_file() else []
    rows = [r for r in rows if r["variant"] != "xtb_alone"]
    rows += xtb_alone_rows(args.data, args.out, sizes, seeds)
    write_results(args.out, rows)

    common = {"data": str(args.data), "out": str(args.out)}
    specs = []
    if any(VARIANTS[n][0] == "finetune" for n in names):
        specs += [
            {**common, "variant": "pretrain", "size": None, "seed": s, "cpu_s": args.pretrain_cpu_s}
            for s in seeds
        ]
    specs += [
        {**common, "variant": n, "size": size, "seed": seed, "cpu_s": args.cpu_s}
        for size in sizes
        for seed in seeds
        for n in names
    ]
    done = {(r["variant"], r.get("size"), r["seed"]) for r in rows}
    pending = [s for s in specs if (s["variant"], s["size"], s["seed"]) not in done]
    print(f"{len(pending)} runs to do, {len(specs) - len(pending)} done", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    for spec in pending:
        tag = f"{spec['variant']} n={spec['size']} seed={spec['seed']}"
        proc = subprocess.run(
            [sys.executable, __file__, "--_one", json.dumps(spec)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        output = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not output:
            print(f"FAILED {tag} (exit {proc.returncode})", flush=True)
            continue
        row = json.loads(output[-1])
        rows.append(row)
        write_results(args.out, rows)  # after every run: an interrupted grid resumes
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
