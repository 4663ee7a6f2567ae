# Write a ScaleDownModel in NAVER's released OSCAR format (what the COCOM remote code and BERGEN load).
"""`write_released(model, dst)` writes config.json, adapters.pth, decoder_first_last_layers.pth and
compressor/{compressor,mlp}.pth as the reference's COCOM.save_pretrained does (models/oscar_format.py).

What fits: an N-layers compressor (as 'mistral_trimmed', with or without an MLP) or a separate causal-LM
compressor with an MLP; a LoRA generator on all linear layers whose base weights are those of its hub/base
model (only embedding and head rows travel). What does not, stops before anything is written: memory_norm,
a ModernBERT compressor, a modified base generator, LoRA on a module subset. A reranking head has no place and
is dropped (a note says so). LoRA alpha other than 2r is folded into the B matrices (the reference uses 2r).
A model trained with prompt_format='scaledown' loads in the reference, but reads its prompts differently.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Optional

import torch
from peft import get_peft_model_state_dict

from scaledown.atomic_files import commit_directory, staging_directory
from scaledown.destination import check_destination
from scaledown.errors import CheckpointError
from scaledown.models import loading
from scaledown.models.generator import base_causal_lm, without_lora
from scaledown.models.oscar_prompt import compressor_memory_tokens, decoder_added_tokens


def _check_exportable(model) -> None:
    cfg = model.config
    why = None
    fix = "train it with that setting"
    if cfg.memory_norm:
        why = "memory_norm=True (the released format has no memory norm)"
        fix = "train it with --memory_norm false"
    elif cfg.compressor_type == "modernbert":
        why = "a ModernBERT compressor (the released format holds N-layers or causal-LM compressors)"
        fix = "train it with --compressor_type n_layers or causal_lm"
    elif cfg.lora_target_modules != "all-linear":
        why = f"lora_target_modules={cfg.lora_target_modules!r} (the reference puts LoRA on all linear layers)"
        fix = "train it with --lora_target_modules all-linear"
    elif cfg.compressor_type == "causal_lm" and (cfg.compressor_projection or "mlp") != "mlp":
        why = f"compressor_projection={cfg.compressor_projection!r} (a causal-LM compressor needs the MLP)"
        fix = "train it with --compressor_projection mlp"
    if why:
        raise CheckpointError(f"cannot write the released OSCAR format for this model: {why}. To export, {fix}; "
                              f"the ScaleDown folder itself loads with ScaleDownModel.from_pretrained.")


def _check_base_unchanged(model, generator_name: str) -> None:
    """Only embedding and head rows travel: the other base weights must equal those of `generator_name`."""
    ours = without_lora(base_causal_lm(model.generator).state_dict())
    reference = loading.load_causal_lm(generator_name).state_dict()
    changed = [k for k, v in ours.items() if "embed_tokens" not in k and "lm_head" not in k
               and (k not in reference or reference[k].shape != v.shape
                    or not torch.equal(reference[k].to(v.dtype), v.detach().cpu()))]
    if changed:
        if model.config.base_is_random and generator_name == model.config.generator_model_name:
            fix = ("the base generator is an offline random model (the tiny preset's), rebuilt differently from its "
                   "name: pass --generator_path with the base saved beside the model (its generator_base/ folder)")
        elif model.config.generator_warmup_ratio > 0:
            fix = ("this model's base generator was trained (a generator warm-up, generator_warmup_ratio "
                   f"{model.config.generator_warmup_ratio}); train it again with --generator_warmup_ratio 0 to export it")
        else:
            fix = "pass --generator_path with the base model this one was trained from"
        raise CheckpointError(f"the generator's base weights differ from {generator_name} ({len(changed)} tensors, "
                              f"e.g. {changed[0]}): the released format keeps only LoRA and the embedding/head rows, "
                              f"so the rest must be the base model's. {fix[0].upper() + fix[1:]}.")


def _grow(rows: torch.Tensor, keep: int, extra: int) -> torch.Tensor:
    """The first `keep` rows plus `extra` new rows at the mean (the reference replaces memory rows anyway)."""
    base = rows.detach().cpu()[:keep]
    return torch.cat([base, base.float().mean(0, keepdim=True).to(base.dtype).expand(extra, -1)]).contiguous()


def _named(name: str, given: Optional[str], field: str, flag: str, notes: list[str]) -> str:
    """What config.json calls a base model: `given` (a hub id), else `name`; a local folder is written as its
    absolute path (a relative one would depend on where the folder is loaded from), with a note on the flag."""
    if given:
        return given
    if name and os.path.isdir(name):
        notes.append(f"config.json's {field} is the local folder {os.path.abspath(name)}: elsewhere pass its "
                     f"location (--generator_path / --compressor_path), or write the hub id with {flag}")
        return os.path.abspath(name)
    return name


def write_released(model, dst: str, generator_name: Optional[str] = None,
                   compressor_name: Optional[str] = None, overwrite: bool = False,
                   decoder_model_name: Optional[str] = None, compr_model_name: Optional[str] = None) -> list[str]:
    """Write `model` to the folder `dst` (replaced atomically when `overwrite`, else it must be new or empty);
    returns notes on what could not be carried. generator_name / compressor_name: the base models the weights are
    checked against (default: the model's); decoder_model_name / compr_model_name: what config.json names them
    (e.g. hub ids; default: those names, local folders as absolute paths)."""
    _check_exportable(model)
    check_destination(dst, overwrite, "the released folder")
    cfg, notes = model.config, []
    generator_name = generator_name or cfg.generator_model_name
    if model.generator_base_modified:
        _check_base_unchanged(model, generator_name)
    n = cfg.num_memory_tokens
    # -- generator tokenizer and rows
    tok = model.tokenizer
    vocab = tok.get_vocab()
    different = "<MEM>" not in vocab
    added = decoder_added_tokens(n, different)
    present = [t for t in added if t in vocab]
    if present and len(present) != len(added):
        raise CheckpointError(f"the generator tokenizer has some of the released added tokens ({present}) but not "
                              f"all of {added}.")
    base_len = len(tok) - len(present)
    lm = base_causal_lm(model.generator)
    first_last = {}
    for name, param in lm.named_parameters():
        if name.endswith("embed_tokens.weight") or name.endswith("lm_head.weight"):
            first_last[name] = _grow(param, base_len, len(added)) if not present else param.detach().cpu()[:len(tok)]
    # -- LoRA: alpha folded into B so the reference's alpha = 2r gives the same update
    adapter = {k[len("base_model.model."):]: v.detach().cpu()
               for k, v in get_peft_model_state_dict(model.generator, save_embedding_layers=False).items()}
    factor = (cfg.lora_alpha / cfg.lora_r) / 2.0
    if factor != 1.0:
        adapter = {k: v * factor if "lora_B" in k else v for k, v in adapter.items()}
        notes.append(f"lora_alpha={cfg.lora_alpha} folded into the B matrices (the reference uses alpha = 2r)")
    # -- compressor
    comp = model.compressor
    memory = comp.memory_embeddings.detach().cpu()
    backbone = without_lora(comp.backbone.state_dict())
    trimmed = cfg.compressor_type == "n_layers"
    if trimmed:
        comp_base_len = base_len
        state = {"custom_model.model." + k: v.detach().cpu() for k, v in backbone.items()}
        embed_key = "custom_model.model.embed_tokens.weight"
        head = (lm.get_output_embeddings() or lm.get_input_embeddings()).weight   # unused by the compressor
        state["custom_model.lm_head.weight"] = torch.cat([head.detach().cpu()[:base_len],
                                                          torch.zeros(n, head.shape[1], dtype=head.dtype)])
    else:
        ctok = model.compressor_tokenizer
        comp_base_len = len(ctok) - sum(t in ctok.get_vocab() for t in compressor_memory_tokens(n))
        state = {k: v.detach().cpu() for k, v in backbone.items()}
        embed_key = "embed_tokens.weight"
    state[embed_key] = torch.cat([state[embed_key][:comp_base_len], memory.to(state[embed_key].dtype)]).contiguous()
    named_generator = _named(generator_name, decoder_model_name, "decoder_model_name", "--decoder_model_name", notes)
    named_compressor = _named(compressor_name or cfg.resolved_compressor_model_name, compr_model_name,
                              "compr_model_name", "--compr_model_name", notes) if not trimmed else "mistral_trimmed"
    use_mlp = (cfg.compressor_projection or ("none" if trimmed else "mlp")) == "mlp"
    if comp.rr_head is not None:
        notes.append("the reranking head (RR token and dense layer) has no place in the released format: dropped")
    config = {
        "architectures": ["COCOM"], "model_type": "COCOM", "decoder_model_name": named_generator,
        "doc_max_length": cfg.doc_max_length, "quantization": "no", "sep": True,
        "compr_model_name": named_compressor,
        "compr_rate": cfg.compression_rate, "compr_n_layers": cfg.num_compressor_layers if trimmed else None,
        "compr_every_n_layer": None, "compr_base_model_name": named_generator, "compr_rms_norm": False,
        "compr_mlp_hidden_dim": cfg.compressor_mlp_hidden_dim, "compr_use_mlp": use_mlp, "lora": True,
        "lora_compressor": False, "training_form": "both", "lora_r": cfg.lora_r, "lora_r_compressor": cfg.lora_r,
        "load_adapters": True, "kbtc_training": False, "optimize_mem_tokens": False,
        "different_mem_tokens": different, "attn_implementation": "sdpa", "device_map": None,
    }
    tmp = staging_directory(dst)
    try:
        os.makedirs(os.path.join(tmp, "compressor"))
        torch.save(first_last, os.path.join(tmp, "decoder_first_last_layers.pth"))
        torch.save({"decoder_adapter": adapter}, os.path.join(tmp, "adapters.pth"))
        torch.save(state, os.path.join(tmp, "compressor", "compressor.pth"))
        if use_mlp:
            torch.save({k: v.detach().cpu() for k, v in comp.projection.state_dict().items()},
                       os.path.join(tmp, "compressor", "mlp.pth"))
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        commit_directory(tmp, dst)   # moves an existing (empty or overwritten) dst aside, then removes it
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return notes
