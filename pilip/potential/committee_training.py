"""Training a committee (``pilip train --ensemble N``): N ordinary runs, one checkpoint.

Member k is the run of the same settings with seed ``seed + k`` (its initial weights, batch
order and weak-loss perturbations; the data, and a ``--n-train`` subset drawn with ``seed``,
are the same for all), trained by the ordinary loop (pilip.potential.train) in its own run
folder, so it resumes as any run does: after a kill, the finished members only reload their
``last.pt`` (their budget is spent) and the interrupted one continues where it stopped; a
larger ``--ensemble`` later trains only the new members. What
the recipes prepared is shared: a Delta baseline is computed once for all members; fine-tuning
from a committee starts member k from the init's member k mod M. The budget (epochs,
minutes, CPU minutes) is per member. The run folder::

    OUT/members/<k>/   member k: config.json, metrics.csv, last.pt, model.pt
    OUT/model.pt       the committee (pilip.potential.committee), written when all are done;
                       its meta's val_energy_rmse is the mean's, best_epoch member 0's
    OUT/metrics.csv    member 0's learning curve (pilip evaluate, the workflow's reports)
    OUT/config.json    the run's settings (``seed`` the first member's, ``ensemble`` N)
    OUT/train.log      every member's log lines, prefixed by the member
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pilip.atomic_io import atomic_path
from pilip.potential.checkpoint import read_checkpoint
from pilip.potential.committee import committee_from_checkpoint, committee_payload
from pilip.potential.data import VAL, Structures
from pilip.potential.devices import resolve_device
from pilip.potential.run_folder import BEST_FILE, CONFIG_FILE, MEMBERS_DIR, METRICS_FILE
from pilip.potential.train_config import TrainConfig

if TYPE_CHECKING:
    from pilip.potential.train import LossSurface, TrainResult


def member_dir(out_dir: Path, k: int) -> Path:
    """The run folder of member ``k`` of the committee in ``out_dir``."""
    return Path(out_dir) / MEMBERS_DIR / str(k)


def member_config(config: TrainConfig, k: int) -> TrainConfig:
    """The settings of member ``k``: a single model of seed ``seed + k``."""
    return dataclasses.replace(config, seed=config.seed + k, ensemble=1)


def train_committee(
    config: TrainConfig,
    data: dict[str, Structures],
    out_dir: Path,
    *,
    unlabelled: Structures | None = None,
    init_weights: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]] | None = None,
    meta: dict[str, Any] | None = None,
    surface: LossSurface | None = None,
    resume: bool = True,
    restart_if_changed: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> TrainResult:
    """Train the ``config.ensemble`` members (arguments: ``pilip.potential.train.train``'s),
    then write the committee's model.pt, metrics.csv and config.json in ``out_dir``."""
    from pilip.potential.train import TrainResult, train

    inits = init_weights if isinstance(init_weights, list) else [init_weights]
    results = []
    for k in range(config.ensemble):
        member = member_config(config, k)
        prefix = f"member {k} (seed {member.seed}): "
        result = train(
            member, data, member_dir(out_dir, k), unlabelled=unlabelled,
            init_weights=inits[k % len(inits)], meta=meta, surface=surface, resume=resume,
            restart_if_changed=restart_if_changed, progress=progress,
            log=lambda message, prefix=prefix: log(prefix + message),
        )  # fmt: skip
        results.append(result)
    rmse = write_committee(config, data, out_dir, surface)
    log(
        f"committee of {config.ensemble}: validation energy RMSE of the mean "
        f"{1000 * rmse:.2f} meV (members "
        + ", ".join(f"{1000 * r.best_val_energy_rmse:.2f}" for r in results)
        + f" meV) -> {Path(out_dir) / BEST_FILE}"
    )
    first = results[0]
    return TrainResult(
        first.best_epoch, rmse, first.epochs, first.stop_reason,
        sum(r.wall_time_s for r in results), Path(out_dir), members=results,
    )  # fmt: skip


def write_committee(
    config: TrainConfig,
    data: dict[str, Structures],
    out_dir: Path,
    surface: LossSurface | None = None,
) -> float:
    """Combine the members' model.pt into ``out_dir``/model.pt (written last), with member 0's
    metrics.csv and the run's config.json; returns the committee mean's validation energy
    RMSE (eV, on what the members were selected on)."""
    from pilip.potential.train import validation_errors

    out_dir = Path(out_dir)
    payloads = [read_checkpoint(member_dir(out_dir, k) / BEST_FILE) for k in range(config.ensemble)]
    first = payloads[0]["meta"]
    run_config = {**first["config"], "seed": config.seed, "ensemble": config.ensemble}
    meta = {k: v for k, v in first.items() if k != "data_fingerprint"}  # member 0's data+init
    meta["config"] = run_config
    payload = committee_payload(payloads, meta)

    device, dtype = resolve_device(config.device), getattr(torch, config.dtype)
    committee = committee_from_checkpoint(payload, device, str(out_dir / BEST_FILE)).eval()
    model, val = committee, data[VAL]
    if surface is not None:  # the members were selected on the total surface
        model, val = surface.wrap(committee, dtype), surface.labels(val)
    rmse = validation_errors(model, val.to(device, dtype), val, config.val_batch_size)
    payload["meta"]["val_energy_rmse"] = float(rmse["energy_rmse"])
    for k, member in enumerate(payload["meta"]["members"]):  # for reports: the whole cost
        member["train_time_s"] = last_wall_time(member_dir(out_dir, k) / METRICS_FILE)

    with atomic_path(out_dir / METRICS_FILE) as tmp:
        tmp.write_bytes((member_dir(out_dir, 0) / METRICS_FILE).read_bytes())
    with atomic_path(out_dir / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(run_config, indent=2, sort_keys=True) + "\n")
    with atomic_path(out_dir / BEST_FILE) as tmp:
        torch.save(payload, tmp)
    return float(rmse["energy_rmse"])


def last_wall_time(metrics_csv: Path) -> float | None:
    """Seconds of training (over all sessions) in a run folder's metrics.csv, None if empty."""
    import csv

    with open(metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return float(rows[-1]["wall_time_s"]) if rows and rows[-1].get("wall_time_s") else None
