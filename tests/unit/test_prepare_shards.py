# Shards, manifest and merge: a half-written block is dropped on restart, rows merge in query order, launchers.
import json
import os
from collections import Counter

import pytest

from scaledown.data.launch import detect_worker_env, gpu_for
from scaledown.data.manifest import MANIFEST, ShardWriter, accept_manifest, blocks_of, read_progress
from scaledown.data.merge import merge_shards
from scaledown.errors import DataError


def row(index, answer="yes"):
    return {"_index": index, "query": f"q{index}?", "documents": [f"doc {index}"], "answer": answer,
            "reranking_scores": [0.5]}


def test_restart_truncates_a_half_written_block(tmp_path):
    writer = ShardWriter(str(tmp_path), 0, 1)
    writer.append_block([row(0), row(1)], Counter())
    writer.append_block([row(2)], Counter({"queries with an empty teacher answer": 1}))
    recorded = os.path.getsize(writer.rows_path)
    writer.file.write(b'{"_index": 4, "query": "q4?", "docu')   # killed in the middle of block 3
    writer.file.close()
    resumed = ShardWriter(str(tmp_path), 0, 1)
    assert resumed.blocks_done == 2 and os.path.getsize(resumed.rows_path) == recorded
    assert read_progress(str(tmp_path), 0, 1)["pid"] == os.getpid()
    resumed.append_block([row(4), row(5)], Counter())
    resumed.finish(1.0)
    out = tmp_path / "train.jsonl"
    assert merge_shards(str(tmp_path), 1, str(out), progress=False) == 5
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["query"] for r in rows] == ["q0?", "q1?", "q2?", "q4?", "q5?"] and "_index" not in rows[0]
    assert read_progress(str(tmp_path), 0, 1)["skipped"] == {"queries with an empty teacher answer": 1}


def test_merge_interleaves_shards_in_query_order_and_validates(tmp_path):
    # blocks of 2 queries, two workers: worker 0 has blocks 0 and 2, worker 1 has block 1
    assert blocks_of(0, 2, 3) == [0, 2] and blocks_of(1, 2, 3) == [1]
    first, second = ShardWriter(str(tmp_path), 0, 2), ShardWriter(str(tmp_path), 1, 2)
    first.append_block([row(0), row(1)], Counter())
    with pytest.raises(DataError, match="not complete"):
        merge_shards(str(tmp_path), 2, str(tmp_path / "x.json"), progress=False)
    second.append_block([row(2), row(3)], Counter())
    first.append_block([row(4)], Counter())
    first.finish(1.0), second.finish(1.0)
    out = tmp_path / "train.json"
    assert merge_shards(str(tmp_path), 2, str(out), progress=False) == 5
    assert [r["query"] for r in json.loads(out.read_text())] == [f"q{i}?" for i in range(5)]
    os.makedirs(tmp_path / "bad")
    bad = ShardWriter(str(tmp_path / "bad"), 0, 1)
    bad.append_block([row(0), {**row(1), "documents": []}], Counter())
    bad.finish(1.0)
    with pytest.raises(DataError, match=r"shard-00000-of-00001.jsonl line 2: field 'documents' is an empty list"):
        merge_shards(str(tmp_path / "bad"), 1, str(tmp_path / "bad.json"), progress=False)
    assert not os.path.exists(tmp_path / "bad.json")   # nothing half-written is left behind


def test_manifest_resumes_same_settings_and_refuses_others(tmp_path):
    work = str(tmp_path)
    assert accept_manifest(work, {"teacher": "a", "top_k": 5}, overwrite=False) is None
    with open(os.path.join(work, MANIFEST), "w") as f:
        json.dump({"requested": {"teacher": "a", "top_k": 5}}, f)
    ShardWriter(work, 0, 1).append_block([row(0)], Counter())
    assert accept_manifest(work, {"teacher": "a", "top_k": 5}, overwrite=False)["requested"]["top_k"] == 5
    with pytest.raises(DataError, match=r"other settings \(changed: top_k\).*--overwrite"):
        accept_manifest(work, {"teacher": "a", "top_k": 3}, overwrite=False)
    assert accept_manifest(work, {"teacher": "a", "top_k": 3}, overwrite=True) is None
    assert not [n for n in os.listdir(work) if n.startswith("shard-")] and not os.path.exists(f"{work}/{MANIFEST}")


def test_launcher_detection():
    assert detect_worker_env({}) is None
    torchrun = detect_worker_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"})
    assert (torchrun.rank, torchrun.world, torchrun.local_rank, torchrun.local_world) == (3, 8, 1, 4)
    step = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1",
            "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "SLURM_NTASKS": "8"}
    slurm = detect_worker_env(step)
    assert (slurm.rank, slurm.world, slurm.local_world, slurm.launcher) == (5, 8, 4, "slurm")
    # the batch script itself (not an srun step) runs once, whatever the allocation's task count
    assert detect_worker_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}) is None
    assert detect_worker_env({"SCALEDOWN_PREP_WORKER": "1/2"}).launcher == "local"
    assert gpu_for(5, {"CUDA_VISIBLE_DEVICES": "2,3,6"}) == "6"
