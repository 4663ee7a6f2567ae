# Data pipeline under a real SLURM step: `srun` with 2 tasks inside sbatch writes the rows of one process.
import json
import os
import sys

import pytest

from scaledown.data.prepare_dataset import prepare_main
from scaledown.data.synthetic_corpus import write_synthetic_corpus

pytestmark = pytest.mark.slow
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
try:  # the one-node test cluster helper (tests/slurm_cluster.py) comes with the DeepSpeed backend's tests
    from slurm_cluster import slurm_cluster  # noqa: F401  (pytest fixture)
except ImportError:
    pytest.skip("tests/slurm_cluster.py is not in this checkout", allow_module_level=True)

FLAGS = ["--retriever", "bm25", "--teacher", "tiny", "--max_answer_tokens", "4", "--block_size", "2",
         "--progress", "false"]


def test_srun_tasks_write_the_rows_of_one_process(slurm_cluster, tmp_path, subprocess_env):  # noqa: F811
    made = write_synthetic_corpus(str(tmp_path / "src"), num_queries=16, seed=4)
    inputs = ["--queries", made.queries_path, "--corpus_path", made.corpus_path]
    assert prepare_main([*inputs, "--output_file", str(tmp_path / "one.jsonl"), *FLAGS]) == 0
    script = tmp_path / "job.sh"
    # the batch step itself sees SLURM_NTASKS=2 but is one process: only `srun` makes the two workers
    script.write_text("#!/bin/bash\n#SBATCH --ntasks=2\n#SBATCH --cpus-per-task=1\n"
                      f"srun {sys.executable} -m scaledown.data.prepare_dataset "
                      + " ".join([*inputs, "--output_file", str(tmp_path / "srun.jsonl"), *FLAGS]) + "\n")
    script.chmod(0o755)
    job = slurm_cluster.sbatch([str(script)], cwd=str(tmp_path), env=subprocess_env, timeout=600)
    assert job.returncode == 0, job.output[-3000:]
    assert "with 2 worker(s)" in job.output
    assert (tmp_path / "srun.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()
    shards = [json.loads((tmp_path / "srun.prep" / f"shard-0000{r}-of-00002.progress.json").read_text())
              for r in (0, 1)]
    assert all(s["complete"] and s["rows"] > 0 for s in shards)
