"""A real one-node SLURM cluster on localhost, for integration tests.

`slurm_cluster(root)` is a context manager that installs Debian's `slurm-wlm` and `munge`
where they are missing (root and apt-get needed), writes a munge key and a `slurm.conf` under
`root`, starts `munged`, `slurmctld` and `slurmd` in the foreground as children of this
process, waits until the node is idle and yields a `SlurmCluster` whose `env` points the SLURM
client commands (and so Snakemake's SLURM executor) at it. On exit it cancels the cluster's
jobs and stops exactly the three daemons it started; the host's own munge or SLURM, if any,
is never touched because every socket, port, pid and state file is private to `root`.

Facts this configuration rests on (SLURM 22.05, snakemake-executor-plugin-slurm 2.8):
- no slurmdbd, so `sacct` cannot answer; the executor must poll with `squeue`, which only
  sees finished jobs for `MinJobAge` seconds, and the plugin falls back to (failing) `sacct`
  unless MinJobAge >= 3 x its first status-poll delay;
- a job asking for more CPUs or memory than the node has pends forever unless
  `EnforcePartLimits=ALL` rejects it at submission;
- time limits are checked by slurmctld every ~30 s and KillWait is the grace between SIGTERM
  and SIGKILL, so a job over its limit dies between limit and limit + 30 s + KillWait.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol", "srun")
APT_PACKAGES = ("slurm-wlm", "munge")
GPU_PARTITION = "gpu"
CPU_PARTITION = "debug"


class SlurmUnavailable(RuntimeError):
    """SLURM is missing and cannot be installed here (not root, or no apt-get)."""


def _sbin(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def slurm_installed() -> bool:
    """True when the SLURM daemons, the client commands and munged are on this machine."""
    return all(_sbin(n) for n in DAEMONS + CLIENTS)


def can_install() -> bool:
    """True when `ensure_slurm_installed` could install the Debian packages."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def ensure_slurm_installed() -> None:
    """Install Debian's slurm-wlm and munge with apt-get where missing.

    Package scripts must not start system-wide daemons (they would fail without a
    slurm.conf, or hold ports); a temporary policy-rc.d forbids that unless one exists.
    """
    if slurm_installed():
        return
    if not can_install():
        raise SlurmUnavailable(
            "SLURM is not installed and this is not root with apt-get: "
            f"apt-get install -y --no-install-recommends {' '.join(APT_PACKAGES)}"
        )
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES],
            check=True,
            env=env,
            timeout=900,
            stdout=subprocess.DEVNULL,
        )
    finally:
        if ours:
            policy.unlink()
    if not slurm_installed():
        missing = [n for n in DAEMONS + CLIENTS if not _sbin(n)]
        raise SlurmUnavailable(f"apt-get installed {APT_PACKAGES} but {missing} still missing")


@dataclass
class SlurmCluster:
    """A running one-node cluster.

    `env`: os.environ with SLURM_CONF and, first on PATH, client commands bound to this
    cluster; give it to anything that talks to SLURM (Snakemake included).
    """

    root: Path
    conf: Path
    node: str
    cpus: int
    real_memory_mb: int
    min_job_age_s: int
    env: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster; returns its text output."""
        return subprocess.run(
            list(args), env=self.env, check=check, capture_output=True, text=True, timeout=30
        )

    def log_tail(self, n: int = 40) -> str:
        """The last n lines of every daemon log, for failure messages."""
        parts = []
        for name in DAEMONS:
            path = self.root / "log" / f"{name}.log"
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-n:]
                parts.append(f"--- {path} ---\n" + "\n".join(lines))
        return "\n".join(parts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> dict[str, str]:
    """`slurmd -C`'s node line as key -> value (CPUs, RealMemory, Sockets...)."""
    out = subprocess.run(
        [_sbin("slurmd"), "-C"], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("NodeName="))
    return dict(item.split("=", 1) for item in line.split())


def write_slurm_conf(
    root: Path,
    hardware: dict[str, str],
    min_job_age_s: int,
    fake_gpu: bool,
    user: str,
    cpus: int | None = None,
) -> Path:
    """Write slurm.conf (+ gres.conf) for one node `hardware['NodeName']` on 127.0.0.1.

    Two partitions on the same node: `debug` (default) and `gpu`, so a profile's GPU
    partition and GPU request are exercised as on a real site. With `fake_gpu` the node
    advertises one GPU: SLURM grants it, the job itself finds no CUDA device and must run on
    CPU. `cpus` (default: the hardware's) advertises more CPUs than there are cores
    (slurmd's config_overrides), for tests whose jobs mostly sleep.
    """
    node = hardware["NodeName"]
    if cpus is None:
        node_fields = " ".join(
            f"{k}={hardware[k]}"
            for k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
            if k in hardware
        )
    else:
        node_fields = f"CPUs={cpus} Sockets=1 CoresPerSocket={cpus} ThreadsPerCore=1"
    gres = " Gres=gpu:1" if fake_gpu else ""
    conf = root / "slurm.conf"
    lines = [
        "ClusterName=pilip-test",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        f"SlurmUser={user}",
        f"SlurmdUser={user}",
        f"AuthInfo=socket={root / 'munge' / 'munge.socket'}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'run' / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/pgid",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "DefMemPerCPU=500",
        "EnforcePartLimits=ALL",
        f"MinJobAge={min_job_age_s}",
        "KillWait=2",
        "OverTimeLimit=0",
        "InactiveLimit=0",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "PrologFlags=NoHold",
        *(["SlurmdParameters=config_overrides"] if cpus is not None else []),
        *(["GresTypes=gpu"] if fake_gpu else []),
        f"NodeName={node} NodeAddr=127.0.0.1 {node_fields} "
        f"RealMemory={hardware['RealMemory']}{gres} State=UNKNOWN",
        f"PartitionName={CPU_PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        f"PartitionName={GPU_PARTITION} Nodes={node} MaxTime=INFINITE State=UP",
    ]
    conf.write_text("\n".join(lines) + "\n")
    if fake_gpu:
        # slurmd drops file-less GPUs; /dev/null is a character device that nothing uses
        # here (no device cgroup), so the GPU is granted and CUDA_VISIBLE_DEVICES is set.
        (root / "gres.conf").write_text(f"NodeName={node} Name=gpu Count=1 File=/dev/null\n")
    return conf


def _client_wrappers(root: Path, conf: Path) -> Path:
    """A bin/ of client commands bound to `conf`, to put first on PATH.

    snakemake-executor-plugin-slurm-jobstep (0.6.1) deletes every SLURM_* variable but the job
    ids before its nested `srun`, SLURM_CONF included, so inside a job `srun` would look for
    /etc/slurm/slurm.conf. A real site has its config there (or runs configless); this private
    cluster must not write to /etc, so its commands carry the path themselves.
    """
    bindir = root / "bin"
    bindir.mkdir(exist_ok=True)
    for name in (*CLIENTS, "sacct"):
        real = _sbin(name)
        if real is None:
            continue
        wrapper = bindir / name
        wrapper.write_text(f'#!/bin/sh\nSLURM_CONF="{conf}" exec {real} "$@"\n')
        wrapper.chmod(0o755)
    return bindir


def _start(name: str, args: list[str], root: Path, env: dict[str, str]) -> subprocess.Popen:
    # Own session: a Ctrl-C aimed at pytest does not reach the daemon before we stop it.
    out = open(root / "log" / f"{name}.stdout", "wb")
    try:
        return subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        out.close()


def _stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _wait_for(predicate, timeout_s: float, what: str, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, proc in cluster.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode} while waiting for {what}\n"
                    + cluster.log_tail()
                )
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"SLURM: {what} not reached in {timeout_s:.0f} s\n" + cluster.log_tail())


@contextlib.contextmanager
def slurm_cluster(
    root: Path,
    first_status_poll_s: int = 40,
    fake_gpu: bool = True,
    cpus: int | None = None,
    start_timeout_s: float = 60,
) -> Iterator[SlurmCluster]:
    """Start a private one-node SLURM under `root` (a fresh directory) and stop it on exit.

    first_status_poll_s: the executor's first status-poll delay
        (`--slurm-init-seconds-before-status-checks`); MinJobAge is set to at least 3x it so
        `squeue` still lists a finished job when Snakemake asks.
    fake_gpu: the node advertises one GPU (partition `gpu`) without having one.
    cpus: CPUs the node advertises; default what `slurmd -C` finds.
    """
    ensure_slurm_installed()
    root = Path(root).resolve()
    for sub in ("munge", "state", "spool", "run", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # munged refuses keys and sockets in group/world-writable directories.
    for path in [root, *(root / s for s in ("munge", "state", "spool", "run", "log"))]:
        path.chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)

    hardware = _node_hardware()
    min_job_age_s = max(300, 3 * first_status_poll_s)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout
    conf = write_slurm_conf(root, hardware, min_job_age_s, fake_gpu, user.strip(), cpus)
    bindir = _client_wrappers(root, conf)
    env = dict(os.environ, SLURM_CONF=str(conf), PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    for var in [v for v in env if v.startswith(("SLURM_", "SBATCH_", "SRUN_"))]:
        if var != "SLURM_CONF":  # a test run inside a SLURM job must not leak its job's vars
            del env[var]
    cluster = SlurmCluster(
        root=root,
        conf=conf,
        node=hardware["NodeName"],
        cpus=cpus or int(hardware["CPUs"]),
        real_memory_mb=int(hardware["RealMemory"]),
        min_job_age_s=min_job_age_s,
        env=env,
    )
    munge_socket = root / "munge" / "munge.socket"
    try:
        # fmt: off
        cluster.processes["munged"] = _start("munged", [
            _sbin("munged"), "--foreground", "--force",
            f"--socket={munge_socket}", f"--key-file={key}",
            f"--pid-file={root / 'run' / 'munged.pid'}",
            f"--log-file={root / 'log' / 'munged.log'}",
            f"--seed-file={root / 'munge' / 'munged.seed'}",
        ], root, env)
        # fmt: on
        _wait_for(munge_socket.exists, 15, "munged socket", cluster)
        cluster.processes["slurmctld"] = _start(
            "slurmctld", [_sbin("slurmctld"), "-D", "-c", "-f", str(conf)], root, env
        )
        _wait_for(
            lambda: cluster.run("scontrol", "ping", check=False).stdout.count("UP") > 0,
            start_timeout_s,
            "slurmctld answering ping",
            cluster,
        )
        cluster.processes["slurmd"] = _start(
            "slurmd",
            [_sbin("slurmd"), "-D", "-f", str(conf), "-N", cluster.node],
            root,
            env,
        )
        _wait_for(
            lambda: (
                cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split()
                and all(
                    s == "idle"
                    for s in cluster.run(
                        "sinfo", "-h", "-N", "-o", "%T", check=False
                    ).stdout.split()
                )
            ),
            start_timeout_s,
            f"node {cluster.node} idle",
            cluster,
        )
        yield cluster
    finally:
        if "slurmctld" in cluster.processes and cluster.processes["slurmctld"].poll() is None:
            cluster.run("scancel", "--full", "--user", user.strip(), check=False)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                queue = cluster.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
                if not queue:
                    break
                time.sleep(0.5)
        # Reverse start order: slurmd, then the controller, then munge they both need.
        for name in reversed(list(cluster.processes)):
            _stop(cluster.processes[name])
