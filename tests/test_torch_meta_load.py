# Folder generators on the torch backend: built on meta, loaded shard by shard (no rank holds the whole model).
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from scaledown.errors import ConfigError

pytestmark = pytest.mark.slow
RUNNER = os.path.join(ROOT, "tests", "torch_meta_load_run.py")


@pytest.fixture(scope="module")
def sharded_generator(tmp_path_factory):
    """The zoo's Mistral saved by save_pretrained in several safetensors files (model.safetensors.index.json)."""
    from transformers import AutoModelForCausalLM
    from tests.model_zoo import build
    root = tmp_path_factory.mktemp("generator")
    folder = build("mistral", str(root / "whole"))
    sharded = str(root / "sharded")
    AutoModelForCausalLM.from_pretrained(folder).save_pretrained(sharded, max_shard_size="40KB")
    for name in os.listdir(folder):   # the tokenizer files
        if "token" in name or name.endswith(".jinja"):
            with open(os.path.join(folder, name), "rb") as src, open(os.path.join(sharded, name), "wb") as dst:
                dst.write(src.read())
    assert len([n for n in os.listdir(sharded) if n.endswith(".safetensors")]) >= 3
    return sharded


def run(tmp_path, name, generator, *pairs, ranks=2):
    from deepspeed_runs import free_port
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port",
           str(free_port()), RUNNER, str(out), str(tmp_path / name), f'generator_model_name="{generator}"',
           'compressor_type="n_layers"', "num_compressor_layers=1", "memory_norm=true", "enable_reranking=true",
           *pairs]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((tmp_path / f"{name}.json.{r}").read_text()) for r in range(ranks)], proc.stdout


def bound(rank):
    """A rank's share of its stage's parameter elements plus the largest decoder layer's. The stage is the whole model
    without --pp; under --pp stage 0 holds both embedding tables and the compressor, more than total / world (the
    tiny Mistral's 134,368 > 231,873 / 2 + 17,472), so the share is of the stage: its elements over the ranks that
    split it, FSDP2's data-parallel ranks and the tp ranks (the few weights TP replicates, norms, are far below a
    layer)."""
    return rank["stage"] / (rank["dp"] * rank["tp"]) + rank["layer"]


# causal_lm: a folder compressor whose fresh MLP projection (2 x 64 x 8096, each Linear 30x a layer) is drawn shard
# by shard too (fresh_draws.py)
CAUSAL_LM = ('compressor_type="causal_lm"', 'compressor_model_name="{generator}"')


@pytest.mark.parametrize("pairs,ranks", [((), 2), (("pipeline_parallel_size=2",), 2),
                                         (("pipeline_parallel_size=2", "tensor_parallel_size=2"), 4), (CAUSAL_LM, 2)],
                         ids=["fsdp2", "pp2", "pp2-tp2", "causal_lm"])
def test_a_folder_generator_is_loaded_shard_by_shard_and_trains_as_the_full_build(tmp_path, sharded_generator,
                                                                                  pairs, ranks):
    pairs = [pair.replace("{generator}", sharded_generator) for pair in pairs]
    meta, said = run(tmp_path, "meta", sharded_generator, *pairs, ranks=ranks)
    full, _ = run(tmp_path, "full", sharded_generator, *pairs, "_full_build=true", ranks=ranks)   # before meta_load.py
    assert said.count("built on the meta device") == 1 and sharded_generator in said   # rank 0 says how it loads
    assert all(r["module"].startswith(ROOT) for r in meta)   # the ranks ran this checkout
    for m, f in zip(meta, full):
        assert len(m["losses"]) == 3
        assert m["losses"] == pytest.approx(f["losses"], rel=1e-5)
        assert m["peak"] <= bound(m), (m["peak"], bound(m))
        assert f["peak"] > bound(f)   # the whole model on every rank: what the bound catches


def test_a_damaged_or_missing_shard_is_named_with_its_fix(tmp_path, sharded_generator):
    import shutil
    from scaledown.training.backends.torch_native.meta_load import WeightFiles
    folder = str(tmp_path / "copy")
    shutil.copytree(sharded_generator, folder)
    with open(os.path.join(folder, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    key, file = next(iter(weight_map.items()))
    with open(os.path.join(folder, file), "r+b") as f:
        f.truncate(64)
    with pytest.raises(ConfigError, match=rf"cannot read '{key}' from .*{file}.*missing or damaged. Copy"):
        WeightFiles().read((folder, key))
    os.remove(os.path.join(folder, file))
    with pytest.raises(ConfigError, match=rf"{file}.*missing or damaged"):
        WeightFiles().read((folder, key))
    with pytest.raises(ConfigError, match="hold no tensor 'nope' that its model needs"):
        WeightFiles().read((folder, "nope"))
    os.remove(os.path.join(folder, "model.safetensors.index.json"))
    with pytest.raises(ConfigError, match="no model.safetensors or model.safetensors.index.json.*save_pretrained"):
        WeightFiles().read((folder, key))


def test_fresh_linears_drawn_by_slice_equal_the_whole_draw():
    """fresh_draws: Linears built on meta, each slice replayed from the seed's stream, equal a real build; the draws
    after them too (the generator advanced as the real build's)."""
    import torch
    from scaledown.training.backends.torch_native.fresh_draws import FreshDraws, drawn

    def make():
        return torch.nn.Sequential(torch.nn.Linear(5, 300), torch.nn.ReLU(), torch.nn.Linear(300, 7))
    torch.manual_seed(4)
    real, after = make(), torch.rand(3)
    fresh = FreshDraws()
    torch.manual_seed(4)
    with fresh.building():
        meta = make()
    assert torch.equal(torch.rand(3), after)
    for (name, r), m in zip(real.named_parameters(), meta.parameters()):
        assert m.device.type == "meta", name
        draw = fresh.by_id[id(m)]
        assert torch.equal(drawn(m.shape, m.dtype, draw, None), r.detach())
        index = (slice(1, 4),) + tuple(slice(2, 5) for _ in m.shape[1:])
        assert torch.equal(drawn(m.shape, m.dtype, draw, index), r.detach()[index])
