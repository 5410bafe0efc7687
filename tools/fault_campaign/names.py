"""Part 5: untrusted names in every place a name reaches, through Snakemake."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tools.fault_campaign.common import environment, log, snakemake_argv

BAD_NAMES = {
    "space": "wat er",
    "single quote": "wat'er",
    "double quote": 'wat"er',
    "semicolon": "water;touch CANARY",
    "command substitution": "$(touch CANARY)",
    "backticks": "`touch CANARY`",
    "parent folders": "../../escape",
}


def rename(config: dict[str, Any], place: str, name: str) -> dict[str, Any]:
    config = json.loads(json.dumps(config))
    if place == "system":
        config["systems"] = {name: next(iter(config["systems"].values()))}
    elif place == "reference":
        ref = config["labelling"]["reference"]
        config["references"][name] = config["references"].pop(ref)
        config["labelling"]["reference"] = name
    elif place == "force-validation reference":
        ref = config["force_validation"]["reference"]
        config["references"][name] = config["references"].pop(ref)
        config["force_validation"]["reference"] = name
    elif place == "variant":
        config.setdefault("training", {})["variants"] = {
            "energy": {"losses": ["energy"]},
            name: {"losses": ["energy", "pitc", "pisc"]},
        }
    elif place == "report baseline":
        config.setdefault("report", {})["baseline"] = name
    return config


PLACES = ("system", "reference", "force-validation reference", "variant", "report baseline")


def name_case(
    start: Path, outside: Path, config: dict[str, Any], place: str, kind: str, tmp: Path
) -> dict[str, Any]:
    """``BAD_NAMES[kind]`` as ``place`` in a copy of the run folder ``start`` (made in
    ``outside/work``), through Snakemake: refused before any job, nothing written outside the
    working folder, no injected command run?"""
    work = outside / "work"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(start, work, ignore=shutil.ignore_patterns("locks"))
    (work / "config.yaml").write_text(
        yaml.safe_dump(rename(config, place, BAD_NAMES[kind]), sort_keys=False)
    )
    done = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}
    before = {p.name for p in outside.iterdir()}
    proc = subprocess.run(
        snakemake_argv(),
        cwd=work,
        env=environment(tmp),
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    made = sorted(
        str(p.relative_to(work))
        for p in work.rglob("*")
        if p.is_file() and ".snakemake" not in p.parts and done.get(p) != p.stat().st_mtime_ns
    )
    escaped = sorted({p.name for p in outside.iterdir()} - before - {"work"})
    canary = any(p.name == "CANARY" for p in outside.rglob("*")) or Path("CANARY").exists()
    refused = proc.returncode != 0 and not made and len(errors) == 1
    return {
        "place": place,
        "kind": kind,
        "refused_before_any_job": refused,
        "error": errors[0] if errors else (lines[-1] if lines else ""),
        "error_lines": len(errors),
        "files_written": len(made),
        "written_outside": escaped,
        "command_ran": canary,
    }


def names_campaign(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Every bad name in every place, through Snakemake: refused before any job runs?

    Each starts from the finished uninterrupted run, so a name that passed would rerun only
    what it reaches, and reach the shell."""
    outside = root / "names"
    if outside.exists():
        shutil.rmtree(outside)
    outside.mkdir()
    cases = []
    for place in PLACES:
        for kind in BAD_NAMES:
            case = name_case(root / "baseline", outside, config, place, kind, root / "tmp-names")
            cases.append(case)
            refused = case["refused_before_any_job"]
            log(f"  name {kind!r} as {place}: {'refused' if refused else 'NOT refused'}")
    return {
        "tried": len(cases),
        "refused": sum(c["refused_before_any_job"] for c in cases),
        "written_outside": sum(bool(c["written_outside"]) for c in cases),
        "commands_ran": sum(c["command_ran"] for c in cases),
        "cases": cases,
    }
