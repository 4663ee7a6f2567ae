# A real one-node SLURM cluster for tests (Debian slurmctld + slurmd, no munge), started under a temp dir.
"""Usage in a test module:

    from slurm_cluster import slurm_cluster  # noqa: F401  (pytest fixture)

    def test_job(slurm_cluster, tmp_path):
        job = slurm_cluster.sbatch(["slurm/train_gpu.sh", "--max_steps", "2"], cwd=REPO, env=env)
        assert job.returncode == 0, job.output

The cluster runs `AuthType=auth/none`, `CredType=cred/none`, `ProctrackType=proctrack/linuxproc`,
`TaskPlugin=task/none`, `SelectType=select/cons_tres` with state, spool, logs and free ports under
its own folder, so several can run side by side. Tests skip when the binaries are missing, unless
SCALEDOWN_REQUIRE_SLURM=1 (CI), where they fail.
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import pytest

BINARIES = ("slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scontrol", "srun")


def _find(binary: str) -> Optional[str]:
    return shutil.which(binary) or next((p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}")
                                         if os.access(p, os.X_OK)), None)


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if _find(b) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JobResult:
    job_id: str
    returncode: int      # sbatch --wait: the job's exit code
    output: str          # the job's stdout/stderr file
    submit_output: str   # what sbatch itself printed


class LocalSlurmCluster:
    """Start with `start()`, submit with `sbatch(...)`, stop with `stop()` (only the daemons it started)."""

    def __init__(self, root: Optional[str] = None):
        self.root = root or tempfile.mkdtemp(prefix="slurm-")
        self.conf = os.path.join(self.root, "slurm.conf")
        self.node = socket.gethostname().split(".")[0]
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ, SLURM_CONF=self.conf)

    def _write_config(self) -> None:
        for sub in ("state", "spool", "log"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        hardware = subprocess.run([_find("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
        node_line = next(line for line in hardware.splitlines() if line.startswith("NodeName="))
        node_fields = " ".join(f for f in node_line.split()[1:] if not f.startswith(("UpTime", "RealMemory")))
        open(os.path.join(self.root, "plugstack.conf"), "w").close()  # no site SPANK plugins
        r = self.root
        lines = [
            f"ClusterName=sdtest{os.getpid()}", f"SlurmctldHost={self.node}(127.0.0.1)",
            "AuthType=auth/none", "CredType=cred/none", "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "MpiDefault=none", "SwitchType=switch/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
            f"SlurmUser={getpass.getuser()}", f"SlurmdUser={getpass.getuser()}", "ReturnToService=2", "MinJobAge=30",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log", f"SlurmdLogFile={r}/log/slurmd.log",
            f"PlugStackConfig={r}/plugstack.conf",
            f"NodeName={self.node} NodeAddr=127.0.0.1 {node_fields} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout: float = 60.0) -> "LocalSlurmCluster":
        self._write_config()
        log = open(os.path.join(self.root, "log", "daemons.out"), "w")
        self.procs.append(subprocess.Popen([_find("slurmctld"), "-D", "-i", "-f", self.conf], env=self.env,
                                           stdout=log, stderr=subprocess.STDOUT))
        time.sleep(1.0)
        self.procs.append(subprocess.Popen([_find("slurmd"), "-D", "-f", self.conf, "-N", self.node], env=self.env,
                                           stdout=log, stderr=subprocess.STDOUT))
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False).stdout.strip()
            if state.startswith(("idle", "mixed")):
                return self
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the test SLURM cluster did not come up (node state {state!r}); logs in {self.root}/log")

    def run(self, argv: Sequence[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        env = dict(self.env, **kwargs.pop("env", {}))
        return subprocess.run([_find(argv[0]) or argv[0], *argv[1:]], env=env, capture_output=True, text=True,
                              check=check, **kwargs)

    def sbatch(self, argv: Sequence[str], cwd: str, env: Optional[dict] = None, timeout: float = 900.0,
               sbatch_flags: Sequence[str] = ()) -> JobResult:
        """Submit `argv` (script + its arguments) with sbatch --wait; returns once the job has ended."""
        out = os.path.join(self.root, "job-%j.out")
        job_env = dict(env or os.environ, SLURM_CONF=self.conf)
        proc = subprocess.run([_find("sbatch"), "--wait", "--parsable", f"--output={out}", *sbatch_flags, *argv],
                              cwd=cwd, env=job_env, capture_output=True, text=True, timeout=timeout)
        job_id = proc.stdout.strip().split(";")[0].splitlines()[0] if proc.stdout.strip() else ""
        path = out.replace("%j", job_id)
        output = open(path).read() if job_id and os.path.exists(path) else ""
        return JobResult(job_id, proc.returncode, output, proc.stdout + proc.stderr)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running one-node cluster for the whole session (skipped without SLURM unless it is required)."""
    missing = missing_binaries()
    if missing:
        if os.environ.get("SCALEDOWN_REQUIRE_SLURM") == "1":
            pytest.fail(f"SCALEDOWN_REQUIRE_SLURM=1 but {', '.join(missing)} are not installed "
                        f"(apt-get install slurmctld slurmd slurm-client)")
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing)")
    cluster = LocalSlurmCluster(str(tmp_path_factory.mktemp("slurm"))).start()
    try:
        yield cluster
    finally:
        cluster.stop()
