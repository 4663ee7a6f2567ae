# save_pretrained / from_pretrained: identical outputs, PEFT/transformers load the parts, clear errors.
import json
import os

import pytest
import torch

from conftest import tiny_config
from scaledown import ScaleDownModel
from scaledown.errors import CheckpointError


def _nudge_trainable(model):
    """Move trainable weights off their init (LoRA B starts at zero) so a lost tensor would show."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)


@pytest.mark.parametrize("kind", ["n_layers", "modernbert", "causal_lm"])
def test_save_and_load_give_identical_outputs(kind, tmp_path, rows):
    model = ScaleDownModel(tiny_config(compressor_type=kind, enable_reranking=True))
    _nudge_trainable(model)
    model.eval()
    model.save_pretrained(str(tmp_path / "m"))
    loaded = ScaleDownModel.from_pretrained(str(tmp_path / "m"))
    loaded.eval()
    batch = model.inputs.collate(rows[:4])
    a, b = model(batch), loaded(batch)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.scores, b.scores)
    queries, docs = [r["query"] for r in rows[:4]], [r["documents"] for r in rows[:4]]
    assert model.answer(queries, docs, max_new_tokens=3) == loaded.answer(queries, docs, max_new_tokens=3)
    assert loaded.config.to_dict() == {**model.config.to_dict(), "preset": None}
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]  # the temporary folder was renamed away


def test_layout_and_peft_loads_the_adapter(tmp_path, rows):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = ScaleDownModel(tiny_config())
    _nudge_trainable(model)
    model.eval()
    out = tmp_path / "final"
    model.save_pretrained(str(out))
    assert sorted(os.listdir(out)) == ["compressor", "generator_adapter", "generator_base", "scaledown_config.json",
                                       "tokenizer"]
    assert os.path.isfile(out / "generator_adapter" / "adapter_model.safetensors")
    assert os.path.isfile(out / "compressor" / "model.safetensors")
    base = AutoModelForCausalLM.from_pretrained(str(out / "generator_base"))
    generator = PeftModel.from_pretrained(base, str(out / "generator_adapter"))
    generator.eval()
    tok = AutoTokenizer.from_pretrained(str(out / "generator_base"))
    ids = tok(["<s>[INST] Background:\nQuestion: Where was Dravok born? [/INST]"], add_special_tokens=False,
              return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ours = model.generator(input_ids=ids).logits
        theirs = generator(input_ids=ids).logits
    assert torch.allclose(ours, theirs, atol=1e-6)
    adapter = json.loads((out / "generator_adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["lora_alpha"] == 32 and adapter["peft_type"] == "LORA"


def test_loading_something_else_fails_clearly(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not a ScaleDown model"):
        ScaleDownModel.from_pretrained(str(tmp_path / "plain"))
    with pytest.raises(CheckpointError, match="does not exist"):
        ScaleDownModel.from_pretrained(str(tmp_path / "nope"))


def test_run_folder_resolves_to_final(tmp_path):
    model = ScaleDownModel(tiny_config())
    model.save_pretrained(str(tmp_path / "run" / "final"))
    assert ScaleDownModel.from_pretrained(str(tmp_path / "run")).config.num_memory_tokens == 4


def test_models_saved_before_memory_tokens_still_load(tmp_path, rows):
    """compressor.memory_embeddings / rr_embedding moved into compressor.memory_tokens (pipeline stages need a module
    that owns them); compressor files written with the old names load into the new module."""
    from safetensors.torch import load_file, save_file
    model = ScaleDownModel(tiny_config())
    model.save_pretrained(str(tmp_path / "m"))
    path = tmp_path / "m" / "compressor" / "model.safetensors"
    state = load_file(str(path))
    old = {k.replace("memory_tokens.", ""): v for k, v in state.items()}
    assert "memory_embeddings" in old and "memory_tokens.memory_embeddings" in state
    save_file(old, str(path), metadata={"format": "pt"})
    loaded = ScaleDownModel.from_pretrained(str(tmp_path / "m"))
    assert torch.equal(loaded.compressor.memory_embeddings, model.compressor.memory_embeddings)
    assert torch.equal(loaded.compressor.rr_embedding, model.compressor.rr_embedding)
