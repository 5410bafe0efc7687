"""Part 3: every damaged input fed to the command that reads it."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from tools.fault_campaign.common import evaluate_argv, in_process, refusal, run_pilip, train_argv
from tools.fault_campaign.compare import bits, csv_numbers, outputs_of


def flip_bit(data: bytes, rng: random.Random, footer: bool = False) -> tuple[bytes, int]:
    """``data`` with one seeded bit flipped anywhere, or (``footer``) in the Parquet footer:
    the schema, encodings, offsets and metadata, which no page CRC covers."""
    start = 0
    if footer:
        start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    offset = rng.randrange(start, len(data) - (8 if footer else 0))
    flipped = bytearray(data)
    flipped[offset] ^= 1 << rng.randrange(8)
    return bytes(flipped), offset


def damaged_case(
    work: Path, name: str, argv: list[str], output: str, damaged: str, good: dict[str, Any]
) -> dict[str, Any]:
    """Run one command on a damaged file; rejected / harmless / silently wrong / traceback."""
    if (work / output).exists():
        shutil.rmtree(work / output) if (work / output).is_dir() else (work / output).unlink()
    code, err = in_process(argv, work)
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 0:
        verdict = "harmless" if outputs_of(work / output) == good else "silently wrong"
    else:
        verdict = refusal(code, err, Path(damaged).name)
    return {"case": name, "verdict": verdict, "error": lines[-1] if lines else ""}


def damaged_table_cases(
    work: Path,
    kind: str,
    path: str,
    template: list[str],
    output: str,
    flips: int,
    rng: random.Random,
) -> list[dict[str, Any]]:
    """The Parquet table ``path`` (relative to ``work``) truncated, its footer cut, ``flips``
    seeded bits flipped anywhere and ``flips`` in the footer, each fed to the command
    ``template`` (``{}`` for the file) that writes ``output``; the table restored after."""
    original = (work / path).read_bytes()
    argv = [a.replace("{}", path) for a in template]
    if (work / output).exists():
        shutil.rmtree(work / output)
    code, err = in_process(argv, work)
    if code != 0:
        raise RuntimeError(f"{kind}: the undamaged file fails: {err}")
    good = outputs_of(work / output)
    damages = {
        "truncated to half": original[: len(original) // 2],
        "footer cut": original[:-9],
    }
    for i in range(flips):
        data, offset = flip_bit(original, rng)
        damages[f"bit {i} flipped (byte {offset} of {len(original)})"] = data
    for i in range(flips):
        data, offset = flip_bit(original, rng, footer=True)
        damages[f"footer bit {i} flipped (byte {offset} of {len(original)})"] = data
    cases = []
    try:
        for name, data in damages.items():
            (work / path).write_bytes(data)
            cases.append(damaged_case(work, f"{kind} table, {name}", argv, output, path, good))
    finally:
        (work / path).write_bytes(original)
    return cases


def damaged_campaign(root: Path, flips: int, seed: int) -> dict[str, Any]:
    """Every damaged input fed to the command that reads it, in this process."""
    import torch

    torch.set_num_threads(1)
    rng = random.Random(seed)
    baseline = root / "baseline"
    config = yaml.safe_load((baseline / "config.yaml").read_text())
    ref = config["labelling"]["reference"]
    fv = config["force_validation"]["reference"]
    work = root / "damaged"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for rel in (
        "config.yaml",
        "configurations",
        "chunks",
        "labels",
        "datasets",
        "force_validation",
        "models",
    ):
        src = baseline / rel
        shutil.copytree(src, work / rel) if src.is_dir() else shutil.copy(src, work / rel)
    labels = sorted(
        str(p.relative_to(work)) for p in (work / "labels" / ref).rglob("chunk-*.parquet")
    )
    # the table, the command that reads it (with {} for the file), the output folder/file
    readers = {
        "configurations": (
            "configurations/water.parquet",
            ["chunk", "{}", "--size", "8", "-o", "out/chunks"],
            "out",
        ),
        "labels": (
            labels[0],
            [
                "collect",
                "--configurations",
                "configurations/water.parquet",
                "--labels",
                "{}",
                *labels[1:],
                "--force-validation",
                f"labels/{fv}/force_validation.parquet",
                "--config",
                "config.yaml",
                "-o",
                "out/dataset.parquet",
                "--summary",
                "out/summary.txt",
            ],
            "out",
        ),
        "dataset": (
            f"datasets/{ref}.parquet",
            train_argv("{}", "out/run"),
            "out",
        ),
    }
    cases = []
    for kind, (path, template, output) in readers.items():
        cases += damaged_table_cases(work, kind, path, template, output, flips, rng)
    cases += damaged_jsonl_cases(work, ref, flips, rng)
    cases += damaged_checkpoint_cases(work, ref)
    cases += flipped_checkpoint_cases(work, ref, flips, rng)
    cases += damaged_config_cases(work)
    verdicts = Counter(c["verdict"] for c in cases)
    return {
        "tried": len(cases),
        "rejected": verdicts.get("rejected", 0),
        "harmless": verdicts.get("harmless", 0),
        "recomputed": verdicts.get("recomputed", 0),
        "verdicts": dict(verdicts),
        "cases": cases,
    }


def damaged_jsonl_cases(
    work: Path, ref: str, flips: int = 0, rng: random.Random | None = None
) -> list[dict[str, Any]]:
    """A results JSONL cut mid-line (recomputed), one with a broken line inside (refused), and
    ``flips`` with one seeded bit flipped (refused, or the same labels)."""
    cases = []
    chunk = "chunks/water/chunk-0000.parquet"
    labels = Path(f"labels/{ref}/water/chunk-0000.parquet")
    results = labels.with_name("chunk-0000.results.jsonl")
    original = (work / results).read_bytes()
    good = pq.read_table(work / labels).to_pylist()
    lines = original.split(b"\n")
    cut = b"\n".join(lines[:4]) + b"\n" + lines[4][: len(lines[4]) // 2]
    broken = b"\n".join([*lines[:2], lines[2][:40], *lines[3:]])
    argv = ["label", chunk, "--reference", ref, "--config", "config.yaml", "-o", str(labels)]
    damages = [("cut mid-line", cut), ("a broken line inside", broken)]
    for i in range(flips):  # not the last newline: that would be a cut, tested above
        data, offset = flip_bit(original[:-1], rng)
        damages.append((f"bit {i} flipped (byte {offset} of {len(original)})", data + b"\n"))
    for name, data in damages:
        (work / labels).unlink(missing_ok=True)
        (work / results).write_bytes(data)
        proc = run_pilip(argv, work)  # real Psi4 for the geometries to recompute
        err = [line for line in proc.stderr.splitlines() if line.strip()]
        if proc.returncode == 0:
            got = pq.read_table(work / labels).to_pylist()
            same = [bits(a["energy"]) == bits(b["energy"]) for a, b in zip(got, good, strict=False)]
            written = (work / results).read_bytes().split(b"\n")[:-1]
            ok = all(same) and len(same) == len(good) and len(written) == len(good)
            verdict = "recomputed" if ok else "silently wrong"
            if ok and "bit" in name:  # nothing to recompute: the flip changed nothing read
                verdict = "harmless" if "computed 0 now" in proc.stderr else "recomputed"
        else:
            verdict = refusal(proc.returncode, proc.stderr, results.name)
        cases.append(
            {"case": f"results JSONL, {name}", "verdict": verdict, "error": err[-1] if err else ""}
        )
    (work / results).write_bytes(original)
    return cases


def damaged_checkpoint_cases(work: Path, ref: str) -> list[dict[str, Any]]:
    """model.pt cut short (evaluate, md) and last.pt cut short (train resumes from it)."""
    cases = []
    for name in ("model.pt", "last.pt"):
        path = work / "models" / "energy" / name
        original = path.read_bytes()
        path.write_bytes(original[: len(original) // 2])
        if name == "model.pt":
            commands = {
                "evaluate": evaluate_argv(ref),
                "md": [
                    "md",
                    "models/energy/model.pt",
                    f"datasets/{ref}.parquet",
                    "--out",
                    "out/md",
                    "--device",
                    "cpu",
                    "--steps",
                    "5",
                ],
            }
        else:
            commands = {
                "train (resume)": train_argv(f"datasets/{ref}.parquet", "models/energy"),
            }
        for command, argv in commands.items():
            shutil.rmtree(work / "out", ignore_errors=True)
            code, err = in_process(argv, work)
            lines = [line for line in err.splitlines() if line.strip()]
            if code != 0:
                verdict = refusal(code, err, name)
            else:
                verdict = "accepted"  # judged below for last.pt: a fresh start is fine
                if name == "last.pt":
                    got = dict(csv_numbers(work / "models/energy/metrics.csv"))
                    want = dict(csv_numbers(root_of(work) / "baseline/models/energy/metrics.csv"))
                    verdict = "recomputed" if got == want else "silently wrong"
            cases.append(
                {
                    "case": f"checkpoint {name} cut short, {command}",
                    "verdict": verdict,
                    "error": lines[-1] if lines else "",
                }
            )
        path.write_bytes(original)
    return cases


def flipped_checkpoint_cases(
    work: Path, ref: str, flips: int, rng: random.Random
) -> list[dict[str, Any]]:
    """model.pt with one seeded bit flipped, evaluated: refused, or exactly the same metrics."""
    path = work / "models" / "energy" / "model.pt"
    argv = evaluate_argv(ref)
    shutil.rmtree(work / "out", ignore_errors=True)
    code, err = in_process(argv, work)
    if code != 0:
        raise RuntimeError(f"evaluate: the undamaged checkpoint fails: {err}")
    good = outputs_of(work / "out" / "eval")
    original = path.read_bytes()
    cases = []
    for i in range(flips):
        data, offset = flip_bit(original, rng)
        path.write_bytes(data)
        name = f"checkpoint model.pt, bit {i} flipped (byte {offset} of {len(original)}), evaluate"
        cases.append(damaged_case(work, name, argv, "out/eval", "model.pt", good))
    path.write_bytes(original)
    return cases


def root_of(work: Path) -> Path:
    return work.parent


def wrong_type(spec: dict[str, Any]) -> Any:
    types = spec.get("type", [])
    types = [types] if isinstance(types, str) else types
    return [1, 2] if "string" in types or "enum" in spec else "ten"


def damaged_config_cases(work: Path) -> list[dict[str, Any]]:
    """A wrong type in every section of the config (the section itself, and one key in it)."""
    from pilip.config import load_schema

    schema = load_schema()
    base = yaml.safe_load((work / "config.yaml").read_text())
    cases = []
    for section, spec in schema["properties"].items():
        variants = {f"{section}: 42": (section, None, 42)}
        inner = spec.get("properties")
        if inner is None and isinstance(spec.get("additionalProperties"), dict):
            entry = spec["additionalProperties"]
            name = next(iter(base.get(section) or {}), None)
            if name and entry.get("properties"):
                key, leaf = next(iter(entry["properties"].items()))
                variants[f"{section}.{name}.{key}"] = (section, (name, key), wrong_type(leaf))
        elif inner:
            key, leaf = next((k, v) for k, v in inner.items() if v.get("type") != "object")
            variants[f"{section}.{key}"] = (section, (key,), wrong_type(leaf))
        for label, (sec, path, value) in variants.items():
            config = json.loads(json.dumps(base))
            if path is None:
                config[sec] = value
            else:
                node = config.setdefault(sec, {})
                for part in path[:-1]:
                    node = node.setdefault(part, {})
                node[path[-1]] = value
            (work / "bad.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            argv = ["sample", "--config", "bad.yaml", "--system", "water", "-o", "out/x.parquet"]
            shutil.rmtree(work / "out", ignore_errors=True)
            code, err = in_process(argv, work)
            lines = [line for line in err.splitlines() if line.strip()]
            key = sec if path is None else path[-1]
            if code == 0:
                verdict = "silently wrong"
            else:
                verdict = refusal(code, err, "bad.yaml")
                if verdict == "rejected" and key not in lines[-1]:
                    verdict = "unclear error"
            cases.append(
                {
                    "case": f"config, wrong type at {label}",
                    "verdict": verdict,
                    "error": lines[-1] if lines else "",
                }
            )
    return cases
