# DeepSpeed side of the converters, against real ZeRO-3 runs (2 CPU ranks, gloo) and DeepSpeed's own tools.
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from scaledown.checkpoint import convert
from scaledown.checkpoint.deepspeed_read import read_deepspeed
from tests.convert_helpers import assert_same_tensors, make_hf_folder, safetensors_of, write_config

pytestmark = pytest.mark.slow
RUN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ds_tiny_run.py")


def require_deepspeed():
    try:
        import deepspeed  # noqa: F401
        ok = shutil.which("g++") is not None
    except ImportError:
        ok = False
    if not ok:
        if os.environ.get("SCALEDOWN_REQUIRE_DEEPSPEED") == "1":
            pytest.fail("SCALEDOWN_REQUIRE_DEEPSPEED=1 but DeepSpeed (with g++ for its JIT-built ops) is missing")
        pytest.skip("DeepSpeed (with g++ for its JIT-built ops) is not available")


def launch(nproc, args, env, log, result):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", str(nproc), "--master_port",
           str(port), RUN, *args, "--result", str(result)]
    with open(log, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=900)
    assert proc.returncode == 0, open(log).read()[-4000:]
    return json.loads(open(result).read())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """2 ranks: fp32 ZeRO-3 run (2 steps, saved, then probe / 3rd step / probe) and a bf16 one (1 step, saved)."""
    require_deepspeed()
    from tests.conftest import ROOT
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    root = tmp_path_factory.mktemp("ds")
    result = launch(2, ["train", "--out", str(root / "run")], env, root / "train.log", root / "train.json")
    return root, env, result, write_config(root / "config.json")


def test_deepspeed_to_hf_equals_zero_to_fp32(trained, tmp_path):
    """Like with like: zero_to_fp32 returns trainable weights as fp32 masters and frozen ones in 16-bit."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    root, _, _, config = trained
    for run in ("run", "run_bf16"):
        oracle = get_fp32_state_dict_from_zero_checkpoint(str(root / run))
        convert("deepspeed", "hf", str(root / run), str(tmp_path / run), config_file=config)
        files = safetensors_of(tmp_path / run)
        ours = {f"generator.{k}": v for k, v in files["generator_base/model.safetensors"].items()}
        compressor = {f"compressor.{k}": v for k, v in files["compressor/model.safetensors"].items()}
        adapter = files["generator_adapter/adapter_model.safetensors"]
        for name, tensor in oracle.items():
            if name.startswith("compressor."):
                got = compressor[name]
            elif "lora_" in name:
                got = adapter[name[len("generator."):].replace(".default.", ".")]
            else:
                got = ours[name.replace("generator.base_model.model.", "generator.").replace(".base_layer.", ".")]
            assert got.dtype == tensor.dtype and torch.equal(got, tensor), name
        dtypes = {str(v.dtype) for v in oracle.values()}
        assert dtypes == ({"torch.float32", "torch.bfloat16"} if run == "run_bf16" else {"torch.float32"})


def test_deepspeed_hf_deepspeed_round_trip_is_bit_exact(trained, tmp_path):
    root, _, _, config = trained
    source = read_deepspeed(str(root / "run_bf16"), config_file=config)
    convert("deepspeed", "hf", str(root / "run_bf16"), str(tmp_path / "hf"), config_file=config)
    result = convert("hf", "deepspeed", str(tmp_path / "hf"), str(tmp_path / "ds"))
    back = read_deepspeed(result.path)
    assert set(back.weights) == set(source.weights)
    for name, tensor in source.weights.items():
        assert back.weights[name].dtype == tensor.dtype and torch.equal(back.weights[name], tensor), name
    assert any("starts Adam from zero" in n for n in result.notes)


def test_moments_carry_deepspeed_nxd_deepspeed(trained, tmp_path):
    root, _, _, config = trained
    source = read_deepspeed(str(root / "run"), config_file=config)
    convert("deepspeed", "nxd", str(root / "run"), str(tmp_path / "nxd"), tp=4, pp=2, xser=True, config_file=config)
    result = convert("nxd", "deepspeed", str(tmp_path / "nxd"), str(tmp_path / "ds"))
    back = read_deepspeed(result.path)
    assert back.optimizer.step == source.optimizer.step == 2
    assert [(g["name"], g["lr"], g["params"]) for g in back.optimizer.groups] == [
        (g["name"], g["lr"], g["params"]) for g in source.optimizer.groups]
    assert set(back.optimizer.moments) == set(source.optimizer.moments) and len(source.optimizer.moments) == 80
    for name, values in source.optimizer.moments.items():
        for key, tensor in values.items():
            assert torch.equal(back.optimizer.moments[name][key], tensor), name
    assert all(torch.equal(back.weights[k], v) for k, v in source.weights.items())


def test_deepspeeds_own_universal_conversion_reads_the_same(trained):
    root, env, _, config = trained
    tag = root / "run" / "global_step2"
    subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(tag),
                    "--output_folder", str(tag) + "_universal", "--num_extract_workers", "1",
                    "--num_merge_workers", "1"], env=env, check=True, capture_output=True, timeout=600)
    native = read_deepspeed(str(root / "run"), tag="global_step2", config_file=config)
    universal = read_deepspeed(str(root / "run"), tag="global_step2_universal", config_file=config)
    assert set(native.weights) == set(universal.weights)
    assert all(torch.equal(native.weights[k], universal.weights[k]) for k in native.weights)
    assert all(torch.equal(native.optimizer.moments[n][k], universal.optimizer.moments[n][k])
               for n in native.optimizer.moments for k in ("exp_avg", "exp_avg_sq"))


def test_two_rank_checkpoint_resumes_on_one_rank(trained, tmp_path):
    """Weights, fp32 masters and Adam moments carry: the 3rd step on 1 rank lands where the 2-rank run did."""
    root, env, two_ranks, config = trained
    uni = convert("deepspeed", "deepspeed", str(root / "run"), str(tmp_path / "uni"), config_file=config).path
    one_rank = launch(1, ["start", "--load", uni, "--step", "--native"], env, tmp_path / "start.log",
                      tmp_path / "start.json")
    assert one_rank["trainer_state"]["optimizer_step"] == 2
    assert abs(one_rank["probe_before"] - two_ranks["probe_before"]) < 1e-5
    assert abs(one_rank["step3_losses"][0] - two_ranks["step3_losses"][0]) < 1e-5
    assert abs(one_rank["probe_after"] - two_ranks["probe_after"]) < 1e-5
    assert abs(one_rank["native_probe"] - two_ranks["probe_before"]) < 1e-5   # DeepSpeed's own universal loader


def test_zero3_started_from_nxd_checkpoint_matches_hf_export(trained, tmp_path):
    from scaledown import ScaleDownModel
    from scaledown.data.synthetic import generate_examples
    _, env, _, _ = trained
    make_hf_folder(tmp_path / "hf")
    convert("hf", "nxd", str(tmp_path / "hf"), str(tmp_path / "nxd"), tp=2, pp=2)
    uni = convert("nxd", "deepspeed", str(tmp_path / "nxd"), str(tmp_path / "ds")).path
    convert("nxd", "hf", str(tmp_path / "nxd"), str(tmp_path / "export"))
    assert_same_tensors(tmp_path / "hf", tmp_path / "export")
    zero3 = launch(2, ["start", "--load", uni], env, tmp_path / "start.log", tmp_path / "start.json")
    model = ScaleDownModel.from_pretrained(str(tmp_path / "export"))
    with torch.no_grad():
        one_process = float(model(model.inputs.collate(generate_examples(4, seed=99), mode="memory")).loss)
    assert abs(zero3["probe_before"] - one_process) < 1e-5


def test_training_checkpoint_keeps_its_trainer_state(trained, tmp_path):
    """A `scaledown train` checkpoint describes itself (no --config) and the converted one is resumable."""
    from scaledown.checkpoint import folder_protocol
    root, _, _, _ = trained
    step_dir = tmp_path / "run" / "checkpoints" / "step_0000002"
    shutil.copytree(root / "run" / "global_step2", step_dir)
    config = json.loads(open(root / "config.json").read())
    from tests.conftest import tiny_config
    state = {"step": 2, "phase": "finetune", "backend": "deepspeed", "dp_size": 2,
             "config": tiny_config(**{k: v for k, v in config.items() if k != "preset"}).to_dict()}
    (step_dir / "trainer_state.json").write_text(json.dumps(state))
    out = convert("deepspeed", "nxd", str(step_dir), str(tmp_path / "trn1"), tp=2)
    assert os.path.basename(out.path) == "step_0000002" and "trainer_state.json" in out.carried
    assert folder_protocol.resolve_resume(str(tmp_path / "trn1"), "unused") == out.path
    saved = json.loads(open(os.path.join(out.path, "trainer_state.json")).read())
    assert (saved["step"], saved["phase"], saved["backend"]) == (2, "finetune", "nxd")


def test_incomplete_deepspeed_checkpoint_is_refused(trained, tmp_path):
    from scaledown.errors import CheckpointError
    root, _, _, config = trained
    copy = tmp_path / "copy" / "global_step2"
    shutil.copytree(root / "run" / "global_step2", copy)
    os.remove(copy / "zero_pp_rank_1_mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match=r"written by 2 ranks but holds model-state files of ranks \[0\]"):
        convert("deepspeed", "hf", str(copy), str(tmp_path / "hf"), config_file=config)
    with pytest.raises(CheckpointError, match="does not say which model it holds.*--config FILE"):
        convert("deepspeed", "hf", str(root / "run"), str(tmp_path / "hf"))
    assert not os.path.exists(tmp_path / "hf")
