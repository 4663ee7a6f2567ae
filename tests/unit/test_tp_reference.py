# Each NxD TP rank's local computation, run over the converter's shard FILES, reproduces the unsharded model.
import os

import pytest
import torch

from scaledown.checkpoint import convert
from tests.convert_helpers import make_hf_folder, probe_batch
from tests.tp_reference import RankReference


def unsharded(model, batch):
    """Loss and the answer-token logits of the one-process model."""
    from scaledown.models.compressor_builders import decoder_base
    from scaledown.models.generator import base_causal_lm
    with torch.no_grad():
        out = model(batch)
        embeds, _ = model.input_embeddings(batch, "memory")
        lm = base_causal_lm(model.generator)
        mask = batch["attention_mask"]
        hidden = decoder_base(lm)(inputs_embeds=embeds, attention_mask=mask,
                                  position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0)).last_hidden_state
        selected = batch["labels"][:, 1:] != -100
        logits = lm.get_output_embeddings()(hidden[:, :-1][selected]).float()
    return out, logits


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """kind -> (HF folder, model, probe batch, unsharded output, unsharded logits), built on first use."""
    cache = {}

    def get(kind):
        if kind not in cache:
            folder = tmp_path_factory.mktemp(kind) / "final"
            model = make_hf_folder(folder, compressor_type=kind)
            batch = probe_batch(model)
            cache[kind] = (folder, model, batch, *unsharded(model, batch))
        return cache[kind]
    return get


# the tiny Llama compressor has 4 attention heads, so tp 8 is refused for it (test_parallel_plan)
GRID = [("n_layers", tp, pp) for tp in (1, 2, 4, 8) for pp in (1, 2, 4)] + \
       [("causal_lm", tp, pp) for tp in (1, 2, 4) for pp in (1, 3)]


@pytest.mark.parametrize("kind,tp,pp", GRID)
def test_rank_computation_from_shard_files_matches_unsharded_model(sources, tmp_path, kind, tp, pp):
    folder, model, batch, out, logits = sources(kind)
    path = convert("hf", "nxd", str(folder), str(tmp_path / "nxd"), tp=tp, pp=pp, xser=(tp == 4)).path
    loss, ref_logits, rerank = RankReference(path, model).forward(batch)
    assert torch.allclose(ref_logits, logits, atol=1e-5, rtol=0)
    assert abs(float(loss) - float(out.loss)) < 1e-5
    assert abs(float(rerank) - float(out.rerank_loss)) < 1e-5


def test_the_reference_notices_wrong_shards(sources, tmp_path):
    """Swapping two ranks' Q heads, or moving a weight to another stage, breaks the rank computation."""
    folder, model, batch, out, _ = sources("n_layers")
    path = convert("hf", "nxd", str(folder), str(tmp_path / "nxd"), tp=4, pp=2).path
    files = [os.path.join(path, "model", f"dp_rank_00_tp_rank_{t:02d}_pp_rank_01.pt") for t in (0, 1)]
    shards = [torch.load(f, weights_only=True) for f in files]
    name = "generator.base_model.model.model.layers.3.self_attn.q_proj.base_layer.weight"
    shards[0][name], shards[1][name] = shards[1][name], shards[0][name]
    for shard, f in zip(shards, files):
        torch.save(shard, f)
    loss, _, _ = RankReference(path, model).forward(batch)
    assert abs(float(loss) - float(out.loss)) > 1e-3
    lm_head = "generator.base_model.model.lm_head.weight"
    for t in range(4):
        f0 = os.path.join(path, "model", f"dp_rank_00_tp_rank_{t:02d}_pp_rank_00.pt")
        f1 = os.path.join(path, "model", f"dp_rank_00_tp_rank_{t:02d}_pp_rank_01.pt")
        s0, s1 = torch.load(f0, weights_only=True), torch.load(f1, weights_only=True)
        s0[lm_head] = s1.pop(lm_head)
        torch.save(s0, f0)
        torch.save(s1, f1)
    with pytest.raises(KeyError, match="lm_head.weight is not in the shard files of pipeline stage 1"):
        RankReference(path, model).forward(batch)
