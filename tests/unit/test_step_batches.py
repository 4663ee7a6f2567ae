# Batches prepared ahead in DataLoader workers, and a training step that never reads the device (issue 15 item 5).
import collections
import os
import signal
import subprocess
import sys
import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import ROOT, RUN, tiny_config
from scaledown import ScaleDownModel
from scaledown.data import ScaleDownDataset
from scaledown.data.synthetic import generate_examples
from scaledown.errors import DataError
from scaledown.training import ScaleDownTrainer
from scaledown.training.backends.local import LocalBackend

# ops that make the host wait for the GPU when their input lives there (a device-to-host read or a data-dependent
# output shape); on CPU they are ordinary, so the test attributes each one to the code that issued it
SYNCING_OPS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default",
               "aten.is_nonzero.default", "aten.equal.default", "aten.item.default"}


# the dispatch machinery's own Python frames between an op and the code that called it
PLUMBING = (os.path.basename(__file__), os.path.join("torch", "_compile.py"),
            os.path.join("torch", "utils", "_python_dispatch.py"), os.path.join("torch", "_ops.py"),
            os.path.join("torch", "overrides.py"), os.path.join("torch", "_dynamo", "eval_frame.py"))


class SyncingOps(TorchDispatchMode):
    """Counts SYNCING_OPS (and boolean-mask indexing) by the innermost Python frame that issued them."""

    def __init__(self):
        super().__init__()
        self.sites = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        masked = name == "aten.index.Tensor" and any(t is not None and t.dtype == torch.bool for t in args[1])
        if name in SYNCING_OPS or masked:
            frame = next(f for f in reversed(traceback.extract_stack()) if not f.filename.endswith(PLUMBING))
            self.sites[f"{frame.filename}:{frame.lineno}"] += 1
        return func(*args, **(kwargs or {}))


class CountingBackend(LocalBackend):
    """The one-process backend with the step run under SyncingOps."""
    sites: collections.Counter = collections.Counter()

    def train_step(self, batches, documents_as, norm):
        with SyncingOps() as ops:
            out = super().train_step(batches, documents_as, norm)
        CountingBackend.sites.update(ops.sites)
        return out


def train(config, rows=None, backend=None):
    data = rows if rows is not None else ScaleDownDataset(generate_examples(64, seed=1), config)
    trainer = ScaleDownTrainer(ScaleDownModel(config), config, data, backend=backend, progress=False)
    return trainer.train()


def test_a_training_step_reads_nothing_back_from_the_device(tmp_path):
    """float() of the loss parts, nonzero() / boolean masks in forward and float(grad norm) each made the host wait for
    the GPU in every micro-batch; none of them may come from ScaleDown's code now. (torch.optim's CPU step counters
    and transformers' own padding-mask check are outside: the first is a host tensor on a GPU run, the second is
    reported by benchmarks/gpu_check.py.)"""
    config = tiny_config(output_dir=str(tmp_path), max_steps=3, generator_warmup_ratio=0.34, enable_reranking=True,
                         logging_steps=1)
    CountingBackend.sites.clear()
    result = train(config, backend=CountingBackend(config))
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    scaledown_dir = os.path.join(ROOT, "scaledown")
    ours = {site: n for site, n in CountingBackend.sites.items() if site.startswith(scaledown_dir)}
    assert ours == {}, ours
    # the probe does see syncing ops: torch.optim's step counters (host tensors) and transformers' mask check
    assert any(os.path.join("torch", "optim") in site for site in CountingBackend.sites), CountingBackend.sites


def test_loader_workers_train_exactly_the_same_run(tmp_path):
    common = dict(max_steps=4, generator_warmup_ratio=0.25, lora_dropout=0.1, logging_steps=2)
    inline = train(tiny_config(output_dir=str(tmp_path / "a"), dataloader_num_workers=0, **common))
    workers = train(tiny_config(output_dir=str(tmp_path / "b"), dataloader_num_workers=2, **common))
    assert len(inline.losses) == 4 and workers.losses == inline.losses


class BadRowAt(list):
    """A user's dataset that finds a bad row only when it is read (as lazily parsed files do)."""

    def __getitem__(self, index):
        if index == 5:
            raise DataError("train.jsonl row 6: field 'answer' is empty; give every row an answer")
        return super().__getitem__(index)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_data_error_in_a_worker_reaches_the_user_unchanged(tmp_path, workers):
    config = tiny_config(output_dir=str(tmp_path), max_steps=4, generator_warmup_ratio=0.0, shuffle_data=False,
                         dataloader_num_workers=workers)
    rows = BadRowAt(ScaleDownDataset(generate_examples(16, seed=1), config))
    with pytest.raises(DataError) as info:
        train(config, rows=rows)
    assert str(info.value) == "train.jsonl row 6: field 'answer' is empty; give every row an answer"


def test_dataloader_workers_is_checked():
    from scaledown.errors import ConfigError
    with pytest.raises(ConfigError, match="dataloader_num_workers"):
        tiny_config(output_dir="x", dataloader_num_workers=-2).validate()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_whole_process_group_still_saves_with_workers(tmp_path, subprocess_env, signum):
    """Ctrl-C (SIGINT) and scancel (SIGTERM) reach every process of the job, loader workers too: the run still
    finishes its step, saves and prints how to resume."""
    rows = tmp_path / "train.jsonl"
    import json
    with open(rows, "w", encoding="utf-8") as f:
        for row in generate_examples(64, seed=2):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    out = tmp_path / "D"
    args = [*RUN, "--max_steps", "40", "--save_steps", "0", "--logging_steps", "1", "--train_data", str(rows),
            "--output_dir", str(out), "--dataloader_num_workers", "2"]
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=subprocess_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 1 "):
            os.killpg(proc.pid, signum)   # the process group: the training process and its loader workers
            break
    rest, _ = proc.communicate(timeout=300)
    text = "".join(lines) + rest
    assert "DataLoader worker" not in text and "Traceback" not in text, text[-3000:]
    name = signal.Signals(signum).name
    saved = next(l for l in text.splitlines() if l.startswith(f"{name}: saved a checkpoint at step"))
    step = int(saved.split("at step ")[1].split(";")[0])
    assert os.path.isfile(out / "checkpoints" / f"step_{step:07d}" / "trainer_state.json")
