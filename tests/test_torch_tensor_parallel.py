# DTensor tensor parallel of the torch backend from the one plan (scaledown/parallel), under real torchrun gloo ranks.
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from test_torch_backend import logged_losses, one_process, torchrun
from scaledown.errors import ConfigError
from scaledown.training.backends.torch_native.mesh import mesh_shape

pytestmark = pytest.mark.slow
PLACEMENTS = os.path.join(ROOT, "tests", "torch_tp_placements.py")


@pytest.fixture
def env(subprocess_env):
    return dict(subprocess_env, OMP_NUM_THREADS="1")


def logged(run_dir, tag):
    from deepspeed_runs import tb_scalars
    return [value for _, value in sorted(tb_scalars(str(run_dir), tag).items())]


def _plan_and_model(generator):
    from scaledown import ScaleDownConfig, ScaleDownModel
    from scaledown.parallel import ParallelPlan
    values = {"preset": "tiny", "use_bf16": False}
    if generator != "tiny":
        values.update(generator_model_name=generator, compressor_type="n_layers", num_compressor_layers=1)
    model = ScaleDownModel(ScaleDownConfig.from_dict(values))
    return ParallelPlan.for_model(model, tp=2), model


def test_every_rule_of_the_plan_is_the_dtensor_placement_of_what_it_covers(tmp_path, env):
    """The tiny model (Mistral-shaped, GQA, untied, LoRA) and the zoo's Qwen2 (q/k/v biases, tied embeddings)."""
    from deepspeed_runs import free_port
    from tests.model_zoo import build
    from torch import nn
    from scaledown.parallel import rules as R
    from scaledown.parallel.plan import find_stacks
    qwen2 = build("qwen2", str(tmp_path / "qwen2"))
    out = tmp_path / "placements.json"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), PLACEMENTS, str(out), "tiny=tiny", f"qwen2={qwen2}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"placements.json.{r}").read_text()) for r in range(2)]
    for name, generator in (("tiny", "tiny"), ("qwen2", qwen2)):
        plan, model = _plan_and_model(generator)
        names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
        matched = set()
        for rank in ranks:
            got = rank[name]
            # every parameter holds exactly the plan's shard of the full weight (the NxD / converter arithmetic)
            assert got["wrong_shards"] == [] and got["checked"] == len(names), (name, got["wrong_shards"][:5])
            assert set(got["placements"]) == set(names)
            # and compute the unsharded model's loss and gradients (float64: only rounding differs, ~1e-16)
            assert got["float64"]["compared"] > 20, got["float64"]   # LoRA, compressor and heads all train
            assert got["float64"]["loss"] < 1e-12 and got["float64"]["grad"] < 1e-12, (name, got["float64"])
            for param in names:
                layout = plan.params[param].layout
                want = f"Shard(dim={layout.partition_dim})" if layout.is_sharded else None
                assert got["placements"][param] in ((want,) if want else (None, "Replicate()")), (name, param, layout)
        # every rule of the decoder family (the generator's and the N-layers compressor's) covers a module here
        stacks = find_stacks(model)
        for path, module in model.named_modules():
            proj_path, _ = R.split_peft_path(path)
            for root in (stacks.generator, stacks.backbone):
                if isinstance(module, (nn.Linear, nn.Embedding)) and proj_path.startswith(root + "."):
                    matched |= {p.pattern for p, _ in R.FAMILIES["decoder"] if p.match(proj_path[len(root) + 1:])}
        assert matched == {p.pattern for p, _ in R.FAMILIES["decoder"]}, (name, matched)
        # anchors from the rules' docstring, independent of the plan's own layouts
        place = ranks[0][name]["placements"]
        layer = next(n for n in names if re.search(r"generator\..*layers\.0\.self_attn\.q_proj\.base_layer\.weight$", n))
        attn = layer.rsplit(".q_proj.", 1)[0]
        assert place[layer] == "Shard(dim=0)"                                          # column: output rows
        assert place[f"{attn}.o_proj.base_layer.weight"] == "Shard(dim=1)"            # row: input columns
        assert place[f"{attn}.q_proj.lora_A.default.weight"] is None                  # column base: A whole
        assert place[f"{attn}.q_proj.lora_B.default.weight"] == "Shard(dim=0)"        # ... B split like the base
        assert place[f"{attn}.o_proj.lora_A.default.weight"] == "Shard(dim=1)"        # row base: A split on inputs
        assert place[f"{attn}.o_proj.lora_B.default.weight"] is None                  # ... B whole
        embed = next(n for n in names if n.startswith("generator.") and n.endswith("embed_tokens.weight"))
        head = next(n for n in names if n.endswith("lm_head.weight"))
        assert place[embed] == place[head] == "Shard(dim=0)"                          # vocabulary rows
        if name == "qwen2":
            assert place[f"{attn}.q_proj.base_layer.bias"] == "Shard(dim=0)"          # column bias split too


@pytest.mark.parametrize("ranks,tp,pairs", [
    # 2-rank TP with a generator warm-up: the compressor is re-copied from the TP-sharded generator layers
    (2, 2, ["generator_warmup_ratio=0.25"]),
    # 4-rank dp2 x tp2 with activation checkpointing, as a user gets it by default
    (4, 2, ["gradient_checkpointing=true"]),
    # HSDP x TP: 2 replicas x 1 shard x tp2 (a mesh of replicate x shard x tp)
    (4, 2, ["data_parallel_replicate_size=2"]),
    # pipeline x TP: 2 stages x tp2 (a 3-D mesh pp x dp x tp), each stage TP-sharded, then FSDP2 over its 1 dp rank
    (4, 2, ["pipeline_parallel_size=2"]),
], ids=["tp2", "dp2xtp2", "hsdp2xtp2", "pp2xtp2"])
def test_tensor_parallel_runs_equal_the_one_process_run(tmp_path, env, ranks, tp, pairs):
    from scaledown.data.synthetic import generate_examples
    from scaledown.models.loading import load_tokenizer
    from scaledown.presets import TINY_GENERATOR
    # the runs read rows whose answers differ in token count, so the token-weighted global mean matters
    tokenizer = load_tokenizer(TINY_GENERATOR)
    lengths = {len(tokenizer(r["answer"], add_special_tokens=False)["input_ids"]) for r in generate_examples(64, seed=1)}
    assert len(lengths) > 1, lengths
    result, log = torchrun(ranks, tmp_path, "tp", env, f"tensor_parallel_size={tp}", "eval_max_examples=0", *pairs)
    overrides = {k: json.loads(v) for k, v in (p.split("=") for p in pairs)}
    pp = overrides.pop("pipeline_parallel_size", 1)   # the one-process run has no stages
    assert f"data-parallel ranks {ranks // tp // pp}" in log and f"tensor parallel {tp}" in log
    if "data_parallel_replicate_size=2" in pairs:
        assert "HSDP: 2 replicas x 1 shards x tensor parallel 2" in log, log[-3000:]
    if pp > 1:
        assert "2 pipeline stages x FSDP2 over 1 rank x tensor parallel 2" in log, log[-3000:]
    local = one_process(tmp_path, **overrides)
    assert result["steps"] == 4 and len(logged_losses(tmp_path / "tp")) == 4
    assert logged_losses(tmp_path / "tp") == pytest.approx(logged_losses(tmp_path / "local"), rel=1e-5)
    # Gradient norms: 5e-5. In float64 the TP gradients equal the unsharded ones to ~1e-16 (the placement test), so
    # what remains is float32 summation order (row-parallel partial sums, the vocabulary-parallel softmax): 4e-6 at
    # step 1, which Adam (each element's step normalised) turns into 2.3e-5 by step 4 (measured, tp2 with warm-up).
    assert logged(tmp_path / "tp", "train/grad_norm") == pytest.approx(logged(tmp_path / "local", "train/grad_norm"),
                                                                       rel=5e-5)
    if ranks == 2 or pp > 1:   # the exported folder is the full model (TP, FSDP2 and stage shards gathered)
        from scaledown import ScaleDownModel
        exported = ScaleDownModel.from_pretrained(result["final_dir"]).state_dict()
        reference = ScaleDownModel.from_pretrained(local.final_dir).state_dict()
        assert exported.keys() == reference.keys()
        for key in reference:
            # A shard gathered into the wrong place moves whole rows or columns. Single elements may differ: Adam
            # normalises each element's step, so one whose gradient is near zero (its sign set by float32 order) can
            # move up to lr (2e-3) per step apart; measured 1-2 elements of 4k-262k, at most 3.1e-4.
            off = ~torch.isclose(exported[key], reference[key], rtol=1e-3, atol=1e-4)
            assert int(off.sum()) <= max(2, off.numel() // 1000), (key, int(off.sum()))
            torch.testing.assert_close(exported[key], reference[key], rtol=0, atol=4 * 2e-3, msg=key)


def test_the_launcher_with_tp_evaluates_and_generates_like_one_process(tmp_path, env):
    """torchrun launchers/train_torch.py --tp 2 (the CLI's checks pass at 2 ranks): evaluation's loss, teacher-forced
    token accuracy (argmax of the gathered logits) and generated answers (lm_head gathered while decoding) equal
    train.py's in one process."""
    from deepspeed_runs import free_port
    flags = ["--preset", "tiny", "--max_steps", "2", "--batch_size", "4", "--eval_max_examples", "4", "--eval_steps",
             "2", "--gradient_checkpointing", "false"]
    runs = {"tp": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(free_port()), "launchers/train_torch.py", "--tp", "2"],
            "one": [sys.executable, "train.py"]}
    logs = {}
    for name, head in runs.items():
        proc = subprocess.run([*head, *flags, "--output_dir", str(tmp_path / name)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        logs[name] = proc.stdout
    assert "tensor parallel 2 (world 2 = data-parallel 1 x tp 2)" in logs["tp"]
    for tag in ("eval/loss", "eval/token_accuracy", "eval/accuracy", "eval/exact_match", "train/loss"):
        tp, one = logged(tmp_path / "tp", tag), logged(tmp_path / "one", tag)
        assert len(one) >= 1 and tp == pytest.approx(one, rel=1e-5, abs=1e-6), (tag, tp, one)


def _train(capsys, tmp_path, *flags):
    """`scaledown train --backend torch ...` in this process (the refusals come before torch.distributed starts)."""
    from scaledown.cli.main import main
    out = tmp_path / "refused"
    code = main(["train", "--backend", "torch", "--preset", "tiny", "--max_steps", "2", "--batch_size", "4",
                 "--eval_max_examples", "0", *flags, "--output_dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert not out.exists()   # refused before data, model or output folder
    return " ".join(err.split())


def test_what_dtensor_cannot_shard_is_refused_before_building(tmp_path, capsys, monkeypatch):
    from tests.model_zoo import build
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):   # one process, as a user starts it without torchrun
        monkeypatch.delenv(name, raising=False)
    # the tiny generator has 8 heads and 2 key/value heads: --tp 4 would need NxD's KV replication
    text = _train(capsys, tmp_path, "--tp", "4")
    assert re.search(r"--tp 4: the generator \(mistral, .*2 key/value heads.*Use --tp 1 / 2", text), text
    # Phi-3 fuses q/k/v and gate/up in one matrix each: no rule of the plan can cut them
    phi3 = build("phi3", str(tmp_path / "phi3"))
    text = _train(capsys, tmp_path, "--tp", "2", "--generator_model_name", phi3, "--compressor_type", "n_layers")
    assert re.search(r"--backend torch .*phi3.*qkv_proj.*--tp 1", text), text
    # ModernBERT's Wqkv / Wi are cut with a stride by the plan, which DTensor's styles do not do
    text = _train(capsys, tmp_path, "--tp", "2", "--compressor_type", "modernbert")
    assert re.search(r"--tp 2: the compressor \(modernbert, .*Wqkv.*Use --tp 1", text), text
    # with pipeline stages: the same TP refusals, and the stage rule's own (a tied lm_head cannot span two stages)
    text = _train(capsys, tmp_path, "--tp", "4", "--pp", "2", "--generator_warmup_ratio", "0")
    assert re.search(r"--tp 4: the generator \(mistral, .*2 key/value heads.*Use --tp 1 / 2", text), text
    from loss_split import make_tied_generator
    tied = make_tied_generator(str(tmp_path / "tied"))
    text = _train(capsys, tmp_path, "--tp", "2", "--pp", "2", "--generator_model_name", tied,
                  "--generator_warmup_ratio", "0")
    assert "ties lm_head" in text and "--pp 1" in text, text
    # a --tp that fits the model but not the ranks launched (one process here)
    text = _train(capsys, tmp_path, "--tp", "2")
    assert "tensor_parallel_size 2 must be at least 1 and divide the 1 ranks" in text, text


def test_mesh_factors_are_named():
    shape = mesh_shape(8, 2, 2, 1)
    assert (shape.replicate, shape.shard, shape.tp, shape.dp) == (2, 2, 2, 4)
    with pytest.raises(ConfigError, match=r"tensor_parallel_size 3 .* divide the 8 ranks.*--tp 1 / 2 / 4 / 8"):
        mesh_shape(8, 1, 3, 1)
    with pytest.raises(ConfigError, match=r"data_parallel_replicate_size 4 .* divide the 2 data-parallel ranks "
                                          r"\(8 ranks / tp 4"):
        mesh_shape(8, 4, 4, 1)
    # with pipeline stages (3-D: pp x dp x tp, pp outermost): tp divides each stage's ranks, not only the world
    shape = mesh_shape(8, 1, 2, 2)
    assert (shape.pipeline, shape.replicate, shape.shard, shape.tp, shape.dp) == (2, 1, 2, 2, 2)
    assert shape.describe() == ("2 pipeline stages x FSDP2 over 2 ranks x tensor parallel 2 "
                                "(world 8 = 2 stages x data-parallel 2 x tp 2)")
    with pytest.raises(ConfigError, match=r"tensor_parallel_size 4 .* divide the 6 ranks of each pipeline stage "
                                          r"\(12 ranks / 2 stages\).*--tp 1 / 2 / 3 / 6"):
        mesh_shape(12, 1, 4, 2)
    with pytest.raises(ConfigError, match=r"data_parallel_replicate_size 3 .* divide the 4 data-parallel ranks of "
                                          r"each pipeline stage \(16 ranks / 2 stages / tp 2\)"):
        mesh_shape(16, 3, 2, 2)


def test_the_tp_ranks_and_stages_of_a_data_parallel_rank_share_its_batches():
    """8 ranks as pp 2 x dp 2 x tp 2 (row-major, as init_device_mesh numbers them): the sampler's share is the dp
    coordinate alone."""
    from types import SimpleNamespace
    from scaledown.training.backends.torch_native.mesh import data_parallel_rank
    shape = mesh_shape(8, 1, 2, 2)
    names = ("pp", "dp_shard", "tp")
    shares = [data_parallel_rank(SimpleNamespace(mesh_dim_names=names,
                                                 get_coordinate=lambda r=r: [r // 4, r // 2 % 2, r % 2]), shape)
              for r in range(8)]
    assert shares == [0, 0, 1, 1, 0, 0, 1, 1]


def test_a_width_tp_does_not_divide_is_named(tmp_path):
    """Heads fit --tp 2 but the MLP width (65) does not: the shared plan's own check, named for this backend."""
    from tests.model_zoo import build
    from scaledown import ScaleDownConfig
    from scaledown.checkpoint.description import ModelDescription
    from scaledown.training.backends.torch_native.tensor_parallel import check_before_build
    folder = build("qwen2", str(tmp_path / "qwen2"), sizes={"intermediate_size": 65})
    config = ScaleDownConfig.from_dict({"preset": "tiny", "generator_model_name": folder, "compressor_type": "n_layers",
                                        "num_compressor_layers": 1, "tensor_parallel_size": 2})
    with pytest.raises(ConfigError, match=r"--backend torch .*--tp 2 does not divide the MLP width "
                                          r"\(intermediate_size\) 65 of .*mlp\.(gate|up)_proj"):
        check_before_build(config, lambda: ModelDescription.from_config(config))
