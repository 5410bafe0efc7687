"""Training-step time of the loss modes: energy-only, energy+force, weak losses (3 calls, fused).

One step = zero_grad + losses + backward + AdamW step, for SchNet and PaiNN on batches of
small molecules (default: 21-atom C9H8O4 geometries, aspirin-sized, built at random; or
structures read from an xyz file with ``--xyz``). Reports the median step time over repeats
after warm-up (CUDA synchronised), its ratio to the energy+force step, structures per second
and peak memory (CUDA: torch.cuda.max_memory_allocated; CPU: the whole process's peak resident
set during the timed steps, reset per configuration through /proc/self/clear_refs on Linux).
On CUDA, two more modes run the energy+force and the fused weak-loss steps the way
``pilip train`` runs them on a GPU (``pilip.potential.static_step``): the batch padded to a static
shape on the CPU, the losses and backward pass captured once as a CUDA graph and replayed,
AdamW eagerly. Gradient clipping and the EMA (a few foreach kernels in pilip train) are in
no mode.

    python -m benchmarks.step_time --device cuda --out benchmarks/out/step_time_cuda
    python -m benchmarks.step_time --device cpu --batch-sizes 6,32 --repeats 3 --out DIR
    python -m benchmarks.step_time --device cpu --out DIR --smoke    # seconds (tests)

Writes DIR/step_time.json and DIR/step_time.md. Needs torch and numpy (ase only for --xyz).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pilip import keys
from pilip.potential.losses import LossTerm, WeakLossOptions, compute_losses
from pilip.potential.models import build_model

MODES = {
    # name: (loss terms, weak-loss mode)
    "energy": ([LossTerm("energy", 1.0)], "fused"),
    "energy+forces": ([LossTerm("energy", 1.0), LossTerm("forces", 10.0)], "fused"),
    "weak_three_calls": (
        [LossTerm("energy", 1.0), LossTerm("pitc", 1.2), LossTerm("pisc", 0.01)],
        "three_calls",
    ),
    "weak_fused": (
        [LossTerm("energy", 1.0), LossTerm("pitc", 1.2), LossTerm("pisc", 0.01)],
        "fused",
    ),
}
REFERENCE_MODE = "energy+forces"
GRAPH_SUFFIX = "+graph"  # pilip train's static step: padded, captured once, replayed
GRAPH_MODES = ("energy+forces+graph", "weak_fused+graph")


def random_molecule(rng: np.random.Generator, heavy: str = "CCCCCCCCCOOOO", n_h: int = 8):
    """(numbers, positions A) of a random connected molecule: heavy atoms grown as a tree
    with 1.45 A bonds, then hydrogens at 1.09 A; no two atoms closer than 1.0 A."""
    z_of = {"C": 6, "O": 8, "N": 7}
    positions: list[np.ndarray] = [np.zeros(3)]
    numbers = [z_of[heavy[0]]]

    def place(anchor: np.ndarray, bond: float) -> np.ndarray:
        for _ in range(1000):
            direction = rng.normal(size=3)
            candidate = anchor + bond * direction / np.linalg.norm(direction)
            if min(np.linalg.norm(candidate - p) for p in positions) > 1.0 + 1e-9 or not positions:
                return candidate
        raise RuntimeError("could not place an atom")

    for symbol in heavy[1:]:
        anchor = positions[int(rng.integers(len(positions)))]
        positions.append(place(anchor, 1.45))
        numbers.append(z_of[symbol])
    n_heavy = len(positions)
    for _ in range(n_h):
        positions.append(place(positions[int(rng.integers(n_heavy))], 1.09))
        numbers.append(1)
    return np.array(numbers), np.array(positions)


def molecules(n: int, xyz: str | None, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` structures: read from ``xyz`` (cycled), or 4 random molecules rattled by 0.05 A."""
    rng = np.random.default_rng(seed)
    if xyz:
        from ase.io import read

        frames = read(xyz, ":")
        return [(a.numbers, a.positions) for a in (frames[i % len(frames)] for i in range(n))]
    bases = [random_molecule(rng) for _ in range(4)]
    out = []
    for i in range(n):
        z, r = bases[i % len(bases)]
        out.append((z, r + rng.normal(scale=0.05, size=r.shape)))
    return out


def make_batch(structures, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    n_atoms = torch.tensor([len(z) for z, _ in structures])
    g = torch.Generator().manual_seed(seed)
    batch = {
        keys.NUMBERS: torch.from_numpy(np.concatenate([z for z, _ in structures])).long(),
        keys.POSITIONS: torch.from_numpy(np.concatenate([r for _, r in structures])).float(),
        keys.BATCH: torch.repeat_interleave(torch.arange(len(structures)), n_atoms),
        keys.N_ATOMS: n_atoms,
        keys.ENERGY: torch.randn(len(structures), generator=g),
    }
    batch[keys.FORCES] = torch.randn(batch[keys.POSITIONS].shape, generator=g)
    return {k: v.to(device) for k, v in batch.items()}


def _rss_status(field: str) -> float | None:
    """A /proc/self/status memory field (VmRSS, VmHWM) in MB, None where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to VmRSS
        return True
    except OSError:
        return False


def time_steps(model_name, mode, batch_size, args, device) -> dict:
    graphed = mode.endswith(GRAPH_SUFFIX)
    base_mode = mode.removesuffix(GRAPH_SUFFIX)
    torch.manual_seed(0)
    model = build_model(model_name).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    terms, weak_mode = MODES[base_mode]
    options = WeakLossOptions(eps=0.05, k=0.0, mode=weak_mode)  # the paper's settings, as published
    batch = make_batch(molecules(batch_size, args.xyz), device)
    cuda = device.type == "cuda"

    if graphed:
        # exactly pilip train's static step: the batch padded on the CPU, copied into the
        # static inputs, the captured losses + backward replayed, then AdamW eagerly; the
        # default CUDA generator is the one a graph capture registers
        from pilip.potential.static_step import StaticShape, StaticStep, pad_batch

        host_batch = {k: v.cpu() for k, v in batch.items()}
        shape = StaticShape(batch_size, int(host_batch[keys.N_ATOMS].max()))
        generator = torch.cuda.default_generators[device.index or 0]
        static_step = StaticStep(model, terms, options, generator, capture=True)

        def full_step():
            static_step(pad_batch(host_batch, shape))
            optimizer.step()
    else:
        generator = torch.Generator(device=device).manual_seed(0)

        def full_step():
            optimizer.zero_grad(set_to_none=True)
            losses = compute_losses(model, batch, terms, generator, options)
            losses["total"].backward()
            optimizer.step()

    for _ in range(args.warmup):
        full_step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        rss_reset = _reset_peak_rss()
    times, cpu_times = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        full_step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    median = statistics.median(times)
    result = {
        "model": model_name,
        "mode": mode,
        "batch_size": batch_size,
        "n_atoms": int(batch[keys.N_ATOMS].sum()),
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "repeats": args.repeats,
        "structures_per_s": batch_size / median,
        # process CPU time: on a shared CPU machine, steadier than wall time under contention
        "median_cpu_s": statistics.median(cpu_times),
    }
    if cuda:
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["memory_kind"] = "cuda_max_memory_allocated"
    else:
        peak = _rss_status("VmHWM")
        if rss_reset and peak is not None:
            result["peak_memory_mb"] = peak
            result["memory_kind"] = "process_peak_rss_during_timed_steps"
        else:
            import resource

            result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            result["memory_kind"] = "rss_peak_of_process"
    return result


def markdown(results: list[dict], failures: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| model | batch | mode | median step (ms) | x energy+forces | structures/s "
        "| peak mem (MB) | CPU time (ms) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    reference = {
        (r["model"], r["batch_size"]): r["median_s"] for r in results if r["mode"] == REFERENCE_MODE
    }
    for r in results:
        ref = reference.get((r["model"], r["batch_size"]))
        ratio = f"{r['median_s'] / ref:.2f}" if ref else "-"
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['mode']} | {1000 * r['median_s']:.1f} | "
            f"{ratio} | {r['structures_per_s']:.0f} | {r['peak_memory_mb']:.0f} | "
            f"{1000 * r['median_cpu_s']:.0f} |"
        )
    summary = []
    for model, size in sorted(reference):
        t = {
            r["mode"]: r["median_s"]
            for r in results
            if r["model"] == model and r["batch_size"] == size
        }
        three = t.get("weak_three_calls")
        for weak, ref_mode in (
            ("weak_fused", REFERENCE_MODE),
            ("weak_fused+graph", "energy+forces+graph"),
        ):
            if weak not in t:
                continue
            parts = [f"{t[weak] / t[REFERENCE_MODE]:.2f}x the eager energy+forces step"]
            if ref_mode != REFERENCE_MODE and ref_mode in t:
                parts.append(f"{t[weak] / t[ref_mode]:.2f}x the graphed energy+forces step")
            if three:
                parts.append(f"{three / t[weak]:.2f}x the structures/s of three calls")
            summary.append(f"- {model}, batch {size}, {weak}: " + ", ".join(parts))
    failed = [
        f"- FAILED {f['model']} batch {f['batch_size']} {f['mode']}: {f['error']}" for f in failures
    ]
    return "\n".join([*lines, "", *summary, *failed, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--models", default="painn,schnet")
    parser.add_argument("--batch-sizes", default="6,32,128")
    parser.add_argument(
        "--modes",
        default=None,
        help=f"comma-separated, from {', '.join([*MODES, *GRAPH_MODES])}; "
        "default: all (the +graph ones on CUDA only)",
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--xyz", default=None, help="read molecules from this file (needs ase)")
    parser.add_argument(
        "--smoke", action="store_true", help="batch 2, 1 warm-up step, 1 repeat (tests)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch_sizes, args.warmup, args.repeats = "2", 1, 1
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.modes is None:
        modes = [*MODES, *(GRAPH_MODES if args.device == "cuda" else ())]
    else:
        modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES) - set(GRAPH_MODES))
    if unknown:
        parser.error(f"unknown mode(s) {unknown}: choose from {[*MODES, *GRAPH_MODES]}")
    if args.device == "cpu" and any(m in GRAPH_MODES for m in modes):
        parser.error("the +graph modes need --device cuda")

    results, failures = [], []
    for model_name in args.models.split(","):
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            for mode in modes:
                try:
                    r = time_steps(model_name, mode, batch_size, args, device)
                except Exception as exc:  # a failed capture is a result too: report, go on
                    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    error = f"{type(exc).__name__}: {message}"
                    print(f"{model_name} batch {batch_size} {mode}: FAILED {error}", flush=True)
                    failures.append(
                        {
                            "model": model_name,
                            "batch_size": batch_size,
                            "mode": mode,
                            "error": error,
                        }
                    )
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                        torch.cuda.empty_cache()
                    continue
                results.append(r)
                print(
                    f"{model_name:7s} batch {batch_size:4d} {mode:17s} "
                    f"{1000 * r['median_s']:9.1f} ms  {r['structures_per_s']:8.0f} struct/s  "
                    f"{r['peak_memory_mb']:8.0f} MB",
                    flush=True,
                )
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    info = {
        "device": args.device,
        "device_name": device_name or platform.machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "molecules": args.xyz or "random C9H8O4 (21 atoms)",
        "repeats": args.repeats,
        "warmup": args.warmup,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_time.json").write_text(
        json.dumps({"info": info, "results": results, "failures": failures}, indent=1)
    )
    header = (
        f"Step time on {info['device_name']} ({args.device}, torch {torch.__version__}, "
        f"{args.threads} CPU thread(s)), {info['molecules']}, median of {args.repeats} "
        f"after {args.warmup} warm-up steps"
    )
    table = markdown(results, failures, header)
    (out / "step_time.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
