# Trn1 launch paths without Neuron: `sbatch slurm/train_trn1.sh --dry_run` on a real one-node SLURM cluster, the
# launcher's and train.py's --dry_run: resolved profile, batch arithmetic and the exact torchrun commands.
import os
import subprocess
import sys

import pytest

from slurm_cluster import slurm_cluster  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--neuron_config", "neuron_configs/tp8_pp4.json", "--tensor_parallel_size", "8", "--pipeline_parallel_size",
        "2", "--batch_size", "64", "--micro_batch_size", "4", "--max_steps", "10", "--generator_warmup_ratio", "0"]
# (the tiny preset warms the generator up, which pipeline parallelism refuses: the dry run refuses it as the run does)


def expect_plan(output: str, nodes: int, master: str) -> None:
    """What a 32-process-per-node tp8 x pp2 profile must resolve to on `nodes` nodes."""
    world = nodes * 32
    dp = world // 16
    assert f"nodes {nodes} x processes per node 32 = {world} ranks" in output, output
    assert f"world {world} = pp 2 x dp {dp} x tp 8" in output, output
    accumulation = 64 // (4 * dp)
    assert f"global batch 64 = micro batch 4 x accumulation {accumulation} x data-parallel ranks {dp}" in output, output
    assert f"pipeline micro-batches per step {accumulation}" in output, output
    assert "pipeline cuts ['generator.base_model.model.model.layers.0']" in output, output
    assert (f"torchrun --nnodes {nodes} --nproc_per_node 32 --node_rank $NODE_RANK --master_addr {master} "
            f"--master_port 44000 launchers/train_trn1.py") in output, output
    assert "FI_PROVIDER=efa" in output and "NEURON_CC_FLAGS=" in output, output


def run(argv):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_launcher_and_train_py_dry_runs_print_the_plan_and_commands():
    out = run([sys.executable, "launchers/train_trn1.py", "--dry_run", "--nnodes", "2", "--master_addr", "trn-a",
               *ARGS])
    expect_plan(out, nodes=2, master="trn-a")
    # the seed's documented way: the same dry run on the node it is started on
    same = run([sys.executable, "train.py", "--device", "trainium", "--dry-run", "--nnodes", "2", "--master_addr",
                "trn-a", *ARGS])
    expect_plan(same, nodes=2, master="trn-a")


@pytest.mark.slow
def test_sbatch_dry_run_prints_the_commands_for_its_allocation(slurm_cluster, tmp_path):  # noqa: F811
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", PYTHONPATH=ROOT,
               OUTPUT_DIR=str(tmp_path / "out"))
    job = slurm_cluster.sbatch(["slurm/train_trn1.sh", "--dry_run", *ARGS], cwd=ROOT, env=env, timeout=300)
    assert job.returncode == 0, job.output + job.submit_output
    host = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    expect_plan(job.output, nodes=1, master=host)
    # the per-node command the script itself would srun (node rank filled in), with the user's flags passed through
    assert f"node 0 ({host}): torchrun --nnodes 1 --nproc_per_node 32 --master_addr {host}" in job.output, job.output
    assert "--node_rank 0 launchers/train_trn1.py --neuron_config neuron_configs/tp8_pp4.json" in job.output
    assert "--resume_from auto --tensor_parallel_size 8 --pipeline_parallel_size 2 --batch_size 64" in job.output
    assert not os.path.exists(tmp_path / "out")   # a dry run starts nothing
