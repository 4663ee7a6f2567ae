# The method is right for each model family (tests/model_zoo.py): memory scale, prompt format, LoRA, layer copy.
import pytest
import torch
from torch import nn

from tests.conftest import tiny_config
from tests.model_zoo import FAMILIES, GENERATORS

SYSTEM = "Answer briefly."


def family_model(zoo, name, **overrides):
    from scaledown import ScaleDownModel
    values = dict(generator_model_name=zoo[name], compressor_type="n_layers", num_compressor_layers=1,
                  memory_norm=True, system_prompt=SYSTEM)
    values.update(overrides)
    return ScaleDownModel(tiny_config(**values)).eval()


def rows():
    from scaledown.data.synthetic import generate_examples
    out = generate_examples(3, seed=11)
    out[1]["documents"] = out[1]["documents"][:1]          # ragged
    return out


@pytest.mark.parametrize("name", GENERATORS)
def test_memory_matches_token_scale_at_first_decoder_layer(zoo, name):
    """memory_norm: RMS of memory positions within 10 % of token positions where layer 0 reads them (Gemma scales
    by sqrt(hidden) inside its embedding module, so a raw-weight RMS is sqrt(hidden) too small there)."""
    from scaledown.models.compressor_builders import decoder_base
    from scaledown.models.generator import base_causal_lm
    model = family_model(zoo, name)
    batch = model.inputs.collate(rows())
    seen = {}
    layer0 = decoder_base(base_causal_lm(model.generator)).layers[0]

    def grab(module, args, kwargs):
        seen.setdefault("h", kwargs.get("hidden_states", args[0] if args else None))

    hook = layer0.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        model(batch)
    hook.remove()
    hidden = seen["h"].float()
    real = batch["attention_mask"].bool()
    memory = real & (batch["memory_slots"] >= 0)
    tokens = real & (batch["memory_slots"] < 0)
    rms = lambda sel: hidden[sel].pow(2).mean().sqrt().item()  # noqa: E731
    assert abs(rms(memory) / rms(tokens) - 1) < 0.10, (name, rms(memory), rms(tokens))


# Expected generation prompts, written from each family's public format (see the templates in model_zoo.py).
EXPECTED_PROMPT = {
    "llama3": ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{s}<|eot_id|><|start_header_id|>user"
               "<|end_header_id|>\n\n{u}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
    "qwen2": "<|im_start|>system\n{s}<|im_end|>\n<|im_start|>user\n{u}<|im_end|>\n<|im_start|>assistant\n",
    "qwen3": "<|im_start|>system\n{s}<|im_end|>\n<|im_start|>user\n{u}<|im_end|>\n<|im_start|>assistant\n",
    "smollm2": "<|im_start|>system\n{s}<|im_end|>\n<|im_start|>user\n{u}<|im_end|>\n<|im_start|>assistant\n",
    "mistral": "<s>[INST] {s}\n\n{u} [/INST]",                                    # no system role: folded
    "gemma2": "<bos><start_of_turn>user\n{s}\n\n{u}<end_of_turn>\n<start_of_turn>model\n",  # raises: folded
    "gemma3": "<bos><start_of_turn>user\n{s}\n\n{u}<end_of_turn>\n<start_of_turn>model\n",  # its own folding
    "phi3": "<|user|>\n{s}\n\n{u}<|end|>\n<|assistant|>\n",                      # dropped silently: folded
}


@pytest.mark.parametrize("name", GENERATORS)
def test_prompt_follows_family_chat_template(zoo, name):
    model = family_model(zoo, name)
    assert model.inputs._render("Question: x") == EXPECTED_PROMPT[name].format(s=SYSTEM, u="Question: x")
    tok = model.tokenizer
    batch = model.inputs.collate(rows()[:1])
    ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    if tok.bos_token_id is not None and FAMILIES[name].tok.add_bos:
        assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id   # one BOS, never two
    answer = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert answer[-1] == tok.eos_token_id                                       # the generator learns to stop


@pytest.mark.parametrize("name", GENERATORS)
def test_lora_all_linear_covers_every_linear(zoo, name):
    """Every Linear of the generator but the output head carries LoRA, fused ones (Phi-3 qkv/gate_up) included."""
    from peft.tuners.lora import LoraLayer
    from scaledown.models.generator import base_causal_lm
    model = family_model(zoo, name)
    lm = base_causal_lm(model.generator)
    head = lm.get_output_embeddings()
    lora = {n for n, m in lm.named_modules() if isinstance(m, LoraLayer)}
    linears = {n.rsplit(".base_layer", 1)[0] for n, m in lm.named_modules()
               if isinstance(m, nn.Linear) and m is not head and "lora_" not in n}
    assert linears and linears == lora
    if name == "phi3":
        assert any(n.endswith("qkv_proj") for n in lora) and any(n.endswith("gate_up_proj") for n in lora)


@pytest.mark.parametrize("name", GENERATORS)
def test_nlayers_compressor_runs_the_generators_first_layers(zoo, name):
    """The copy equals the generator's own first-N-layer states (family RoPE, sliding window 8 < length, Gemma
    eager/per-type masks), with left padding, before any training."""
    from scaledown.models.compressor_builders import decoder_base
    from scaledown.models.generator import base_causal_lm
    n = 1
    model = family_model(zoo, name, num_compressor_layers=n)
    decoder = decoder_base(base_causal_lm(model.generator))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1900, (2, 24), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0                                                              # left padding
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad(), model.generator.disable_adapter():
        want = decoder(input_ids=ids, attention_mask=mask, position_ids=position_ids, output_hidden_states=True,
                       use_cache=False).hidden_states[n]
        got = model.compressor.backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                                        use_cache=False).last_hidden_state
    real = mask.bool()
    assert torch.allclose(got[real], want[real], atol=1e-5), (got[real] - want[real]).abs().max()


@pytest.mark.parametrize("name", ["bert", "roberta", "modernbert", "qwen2_05b"])
def test_compressor_positions_follow_the_family(zoo, name):
    """Real tokens are numbered from the family's first position, whatever the left padding: 0, except RoBERTa's
    padding_idx + 1 (its own create_position_ids_from_input_ids); from inputs_embeds RoBERTa cannot infer it."""
    from tests.model_zoo import compressor_type
    model = family_model(zoo, "mistral", compressor_type=compressor_type(name), compressor_model_name=zoo[name],
                         compressor_mlp_hidden_dim=64)
    backbone = model.compressor.backbone
    seen = {}

    def grab(module, args, kwargs):
        seen["positions"], seen["mask"] = kwargs["position_ids"], kwargs["attention_mask"]

    hook = backbone.register_forward_pre_hook(grab, with_kwargs=True)
    model.compress([r["query"] for r in rows()], [r["documents"] for r in rows()])
    hook.remove()
    pad = getattr(backbone.embeddings, "padding_idx", None) if name == "roberta" else None
    first = 0 if pad is None else pad + 1
    for positions, mask in zip(seen["positions"], seen["mask"].bool()):
        assert positions[mask].tolist() == list(range(first, first + int(mask.sum())))


def test_tokenizer_longer_than_the_embedding_is_refused_before_loading(zoo, tmp_path):
    """Special tokens added to a family's tokenizer without resize_token_embeddings: a clear error up front."""
    import shutil
    from transformers import AutoTokenizer
    from scaledown import ScaleDownModel
    from scaledown.errors import ConfigError
    folder = tmp_path / "mistral_added"
    shutil.copytree(zoo["mistral"], folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.add_special_tokens({"additional_special_tokens": [f"<|tool_{i}|>" for i in range(20)]})
    tok.save_pretrained(str(folder))
    with pytest.raises(ConfigError, match=r"mistral_added.*embedding rows.*<\|tool_.*resize_token_embeddings"):
        ScaleDownModel(tiny_config(generator_model_name=str(folder), compressor_type="n_layers",
                                   num_compressor_layers=1))


def test_fresh_parts_of_a_folder_model_do_not_depend_on_the_callers_rng(zoo):
    """LoRA A, memory tokens and the RR head of a loaded (non-sentinel) generator come from config.seed, so every
    backend and rank starts a run from the same weights, as for the tiny preset."""
    states = []
    for draw in (0, 5):
        torch.manual_seed(123)
        torch.randn(draw)                       # the caller's RNG in another state
        model = family_model(zoo, "qwen2", enable_reranking=True)
        states.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name


@pytest.mark.parametrize("name", GENERATORS)
def test_training_loss_equals_the_family_lm_loss(zoo, name):
    """The training loss reads the decoder's hidden states and applies the LM head itself: it must equal the
    cross-entropy of the family's own causal-LM logits (Gemma-2/3 soft-cap them: final_logit_softcapping). The head
    is scaled x200 so a missing cap shows (tiny random logits sit in tanh's linear range)."""
    from scaledown.models.generator import base_causal_lm
    model = family_model(zoo, name)
    lm = base_causal_lm(model.generator)
    with torch.no_grad():
        lm.get_output_embeddings().weight.mul_(200.0)
        batch = model.inputs.collate(rows(), mode="text")
        out = model(batch, documents_as="text")
        mask = batch["attention_mask"]
        logits = lm(input_ids=batch["input_ids"], attention_mask=mask,
                    position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0)).logits
        labels = batch["labels"][:, 1:]
        expected = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels.flatten(),
                                                     ignore_index=-100)
    assert out.ce_loss.item() == pytest.approx(expected.item(), rel=1e-4), name
