# The model: compressor shapes per type, memory reaching the generator, trainable set, reranking, imports.
import ast
import os

import pytest
import torch

from conftest import ROOT, tiny_config
from scaledown import ScaleDownModel


@pytest.mark.parametrize("kind,projection", [("n_layers", torch.nn.Identity), ("modernbert", torch.nn.Linear),
                                             ("causal_lm", torch.nn.Sequential)])
def test_compressor_output_shapes(kind, projection, rows):
    config = tiny_config(compressor_type=kind, enable_reranking=True)
    model = ScaleDownModel(config)
    assert isinstance(model.compressor.projection, projection)
    out = model.compress([r["query"] for r in rows[:3]], [r["documents"] for r in rows[:3]])
    hidden = model.generator.get_input_embeddings().weight.shape[1]
    assert out.memory.shape == (3, 3, config.num_memory_tokens, hidden)
    assert out.scores.shape == (3, 3)
    assert torch.isfinite(out.memory).all()


def test_n_layers_compressor_copies_generator_layers(model):
    gen_layer = model.generator.get_base_model().model.layers[1]
    comp_layer = model.compressor.backbone.layers[1]
    assert torch.equal(gen_layer.mlp.up_proj.base_layer.weight, comp_layer.mlp.up_proj.weight)
    assert len(model.compressor.backbone.layers) == model.config.num_compressor_layers
    assert isinstance(model.compressor.backbone.norm, torch.nn.Identity)  # OSCAR drops the final norm


def test_memory_embeddings_reach_generator(model, rows):
    batch = model.inputs.collate(rows[:4])
    model(batch).loss.backward()
    grads = [p.grad for p in model.compressor.parameters() if p.requires_grad]
    assert model.compressor.memory_embeddings.grad is not None
    assert model.compressor.memory_embeddings.grad.abs().sum() > 0
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    # the answer depends on the memory: changing the documents changes the loss
    other = model.inputs.collate([{**r, "documents": ["Nothing here."] * 3} for r in rows[:4]])
    assert not torch.isclose(model(batch).loss, model(other).loss)


def test_only_lora_compressor_projection_and_rr_head_train(rows):
    model = ScaleDownModel(tiny_config(compressor_type="causal_lm", enable_reranking=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing is trainable"
    for name in trainable:
        assert "lora_" in name or name.startswith("compressor."), name
    assert any("lora_A" in n for n in trainable) and any("compressor.projection" in n for n in trainable)
    assert "compressor.rr_head.weight" in trainable and "compressor.memory_tokens.memory_embeddings" in trainable
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert all(n.startswith("generator.") and "lora_" not in n for n in frozen)
    groups = {g["name"]: g for g in model.parameter_groups()}
    assert groups["generator"]["lr"] == model.config.learning_rate_generator
    assert groups["compressor"]["lr"] == model.config.learning_rate_compressor_llama


def test_queries_with_different_numbers_of_documents(model, rows):
    model.eval()
    uneven = [dict(rows[0], documents=rows[0]["documents"][:1], reranking_scores=[1.0]), rows[1]]
    batch = model.inputs.collate(uneven)
    assert batch["document_mask"].tolist() == [[True, False, False], [True, True, True]]
    assert int((batch["memory_slots"][0] >= 0).sum()) == model.config.num_memory_tokens
    assert torch.isfinite(model(batch).loss)
    # padding (of documents and of tokens) does not change what a document compresses to
    together = model.compress([r["query"] for r in uneven], [r["documents"] for r in uneven])
    alone = model.compress([uneven[0]["query"]], [uneven[0]["documents"]])
    assert torch.allclose(together.memory[0, 0], alone.memory[0, 0], atol=1e-5)
    assert together.document_mask.tolist() == batch["document_mask"].tolist()


def test_reranking_loss_and_scores(rows):
    model = ScaleDownModel(tiny_config(enable_reranking=True, reranking_loss_weight=0.5))
    out = model(model.inputs.collate(rows[:4]))
    assert out.rerank_loss is not None and out.rerank_loss > 0
    assert torch.isclose(out.loss, out.ce_loss + 0.5 * out.rerank_loss)
    scores = model.rerank([rows[0]["query"]], [rows[0]["documents"][:2]])
    assert len(scores) == 1 and len(scores[0]) == 2
    with pytest.raises(ValueError, match="reranking"):
        ScaleDownModel(tiny_config(enable_reranking=False)).rerank(["q"], [["d"]])


def test_answer_greedy_and_sampling(model, rows):
    queries, docs = [r["query"] for r in rows[:3]], [r["documents"] for r in rows[:3]]
    greedy = model.answer(queries, docs, max_new_tokens=3)
    assert len(greedy) == 3 and all(isinstance(a, str) for a in greedy)
    assert model.answer(queries, docs, max_new_tokens=3) == greedy  # deterministic
    torch.manual_seed(0)
    sampled = model.answer(queries, docs, max_new_tokens=3, do_sample=True, temperature=1.5, top_k=50)
    assert len(sampled) == 3
    # one query at a time gives the same greedy answers as the padded batch
    assert [model.answer([q], [d], max_new_tokens=3)[0] for q, d in zip(queries, docs)] == greedy
    with pytest.raises(TypeError):
        model.answer("one string", docs[:1])


def test_prompt_uses_chat_template_and_memory_slots(model, rows):
    ids, slots = model.inputs.prompt(rows[0]["query"], rows[0]["documents"], mode="memory")
    text = model.tokenizer.decode(ids)
    assert text.startswith("<s>[INST]") and "Background:" in text and "Question:" in text
    assert sorted(s for s in slots if s >= 0) == list(range(3 * model.config.num_memory_tokens))
    text_ids, text_slots = model.inputs.prompt(rows[0]["query"], rows[0]["documents"], mode="text")
    assert all(s == -1 for s in text_slots) and rows[0]["documents"][0][:20] in model.tokenizer.decode(text_ids)


def test_models_package_imports_no_backend():
    banned = {"deepspeed", "torch_xla", "neuronx_distributed", "torch_neuronx"}
    folder = os.path.join(ROOT, "scaledown", "models")
    for name in os.listdir(folder):
        if name.endswith(".py"):
            tree = ast.parse(open(os.path.join(folder, name)).read())
            for node in ast.walk(tree):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                for mod in mods:
                    assert mod.split(".")[0] not in banned, f"scaledown/models/{name} imports {mod}"


def test_tiny_tokenizer_asset_is_reproducible():
    from scaledown.data.tiny_tokenizer_build import build_tokenizer_json
    from scaledown.models import tiny_tokenizer
    with open(tiny_tokenizer.ASSET_PATH) as f:
        shipped = f.read()
    assert build_tokenizer_json() == shipped


def test_tiny_vocabulary_is_shardable(model):
    from scaledown.data.synthetic import CITIES, ENTITIES, JOBS
    assert len(model.tokenizer) <= model.generator.get_input_embeddings().weight.shape[0]
    cfg = model.generator.get_base_model().config
    for value in (cfg.vocab_size, cfg.num_attention_heads, cfg.intermediate_size):
        assert value % 8 == 0
    assert cfg.num_hidden_layers >= 4 and cfg.num_key_value_heads < 8
    for word in ENTITIES[:20] + CITIES[:20] + JOBS:
        assert len(model.tokenizer.encode(" " + word, add_special_tokens=False)) == 1, word
