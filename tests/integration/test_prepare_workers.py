# Data pipeline across processes: 2 torchrun ranks or 2 local workers (one killed, then resumed) write the rows of 1.
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from scaledown.data.manifest import read_progress
from scaledown.data.prepare_dataset import prepare_main
from scaledown.data.synthetic_corpus import write_synthetic_corpus

pytestmark = pytest.mark.slow

# tiny SPLADE + reranker + teacher; blocks of 2 queries so a worker has many small units to finish
SETTINGS = ["--retriever_model", "tiny", "--reranker", "tiny", "--teacher", "tiny", "--max_answer_tokens", "12",
            "--batch_size", "2", "--block_size", "2", "--index_part_size", "32", "--progress", "false"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """40 queries over 120 articles, and the file one in-process worker makes of them."""
    root = tmp_path_factory.mktemp("prep")
    made = write_synthetic_corpus(str(root / "src"), num_queries=40, seed=21)
    reference = root / "one_worker.json"
    assert prepare_main(["--queries", made.queries_path, "--corpus_path", made.corpus_path,
                         "--output_file", str(reference), *SETTINGS]) == 0
    rows = json.loads(reference.read_text())
    assert len(rows) >= 35
    return made, rows


def cli(made, output, *extra):
    return [sys.executable, "-m", "scaledown.cli.main", "prepare-data", "--queries", made.queries_path,
            "--corpus_path", made.corpus_path, "--output_file", str(output), *SETTINGS, *extra]


def read_rows(path):
    text = path.read_text()
    return json.loads(text) if str(path).endswith(".json") else [json.loads(l) for l in text.splitlines()]


def test_torchrun_ranks_write_the_same_rows_as_one(inputs, tmp_path, subprocess_env):
    made, reference = inputs
    out = tmp_path / "ranks.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "scaledown.data.prepare_dataset", *cli(made, out)[4:]]
    proc = subprocess.run(command, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_rows(out) == reference


@pytest.mark.parametrize("other_worker", ["as_found", "not_started"])
def test_killed_worker_resumes_without_redoing_or_duplicating_rows(inputs, tmp_path, subprocess_env, other_worker):
    """Worker 0 is killed mid-run; worker 1 may have done anything by then (not started, some blocks, all):
    the rerun finishes without redoing or duplicating rows. `not_started` makes the case of a kill before worker 1
    started deterministic (its files removed: the state it leaves when it never got to write them)."""
    made, reference = inputs
    out = tmp_path / "killed.json"
    work = tmp_path / "killed.prep"
    run = subprocess.Popen(cli(made, out, "--workers", "2"), env=subprocess_env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    victim, deadline = None, time.time() + 300
    while victim is None and time.time() < deadline and run.poll() is None:
        # worker 0 (10 of the 20 blocks): whatever worker 1 has done by then, including nothing at all
        progress = read_progress(str(work), 0, 2)
        if 1 <= progress["blocks_done"] < 10 and not progress["complete"]:
            victim = progress
            os.kill(progress["pid"], signal.SIGKILL)   # a real worker process, mid-run
            break
        time.sleep(0.05)
    assert victim is not None, "worker 0 was not caught mid-run"
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 2 and "was killed by SIGKILL" in stderr and "rerun the same command" in stderr
    assert not out.exists()
    if other_worker == "not_started":   # worker 1 killed while building its index part, before any block
        for name in os.listdir(work):
            if name.startswith("shard-00001-of-00002"):
                os.remove(work / name)
        index = work / "index" / "splade-tiny"
        (index / "index.json").unlink(missing_ok=True)
        shutil.rmtree(index / "part-00001")
        (index / ".part-00001.tmp-killed").mkdir()   # what atomic_directory leaves behind
        (index / ".part-00001.tmp-killed" / "postings.npy").write_bytes(b"half")
    # a worker that never wrote its progress file has done nothing (the product reads it the same way)
    done_before = sum(read_progress(str(work), r, 2)["rows"] for r in (0, 1))
    assert 0 < done_before < len(reference)

    proc = subprocess.run(cli(made, out, "--workers", "2"), env=subprocess_env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the same rows as one uninterrupted worker: nothing lost, duplicated or changed by the split
    assert read_rows(out) == reference
    summary = json.loads((work / "summary.json").read_text())
    assert summary["rows_this_run"] == len(reference) - done_before   # finished blocks were not redone
    shards = sorted(n for n in os.listdir(work) if n.endswith(".jsonl") and n.startswith("shard-"))
    assert shards == ["shard-00000-of-00002.jsonl", "shard-00001-of-00002.jsonl"]
    assert all(os.path.getsize(work / n) > 0 for n in shards)            # both workers did real work
    assert len(os.listdir(work / "index" / "splade-tiny")) == 4 + 1      # 120 passages / 32 = 4 parts + index.json
