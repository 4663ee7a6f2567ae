# Builds tiny checkpoints in NAVER's released OSCAR format by hand (torch.save of plain dicts), for the tests.
"""`python tests/oscar_released_tiny.py OUT` writes, deterministically (fixed seeds, CPU):

    OUT/bases/generator-qwen2/     tiny Qwen2 causal LM + tokenizer (chatml template with a system role)
    OUT/bases/generator-mistral/   tiny Mistral causal LM + tokenizer (Mistral-like template)
    OUT/bases/compressor-llama/    tiny Llama causal LM + tokenizer (pair template "<s> A <s> B")
    OUT/oscar-llama/               OSCAR-llama: Qwen2 generator, Llama compressor + MLP, different_mem_tokens
    OUT/oscar-nlayers/             OSCAR-N-Layers: Mistral generator, 1-layer 'mistral_trimmed' compressor,
                                   shared <MEM> token in the generator prompt
    OUT/export-native/             a ScaleDown model written in the released format by ScaleDown's writer
                                   (the only folder made with project code: the reference read it back)

The released files (config.json with COCOMConfig fields, adapters.pth, decoder_first_last_layers.pth,
compressor/compressor.pth, compressor/mlp.pth) are written here with torch.save from hand-made dicts whose keys
follow the reference modelling file (COCOM.save_pretrained): nothing of ScaleDown's own writer is used, so a
test reading them checks the reader against the format, not against itself. The golden values in
tests/assets/oscar_golden/ were computed by the reference implementation on exactly these folders.
"""
from __future__ import annotations

import json
import os
import sys

import torch

DOC_MAX_LENGTH = 32
COMPR_RATE = 8          # -> 4 memory tokens per document
LORA_R = 4
MLP_HIDDEN = 40
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tokenizer(kind: str):
    from tokenizers import processors
    from scaledown.models.tiny_tokenizer import CHAT_TEMPLATE, load_tiny_tokenizer
    tok = load_tiny_tokenizer()
    tok.padding_side = "left"
    if kind == "qwen2":
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.chat_template = CHATML
    elif kind == "mistral":   # Mistral's tokenizer adds <s> to single sequences
        tok.chat_template = CHAT_TEMPLATE
        tok._tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    else:                     # Llama-3 style: BOS before the query and before the document
        tok.chat_template = None
        tok._tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", 1)])
    return tok


def _base(kind: str, out: str, seed: int) -> str:
    """A tiny random base model folder (config, safetensors, tokenizer, generation config)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config
    from scaledown.models.serialization import save_tokenizer
    tok = _tokenizer(kind)
    common = dict(vocab_size=2048, intermediate_size=64, num_hidden_layers=2, max_position_embeddings=512,
                  bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False)
    if kind == "qwen2":
        config = Qwen2Config(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, **common)
    elif kind == "mistral":
        config = MistralConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                               sliding_window=None, **common)
    else:
        config = LlamaConfig(hidden_size=16, num_attention_heads=2, num_key_value_heads=1, head_dim=8, **common)
    model = AutoModelForCausalLM.from_config(config)
    gen = torch.Generator().manual_seed(seed)   # own generator: transformers' init draws differ between versions
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if p.dim() > 1 else 0.1) + (0.0 if p.dim() > 1 else 1.0))
    folder = os.path.join(out, "bases", f"{'compressor' if kind == 'llama' else 'generator'}-{kind}")
    model.save_pretrained(folder)
    save_tokenizer(tok, folder)   # named PreTrainedTokenizerFast: transformers 4.x (the reference's) reads it too
    if tok.chat_template:         # 4.x reads the template from tokenizer_config.json, 5.x from chat_template.jinja
        path = os.path.join(folder, "tokenizer_config.json")
        with open(path) as f:
            settings = json.load(f)
        settings["chat_template"] = tok.chat_template
        with open(path, "w") as f:
            json.dump(settings, f, indent=2)
    return folder


def _rand(gen: torch.Generator, *shape: int, scale: float = 0.5) -> torch.Tensor:
    return (torch.randn(*shape, generator=gen) * scale).to(torch.bfloat16)


def _decoder_files(folder: str, base_dir: str, gen: torch.Generator, different_mem_tokens: bool) -> None:
    """adapters.pth ({'decoder_adapter': LoRA A/B of every linear layer but the head}) and
    decoder_first_last_layers.pth (embedding and head grown by the added tokens)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(base_dir)
    base = load_file(os.path.join(base_dir, "model.safetensors"))
    n_tok = len(_tokenizer("qwen2" if config.model_type == "qwen2" else "mistral"))
    n_added = (DOC_MAX_LENGTH // COMPR_RATE if different_mem_tokens else 1) + 3   # <MEM..>, <AE>, <ENC>, <SEP>
    rows = n_tok + n_added
    first_last = {}
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        grown = torch.cat([base[key][:n_tok].float(), torch.randn(n_added, config.hidden_size, generator=gen) * 0.5])
        first_last[key] = grown.to(torch.bfloat16)
    torch.save(first_last, os.path.join(folder, "decoder_first_last_layers.pth"))
    adapter = {}
    for key, tensor in sorted(base.items()):
        if key.startswith("model.layers.") and key.endswith("proj.weight"):
            stem = key[: -len(".weight")]
            out_dim, in_dim = tensor.shape
            adapter[f"{stem}.lora_A.weight"] = _rand(gen, LORA_R, in_dim)
            adapter[f"{stem}.lora_B.weight"] = _rand(gen, out_dim, LORA_R, scale=0.2)
    torch.save({"decoder_adapter": adapter}, os.path.join(folder, "adapters.pth"))
    assert rows == first_last["lm_head.weight"].shape[0]


def _config_json(folder: str, **fields) -> None:
    values = {
        "architectures": ["COCOM"], "auto_map": {"AutoConfig": "modeling_pisco.COCOMConfig",
                                                 "AutoModel": "modeling_pisco.COCOM"},
        "model_type": "COCOM", "doc_max_length": DOC_MAX_LENGTH, "quantization": "no", "sep": True,
        "compr_rate": COMPR_RATE, "compr_every_n_layer": None, "compr_rms_norm": False,
        "compr_mlp_hidden_dim": MLP_HIDDEN, "lora": True, "lora_compressor": False, "training_form": "both",
        "lora_r": LORA_R, "lora_r_compressor": LORA_R, "load_adapters": True, "kbtc_training": False,
        "optimize_mem_tokens": True, "attn_implementation": "flash_attention_2", "device_map": None,
        "torch_dtype": "bfloat16", "transformers_version": "4.45.2",
    }
    values.update(fields)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(values, f, indent=2, sort_keys=True)


def build_oscar_llama(out: str, generator_dir: str, compressor_dir: str) -> str:
    from safetensors.torch import load_file
    from transformers import AutoConfig
    folder = os.path.join(out, "oscar-llama")
    os.makedirs(os.path.join(folder, "compressor"), exist_ok=True)
    gen = torch.Generator().manual_seed(1234)
    _decoder_files(folder, generator_dir, gen, different_mem_tokens=True)
    ccfg = AutoConfig.from_pretrained(compressor_dir)
    n_tok = len(_tokenizer("llama")) + DOC_MAX_LENGTH // COMPR_RATE
    # compressor.pth: the state dict of AutoModel (LlamaModel: no 'model.' prefix, no head), vocabulary grown
    # by the <MEM{i}> tokens; weights differ from the base folder's (trained)
    comp = {k[len("model."):]: _rand(gen, *v.shape) if v.dim() > 1 else (1 + _rand(gen, *v.shape, scale=0.1))
            for k, v in load_file(os.path.join(compressor_dir, "model.safetensors")).items() if k.startswith("model.")}
    comp["embed_tokens.weight"] = _rand(gen, n_tok, ccfg.hidden_size)
    torch.save(comp, os.path.join(folder, "compressor", "compressor.pth"))
    gcfg = AutoConfig.from_pretrained(generator_dir)
    mlp = {"0.weight": _rand(gen, MLP_HIDDEN, ccfg.hidden_size, scale=0.3), "0.bias": _rand(gen, MLP_HIDDEN, scale=0.1),
           "2.weight": _rand(gen, gcfg.hidden_size, MLP_HIDDEN, scale=0.3),
           "2.bias": _rand(gen, gcfg.hidden_size, scale=0.1)}
    torch.save(mlp, os.path.join(folder, "compressor", "mlp.pth"))
    _config_json(folder, decoder_model_name=generator_dir, compr_model_name=compressor_dir, compr_n_layers=None,
                 compr_base_model_name="mistralai/Mistral-7B-Instruct-v0.2", compr_use_mlp=True,
                 different_mem_tokens=True)
    return folder


def build_oscar_nlayers(out: str, generator_dir: str, n_layers: int = 1) -> str:
    from safetensors.torch import load_file
    from transformers import AutoConfig
    folder = os.path.join(out, "oscar-nlayers")
    os.makedirs(os.path.join(folder, "compressor"), exist_ok=True)
    gen = torch.Generator().manual_seed(4321)
    _decoder_files(folder, generator_dir, gen, different_mem_tokens=False)
    gcfg = AutoConfig.from_pretrained(generator_dir)
    n_tok = len(_tokenizer("mistral")) + DOC_MAX_LENGTH // COMPR_RATE
    # compressor.pth: the state dict of MistralTrimmed ('custom_model.' + a causal LM of the first N layers,
    # final norm replaced by Identity so absent, head kept), vocabulary grown by the <MEM{i}> tokens
    comp = {}
    for key, value in load_file(os.path.join(generator_dir, "model.safetensors")).items():
        if key.startswith("model.layers."):
            if int(key.split(".")[2]) >= n_layers:
                continue
        elif key == "model.norm.weight":
            continue
        comp["custom_model." + key] = _rand(gen, *value.shape) if value.dim() > 1 else (1 + _rand(gen, *value.shape, scale=0.1))
    for key in ("custom_model.model.embed_tokens.weight", "custom_model.lm_head.weight"):
        comp[key] = _rand(gen, n_tok, gcfg.hidden_size)
    torch.save(comp, os.path.join(folder, "compressor", "compressor.pth"))
    _config_json(folder, decoder_model_name=generator_dir, compr_model_name="mistral_trimmed",
                 compr_n_layers=n_layers, compr_base_model_name=generator_dir, compr_use_mlp=False,
                 different_mem_tokens=False)
    return folder


def native_model(folders: dict[str, str]):
    """A ScaleDown model (Qwen2 base generator, Llama compressor + MLP, RR head, seeded weights, lora_alpha 16 = 4r)."""
    from scaledown import ScaleDownConfig, ScaleDownModel
    config = ScaleDownConfig(generator_model_name=folders["generator-qwen2"], compressor_type="causal_lm",
                             compressor_model_name=folders["compressor-llama"], compressor_mlp_hidden_dim=24,
                             doc_max_length=DOC_MAX_LENGTH, compression_rate=COMPR_RATE, lora_r=LORA_R,
                             lora_alpha=4 * LORA_R, enable_reranking=True)
    torch.manual_seed(0)
    model = ScaleDownModel(config).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():   # every fresh part drawn here, so the golden export does not follow ScaleDown's init
        for name, p in sorted(model.named_parameters()):
            if "lora_" in name:   # a trained-looking adapter (peft starts B at zero)
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
            elif name.startswith("compressor.") and not name.startswith("compressor.backbone."):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def build_native_export(out: str, folders: dict[str, str]) -> str:
    """native_model written in the released format by ScaleDown's own writer: the folder the reference read back
    for tests/assets/oscar_golden/export-native-*.safetensors."""
    from scaledown.checkpoint.oscar_export import write_released
    folder = os.path.join(out, "export-native")
    write_released(native_model(folders), folder)
    return folder


def build_all(out: str) -> dict[str, str]:
    """Every folder above; returns their paths by name."""
    qwen = _base("qwen2", out, seed=11)
    mistral = _base("mistral", out, seed=12)
    llama = _base("llama", out, seed=13)
    folders = {"generator-qwen2": qwen, "generator-mistral": mistral, "compressor-llama": llama,
               "oscar-llama": build_oscar_llama(out, qwen, llama), "oscar-nlayers": build_oscar_nlayers(out, mistral)}
    folders["export-native"] = build_native_export(out, folders)
    return folders


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(json.dumps(build_all(sys.argv[1]), indent=2))
