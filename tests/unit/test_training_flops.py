# MFU's FLOP count (training/throughput.py) equals FlopCounterMode on real forward + backward passes; exact peaks.
import pytest
import torch

from scaledown.training.throughput import PEAKS, TrainingFlops, device_key, mfu, peak_flops_for


def _meta_model(generator_config, compressor_layers: int, **config_values):
    """A ScaleDownModel whose generator has `generator_config`'s shape, built on the meta device (no memory)."""
    from scaledown import ScaleDownConfig, ScaleDownModel
    from scaledown.evaluation.flops import meta_causal_lm, meta_compressor
    from scaledown.models.generator import build_generator
    from scaledown.models.tiny_tokenizer import load_tiny_tokenizer
    config = ScaleDownConfig(compressor_type="n_layers", num_compressor_layers=compressor_layers, doc_max_length=128,
                             num_memory_tokens=8, lora_dropout=0.0, **config_values)
    base = meta_causal_lm(generator_config)
    base.config._attn_implementation = "eager"   # sdpa's mask shortcut reads mask values, which meta tensors lack
    generator = build_generator(config, base=base)
    compressor = meta_compressor(config, base)   # sets eager attention on its backbone
    model = ScaleDownModel(config, generator=generator, compressor=compressor, tokenizer=load_tiny_tokenizer())
    model.static_shapes = True   # no data-dependent indexing (meta tensors have no values)
    return model


def _batch(b: int, t: int, k: int, tc: int, device: str) -> dict:
    """A batch without padding: every token real, every document real, every next-token labelled."""
    long = dict(dtype=torch.long, device=device)
    return {"input_ids": torch.zeros(b, t, **long), "attention_mask": torch.ones(b, t, **long),
            "memory_slots": torch.full((b, t), -1, **long), "labels": torch.zeros(b, t, **long),
            "compressor_input_ids": torch.zeros(b, k, tc, **long),
            "compressor_attention_mask": torch.ones(b, k, tc, **long),
            "document_mask": torch.ones(b, k, dtype=torch.bool, device=device),
            "reranking_scores": torch.zeros(b, k, device=device),
            "reranking_mask": torch.zeros(b, k, dtype=torch.bool, device=device)}


def _counted(model, batch: dict, documents_as: str) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        model(batch, documents_as=documents_as).loss.backward()
    return counter.get_total_flops()


def test_training_flops_match_flop_counter_for_mistral_7b_with_an_8_layer_compressor():
    from transformers import MistralConfig
    from scaledown.data.collator import count_tokens
    from scaledown.evaluation.flops import MISTRAL_7B_INSTRUCT_V02
    model = _meta_model(MistralConfig(**MISTRAL_7B_INSTRUCT_V02), 8)
    model.set_trainable("finetune")
    model.train()
    # one example: 5 documents of 128 + 8 compressor tokens; prompt 128 + 5 x 8 memory + 32 answer tokens
    meta, cpu = _batch(1, 200, 5, 136, "meta"), _batch(1, 200, 5, 136, "cpu")
    counted = _counted(model, meta, "memory")
    ours = TrainingFlops(model).batch_flops(cpu, "memory")
    assert ours == pytest.approx(counted, rel=1e-6)
    # the former estimate, 6 x every parameter x every token, charged the frozen base's weight gradients
    old = 6.0 * sum(p.numel() for p in model.parameters()) * count_tokens(cpu)
    assert old > 3.5 * ours
    print(f"Mistral-7B + 8-layer compressor, 5 documents: {ours / 1e12:.2f} TFLOP per example counted, "
          f"{counted / 1e12:.2f} by FlopCounterMode, {old / 1e12:.2f} by 6 x parameters x tokens")


def test_warmup_counts_weight_gradients_of_the_whole_generator():
    from transformers import MistralConfig
    from scaledown.models.tiny_models import tiny_generator_config_dict
    model = _meta_model(MistralConfig(**tiny_generator_config_dict()), 1)
    model.train()
    meta, cpu = _batch(2, 40, 2, 20, "meta"), _batch(2, 40, 2, 20, "cpu")
    flops = TrainingFlops(model)
    model.set_trainable("warmup")   # base trains, no compressor: documents read as text
    warm = flops.batch_flops(cpu, "text")
    assert warm == pytest.approx(_counted(model, meta, "text"), rel=1e-6)
    model.set_trainable("finetune")
    model.zero_grad(set_to_none=True)
    tuned = flops.batch_flops(cpu, "memory")
    assert tuned == pytest.approx(_counted(model, meta, "memory"), rel=1e-6)
    assert flops.batch_flops(cpu, "text") < warm   # frozen base: no weight gradients


@pytest.mark.parametrize("name,key,bf16", [
    ("NVIDIA H100 80GB HBM3", ("H100", "SXM"), 989.4e12), ("NVIDIA H100 PCIe", ("H100", "PCIE"), 756.5e12),
    ("NVIDIA H100 NVL", ("H100", "NVL"), 835.5e12), ("NVIDIA H200", ("H200", "SXM"), 989.4e12),
    ("NVIDIA H200 NVL", ("H200", "NVL"), 835.5e12), ("NVIDIA A100-SXM4-80GB", ("A100", ""), 312e12),
    ("NVIDIA A100 80GB PCIe", ("A100", ""), 312e12), ("NVIDIA L40S", ("L40S", ""), 362.05e12),
    ("NVIDIA L40", ("L40", ""), 181.05e12), ("NVIDIA L4", ("L4", ""), 121e12), ("NVIDIA B200", ("B200", ""), 2250e12),
    ("NVIDIA GeForce RTX 4090", None, None), ("Tesla T4", None, None)])
def test_peak_table_matches_device_names_exactly(name, key, bf16):
    assert device_key(name) == key
    assert peak_flops_for(name, torch.bfloat16) == bf16


def test_peak_follows_the_matmul_dtype():
    name = "NVIDIA H100 80GB HBM3"
    assert peak_flops_for(name, torch.float16) == PEAKS[("H100", "SXM")]["fp16"]
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert peak_flops_for(name, torch.float32) == 66.9e12
        torch.backends.cuda.matmul.allow_tf32 = True
        assert peak_flops_for(name, torch.float32) == 494.7e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert mfu(989.4e12, 989.4e12, 2) == pytest.approx(0.5)
    assert mfu(1e12, None, 1) is None


def test_static_shapes_forward_without_memory_norm(tmp_path):
    """Static shapes (NxD) keep every document slot: the memory is a strided slice of the compressor states,
    which a .view could not merge with the document axis (only the tiny preset's memory_norm hid it)."""
    from scaledown import ScaleDownModel
    from tests.conftest import tiny_config
    config = tiny_config(output_dir=str(tmp_path), memory_norm=False)
    model = ScaleDownModel(config)
    model.static_shapes = True
    rows = [{"query": "q", "documents": ["a b", "c d e"], "answer": "a"}] * 2
    out = model(model.inputs.collate(rows, max_documents=2))
    assert torch.isfinite(out.loss)
