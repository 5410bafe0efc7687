"""Data efficiency of the weak losses on acetylacetone: energy-only training, forces for testing.

Trains PaiNN on ENERGIES ONLY of 50 / 100 / 450 structures of ``train_300K.xyz`` (with a
fixed validation set of 50 more, energies only, for model selection), with and without
PITC + PISC, under the same budget, for several seeds, and reports energy and force RMSE on
``test_MD_300K.xyz`` (its forces are used for evaluation only, never in training).

Variants (``--variants``; each is a set of overrides of pilip.potential.train.TrainConfig):
  energy        energies only
  weak          energies + PITC + PISC on the labelled structures (pilip's defaults)
  weak_unl      as weak, plus PITC + PISC on the remaining train_300K structures WITHOUT
                their energies (an unlabelled pool); for n = 450 the pool is empty and the
                row is skipped
  paper         the paper's settings: eps 0.05 A, first order (k 0), weights 1.2 / 0.01
  ... and the grid of the eps / k / weight study (``--grid study``).

Usage (GPU, the full grid; see benchmarks/README.md for the time estimate):
    python benchmarks/acac_data_efficiency.py --device cuda --grid full --out results/acac
CPU smoke / study:
    python benchmarks/acac_data_efficiency.py --device cpu --grid small --sizes 50,100 \
        --seeds 0 --epochs 60 --out /tmp/acac

Reads the data in place (``--data``, default ../shared/data/acac next to the repository);
skips with a message and exit code 0 when it is absent. Needs torch, numpy, pyarrow, tqdm
(and pilip on the path); not ASE: the extended XYZ is parsed here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "data" / "acac"
N_VAL = 50
E_KEY, F_KEY = "test_energy_rmse_meV", "test_force_rmse_eV_per_A"
SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8}

# Budget and model shared by every run (the comparison is at equal epochs; wall time is
# recorded per run, and --minutes-per-run caps it as a safety net). Batch size: 16 up to 100
# training structures, 32 above (fewer, equally cheap steps on a GPU; the same for every
# variant of one size).
BASE = {
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
    "weak_unl": {**WEAK, "unlabelled": True},
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
                                                 "unlabelled": True}  # fmt: skip
GRIDS = {
    "small": ["energy", "weak", "paper"],
    "full": ["energy", "weak", "weak_unl", "paper"],
    "study": list(STUDY),
}


# --- extended XYZ without ASE ----------------------------------------------------------------

_KV = re.compile(r'(\w+)=("[^"]*"|\S+)')


def read_extxyz(path: Path) -> list[dict]:
    """Frames as dicts: numbers (n,), positions (n, 3) A, energy eV, forces (n, 3) eV/A."""
    frames = []
    with open(path) as handle:
        lines = handle.read().splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        n = int(lines[i])
        info = {k: v.strip('"') for k, v in _KV.findall(lines[i + 1])}
        props = info["Properties"].split(":")
        columns, start = {}, 0
        for name, kind, width in zip(props[0::3], props[1::3], props[2::3], strict=True):
            columns[name] = (start, start + int(width), kind)
            start += int(width)
        rows = [lines[i + 2 + a].split() for a in range(n)]
        s0, _, _ = columns["species"]
        p0, p1, _ = columns["pos"]
        frame = {
            "numbers": np.array([SYMBOLS[r[s0]] for r in rows], dtype=np.int64),
            "positions": np.array([[float(x) for x in r[p0:p1]] for r in rows]),
            "energy": float(info["energy"]) if "energy" in info else None,
        }
        if "forces" in columns:
            f0, f1, _ = columns["forces"]
            frame["forces"] = np.array([[float(x) for x in r[f0:f1]] for r in rows])
        frames.append(frame)
        i += n + 2
    return frames


# --- one run ---------------------------------------------------------------------------------


def split_indices(n_total: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation indices, training pool in the seed's order) of train_300K."""
    order = np.random.default_rng(1000 + seed).permutation(n_total)
    return np.sort(order[:N_VAL]), order[N_VAL:]


def run_one(spec: dict) -> dict:
    """Train one (variant, size, seed) and evaluate on the test set; returns a result row."""
    import torch

    from pilip.potential.data import TRAIN, VAL, structures_from_arrays
    from pilip.potential.train import TrainConfig, train

    torch.set_num_threads(spec["threads"])
    frames = read_extxyz(Path(spec["data"]) / "train_300K.xyz")
    test = read_extxyz(Path(spec["data"]) / "test_MD_300K.xyz")
    val_idx, pool = split_indices(len(frames), spec["seed"])
    train_idx = np.sort(pool[: spec["size"]])
    unl_idx = np.sort(pool[spec["size"] :])

    def structures(idx: np.ndarray, labels: bool = True):
        return structures_from_arrays(
            [frames[i]["numbers"] for i in idx],
            [frames[i]["positions"] for i in idx],
            np.array([frames[i]["energy"] for i in idx]) if labels else None,
        )

    overrides = dict(spec["overrides"])
    use_unlabelled = overrides.pop("unlabelled", False)
    config = TrainConfig.from_dict(
        {
            **BASE,
            "batch_size": 16 if spec["size"] <= 100 else 32,
            **overrides,
            "seed": spec["seed"],
            "device": spec["device"],
            "epochs": spec["epochs"],
            "minutes": spec["minutes"],
        }
    )
    data = {TRAIN: structures(train_idx), VAL: structures(val_idx)}
    # the unlabelled pool: the remaining train_300K geometries, their energies never read
    unlabelled = structures(unl_idx, labels=False) if use_unlabelled else None
    out = Path(spec["out"]) / "runs" / f"{spec['variant']}-n{spec['size']}-s{spec['seed']}"
    t0 = time.perf_counter()
    result = train(config, data, out, unlabelled=unlabelled, resume=False, progress=False)
    train_s = time.perf_counter() - t0

    metrics = test_metrics(out / "model.pt", test, spec["device"], config.dtype)
    return {
        "variant": spec["variant"],
        "size": spec["size"],
        "seed": spec["seed"],
        "n_unlabelled": len(unl_idx) if use_unlabelled else 0,
        **metrics,
        "val_energy_rmse_meV": 1000 * result.best_val_energy_rmse,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "stop_reason": result.stop_reason,
        "train_s": round(train_s, 1),
        "config": config.to_dict(),
    }


def test_metrics(model_path: Path, test: list[dict], device: str, dtype: str) -> dict:
    """Energy and force errors of a checkpoint on the test frames (forces: evaluation only)."""
    import torch

    from pilip.potential.checkpoint import load_model
    from pilip.potential.data import structures_from_arrays
    from pilip.potential.devices import resolve_device
    from pilip.potential.forces import energy_and_forces

    device = resolve_device(device)
    model, _ = load_model(model_path, device)
    test_s = structures_from_arrays(
        [f["numbers"] for f in test],
        [f["positions"] for f in test],
        np.array([f["energy"] for f in test]),
        [f["forces"] for f in test],
    ).to(device, getattr(torch, dtype))
    e_pred, f_pred = [], []
    for batch in test_s.batches(128):
        e, f = energy_and_forces(model, batch)
        e_pred.append(e.detach().double().cpu())
        f_pred.append(f.detach().double().cpu())
    f_pred = torch.cat(f_pred)
    f_ref = test_s.forces.double().cpu()
    e_err = torch.cat(e_pred) - test_s.energy.double().cpu()
    f_err = f_pred - f_ref
    return {
        E_KEY: 1000 * float(e_err.square().mean().sqrt()),
        F_KEY: float(f_err.square().mean().sqrt()),
        # size of the predicted forces (the reference's is 1.04 eV/A): a flattened surface
        # shows up here first
        "test_force_rms_pred_eV_per_A": float(f_pred.square().mean().sqrt()),
        "test_force_cosine": float((f_pred * f_ref).sum() / (f_pred.norm() * f_ref.norm())),
    }


def rescore(out: Path, data: Path, device: str) -> None:
    """Recompute the test metrics of every run in out/results.json from its model.pt."""
    rows = json.loads((out / "results.json").read_text())["rows"]
    test = read_extxyz(data / "test_MD_300K.xyz")
    for r in rows:
        path = out / "runs" / f"{r['variant']}-n{r['size']}-s{r['seed']}" / "model.pt"
        r.update(test_metrics(path, test, device, r["config"]["dtype"]))
    write_results(out, rows)


# --- the grid --------------------------------------------------------------------------------


def summarise(rows: list[dict]) -> str:
    """Markdown table: mean ± std over seeds per (size, variant), and ratios to energy-only
    (target of the weak losses: F ratio <= 0.5 with E ratio <= 1)."""
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["size"], r["variant"]), []).append(r)

    def stat(group: list[dict], key: str, fmt: str = ".3f") -> str:
        v = np.array([r[key] for r in group if key in r])
        if len(v) == 0:
            return "–"
        return f"{v.mean():{fmt}} ± {v.std():{fmt}}" if len(v) > 1 else f"{v.mean():{fmt}}"

    def mean(group: list[dict], key: str) -> float:
        return float(np.mean([r[key] for r in group]))

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
            f"| {stat(group, F_KEY)} | {f_ratio} | {e_ratio} "
            f"| {stat(group, 'test_force_rms_pred_eV_per_A', '.2f')} "
            f"| {stat(group, 'val_energy_rmse_meV', '.1f')} "
            f"| {mean(group, 'epochs'):.0f} | {mean(group, 'train_s'):.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--grid", choices=sorted(GRIDS), default="small")
    p.add_argument("--variants", help="comma list overriding --grid (names in VARIANTS/STUDY)")
    p.add_argument("--sizes", default="50,100,450")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--minutes-per-run", type=float, default=None)
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override a TrainConfig key for every run (e.g. --set lr=5e-4)",
    )
    p.add_argument(
        "--rescore", action="store_true", help="recompute test metrics of the runs in --out"
    )
    p.add_argument("--_one", help=argparse.SUPPRESS)  # internal: run one spec (JSON)
    args = p.parse_args(argv)
    if args.rescore:
        rescore(args.out, args.data, args.device)
        print(summarise(json.loads((args.out / "results.json").read_text())["rows"]))
        return 0

    if args._one:
        print(json.dumps(run_one(json.loads(args._one))), flush=True)
        return 0
    if not (args.data / "train_300K.xyz").is_file():
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
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    specs = []
    for size in sizes:
        for seed in seeds:
            for name in names:
                overrides = {**common, **table[name]}
                if overrides.get("unlabelled") and size >= 500 - N_VAL:
                    continue  # no unlabelled structures left
                specs.append({
                    "variant": name, "size": size, "seed": seed, "overrides": overrides,
                    "data": str(args.data), "out": str(args.out), "device": args.device,
                    "epochs": args.epochs, "minutes": args.minutes_per_run,
                    "threads": args.threads,
                })  # fmt: skip
    # longest runs first, so that parallel jobs finish together
    specs.sort(key=lambda s: (-s["size"], s["overrides"].get("losses") == ["energy"]))
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    rows = json.loads(results_path.read_text())["rows"] if results_path.is_file() else []
    done = {(r["variant"], r["size"], r["seed"]) for r in rows}
    pending = [s for s in specs if (s["variant"], s["size"], s["seed"]) not in done]
    print(
        f"{len(pending)} runs to do ({len(specs) - len(pending)} already in {results_path}), "
        f"{args.jobs} at a time, device {args.device}",
        flush=True,
    )
    t0 = time.perf_counter()
    running: list[tuple[subprocess.Popen, dict]] = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    while pending or running:
        while pending and len(running) < args.jobs:
            spec = pending.pop(0)
            cmd = [sys.executable, __file__, "--out", str(args.out), "--_one", json.dumps(spec)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
            running.append((proc, spec))
        for proc, spec in list(running):
            if proc.poll() is None:
                continue
            running.remove((proc, spec))
            output = proc.stdout.read().strip().splitlines()
            tag = f"{spec['variant']} n={spec['size']} seed={spec['seed']}"
            if proc.returncode != 0 or not output:
                print(f"FAILED {tag} (exit {proc.returncode})", flush=True)
                continue
            row = json.loads(output[-1])
            rows.append(row)
            # written after every run, so an interrupted grid continues where it stopped
            write_results(args.out, rows)
            print(
                f"[{time.perf_counter() - t0:6.0f} s] {tag}: test E "
                f"{row['test_energy_rmse_meV']:.1f} meV, "
                f"F {row['test_force_rmse_eV_per_A']:.3f} eV/A, val E "
                f"{row['val_energy_rmse_meV']:.1f} meV, {row['epochs']} epochs "
                f"({row['stop_reason']}, best {row['best_epoch']}), {row['train_s']:.0f} s",
                flush=True,
            )
        time.sleep(0.2)
    write_results(args.out, rows)
    print(summarise(rows))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


def write_results(out: Path, rows: list[dict]) -> None:
    """results.json (every run) and results.md (the summary table), replaced atomically."""
    from pilip.atomic_io import atomic_path

    for name, text in (
        ("results.json", json.dumps({"rows": rows}, indent=1)),
        ("results.md", summarise(rows) + "\n"),
    ):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
