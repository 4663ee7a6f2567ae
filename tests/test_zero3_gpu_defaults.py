# The GPU user's default path under real 2-rank ZeRO-3 (gloo): folder generator, gradient checkpointing on,
# a reused (pretrained) compressor loaded into partitioned weights, generation with the generator gathered once.
import os

import pytest
import torch

from deepspeed_runs import (DS_CONFIGS, ROOT, SMALL, load_export, log_tail, make_folder_generator,
                            require_deepspeed, run, tb_scalars)
from scaledown.errors import ConfigError
from scaledown.training.backends.deepspeed.ds_config import check_checkpointing_support

pytestmark = pytest.mark.slow


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _pretrained_compressor(folder: str, out: str) -> dict:
    """A model folder whose n_layers compressor is no longer the generator's copy (as after pretraining)."""
    from scaledown import ScaleDownConfig, ScaleDownModel
    config = ScaleDownConfig.from_dict({"preset": "tiny", "generator_model_name": folder})
    model = ScaleDownModel(config)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.compressor.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(out)
    return {k: v.detach().clone() for k, v in model.compressor.state_dict().items()}


def test_zero3_checkpointing_reused_compressor_and_gathered_generation(tmp_path):
    """2 ranks, ZeRO-3, gradient checkpointing ON (non-reentrant, frozen base), --init_compressor_from a saved
    compressor with a folder generator that transformers builds under zero.Init (every weight empty at load)."""
    require_deepspeed()
    folder = make_folder_generator(str(tmp_path / "mistral_folder"))
    saved = _pretrained_compressor(folder, str(tmp_path / "pre"))
    out = str(tmp_path / "run")
    args = ["--deepspeed", os.path.join(DS_CONFIGS, "zero3.json"), "--preset", "tiny",
            "--generator_model_name", folder, "--init_compressor_from", str(tmp_path / "pre"),
            "--gradient_checkpointing", "true",
            "--generator_warmup_ratio", "0", "--max_steps", "2", "--warmup_ratio", "0",
            "--learning_rate_compressor_nlayers", "5e-5", *SMALL, "--eval_steps", "0", "--save_steps", "0",
            "--output_dir", out]
    log = str(tmp_path / "run.log")
    proc = run("deepspeed", 2, args, _env(), log, timeout=900)
    assert proc.returncode == 0, log_tail(log)
    losses = tb_scalars(out, "train/loss")
    assert sorted(losses) == [1, 2] and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    # the reused compressor was loaded (two steps at 5e-5 move a weight by ~1e-4), not the generator's fresh copy
    exported = load_export(os.path.join(out, "final"))["compressor"]
    for name, tensor in saved.items():
        assert (exported[name].float() - tensor).abs().max() < 2e-3, name
    # evaluation generated answers with the whole generator gathered once per batch, on both ranks in lockstep
    assert "ZeRO-3 generation: the generator" in log_tail(log, 200_000)
    assert "gathered once per batch" in log_tail(log, 200_000)
    assert tb_scalars(out, "eval/accuracy")


def test_old_deepspeed_with_zero3_checkpointing_is_refused_before_loading():
    with pytest.raises(ConfigError, match=r"0\.19\.3.*--gradient_checkpointing false"):
        check_checkpointing_support("0.19.2", 3, True)
    check_checkpointing_support("0.19.3", 3, True)
    check_checkpointing_support("0.19.8+cu124", 3, True)
    check_checkpointing_support("0.16.0", 3, False)   # no checkpointing: nothing to fix
    check_checkpointing_support("0.16.0", 2, True)    # ZeRO-2 keeps whole weights
