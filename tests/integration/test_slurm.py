"""pilip's workflow through its SLURM profile on a real one-node SLURM (slurm_cluster.py).

Two Snakemake runs share the cluster and run at the same time, both with `--executor slurm`
and the profile in workflow/profiles/slurm (test-only changes applied to a copy):
- a tiny xtb study, end to end: sampling, chunks grouped two per SLURM job, labels,
  dataset, training in the GPU partition with a GPU granted (none present: it runs on CPU),
  evaluation, MD and the summary;
- a one-chunk labelling run whose chunk outlasts its one-minute SLURM time limit: SLURM
  kills it, Snakemake resubmits it (attempt 2, longer limit) and it resumes from the
  geometries it had finished. Its backend sleeps instead of computing (a test plugin), so
  the cluster advertises 4 CPUs on this 2-core machine.

Runs as root on Debian (installs slurm-wlm and munge when missing) or wherever SLURM is
installed; skipped only when neither holds. About 3 minutes on 2 cores, set by the
time-limit run: SLURM's limits have one-minute granularity and are enforced every 30 s, and
the executor polls less often the longer a job runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.build import molecule

from pilip import keys, tables

sys.path.insert(0, str(Path(__file__).parent))
from slurm_cluster import (  # noqa: E402
    GPU_PARTITION,
    SlurmCluster,
    can_install,
    slurm_cluster,
    slurm_installed,
)

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
PLUGIN = Path(__file__).parent / "slurm_plugin" / "pilip_sleepy_backend.py"
FIRST_POLL_S = 2  # --slurm-init-seconds-before-status-checks; MinJobAge >= 3x this
NODE_CPUS = 4  # advertised on 2 cores: the time-limit run's job only sleeps
RUN_TIMEOUT_S = 330

# The time-limit run: one chunk of N_SLOW ethanol geometries at DELAY_S each. It must outlast
# the latest kill (limit 60 s + up to 30 s until slurmctld's next check + KillWait 2 s) and
# finish a geometry before the earliest (60 s minus ~10 s of job start-up).
N_SLOW, DELAY_S = 16, 6.0

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(
        not slurm_installed() and not can_install(),
        reason="SLURM is not installed and cannot be (needs root and apt-get)",
    ),
]

VARIANTS = {"energy": ["energy"], "weak": ["energy", "pitc", "pisc"]}


def study_config() -> dict:
    """A tiny study: 12 water configurations, xtb labels in 2 chunks, 2 training runs."""
    job = {"threads": 1, "mem_mb": 500, "runtime": 10}
    return {
        "systems": {"water": {"seed": "H2O"}},
        "sampling": {"generators": [{"kind": "rattle", "n": 11, "amplitude": 0.05}]},
        "references": {"xtb": {"backend": "xtb", "method": "GFN2-xTB"}},
        "labelling": {"reference": "xtb", "chunk_size": 6, **job},
        "splits": {"train": 0.5, "val": 0.2, "test": 0.3},
        "force_validation": {"enabled": True, "reference": "xtb", "per_system": 1},
        "training": {
            "model_params": {"n_features": 8, "n_interactions": 1, "cutoff": 4.0},
            "epochs": 3,
            "minutes": None,
            "batch_size": 4,
            "variants": {name: {"losses": losses} for name, losses in VARIANTS.items()},
            **job,
        },
        "md": {"steps": 20, "trajectory_interval": 5},
    }


def slow_study(root: Path) -> dict:
    """One ethanol chunk of N_SLOW configurations for the sleepy plugin.

    The configurations and the chunk are made here (pilip sample and pilip chunk ran on SLURM
    in the study test), so that the run starts with the label job.
    """
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(N_SLOW):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        frames.append(atoms)
    table = tables.configurations_from_atoms(frames, system="ethanol", generator="rattle")
    configurations = root / "configurations" / "ethanol.parquet"
    tables.write_table(table, configurations, "configurations", {})
    pilip = Path(sys.executable).parent / "pilip"
    subprocess.run([pilip, "chunk", configurations, "--size", str(N_SLOW), "-o",
                    root / "chunks" / "ethanol"], check=True, capture_output=True)  # fmt: skip
    return {
        "systems": {"ethanol": {"seed": "CH3CH2OH"}},
        "references": {"slow": {"backend": "sleepy_emt", "options": {"delay_s": DELAY_S}}},
        "labelling": {"reference": "slow", "chunk_size": N_SLOW, "threads": 1, "runtime": 10},
        "force_validation": {"enabled": False},
    }


def test_profile_states_what_the_docs_promise():
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1
    assert profile["set-resources"]["train"]["gpu"] == 1
    assert profile["set-resources"]["train"]["slurm_partition"] == GPU_PARTITION
    assert profile["groups"]["label"] in profile["group-components"]


def test_profile_options_parse_in_snakemake(tmp_path):
    """Every key of the profile is an option this Snakemake and SLURM plugin accept."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(study_config()))
    out = _snakemake(
        ["-n", "-d", str(tmp_path), "--workflow-profile", str(PROFILE.parent)],
        dict(os.environ),
    ).communicate(timeout=120)[0]
    assert "Using workflow specific profile" in out
    assert "sample" in out and "chunk" in out, out[-3000:]


# --- running on the cluster --------------------------------------------------------------


@dataclass
class Run:
    """A Snakemake run in the background: its process, work dir and start time."""

    proc: subprocess.Popen
    workdir: Path
    started: float

    def finish(self, timeout_s: float) -> str:
        """Wait for the run; kill its whole process group past the time left of timeout_s.

        The SLURM executor ignores SIGTERM while jobs are active, hence SIGKILL on the group.
        """
        left = max(1.0, timeout_s - (time.monotonic() - self.started))
        try:
            out, _ = self.proc.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, _ = self.proc.communicate()
            pytest.fail(f"snakemake in {self.workdir} ran over {timeout_s} s:\n{out[-5000:]}")
        return out


def _snakemake(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    env = dict(env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _test_profile(dest: Path, changes: dict) -> Path:
    """The real profile with `changes` merged in (one level deep), written to dest/.

    Snakemake replaces a mapping option given on the command line whole (a CLI
    --set-resources would drop the profile's GPU request), so tests edit a copy instead.
    """
    profile = yaml.safe_load(PROFILE.read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                profile.setdefault(key, {}).setdefault(sub, {})
                if isinstance(subvalue, dict):
                    profile[key][sub].update(subvalue)
                else:
                    profile[key][sub] = subvalue
        else:
            profile[key] = value
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


TEST_SETTINGS = {
    "latency-wait": 5,
    "slurm-init-seconds-before-status-checks": FIRST_POLL_S,
    "slurm-status-command": "squeue",  # no slurmdbd: sacct cannot answer
    "slurm-keep-successful-logs": True,
}


def _start(cluster: SlurmCluster, root: Path, config: dict, profile_changes: dict,
           targets: list[str], env: dict[str, str] | None = None) -> Run:  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    profile = _test_profile(root / "profile", {**TEST_SETTINGS, **profile_changes})
    args = ["-d", str(root), "--workflow-profile", str(profile), *targets]
    return Run(_snakemake(args, env or cluster.env), root, time.monotonic())


def _jobs(cluster: SlurmCluster, workdir: Path) -> list[dict[str, str]]:
    """Every job SLURM still remembers (MinJobAge) that ran in workdir, oldest first."""
    fields = ["JobID", "State", "Partition", "NumCPUs", "tres-per-job", "TimeLimit", "Comment",
              "StartTime", "EndTime", "WorkDir"]  # fmt: skip
    out = cluster.run(
        "squeue", "--states=all", "--noheader", "-O", ",".join(f"{f}:300" for f in fields)
    ).stdout
    jobs = [dict(zip(fields, line.split(), strict=True)) for line in out.splitlines() if line]
    return sorted((j for j in jobs if Path(j["WorkDir"]) == workdir), key=lambda j: int(j["JobID"]))


def _rule(job: dict[str, str]) -> str:
    """The rule (or group_rule) of a job from the comment the plugin gives it."""
    return job["Comment"].removeprefix("rule_").split("_wildcards_")[0]


def _processes_of_job(cluster: SlurmCluster, job_id: str) -> list[str]:
    """Command lines of live processes of SLURM job `job_id` of `cluster` (by environ)."""
    marks = {f"SLURM_JOB_ID={job_id}".encode(), f"SLURM_CONF={cluster.conf}".encode()}
    found = []
    for proc in Path("/proc").iterdir():
        try:
            environ = set((proc / "environ").read_bytes().split(b"\0"))
            if marks <= environ:
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # gone, or not ours to read
            continue
    return found


def _install_sleepy_plugin(site: Path) -> None:
    """The test backend as an installed distribution: module + dist-info entry point."""
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(PLUGIN, site / PLUGIN.name)
    info = site / "pilip_sleepy_backend-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pilip-sleepy-backend\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[pilip.backends]\nsleepy_emt = pilip_sleepy_backend:SleepyEMTBackend\n"
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    with slurm_cluster(root, first_status_poll_s=FIRST_POLL_S, cpus=NODE_CPUS) as c:
        yield c


@pytest.fixture(scope="module")
def time_limit_run(cluster, tmp_path_factory):
    """The time-limit run, started in the background so that it overlaps the study run."""
    root = tmp_path_factory.mktemp("time_limit")
    _install_sleepy_plugin(root / "site")
    env = dict(cluster.env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "site"), env.get("PYTHONPATH")]))
    (root / "work").mkdir()
    run = _start(
        cluster,
        root / "work",
        slow_study(root / "work"),
        # the one chunk gets a limit too short for it on the first attempt
        {"set-resources": {"label": {"runtime": "1 if attempt == 1 else 5"}}},
        ["datasets/slow.parquet"],
        env,
    )
    yield run
    if run.proc.poll() is None:
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.communicate()


@pytest.mark.usefixtures("time_limit_run")  # started first, so that both runs overlap
def test_tiny_study_on_slurm(cluster, tmp_path):
    targets = ["all"]
    run = _start(cluster, tmp_path, study_config(), {"group-components": {"label_chunks": 2}},
                 targets)  # fmt: skip
    out = run.finish(RUN_TIMEOUT_S)
    elapsed = time.monotonic() - run.started
    assert run.proc.returncode == 0, out[-5000:] + "\n" + cluster.log_tail()
    print(f"tiny study on SLURM: {elapsed:.0f} s")

    # Contents: 12 configurations, each labelled ok by xtb (energy as computed here), in
    # 2 chunks and in the dataset, with one force-validation row.
    configurations = tables.read_table(tmp_path / "configurations" / "water.parquet")
    ids = configurations.column(keys.ID).to_pylist()
    assert len(set(ids)) == 12
    chunks = sorted((tmp_path / "labels" / "xtb" / "water").glob("chunk-*.parquet"))
    assert [p.name for p in chunks] == ["chunk-0000.parquet", "chunk-0001.parquet"]
    for path in chunks:
        assert set(tables.read_table(path).column(keys.STATUS).to_pylist()) == {keys.STATUS_OK}
    dataset = tables.read_table(tmp_path / "datasets" / "xtb.parquet", kind="dataset")
    assert sorted(dataset.column(keys.ID).to_pylist()) == sorted(ids)
    energy = dict(zip(dataset.column(keys.ID).to_pylist(),
                      dataset.column(keys.ENERGY).to_pylist(), strict=True))  # fmt: skip
    assert energy[ids[0]] == pytest.approx(_xtb_energy(configurations, 0), abs=1e-8)
    assert sum(dataset.column(keys.FORCE_VALIDATION).to_pylist()) == 1

    # Training and evaluation of both runs: 3 epochs each, on CPU although SLURM granted a
    # GPU (there is none); the summary compares the two.
    from pilip.potential.checkpoint import load_model

    for run_name, losses in VARIANTS.items():
        history = (tmp_path / "models" / run_name / "metrics.csv").read_text().splitlines()
        assert len(history) == 1 + 3, history
        _, meta = load_model(tmp_path / "models" / run_name / "model.pt")
        assert meta["config"]["losses"] == losses
        metrics = json.loads((tmp_path / "results" / run_name / "metrics.json").read_text())
        assert metrics["device"] == "cpu" and metrics["epochs"] == 3
        assert metrics["losses"] == losses
        assert np.isfinite(metrics["energy_rmse"]) and np.isfinite(metrics["force_rmse"])
        assert (tmp_path / "results" / run_name / "md.json").is_file()
    summary = (tmp_path / "results" / "summary.md").read_text()
    assert "| energy | painn | energy |" in summary and "| weak | painn | energy, pitc" in summary

    # On the cluster: every rule but `all` was a SLURM job; both label chunks in one; both
    # training runs in the GPU partition with one GPU each.
    jobs = _jobs(cluster, tmp_path)
    assert {j["State"] for j in jobs} == {"COMPLETED"}, jobs
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(_rule(job), []).append(job)
    label_jobs = by_rule.pop("label_chunks_label")
    assert len(label_jobs) == 1 and label_jobs[0]["NumCPUs"] == "2", label_jobs
    train_jobs = by_rule.pop("train")
    assert len(train_jobs) == 2
    for job in train_jobs:
        assert job["Partition"] == GPU_PARTITION and job["tres-per-job"] == "gres:gpu:1", job
    # The cheap level (on by default) labels every configuration with forces and is reported
    # alone (evaluated and run in MD like a trained model).
    assert {r: len(js) for r, js in by_rule.items()} == {
        "sample": 1,
        "chunk": 1,
        "force_validation_subset": 1,
        "label_force_validation": 1,
        "collect": 1,
        "label_cheap": 1,
        "baseline_model": 1,
        "evaluate": 3,
        "md": 3,
        "report": 1,
    }


def _xtb_energy(configurations, row: int) -> float:
    """GFN2-xTB energy (eV) of one row of a configurations table, computed here."""
    from ase import Atoms
    from tblite.ase import TBLite

    numbers = configurations.column(keys.NUMBERS)[row].as_py()
    positions = np.asarray(configurations.column(keys.POSITIONS)[row].as_py())
    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    return atoms.get_potential_energy()


def test_label_job_killed_at_time_limit_resumes_from_finished_geometries(cluster, time_limit_run):
    run = time_limit_run
    out = run.finish(RUN_TIMEOUT_S)
    root = run.workdir
    assert run.proc.returncode == 0, out[-5000:] + "\n" + cluster.log_tail()
    print(f"time-limit run on SLURM: {time.monotonic() - run.started:.0f} s")

    label_jobs = [j for j in _jobs(cluster, root) if _rule(j) == "label_chunks_label"]
    assert [(j["State"], j["TimeLimit"]) for j in label_jobs] == [
        ("TIMEOUT", "1:00"),
        ("COMPLETED", "5:00"),
    ], label_jobs
    killed_at, retried_at = (
        datetime.fromisoformat(j[key]).astimezone()  # SLURM prints local time
        for j, key in ((label_jobs[0], "EndTime"), (label_jobs[1], "StartTime"))
    )
    # SLURM's kill reached every process of the job (the job-step Snakemake catches SIGTERM)
    assert _processes_of_job(cluster, label_jobs[0]["JobID"]) == []

    # Every geometry computed exactly once: one results line per configuration.
    results = root / "labels" / "slow" / "ethanol" / "chunk-0000.results.jsonl"
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    configs = tables.read_table(root / "configurations" / "ethanol.parquet")
    assert sorted(r["config_id"] for r in lines) == sorted(configs.column(keys.ID).to_pylist())
    # Some by the killed job (up to its kill, plus KillWait and 1-s rounding), the rest by
    # the retry, which computed only those.
    dates = [datetime.fromisoformat(r["date"]) for r in lines]
    before = [d for d in dates if d < retried_at]
    assert 0 < len(before) < N_SLOW, dates
    assert max(before) <= killed_at + timedelta(seconds=3), (killed_at, dates)
    log = (root / "logs" / "label" / "slow" / "ethanol" / "chunk-0000.log").read_text()
    assert f"computed {N_SLOW - len(before)} now" in log, log

    # The labels table: every configuration ok, with its EMT energy.
    labels = tables.read_table(root / "labels" / "slow" / "ethanol" / "chunk-0000.parquet")
    assert labels.column(keys.STATUS).to_pylist() == [keys.STATUS_OK] * N_SLOW
    from ase import Atoms
    from ase.calculators.emt import EMT

    by_id = dict(zip(labels.column(keys.CONFIG_ID).to_pylist(),
                     labels.column(keys.ENERGY).to_pylist(), strict=True))  # fmt: skip
    for row in range(configs.num_rows):
        atoms = Atoms(numbers=configs.column(keys.NUMBERS)[row].as_py(),
                      positions=configs.column(keys.POSITIONS)[row].as_py())  # fmt: skip
        atoms.calc = EMT()
        config_id = configs.column(keys.ID)[row].as_py()
        assert by_id[config_id] == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
