# Fast checks of the DeepSpeed glue: config resolution, launcher flags, checkpoint pre-flight, import rules.
import ast
import glob
import json
import os
import subprocess
import sys

import pytest

from deepspeed_runs import DS_CONFIGS, LAUNCHER, ROOT
from scaledown.config import ScaleDownConfig
from scaledown.errors import CheckpointError, ConfigError
from scaledown.training.backends.deepspeed.ds_config import resolve_ds_config
from scaledown.training.batching import plan_batches


def _tiny(**overrides):
    return ScaleDownConfig.from_dict({"preset": "tiny", **overrides})


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(DS_CONFIGS, "*.json"))))
def test_shipped_configs_hold_no_auto_and_resolve(path):
    with open(path) as f:
        assert "auto" not in f.read()
    plan = plan_batches(32, 4, 2)
    ds = resolve_ds_config(path, _tiny(), plan, hidden_size=256)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (32, 4, 4)
    assert ds["gradient_clipping"] == 1.0
    assert ds["bf16"]["enabled"] is False and ds["fp16"]["enabled"] is False   # the tiny preset trains in fp32
    assert ds["zero_optimization"]["stage"] in (2, 3)


def test_batch_conflict_names_every_factor(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_batch_size": 64, "zero_optimization": {"stage": 3}}))
    with pytest.raises(ConfigError) as err:
        resolve_ds_config(str(path), _tiny(), plan_batches(32, 4, 2))
    message = str(err.value)
    for text in ("train_batch_size=64", "global batch 32", "micro batch 4", "accumulation 4",
                 "data-parallel ranks 2", str(path)):
        assert text in message, message


def test_plan_conflict_prints_every_factor():
    with pytest.raises(ConfigError, match=r"batch_size=32 .* micro_batch_size=3 .* 2 data-parallel ranks"):
        plan_batches(32, 3, 2)


def test_auto_values_are_resolved_or_reported(tmp_path):
    hf_style = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_clipping": "auto",
                "bf16": {"enabled": "auto"},
                "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                                      "stage3_param_persistence_threshold": "auto"}}
    ds = resolve_ds_config(hf_style, _tiny(max_grad_norm=0.5), plan_batches(16, 2, 2), hidden_size=256)
    assert ds["train_batch_size"] == 16 and ds["train_micro_batch_size_per_gpu"] == 2
    assert ds["gradient_accumulation_steps"] == 4 and ds["gradient_clipping"] == 0.5
    assert ds["zero_optimization"]["reduce_bucket_size"] == 256 * 256
    assert ds["zero_optimization"]["stage3_param_persistence_threshold"] == 2560
    unknown = {"zero_optimization": {"stage": 3, "sub_group_size": "auto"}}
    with pytest.raises(ConfigError, match="zero_optimization.sub_group_size"):
        resolve_ds_config(unknown, _tiny(), plan_batches(16, 2, 2), hidden_size=256)


def test_flags_own_optimizer_and_precision():
    with pytest.raises(ConfigError, match="'optimizer' section"):
        resolve_ds_config({"optimizer": {"type": "AdamW"}}, _tiny(), plan_batches(8, 4, 1))
    with pytest.raises(ConfigError, match="bf16.enabled=True but --use_bf16 gives False"):
        resolve_ds_config({"bf16": {"enabled": True}}, _tiny(), plan_batches(8, 4, 1))
    ds = resolve_ds_config({"zero_optimization": {"stage": 3}}, _tiny(use_bf16=True), plan_batches(8, 4, 1))
    assert ds["bf16"]["enabled"] is True


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file.*ds_configs/zero3.json"):
        resolve_ds_config(str(tmp_path / "nope.json"), _tiny(), plan_batches(8, 4, 1))


def test_launcher_declares_every_train_flag(subprocess_env):
    def flags(argv):
        help_text = subprocess.run([sys.executable, *argv, "--help"], env=subprocess_env, cwd=ROOT,
                                   capture_output=True, text=True, timeout=120, check=True).stdout
        return {tok.rstrip(",") for tok in help_text.split() if tok.startswith("--")}
    from scaledown.cli.backends import option_strings
    ours, train = flags([LAUNCHER]), flags([os.path.join(ROOT, "train.py")])
    # train.py also runs the neuron backend (--device trainium): its launch flags belong to that backend only
    assert train - set(option_strings("neuron")) <= ours
    assert {"--deepspeed", "--local_rank", "--local-rank", "--dist_timeout"} <= ours


def test_resume_preflight_names_the_mismatch(tmp_path):
    from scaledown.checkpoint import folder_protocol as ckpt
    from scaledown.training.backends.deepspeed.checkpoint_io import check_deepspeed_checkpoint
    path = tmp_path / "step_0000004"
    path.mkdir()
    ckpt.write_state(str(path), {"step": 4, "backend": "deepspeed", "dp_size": 4})
    with pytest.raises(CheckpointError, match="written by 4 data-parallel ranks but this run has 2.*scaledown convert --from deepspeed --to deepspeed"):
        check_deepspeed_checkpoint(str(path), 0, 2, 3)
    ckpt.write_state(str(path), {"step": 4, "backend": "local", "dp_size": 1})
    with pytest.raises(CheckpointError, match="written by the 'local' backend"):
        check_deepspeed_checkpoint(str(path), 0, 1, 3)


def test_models_package_imports_no_backend():
    """scaledown/models stays backend-free: ZeRO-3 reaches it only through the sharded_weights hook."""
    for path in glob.glob(os.path.join(ROOT, "scaledown", "models", "*.py")):
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("deepspeed", "torch_xla", "neuronx_distributed"), (path, name)


def test_full_weights_hook_gathers_only_when_installed():
    import torch
    from scaledown.models.sharded_weights import full_weights, use_gatherer
    p = torch.nn.Parameter(torch.ones(3))
    seen = []

    class Recorder:
        def __init__(self, params, modify):
            seen.append((len(params), modify))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    with full_weights([p]):
        pass
    assert seen == []
    with use_gatherer(Recorder):
        with full_weights([p], modify=True):
            pass
    with full_weights([p]):
        pass
    assert seen == [(1, True)]
