"""The fast parts of the fault campaign (``python -m tools.fault_campaign``), run for real.

The whole campaign (kills, a full disk, Psi4 faults: about 8 minutes) is run by hand
(docs/reliability.md); here its own machinery and the parts that need no finished DAG:
damaged tables and configs fed to the commands that read them, the process-tree kill, the
file checks, the report, and hostile names through Snakemake.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pilip import tables
from tools.fault_campaign import common, compare, damaged, names, processes, report

E2E_CONFIG = Path(__file__).resolve().parents[1] / "e2e" / "config.yaml"
WATER = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]])
CLEAN = {"rejected", "harmless", "recomputed"}


def test_bit_flips_are_seeded_and_land_where_asked():
    data = bytes(range(256)) * 4 + (100).to_bytes(4, "little") + b"PAR1"
    a, offset = damaged.flip_bit(data, random.Random(1))
    b, same = damaged.flip_bit(data, random.Random(1))
    assert (a, offset) == (b, same) and a != data and len(a) == len(data)
    for seed in range(20):
        flipped, offset = damaged.flip_bit(data, random.Random(seed), footer=True)
        assert len(data) - 8 - 100 <= offset < len(data) - 8
        assert sum(x != y for x, y in zip(flipped, data, strict=True)) == 1


def test_damaged_configurations_table_is_refused_or_harmless(tmp_path):
    rng = np.random.default_rng(0)
    positions = [WATER + rng.normal(0, 0.05, (3, 3)) for _ in range(6)]
    table = tables.configurations_table(
        [np.array([8, 1, 1])] * 6, positions, system="water", generator="rattle"
    )
    tables.write_table(table, tmp_path / "water.parquet", "configurations", {"command": "test"})
    cases = damaged.damaged_table_cases(
        tmp_path, "configurations", "water.parquet",
        ["chunk", "{}", "--size", "4", "-o", "out/chunks"], "out", 4, random.Random(13),
    )  # fmt: skip
    assert len(cases) == 2 + 2 * 4
    assert {c["verdict"] for c in cases} <= CLEAN, cases
    assert cases[0]["verdict"] == "rejected" and "water.parquet" in cases[0]["error"]
    assert tables.read_table(tmp_path / "water.parquet").num_rows == 6  # restored after


def test_a_wrong_type_in_every_config_section_is_refused_in_one_line(tmp_path):
    shutil.copy(E2E_CONFIG, tmp_path / "config.yaml")
    cases = damaged.damaged_config_cases(tmp_path)
    assert len(cases) >= 20
    assert {c["verdict"] for c in cases} == {"rejected"}, [
        c for c in cases if c["verdict"] != "rejected"
    ]


def test_kill_tree_leaves_no_process_of_the_group():
    proc = subprocess.Popen(["bash", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    try:
        for _ in range(100):
            if len(processes.descendants(proc.pid)) >= 3:
                break
            time.sleep(0.05)
        tree = processes.descendants(proc.pid)
        assert len(tree) >= 3 and all(processes.alive(pid) for pid in tree)
        assert processes.kill_tree(proc) == []
        assert not any(processes.alive(pid) for pid in tree)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def test_stages_are_read_from_the_command_lines():
    procs = {
        1: "/usr/bin/python -m snakemake -s Snakefile",
        2: "/bin/bash -c .venv/bin/pilip label chunks/water/chunk-0000.parquet -o x",
        3: "/usr/bin/python3 -m pilip.reference.worker.psi4_worker",
        4: "pilip train datasets/mp2_cbs.parquet --out models/energy",
    }
    assert processes.stages_running(procs) == {"labelling", "training"}
    assert processes.stages_running({1: procs[1]}) == set()


def test_files_that_do_not_read_back_are_found(tmp_path):
    (tmp_path / "good.json").write_text('{"a": 1}')
    (tmp_path / "cut.jsonl").write_text('{"a": 1}\n{"a"')
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    (tmp_path / ".model.pt.vm.123.tmp").write_bytes(b"x")
    (tmp_path / "half.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    bad = compare.scan_files(tmp_path)
    assert set(bad) == {"cut.jsonl", "ragged.csv", ".model.pt.vm.123.tmp", "half.png"}
    assert bad[".model.pt.vm.123.tmp"] == "temporary name"


def test_numbers_leave_out_timings_and_names():
    record = {"energy_rmse": 0.5, "train_time_s": 3.0, "per": {"O": 1, "host": 2}, "x": [1.5]}
    assert dict(compare.numbers(record)) == {"energy_rmse": 0.5, "per.O": 1.0, "x.0": 1.5}


def test_refusal_verdicts():
    assert common.refusal(2, "pilip x: error: a.parquet: damaged\n", "a.parquet") == "rejected"
    assert common.refusal(2, "pilip x: error: damaged\n", "a.parquet") == "unclear error"
    assert common.refusal(1, "Traceback (most recent call last):\n", "a") == "traceback"


def test_the_report_renders_the_parts_it_has():
    record = {
        "baseline": {"wall_s": 31.2},
        "wall_s": 450.0,
        "seed": 13,
        "damaged": {
            "tried": 2, "rejected": 1, "recomputed": 0, "harmless": 1,
            "verdicts": {"rejected": 1, "harmless": 1},
            "cases": [
                {"case": "dataset table, bit 0 flipped (byte 5 of 90)", "verdict": "harmless",
                 "error": ""},
                {"case": "config, wrong type at report.title", "verdict": "rejected",
                 "error": "pilip sample: error: bad.yaml: report.title: expected string"},
            ],
        },
        "disk": {"skipped": "mounting a tmpfs needs root"},
        "qc": {"crashed": "RuntimeError: no Psi4"},
    }  # fmt: skip
    text = report.markdown(record)
    assert "Campaign: 7.5 min, seed 13" in text
    assert "| dataset table, one bit flipped | 1 | harmless 1 |" in text
    assert "a wrong type (each section, and a key in it)" in text
    assert "### 2." not in text and "### 4." not in text


@pytest.mark.slow
@pytest.mark.workflow
@pytest.mark.parametrize(
    ("place", "kind"),
    [("system", "command substitution"), ("report baseline", "backticks"),
     ("variant", "parent folders")],
)  # fmt: skip
def test_hostile_names_are_refused_before_any_job(tmp_path, place, kind):
    start = tmp_path / "start"
    start.mkdir()
    config = yaml.safe_load(E2E_CONFIG.read_text())
    outside = tmp_path / "names"
    outside.mkdir()
    case = names.name_case(start, outside, config, place, kind, tmp_path / "tmp")
    assert case["refused_before_any_job"], case
    assert case["error_lines"] == 1 and case["files_written"] == 0
    assert not case["written_outside"] and not case["command_ran"]
