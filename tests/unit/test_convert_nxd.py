# Hugging Face <-> NxD conversion: bit-exact round trips over tp x pp, the files NxD reads, and every error.
import os
import pickletools
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch

from scaledown.checkpoint import convert
from scaledown.errors import CheckpointError, ConfigError
from tests import nxd_oracle as O
from tests.convert_helpers import assert_same_tensors, make_hf_folder, write_config

GEN = "generator.base_model.model.model"


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "final"
    model = make_hf_folder(folder)
    return folder, model


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
@pytest.mark.parametrize("pp", [1, 2, 4])
def test_hf_nxd_hf_is_bit_exact(hf, tmp_path, tp, pp):
    folder, _ = hf
    result = convert("hf", "nxd", str(folder), str(tmp_path / "nxd"), tp=tp, pp=pp)
    assert sorted(os.listdir(os.path.join(result.path, "model"))) == sorted(
        f"dp_rank_00_tp_rank_{t:02d}_pp_rank_{p:02d}.pt" for t in range(tp) for p in range(pp))
    convert("nxd", "hf", str(tmp_path / "nxd"), str(tmp_path / "back"))
    assert_same_tensors(folder, tmp_path / "back")


@pytest.mark.parametrize("kind,tp,pp", [("modernbert", 4, 3), ("causal_lm", 2, 4)])
def test_other_compressors_round_trip(tmp_path, kind, tp, pp):
    make_hf_folder(tmp_path / "hf", compressor_type=kind)
    convert("hf", "nxd", str(tmp_path / "hf"), str(tmp_path / "nxd"), tp=tp, pp=pp, xser=True)
    convert("nxd", "hf", str(tmp_path / "nxd"), str(tmp_path / "back"))
    assert_same_tensors(tmp_path / "hf", tmp_path / "back")


def test_nxd_shards_read_independently_match_nxd_rules(hf, tmp_path):
    """Read the plain shard files with torch.load alone and slice the full weights by NxD's own formulas."""
    folder, model = hf
    tp, pp, m = 8, 4, 4                       # 2 KV heads < tp: replicated x4 (tiled, Trn1)
    path = convert("hf", "nxd", str(folder), str(tmp_path / "nxd"), tp=tp, pp=pp).path
    for marker in ("checkpoint", "done"):
        assert open(os.path.join(path, marker)).read() == "1"
    full = model.state_dict()
    shard = lambda t, p: torch.load(os.path.join(path, "model", f"dp_rank_00_tp_rank_{t:02d}_pp_rank_{p:02d}.pt"),
                                    weights_only=True)
    # 6 decoder layers (2 compressor + 4 generator) over 4 stages: 1, 1, 2, 2 -> generator layer 1 is on stage 2
    layer = f"{GEN}.layers.1.self_attn"
    cfg = model.generator.get_base_model().config
    heads, kv, dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    for t in range(tp):
        s0, s2, s3 = shard(t, 0), shard(t, 2), shard(t, 3)
        assert torch.equal(s2[f"{layer}.q_proj.base_layer.weight"],
                           O.q_rows_trn1(full[f"{layer}.q_proj.base_layer.weight"], heads, kv, dim, m, tp, t))
        assert torch.equal(s2[f"{layer}.q_proj.lora_B.default.weight"],
                           O.q_rows_trn1(full[f"{layer}.q_proj.lora_B.default.weight"], heads, kv, dim, m, tp, t))
        assert torch.equal(s2[f"{layer}.k_proj.base_layer.weight"],
                           O.kv_rows_trn1(full[f"{layer}.k_proj.base_layer.weight"], m, tp, t))
        assert torch.equal(s2[f"{layer}.o_proj.base_layer.weight"],
                           O.o_columns_trn1(full[f"{layer}.o_proj.base_layer.weight"], heads, kv, dim, m, tp, t))
        assert torch.equal(s2[f"{layer}.q_proj.lora_A.default.weight"], full[f"{layer}.q_proj.lora_A.default.weight"])
        assert torch.equal(s0[f"{GEN}.embed_tokens.weight"], O.contiguous(full[f"{GEN}.embed_tokens.weight"], 0, tp, t))
        assert torch.equal(s3["generator.base_model.model.lm_head.weight"],
                           O.contiguous(full["generator.base_model.model.lm_head.weight"], 0, tp, t))
        assert f"{GEN}.embed_tokens.weight" not in s3 and "generator.base_model.model.lm_head.weight" not in s0
        down = f"{GEN}.layers.3.mlp.down_proj"
        assert torch.equal(s3[f"{down}.lora_A.default.weight"], O.contiguous(full[f"{down}.lora_A.default.weight"], 1, tp, t))
        assert "compressor.memory_norm.weight" in s2 and "compressor.backbone.layers.1.mlp.up_proj.weight" in shard(t, 1)


def test_cli_writes_xser_that_reads_back_without_torch_xla(hf, tmp_path, subprocess_env):
    folder, _ = hf
    run = lambda *args: subprocess.run([sys.executable, "-m", "scaledown.cli.main", "convert", *args],
                                       env=subprocess_env, capture_output=True, text=True, timeout=600)
    out = run("--from", "hf", "--to", "nxd", str(folder), str(tmp_path / "nxd"), "--tp", "4", "--pp", "2", "--xser",
              "--tag", "mytag")
    assert out.returncode == 0, out.stderr
    assert "wrote nxd checkpoint" in out.stdout and "no optimizer state" in out.stdout
    ref = tmp_path / "nxd" / "mytag" / "model" / "dp_rank_00_tp_rank_03_pp_rank_01.pt"
    assert os.path.isfile(str(ref) + ".info.pt") and os.path.isfile(str(ref) + ".tensors/tensor_0.pt")
    with zipfile.ZipFile(ref) as z:
        pickle_bytes = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    globals_ = {arg for op, arg, _ in pickletools.genops(pickle_bytes) if op.name == "GLOBAL"}
    assert globals_ == {"torch_xla.utils.serialization TensorReference"}
    assert "torch_xla" not in sys.modules
    out = run("--from", "nxd", "--to", "hf", str(tmp_path / "nxd"), str(tmp_path / "back"))
    assert out.returncode == 0, out.stderr
    assert_same_tensors(folder, tmp_path / "back")


def test_nxd_checkpoint_of_a_training_run_describes_itself(hf, tmp_path):
    """Without our metadata: the model comes from trainer_state.json, the KV replication from the k_proj shards."""
    import json
    from tests.conftest import tiny_config
    folder, _ = hf
    path = convert("hf", "nxd", str(folder), str(tmp_path / "nxd"), tp=8, pp=2, tag="step_0000003").path
    os.remove(os.path.join(path, "scaledown_checkpoint.json"))
    config = tiny_config(enable_reranking=True, weight_decay=0.0, seed=5).to_dict()
    with open(os.path.join(path, "trainer_state.json"), "w") as f:
        json.dump({"step": 3, "phase": "finetune", "backend": "nxd", "config": config}, f)
    out = convert("nxd", "nxd", str(tmp_path / "nxd"), str(tmp_path / "again"), tp=2)
    assert os.path.basename(out.path) == "step_0000003" and "trainer_state.json" in out.carried
    convert("nxd", "hf", out.path, str(tmp_path / "back"))
    assert_same_tensors(folder, tmp_path / "back")


def test_optimizer_moments_reshard_between_nxd_layouts(hf, tmp_path):
    from scaledown.checkpoint.full import OptimizerState
    from scaledown.checkpoint.hf_format import read_hf
    from scaledown.checkpoint.nxd_format import read_nxd, write_nxd
    folder, _ = hf
    ckpt = read_hf(str(folder))
    groups = ckpt.description.trainable_groups()
    gen = torch.Generator().manual_seed(2)
    moments = {n: {"exp_avg": torch.randn(ckpt.weights[n].shape, generator=gen),
                   "exp_avg_sq": torch.rand(ckpt.weights[n].shape, generator=gen)} for n in groups}
    ckpt.optimizer = OptimizerState(moments, 11, [{"name": g, "lr": 1e-3 * (i + 1), "params": [
        n for n in groups if groups[n] == g]} for i, g in enumerate(("generator", "compressor"))])
    write_nxd(ckpt, str(tmp_path / "a"), tp=2, pp=2, xser=True)
    result = convert("nxd", "nxd", str(tmp_path / "a"), str(tmp_path / "b"), tp=8, pp=3)
    assert any("Adam moments" in c for c in result.carried)
    back = read_nxd(str(tmp_path / "b"))
    assert back.optimizer.step == 11
    assert [(g["name"], g["lr"], g["params"]) for g in back.optimizer.groups] == [
        (g["name"], g["lr"], g["params"]) for g in ckpt.optimizer.groups]
    for name, values in moments.items():
        for key, tensor in values.items():
            assert torch.equal(back.optimizer.moments[name][key], tensor), name
    sd = torch.load(str(tmp_path / "b" / "pretrained_weight" / "optim" / "dp_rank_00_tp_rank_05_pp_rank_02.pt"),
                    weights_only=True)
    assert sd["param_groups"][0]["param_names"] and all("exp_avg" in s for s in sd["state"].values())


def test_zero1_optimizer_layout_per_data_parallel_rank(hf, tmp_path):
    """--zero1_dp D writes torch-xla's ZeroRedundancyOptimizer state_dict per data-parallel rank (base_state of each
    rank's dim-0 chunk, padded to a multiple of D, shape_info, no plain state), which NxD's ZeRO-1 load reads; the
    reader joins the ranks back into the same moments. D = 3 divides dim 0 of no weight here: every tensor is padded."""
    from scaledown.checkpoint.full import OptimizerState
    from scaledown.checkpoint.hf_format import read_hf
    from scaledown.checkpoint.nxd_format import read_nxd, write_nxd
    folder, _ = hf
    ckpt = read_hf(str(folder))
    groups = ckpt.description.trainable_groups()
    gen = torch.Generator().manual_seed(4)
    moments = {n: {"exp_avg": torch.randn(ckpt.weights[n].shape, generator=gen),
                   "exp_avg_sq": torch.rand(ckpt.weights[n].shape, generator=gen)} for n in groups}
    ckpt.optimizer = OptimizerState(moments, 7, [{"name": g, "lr": 1e-3, "params": [
        n for n in groups if groups[n] == g]} for g in ("generator", "compressor")])
    write_nxd(ckpt, str(tmp_path / "z"), tp=2, pp=2, zero1_dp=3)
    optim = tmp_path / "z" / "pretrained_weight" / "optim"
    assert len(os.listdir(optim)) == 2 * 2 * 3
    files = [torch.load(str(optim / f"dp_rank_{d:02d}_tp_rank_01_pp_rank_01.pt"), weights_only=True) for d in range(3)]
    for sd in files:
        assert sd["state"] == {} and set(sd) == {"state", "param_groups", "base_state", "shape_info"}
        assert "param_names" in sd["param_groups"][0]
    for index, shape in files[0]["shape_info"].items():
        chunks = [f["base_state"][index]["exp_avg"] for f in files]
        assert len({c.shape for c in chunks}) == 1 and sum(c.shape[0] for c in chunks) == -(-shape[0] // 3) * 3
    back = read_nxd(str(tmp_path / "z"))
    assert back.optimizer.step == 7
    for name, values in moments.items():
        for key, tensor in values.items():
            assert torch.equal(back.optimizer.moments[name][key], tensor), name
    os.remove(optim / "dp_rank_02_tp_rank_00_pp_rank_00.pt")
    with pytest.raises(CheckpointError, match="lacks the ZeRO-1 optimizer files dp_rank_02_tp_rank_00_pp_rank_00.pt"):
        read_nxd(str(tmp_path / "z"))


def test_errors_before_writing(hf, tmp_path):
    folder, _ = hf
    nxd = str(tmp_path / "nxd")
    with pytest.raises(ConfigError, match="--tp 3 does not divide"):
        convert("hf", "nxd", str(folder), nxd, tp=3)
    with pytest.raises(ConfigError, match="--pp 9 is larger"):
        convert("hf", "nxd", str(folder), nxd, pp=9)
    with pytest.raises(ConfigError, match="only applies to --to nxd"):
        convert("hf", "deepspeed", str(folder), nxd, tp=2)
    assert not os.path.exists(nxd)
    path = convert("hf", "nxd", str(folder), nxd, tp=2, pp=2).path
    with pytest.raises(CheckpointError, match="describe different models.*lora_r: 16 vs 8"):
        convert("nxd", "hf", nxd, str(tmp_path / "x"), config_file=write_config(tmp_path / "c.json", lora_r=8))
    os.rename(os.path.join(path, "model", "dp_rank_00_tp_rank_01_pp_rank_00.pt"), str(tmp_path / "moved.pt"))
    with pytest.raises(CheckpointError, match="missing 1 of 4 shards.*dp_rank_00_tp_rank_01_pp_rank_00.pt"):
        convert("nxd", "hf", nxd, str(tmp_path / "x"))
    os.rename(str(tmp_path / "moved.pt"), os.path.join(path, "model", "dp_rank_00_tp_rank_01_pp_rank_00.pt"))
    shutil.copy(os.path.join(path, "model", "dp_rank_00_tp_rank_00_pp_rank_00.pt"),
                os.path.join(path, "model", "dp_rank_00_tp_rank_01_pp_rank_01.pt"))
    with pytest.raises(CheckpointError, match="tensors that pipeline stage 1 of this model does not own"):
        convert("nxd", "hf", nxd, str(tmp_path / "x"))
    make_hf_folder(tmp_path / "other_hf", lora_r=8)
    other = convert("hf", "nxd", str(tmp_path / "other_hf"), str(tmp_path / "other"), tp=2, pp=2).path
    shutil.copy(os.path.join(other, "model", "dp_rank_00_tp_rank_01_pp_rank_01.pt"),
                os.path.join(path, "model", "dp_rank_00_tp_rank_01_pp_rank_01.pt"))
    with pytest.raises(CheckpointError, match="has shape .* but this model's plan expects"):
        convert("nxd", "hf", nxd, str(tmp_path / "x"))
    os.remove(os.path.join(path, "done"))
    with pytest.raises(CheckpointError, match="no complete NxD checkpoint"):
        convert("nxd", "hf", nxd, str(tmp_path / "x"))
    with pytest.raises(CheckpointError, match="has no 'done' marker"):
        convert("nxd", "hf", path, str(tmp_path / "x"))
    assert not os.path.exists(tmp_path / "x")


def test_failed_write_leaves_nothing(hf, tmp_path, monkeypatch):
    from scaledown.checkpoint import nxd_files
    folder, _ = hf
    real, calls = nxd_files.write_shard, []

    def failing(obj, file, xser):
        calls.append(file)
        if len(calls) == 3:
            raise OSError("disk full")
        real(obj, file, xser)
    monkeypatch.setattr(nxd_files, "write_shard", failing)
    with pytest.raises(OSError, match="disk full"):
        convert("hf", "nxd", str(folder), str(tmp_path / "nxd"), tp=2, pp=2)
    assert os.listdir(tmp_path / "nxd") == []


def test_merge_lora_folds_the_adapter(hf, tmp_path):
    from scaledown import ScaleDownModel
    from tests.convert_helpers import probe_batch
    folder, model = hf
    convert("hf", "nxd", str(folder), str(tmp_path / "nxd"), tp=2)
    convert("nxd", "hf", str(tmp_path / "nxd"), str(tmp_path / "merged"), merge_lora=True)
    merged = ScaleDownModel.from_pretrained(str(tmp_path / "merged")).eval()
    assert all(float(p.detach().abs().max()) == 0 for n, p in merged.named_parameters() if "lora_B" in n)
    batch = probe_batch(model)
    with torch.no_grad():
        assert abs(float(merged(batch).loss) - float(model(batch).loss)) < 1e-4
