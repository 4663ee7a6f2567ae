# `sbatch slurm/train_gpu.sh` on a real one-node SLURM cluster: 2 ranks, checkpoints, SIGTERM -> requeue -> resume.
import os
import re
import sys
import threading
import time

import pytest

from deepspeed_runs import ROOT, SMALL, log_tail, require_deepspeed, tb_scalars
from slurm_cluster import slurm_cluster  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def test_sbatch_short_run_with_preemption_and_requeue(slurm_cluster, tmp_path):  # noqa: F811
    require_deepspeed()
    out, logs = str(tmp_path / "run"), str(tmp_path / "logs")
    env = dict(os.environ, NPROC_PER_NODE="2", PYTHON=sys.executable, OMP_NUM_THREADS="1",
               LOG_DIR=logs, PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    args = ["slurm/train_gpu.sh", "--generator_warmup_ratio", "0", "--max_steps", "6", "--save_steps", "2", *SMALL,
            "--eval_max_examples", "0", "--output_dir", out]
    result = {}
    submit = threading.Thread(target=lambda: result.update(job=slurm_cluster.sbatch(args, cwd=ROOT, env=env)))
    submit.start()
    # once the first checkpoint is complete, SLURM's time-limit warning: SIGTERM to the batch shell
    first = os.path.join(out, "checkpoints", "step_0000002", "trainer_state.json")
    deadline = time.time() + 600
    while not os.path.exists(first) and submit.is_alive() and time.time() < deadline:
        time.sleep(0.5)
    assert os.path.exists(first), result.get("job")
    job_id = slurm_cluster.run(["squeue", "-h", "-o", "%i"]).stdout.split()[0]
    slurm_cluster.run(["scancel", "--signal=TERM", "--batch", job_id])
    while submit.is_alive() and time.time() < deadline:  # a requeued job waits ~2 min to restart: skip that
        if "BeginTime" in slurm_cluster.run(["squeue", "-h", "-o", "%r"], check=False).stdout:
            slurm_cluster.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=False)
        time.sleep(2)
    submit.join(timeout=5)
    job = result["job"]
    assert job.returncode == 0, job.output + job.submit_output
    assert "SIGTERM: asking the ranks to checkpoint, then requeueing" in job.output
    assert "(restart 1)" in job.output
    rank_log = log_tail(os.path.join(logs, os.listdir(logs)[0]), 1_000_000)
    stopped = re.search(r"SIGTERM: saved a checkpoint at step (\d+)", rank_log)
    assert stopped, rank_log[-3000:]
    assert f"resumed from {out}/checkpoints/step_{int(stopped.group(1)):07d}" in rank_log
    assert os.path.isfile(os.path.join(out, "checkpoints", "step_0000006", "trainer_state.json"))
    assert os.path.isfile(os.path.join(out, "final", "scaledown_config.json"))
    assert sorted(tb_scalars(out, "train/loss")) == [1, 2, 3, 4, 5, 6]
