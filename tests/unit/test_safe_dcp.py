# DCP checkpoints of the torch backend load without unpickling anything but checkpoint metadata and plain values.
import os
import pickle

import pytest
import torch
import torch.distributed.checkpoint as dcp

from scaledown.checkpoint.safe_dcp import SafePlanner, SafeReader


def saved(tmp_path):
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "optim": {"step": torch.tensor(3.0), "lr": 0.5,
                                                                     "betas": (0.9, 0.95)}}
    dcp.save(state, checkpoint_id=str(tmp_path / "ckpt"), no_dist=True)
    return tmp_path / "ckpt"


def test_a_real_checkpoint_loads_through_the_allow_list(tmp_path):
    path = saved(tmp_path)
    target = {"model": {"w": torch.zeros(2, 3)}, "optim": {"step": torch.tensor(0.0), "lr": 0.0, "betas": (0, 0)}}
    dcp.load(target, storage_reader=SafeReader(str(path)), planner=SafePlanner(), no_dist=True)
    assert torch.equal(target["model"]["w"], torch.arange(6.0).view(2, 3))
    assert target["optim"]["lr"] == 0.5 and target["optim"]["betas"] == (0.9, 0.95)


class Payload:
    def __reduce__(self):
        return (os.mkdir, (MARK,))


MARK = ""


def test_crafted_metadata_is_refused_and_runs_nothing(tmp_path):
    global MARK
    path = saved(tmp_path)
    MARK = str(tmp_path / "pwned")
    with open(path / ".metadata", "wb") as f:
        pickle.dump(Payload(), f)
    target = {"model": {"w": torch.zeros(2, 3)}}
    with pytest.raises(dcp.api.CheckpointException, match="refusing to unpickle"):
        dcp.load(target, storage_reader=SafeReader(str(path)), planner=SafePlanner(), no_dist=True)
    assert not os.path.exists(MARK)
    # what torch's own reader does with the same folder: it runs the payload
    with pytest.raises(dcp.api.CheckpointException):
        dcp.load(target, checkpoint_id=str(path), no_dist=True)
    assert os.path.exists(MARK)
