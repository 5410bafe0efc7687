"""python -m tools.fault_campaign: the uninterrupted run, then the parts asked for."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

import tools.fault_campaign
from tools.fault_campaign.common import DEFAULT_CONFIG, log, prepare
from tools.fault_campaign.compare import scan_files
from tools.fault_campaign.dag import run_dag
from tools.fault_campaign.damaged import damaged_campaign
from tools.fault_campaign.disk import disk_campaign
from tools.fault_campaign.kills import kill_campaign
from tools.fault_campaign.names import names_campaign
from tools.fault_campaign.qc import qc_campaign
from tools.fault_campaign.report import markdown

PARTS = ("kills", "disk", "damaged", "qc", "names")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.fault_campaign",
        description=tools.fault_campaign.__doc__.splitlines()[0],
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the study to run")
    parser.add_argument("--work", type=Path, default=Path("fault-campaign"), help="scratch folder")
    parser.add_argument("--kills", type=int, default=24, help="kill -9 count (at least 20)")
    parser.add_argument("--seed", type=int, default=13, help="seeds kill moments and bit flips")
    parser.add_argument("--flips", type=int, default=8, help="bit flips per Parquet table")
    parser.add_argument(
        "--reuse-baseline",
        action="store_true",
        help="reuse <work>/baseline from an earlier campaign (development only)",
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; choose from {','.join(PARTS)}")
    config = yaml.safe_load(args.config.read_text())
    root = args.work.resolve()
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    record: dict[str, Any] = {"config": str(args.config), "seed": args.seed}
    saved = root / "baseline" / "campaign-baseline.json"
    if args.reuse_baseline and saved.is_file():
        baseline = json.loads(saved.read_text())
    else:
        log("uninterrupted run")
        baseline = run_dag(prepare(root / "baseline", config), tmp=root / "tmp-baseline")
        if baseline["failed"]:
            raise RuntimeError(f"the uninterrupted run failed: {baseline['failed']}")
        baseline["bad_files"] = scan_files(root / "baseline")
        saved.write_text(json.dumps(baseline))
    record["baseline"] = baseline
    log(f"uninterrupted run: {baseline['wall_s']:.1f} s, stages {baseline['stages_seen']}")
    campaigns = {
        "kills": lambda: kill_campaign(root, config, baseline, args.kills, args.seed),
        "disk": lambda: disk_campaign(root, config),
        "damaged": lambda: damaged_campaign(root, args.flips, args.seed),
        "qc": lambda: qc_campaign(root, config),
        "names": lambda: names_campaign(root, config),
    }
    for part in parts:
        log(f"part: {part}")
        try:
            record[part] = campaigns[part]()
        except Exception as exc:  # a campaign reports what broke and goes on with the rest
            record[part] = {"crashed": f"{type(exc).__name__}: {exc}"}
            log(f"part {part} crashed: {exc}")
        (root / "campaign.json").write_text(json.dumps(record, indent=1, default=str))
    record["wall_s"] = time.monotonic() - started
    (root / "campaign.json").write_text(json.dumps(record, indent=1, default=str))
    (root / "campaign.md").write_text(markdown(record))
    print(markdown(record))
    log(f"figures: {root / 'campaign.md'}, every number: {root / 'campaign.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
