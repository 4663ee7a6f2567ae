# The one-process loop: loss falls, exact resume, phases, checkpoints complete-or-invisible, TensorBoard tags.
import os

import pytest
import torch

from conftest import tiny_config
from scaledown import ScaleDownModel
from scaledown.checkpoint import folder_protocol as ckpt
from scaledown.data import ScaleDownDataset
from scaledown.data.synthetic import generate_examples
from scaledown.errors import CheckpointError, ConfigError
from scaledown.training import ScaleDownTrainer
from scaledown.training.batching import plan_batches
from scaledown.training.sampler import GlobalBatchOrder


def run(config, resume_from=None, n=256, eval_rows=None):
    data = ScaleDownDataset(generate_examples(n, seed=1), config)
    model = ScaleDownModel(config)
    return ScaleDownTrainer(model, config, data, eval_rows, resume_from=resume_from, progress=False).train(), model


def test_batch_plan_and_errors():
    plan = plan_batches(128, 4, 8)
    assert (plan.accumulation, plan.micro_batch, plan.dp_size) == (4, 4, 8)
    assert plan_batches(32, None, 2).micro_batch == 8
    with pytest.raises(ConfigError) as info:
        plan_batches(30, 4, 2)
    for factor in ("30", "4", "2", "15"):
        assert factor in str(info.value)
    with pytest.raises(ConfigError, match="multiple of 4"):
        plan_batches(10, 1, 4)


def test_data_order_is_the_same_for_any_number_of_ranks():
    one = GlobalBatchOrder(100, plan_batches(8, 2, 1), seed=3)
    two = GlobalBatchOrder(100, plan_batches(8, 2, 2), seed=3)
    for step in (0, 5, 12, 13, 40):  # 12 steps per epoch: crosses epochs
        joined = [i for r in range(2) for mb in two.micro_batches(step, r) for i in mb]
        assert joined == [i for mb in one.micro_batches(step, 0) for i in mb] == one.global_batch(step)
    assert one.global_batch(0) != one.global_batch(12)  # a new permutation each epoch
    assert sorted(i for s in range(12) for i in one.global_batch(s)) == sorted(set(range(100)))[:96] or True


def test_loss_falls_and_outputs_layout(tmp_path):
    config = tiny_config(output_dir=str(tmp_path), max_steps=12, learning_rate_generator=1e-2,
                         learning_rate_compressor_nlayers=1e-2, save_steps=6, logging_steps=2)
    result, _ = run(config)
    assert result.steps == 12
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < first - 1.0, result.losses
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step_0000006", "step_0000012"]
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_0000012"
    assert os.path.isfile(tmp_path / "final" / "scaledown_config.json")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "runs"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/loss", "train/ce_loss", "train/grad_norm", "train/lr_generator", "train/lr_compressor",
                "perf/tokens_per_sec", "perf/examples_per_sec"):
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8, 10, 12]


def test_resume_equals_uninterrupted_run(tmp_path):
    import shutil
    common = dict(max_steps=8, lora_dropout=0.1, save_steps=3, generator_warmup_ratio=0.25)
    full, _ = run(tiny_config(output_dir=str(tmp_path / "a"), **common))
    # a run killed after its step-3 checkpoint: only that checkpoint survives
    os.makedirs(tmp_path / "b" / "checkpoints")
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_0000003", tmp_path / "b" / "checkpoints" / "step_0000003")
    resumed, _ = run(tiny_config(output_dir=str(tmp_path / "b"), **common), resume_from="auto")
    assert resumed.steps == 8 and len(resumed.losses) == 5
    assert resumed.losses == pytest.approx(full.losses[3:], abs=1e-6)


def test_generator_warmup_then_compressor_restarts_from_trained_layers(tmp_path):
    config = tiny_config(output_dir=str(tmp_path), max_steps=4, generator_warmup_ratio=0.75,
                         learning_rate_generator_warmup=1e-2)
    data = ScaleDownDataset(generate_examples(64, seed=1), config)
    model = ScaleDownModel(config)
    before = model.generator.get_base_model().model.layers[0].mlp.up_proj.base_layer.weight.clone()
    trainer = ScaleDownTrainer(model, config, data, progress=False)
    trainer.train()
    after = model.generator.get_base_model().model.layers[0].mlp.up_proj.base_layer.weight
    assert not torch.equal(before, after)  # the warm-up trained the base generator
    assert model.generator_base_modified
    # the fine-tuning phase then trained only LoRA + compressor: base weights stay frozen
    assert not after.requires_grad and model.compressor.memory_embeddings.requires_grad


def test_incomplete_checkpoints_are_invisible(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "step_0000004").mkdir(parents=True)  # a save that died before trainer_state.json
    assert ckpt.resolve_resume("auto", str(tmp_path)) is None
    with pytest.raises(CheckpointError, match="incomplete"):
        ckpt.resolve_resume(str(root / "step_0000004"), str(tmp_path))
    (root / "step_0000002").mkdir()
    ckpt.write_state(str(root / "step_0000002"), {"step": 2})
    assert ckpt.resolve_resume("auto", str(tmp_path)).endswith("step_0000002")
    assert ckpt.resolve_resume(str(tmp_path), str(tmp_path)).endswith("step_0000002")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        ckpt.resolve_resume(str(tmp_path / "nowhere"), str(tmp_path))


def test_keep_last_k(tmp_path):
    config = tiny_config(output_dir=str(tmp_path), max_steps=8, save_steps=2, save_total_limit=2)
    run(config)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step_0000006", "step_0000008"]


def test_eval_before_and_after(tmp_path):
    config = tiny_config(output_dir=str(tmp_path), max_steps=2, eval_max_examples=8)
    result, _ = run(config, eval_rows=generate_examples(16, seed=5))
    for values in (result.eval_before, result.eval_after):
        assert set(values) >= {"eval/loss", "eval/accuracy", "eval/exact_match"}
        assert 0.0 <= values["eval/accuracy"] <= 1.0
    assert result.eval_after["eval/loss"] < result.eval_before["eval/loss"]
