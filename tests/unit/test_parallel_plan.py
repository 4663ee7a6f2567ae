# The TP/PP plan: NxD's slicing rules (checked against NxD's own converter formulas), stage cuts, errors.
import pytest
import torch

from scaledown.errors import ConfigError
from scaledown.parallel import ParallelPlan, default_kv_replication
from scaledown.parallel import layout as L
from scaledown.parallel import plan as H   # tp arithmetic: heads, shard / unshard
from scaledown.parallel import pipeline as P
from tests import nxd_oracle as O
from tests.conftest import tiny_config

GEN = "generator.base_model.model.model"


@pytest.fixture(scope="module")
def models():
    from scaledown import ScaleDownModel
    return {kind: ScaleDownModel(tiny_config(compressor_type=kind, enable_reranking=True))
            for kind in ("n_layers", "modernbert", "causal_lm")}


def skeleton(**generator_overrides):
    from scaledown.checkpoint.description import ModelDescription
    desc = ModelDescription.from_config(tiny_config())
    desc.generator_config.update(generator_overrides)
    return desc.skeleton()


@pytest.mark.parametrize("q_heads,kv_heads,tp", [(8, 2, 8), (8, 2, 4), (8, 2, 2), (32, 8, 32), (32, 8, 8), (8, 8, 4)])
def test_gqa_slices_match_nxd_converter(q_heads, kv_heads, tp):
    head_dim, hidden = 4, 12
    m = default_kv_replication(q_heads, kv_heads, tp)
    geo = H.resolve_geometry("generator", q_heads, kv_heads, head_dim, tp)
    assert geo.kv_replication == m and (kv_heads * m) % tp == 0 and tp % m == 0
    q = torch.randn(q_heads * head_dim, hidden)
    o = torch.randn(hidden, q_heads * head_dim)
    k = torch.randn(kv_heads * head_dim, hidden)
    for rank in range(tp):
        assert torch.equal(H.shard(k, L.column(heads="kv", geometry=geo), tp, rank), O.kv_rows_trn1(k, m, tp, rank))
        if kv_heads * m == tp:  # the only case NxD's converter handles; ours generalises it
            assert torch.equal(H.shard(q, L.column(heads="q", geometry=geo), tp, rank),
                               O.q_rows_trn1(q, q_heads, kv_heads, head_dim, m, tp, rank))
            assert torch.equal(H.shard(o, L.row(heads="q", geometry=geo), tp, rank),
                               O.o_columns_trn1(o, q_heads, kv_heads, head_dim, m, tp, rank))
    for lay, full in ((L.column(heads="q", geometry=geo), q), (L.row(heads="q", geometry=geo), o),
                      (L.column(heads="kv", geometry=geo), k)):
        back, notes = H.unshard([H.shard(full, lay, tp, r) for r in range(tp)], lay)
        assert torch.equal(back, full) and not notes


def test_every_rank_holds_the_q_heads_of_its_kv_heads():
    geo = H.resolve_geometry("generator", 24, 3, 8, 8)         # kv*m = 24 = 3 x tp: several KV slots per rank
    assert geo.kv_replication == 8
    for rank in range(8):
        kv = H.kv_heads_of_rank(geo, 8, rank)
        q = H.q_heads_of_rank(geo, 8, rank)
        group = len(q) // len(kv)
        assert [h // (24 // 3) for h in q] == [kv[i // group] for i in range(len(q))]


def test_stride_matches_nxd_fused_layers():
    gate, up = torch.randn(16, 3), torch.randn(16, 3)
    q, k, v = torch.randn(8, 3), torch.randn(8, 3), torch.randn(8, 3)
    for tp in (1, 2, 4):
        for rank in range(tp):
            assert torch.equal(H.shard(torch.cat([gate, up]), L.column(stride=2), tp, rank), O.fused([gate, up], tp, rank))
            assert torch.equal(H.shard(torch.cat([q, k, v]), L.column(stride=3), tp, rank), O.fused([q, k, v], tp, rank))
        shards = [H.shard(torch.cat([gate, up]), L.column(stride=2), tp, r) for r in range(tp)]
        assert torch.equal(H.unshard(shards, L.column(stride=2))[0], torch.cat([gate, up]))


def test_replicated_copies_that_differ_are_reported():
    a = torch.ones(3)
    _, notes = H.unshard([a, a + 1], L.REPLICATED, "norm.weight")
    assert notes and "tp rank 1" in notes[0]


def test_create_partitions_rule():
    assert P.layers_per_stage(6, 4) == [1, 1, 2, 2]
    assert P.layers_per_stage(7, 3) == [2, 2, 3]
    assert P.layers_per_stage(6, 1) == [6]
    assert P.pipeline_cuts(list("abcdef"), 4) == ["a", "b", "d"]
    with pytest.raises(ConfigError, match="--pp 7 is larger than the model's 6 decoder layers"):
        P.layers_per_stage(6, 7)


@pytest.mark.parametrize("pp", [1, 2, 3, 4])
def test_stage_of_every_weight(models, pp):
    model = models["n_layers"]
    plan = ParallelPlan.for_model(model, tp=2, pp=pp)
    layers = plan.layer_names
    assert layers[:2] == ["compressor.backbone.layers.0", "compressor.backbone.layers.1"]
    assert layers[2:] == [f"{GEN}.layers.{i}" for i in range(4)]
    stages = P.stage_of_layers(layers, pp)
    for name, p in plan.params.items():
        layer = next((x for x in layers if name.startswith(x + ".")), None)
        if layer:
            expected = stages[layer]
        elif "embed" in name or name.startswith("compressor.memory_tokens."):
            expected = 0
        elif name.startswith("compressor."):
            expected = stages[f"{GEN}.layers.0"]          # projection, memory_norm, rr_head
        else:
            expected = pp - 1                              # final norm, lm_head
        assert p.stage == expected, name
    assert plan.pipeline_cuts == P.pipeline_cuts(layers, pp)


@pytest.mark.parametrize("kind,tp", [("n_layers", 8), ("modernbert", 4), ("causal_lm", 4)])
def test_plan_covers_every_weight_and_round_trips(models, kind, tp):
    model = models[kind]
    plan = ParallelPlan.for_model(model, tp=tp, pp=2)
    state = model.state_dict()
    assert set(plan.params) == set(state)
    shards = {(t, s): plan.local_state_dict(state, t, s) for t in range(tp) for s in range(2)}
    for (t, s), shard in shards.items():
        for name, tensor in shard.items():
            assert tuple(tensor.shape) == plan.params[name].local_shape(tp)
    full, notes = plan.full_state_dict(shards)
    assert not notes and all(torch.equal(full[k], state[k]) for k in state)


def test_lora_placement_follows_nxd_lora(models):
    plan = ParallelPlan.for_model(models["n_layers"], tp=4)
    layer = f"{GEN}.layers.0"
    for proj in ("self_attn.q_proj", "self_attn.k_proj", "mlp.gate_proj", "mlp.up_proj"):   # column base
        assert plan.params[f"{layer}.{proj}.base_layer.weight"].layout.style == "column"
        assert plan.params[f"{layer}.{proj}.lora_A.default.weight"].layout == L.REPLICATED
        assert plan.params[f"{layer}.{proj}.lora_B.default.weight"].layout.partition_dim == 0
    for proj in ("self_attn.o_proj", "mlp.down_proj"):                                      # row base
        assert plan.params[f"{layer}.{proj}.base_layer.weight"].layout.style == "row"
        assert plan.params[f"{layer}.{proj}.lora_A.default.weight"].layout.partition_dim == 1
        assert plan.params[f"{layer}.{proj}.lora_B.default.weight"].layout == L.REPLICATED
    assert plan.params[f"{layer}.self_attn.o_proj.lora_A.default.weight"].layout.heads == "q"


def test_module_specs_for_the_backend(models):
    plan = ParallelPlan.for_model(models["n_layers"], tp=8)
    layer = f"{GEN}.layers.0"
    head_dim = models["n_layers"].generator.get_base_model().config.head_dim
    k = plan.module_spec(f"{layer}.self_attn.k_proj.base_layer")
    # 2 KV heads tiled x4 to 8 = tp: the replicated k_proj is 8 heads wide
    assert (k.parallel_class, k.kwargs["output_size"], k.kv_shared_group_size) == \
        ("ColumnParallelLinear", 8 * head_dim, 4)
    assert plan.module_spec(f"{layer}.self_attn.k_proj.lora_B.default").kv_shared_group_size == 4
    assert plan.module_spec(f"{layer}.self_attn.k_proj.lora_A.default") is None          # replicated nn.Linear
    o = plan.module_spec(f"{layer}.mlp.down_proj.base_layer")
    assert o.parallel_class == "RowParallelLinear" and o.kwargs["input_is_parallel"]
    assert plan.module_spec(f"{GEN}.embed_tokens").parallel_class == "ParallelEmbedding"
    assert plan.module_spec("generator.base_model.model.lm_head").loss == "parallel_cross_entropy"
    att = plan.attention[f"{layer}.self_attn"]
    assert (att.num_heads, att.num_kv_heads, att.head_dim) == (1, 1, head_dim)
    wqkv = ParallelPlan.for_model(models["modernbert"], tp=2).module_spec("compressor.backbone.layers.0.attn.Wqkv")
    assert wqkv.kwargs["stride"] == 3


def test_errors_name_the_problem_and_the_fix(models):
    with pytest.raises(ConfigError, match=r"--tp 16 does not divide the generator's 8 attention heads.*1, 2, 4, 8"):
        ParallelPlan.for_model(models["n_layers"], tp=16)
    with pytest.raises(ConfigError, match=r"--tp 8 does not divide the compressor's 4 attention heads"):
        ParallelPlan.for_model(models["modernbert"], tp=8)
    with pytest.raises(ConfigError, match=r"--kv_replication 2 does not fit the generator.*valid values for --tp 8: 4\."):
        ParallelPlan.for_model(models["n_layers"], tp=8, kv_replication=2)
    with pytest.raises(ConfigError, match=r"--pp 7 is larger"):
        ParallelPlan.for_model(models["n_layers"], pp=7)
    with pytest.raises(ConfigError, match=r"vocabulary size 2050"):
        ParallelPlan.for_model(skeleton(vocab_size=2050), tp=4)
    with pytest.raises(ConfigError, match=r"--pp 2: the generator ties lm_head to its input embeddings"):
        ParallelPlan.for_model(skeleton(tie_word_embeddings=True), pp=2)
    with pytest.raises(ConfigError, match=r"MLP width \(intermediate_size\) 500"):
        ParallelPlan.for_model(skeleton(intermediate_size=500), tp=8)
    from scaledown import ScaleDownModel
    odd = ScaleDownModel(tiny_config(compressor_type="causal_lm", compressor_mlp_hidden_dim=8098))
    with pytest.raises(ConfigError, match=r"compressor_mlp_hidden_dim 8098"):
        ParallelPlan.for_model(odd, tp=4)
