"""Committees and long MD on acetylacetone: does a potential survive, and does its committee
know where it is wrong?

Per seed (``benchmarks/acac.py`` splits: 50 validation structures of ``train_300K``, the first
n of the other 450 for training; PaiNN of ``benchmarks/multifidelity.py``, the same CPU budget
per run and per committee member), the recipes energy-only, Delta over GFN2-xTB, pretrain +
fine-tune and the ceiling (reference energies and forces), trained by
``multifidelity.Grid``; and a committee of ``--members`` Delta models (``pilip train
--ensemble``, member k of seed s has seed s + k, so member 0 is paired with the single Delta
run's settings). ``pilip evaluate`` on the 650 frames of ``test_MD_300K``: force RMSE of the
committee mean against each member alone, and the calibration figures (``metrics.json``'s
``calibration``: Spearman of spread against error, miscalibration area, NLL after the scale
fitted on the validation energies).

MD (``pilip md``, Langevin, 0.5 fs, friction 0.01/fs, one CPU thread): at 300 K from
``test_MD_300K`` and at 500 K from ``test_MD_600K`` (the issue's pairing; no 500 K reference
trajectory exists), ``--starts`` starts each (the first test structures in id order, i.e.
spread over the trajectory), ``--md-ps`` ps per run; stable fraction, first failure, h(r) MAE
against that table's frames (Fu et al.'s integrated definition, 0-2) and steps/s. A
committee's MD also records its force spread along the trajectory.

    OMP_NUM_THREADS=1 python -m benchmarks.committee_md --out benchmarks/out/committee_md
    python -m benchmarks.committee_md --out DIR --seeds 0 --md-ps 5 --md-recipes delta,committee
    python -m benchmarks.committee_md --out DIR --md-recipes delta --md-jobs 5  # 5 runs at once
    python -m benchmarks.committee_md --out DIR --md-recipes committee --runs 1-2  # runs 1, 2
    python -m benchmarks.committee_md --out DIR --table
    python -m benchmarks.committee_md --out DIR --smoke       # a tiny run (tests)

Every finished training, evaluation or MD run is appended to ``--out/results.json`` at once,
so an interrupted benchmark resumes where it stopped; processes of one ``--out`` side by side
(the trained models' MD split by ``--md-recipes`` or ``--temperatures``, one per core) keep each
other's rows. Skips with exit code 0 when the data are absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import acac, multifidelity

RECIPES = ("energy", "delta", "finetune", "ceiling")  # multifidelity variants
COMMITTEE = "committee"
MD_TABLES = {300: "test_MD_300K.xyz", 500: "test_MD_600K.xyz"}
TIMESTEP_FS = 0.5
SMOKE = {"size": 8, "seeds": "0", "members": 2, "cpu_s": 0.5, "pretrain_cpu_s": 0.5,
         "n_pool": 60, "n_test": 8, "md_ps": 0.01, "starts": 1, "temperatures": "300",
         "md_recipes": "delta,committee"}  # fmt: skip


def md_table(data: Path, out: Path, temperature: int, n_test: int | None) -> Path:
    """The test frames MD starts from at ``temperature`` (K), as a dataset table (split test)."""
    return acac.import_table(data / MD_TABLES[temperature], out, "test", n_test)


def train_committee(grid: multifidelity.Grid, size: int, seed: int, members: int,
                    cpu_s: float) -> dict[str, Any]:  # fmt: skip
    """``pilip train --ensemble`` of the Delta variant, then ``pilip evaluate``: the committee
    mean, each member alone and the calibration figures."""
    dataset = grid.dataset(size, seed)
    run = grid.run_dir(COMMITTEE, size, seed)
    row = {"variant": COMMITTEE, "size": size, "seed": seed, "n_train": size,
           "members": members, **acac.train(
               dataset, run, grid.config, "delta", "--ensemble", str(members),
               "--seed", str(seed), "--batch-size", "16" if size <= 100 else "32",
               "--cpu-minutes", repr(cpu_s / 60.0),
               "--baseline", acac.XTB, "--baseline-labels", *map(str, grid.xtb))}  # fmt: skip
    row.update(acac.evaluate(run / "model.pt", dataset, run / "test"))
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    alone = metrics["members"]["force_rmse"]
    calibration = metrics["calibration"]
    row.update(
        member_force_rmse=alone,
        member_energy_rmse_meV=[1000 * e for e in metrics["members"]["energy_rmse"]],
        committee_gain=float(np.mean(alone)) / metrics["force_rmse"] - 1.0,
        spearman_forces=calibration["forces"]["spearman"],
        spearman_forces_ideal=calibration["forces"]["spearman_ideal"],
        spearman_energy=calibration["energy"]["spearman"],
        miscalibration_area_forces=calibration["forces"]["miscalibration_area"],
        miscalibration_area_forces_scaled=calibration["forces"]["miscalibration_area_scaled"],
        miscalibration_area_energy_scaled=calibration["energy"]["miscalibration_area_scaled"],
        nll_energy=calibration["energy"]["nll"],
        nll_forces=calibration["forces"]["nll"],
        scale=calibration["scale"],
        forces_fitted_scale=calibration["forces"]["fitted_scale"],
    )
    return row


def run_md(model: Path, table: Path, out: Path, temperature: int, ps: float,
           starts: int, proton_transfer: str, jobs: int = 1,
           runs: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``pilip md`` of ``model`` from ``table``'s test frames (``jobs`` runs at once; only the
    runs ``runs`` of the ``starts``, e.g. "1-4", when given); what its md.json says."""
    steps = max(1, round(ps * 1000 / TIMESTEP_FS))
    only = [] if runs is None else ["--runs", runs]
    acac.pilip("md", str(model), str(table), "--out", str(out), "--device", "cpu",
               "--jobs", str(jobs), *only,
               "--temperature", str(temperature), "--steps", str(steps),
               "--timestep", str(TIMESTEP_FS), "--starts", str(starts),
               "--trajectory-interval", str(max(1, steps // 400)),
               "--proton-transfer", proton_transfer)  # fmt: skip
    md = json.loads((out / "md.json").read_text())
    return {
        "n_stable": md["n_stable"], "n_runs": md["n_runs"], "md_ps": ps, "runs": runs,
        "proton_transfer": proton_transfer, "n_proton_transfers": md["n_proton_transfers"],
        "min_time_to_failure_ps": md.get("min_time_to_failure_ps"),
        "median_time_to_failure_ps": md.get("median_time_to_failure_ps"),
        "hr_mae": md.get("hr_mae"), "hr_mae_reference_halves": md.get("hr_mae_reference_halves"),
        "steps_per_s": md.get("steps_per_s"),
        "force_spread_mean": md.get("force_spread_mean"),
        "force_spread_max": md.get("force_spread_max"),
    }  # fmt: skip


def md_mode(row: dict[str, Any]) -> str | None:
    """An MD row's --proton-transfer (rows from before the option: fail); None for training."""
    return row.get("proton_transfer", "fail") if row["kind"] == "md" else None


def row_key(row: dict[str, Any]) -> tuple:
    """What a results row is a result of: training (kind, variant, seed) or MD (also its
    temperature, length, --proton-transfer and --runs, None for all)."""
    return (row["kind"], row["variant"], row["seed"], row.get("temperature"), row.get("md_ps"),
            md_mode(row), row.get("runs"))  # fmt: skip


def train_key(variant: str, seed: int) -> tuple:
    """The :func:`row_key` of the training row of ``variant`` and ``seed``."""
    return row_key({"kind": "train", "variant": variant, "seed": seed})


def fmt(value: Any, spec: str) -> str:
    return "–" if value is None else f"{value:{spec}}"


def md_rows_counted(md: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The MD rows a table sums, so that no run is counted twice: per recipe, seed,
    temperature, length and --proton-transfer, the whole test with the most runs (``runs``
    None: runs 0 to n_runs - 1, e.g. ``pilip md`` summarising every start's saved run), then
    each part (``--runs``) with a run that row and the parts before it do not have."""
    from pilip.commands.md import run_numbers

    tests: dict[tuple, list[dict[str, Any]]] = {}
    for r in md:  # one test: its row_key without --runs
        tests.setdefault(row_key(r)[:-1], []).append(r)
    counted = []
    for group in tests.values():
        whole = [r for r in group if r.get("runs") is None]
        covered: set[int] = set()
        if whole:
            best = max(whole, key=lambda r: r["n_runs"])
            counted.append(best)
            covered = set(range(best["n_runs"]))
        for part in (r for r in group if r.get("runs") is not None):
            # rows do not keep --starts; the part's run went through pilip md's own check
            numbers = set(run_numbers(part["runs"], 1 << 30))
            if not numbers <= covered:
                counted.append(part)
                covered |= numbers
    return counted


def summarise(rows: list[dict]) -> str:
    """The tables of results.json: test errors per recipe, the committee against its members,
    and MD per recipe and temperature (means over seeds; n/N summed over
    :func:`md_rows_counted`)."""
    lines = ["| run | seeds | test energy RMSE (meV) | test force RMSE (eV/A) |",
             "|---|---:|---:|---:|"]  # fmt: skip
    trained = [r for r in rows if r.get("kind") == "train"]
    for name in (*RECIPES, COMMITTEE):
        group = [r for r in trained if r["variant"] == name]
        if group:
            lines.append(f"| {name} | {len(group)} | {acac.stat(group, multifidelity.E_KEY, '.1f')}"
                         f" | {acac.stat(group, multifidelity.F_KEY, '.3f')} |")  # fmt: skip
    committees = [r for r in trained if r["variant"] == COMMITTEE]
    if committees:
        lines += ["", "| seed | members | committee force RMSE | members alone (mean, min-max) "
                  "| gain of the mean | Spearman forces (ideal) | Spearman energies "
                  "| miscal. area forces (scaled) | miscal. area energies scaled | scale "
                  "| forces' own scale |",
                  "|---:|---:|---:|---|---:|---|---:|---|---:|---:|---:|"]  # fmt: skip
        for r in committees:
            alone = np.asarray(r["member_force_rmse"])
            lines.append(
                f"| {r['seed']} | {r['members']} | {r[multifidelity.F_KEY]:.3f} | "
                f"{alone.mean():.3f} ({alone.min():.3f}-{alone.max():.3f}) | "
                f"{100 * r['committee_gain']:.0f} % | {fmt(r['spearman_forces'], '.2f')} "
                f"({fmt(r['spearman_forces_ideal'], '.2f')}) | {fmt(r['spearman_energy'], '.2f')}"
                f" | {fmt(r['miscalibration_area_forces'], '.3f')} "
                f"({fmt(r['miscalibration_area_forces_scaled'], '.3f')}) | "
                f"{fmt(r['miscalibration_area_energy_scaled'], '.3f')} | {fmt(r['scale'], '.2f')}"
                f" | {fmt(r['forces_fitted_scale'], '.2f')} |"
            )
    md = md_rows_counted([r for r in rows if r.get("kind") == "md"])
    if md:
        lines += ["", "| run | T (K) | ps per run | proton transfer | stable | first failure "
                  "(ps) | proton transfers | h(r) MAE (floor) | steps/s | force spread mean / "
                  "max (eV/A) |",
                  "|---|---:|---:|---|---:|---:|---:|---|---:|---|"]  # fmt: skip
        order = (*RECIPES, COMMITTEE)
        keys = sorted({(r["variant"], r["temperature"], r["md_ps"], md_mode(r)) for r in md},
                      key=lambda k: (order.index(k[0]), *k[1:]))  # fmt: skip
        for name, temperature, ps, mode in keys:
            group = [r for r in md if (r["variant"], r["temperature"], r["md_ps"], md_mode(r))
                     == (name, temperature, ps, mode)]  # fmt: skip
            failures = [r["min_time_to_failure_ps"] for r in group
                        if r["min_time_to_failure_ps"] is not None]  # fmt: skip
            spreads = [r for r in group if r.get("force_spread_mean") is not None]
            spread = (
                (
                    f"{np.mean([r['force_spread_mean'] for r in spreads]):.3f} / "
                    f"{max(r['force_spread_max'] for r in spreads):.3f}"
                )
                if spreads
                else "–"
            )
            lines.append(
                f"| {name} | {temperature} | {ps:g} | {mode} | "
                f"{sum(r['n_stable'] for r in group)}/{sum(r['n_runs'] for r in group)} | "
                f"{fmt(min(failures) if failures else None, '.3f')} | "
                f"{sum(r.get('n_proton_transfers') or 0 for r in group)} | "
                f"{acac.stat(group, 'hr_mae', '.3f')} "
                f"({acac.stat(group, 'hr_mae_reference_halves', '.3f')}) | "
                f"{acac.stat(group, 'steps_per_s', '.0f')} | {spread} |"
            )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=acac.DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=acac.REPO / "benchmarks" / "out" / "committee_md")
    p.add_argument("--size", type=int, default=100, help="training structures")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--recipes", default=",".join(RECIPES), help="single models trained")
    p.add_argument("--members", type=int, default=5, help="Delta committee size")
    p.add_argument("--cpu-s", type=float, default=120.0,
                   help="CPU seconds per training run and per committee member")  # fmt: skip
    p.add_argument("--pretrain-cpu-s", type=float, default=300.0)
    p.add_argument("--md-recipes", default=",".join((*RECIPES, COMMITTEE)))
    p.add_argument("--md-seeds", help="seeds whose models run MD (default: --seeds)")
    p.add_argument("--temperatures", default="300,500", help="K: 300 (test_MD_300K), 500 "
                   "(test_MD_600K)")  # fmt: skip
    p.add_argument("--md-ps", type=float, default=50.0, help="ps per MD run")
    p.add_argument("--starts", type=int, default=5, help="MD runs per model and temperature")
    p.add_argument("--runs", help="pilip md --runs: only these of the --starts runs (e.g. 1-4: "
                   "the rest of a test begun in an earlier --out)")  # fmt: skip
    p.add_argument("--md-jobs", type=int, default=1,
                   help="pilip md --jobs: MD runs at once, one process and core each")  # fmt: skip
    p.add_argument("--proton-transfer", choices=("fail", "allow"), default="allow",
                   help="pilip md --proton-transfer: acac's enol proton moves between its two "
                   "oxygens at 500 K (allow: counted, not a failure)")  # fmt: skip
    acac.add_grid_options(p, SMOKE)
    args = p.parse_args(argv)
    if acac.nothing_to_run(args, SMOKE, summarise):
        return 0
    seeds = [int(s) for s in str(args.seeds).split(",")]
    md_seeds = [int(s) for s in (args.md_seeds or str(args.seeds)).split(",")]
    recipes = [r for r in args.recipes.split(",") if r]
    args.out.mkdir(parents=True, exist_ok=True)
    grid = multifidelity.Grid(args.data, args.out, args.n_pool, args.n_test)
    rows = acac.load_rows(args.out)
    done = {row_key(r) for r in rows}
    t0 = time.perf_counter()

    def record(row: dict[str, Any], what: str) -> None:
        rows.append(row)
        # at once, so that an interrupted run resumes; keeps the rows of another process of
        # the same --out (MD of other recipes or temperatures side by side)
        acac.merge_results(args.out, rows, row_key, summarise)
        print(f"[{time.perf_counter() - t0:6.0f} s] {what}", flush=True)

    for seed in seeds:
        if "finetune" in recipes and train_key("pretrain", seed) not in done:
            row = grid.run_one("pretrain", None, seed, args.pretrain_cpu_s)
            record({"kind": "train", **row}, f"pretrain seed {seed}")
        for name in recipes:
            if train_key(name, seed) not in done:
                row = grid.run_one(name, args.size, seed, args.cpu_s)
                record({"kind": "train", **row},
                       f"{name} seed {seed}: F {row[multifidelity.F_KEY]:.3f} eV/A")  # fmt: skip
        if args.members > 1 and train_key(COMMITTEE, seed) not in done:
            row = train_committee(grid, args.size, seed, args.members, args.cpu_s)
            record({"kind": "train", **row},
                   f"committee seed {seed}: F {row[multifidelity.F_KEY]:.3f} eV/A, members "
                   f"{np.round(row['member_force_rmse'], 3).tolist()}")  # fmt: skip

    for temperature in (int(t) for t in str(args.temperatures).split(",")):
        table = md_table(args.data, args.out, temperature, args.n_test)
        for seed in md_seeds:
            for name in args.md_recipes.split(","):
                key = row_key({"kind": "md", "variant": name, "seed": seed,
                               "temperature": temperature, "md_ps": args.md_ps,
                               "proton_transfer": args.proton_transfer,
                               "runs": args.runs})  # fmt: skip
                model = grid.run_dir(name, args.size, seed) / "model.pt"
                if key in done or not model.is_file():
                    continue
                out = grid.run_dir(name, args.size, seed) / (
                    f"md-{temperature}K-{args.md_ps:g}ps-{args.proton_transfer}"
                )
                row = run_md(model, table, out, temperature, args.md_ps, args.starts,
                             args.proton_transfer, args.md_jobs, args.runs)  # fmt: skip
                record({"kind": "md", "variant": name, "seed": seed, "temperature": temperature,
                        **row},
                       f"md {name} seed {seed} {temperature} K: {row['n_stable']}/"
                       f"{row['n_runs']} stable, {fmt(row['steps_per_s'], '.0f')} steps/s",
                       )  # fmt: skip
    print(summarise(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
