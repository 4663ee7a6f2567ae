# Helpers shared by the converter tests: a trained-looking tiny model folder, file comparisons, a probe batch.
import json
import os

import torch

from tests.conftest import tiny_config


def make_model(**overrides):
    """Tiny model whose LoRA B and RR head are non-zero, so every weight matters to the loss."""
    from scaledown import ScaleDownModel
    values = {"enable_reranking": True, "weight_decay": 0.0, "seed": 5}
    values.update(overrides)
    model = ScaleDownModel(tiny_config(**values)).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "rr_head" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def make_hf_folder(path, **overrides):
    model = make_model(**overrides)
    model.save_pretrained(str(path))
    return model


def probe_batch(model, n=6, seed=3):
    from scaledown.data.synthetic import generate_examples
    rows = generate_examples(n, seed=seed)
    for row in rows:
        row["reranking_scores"] = [0.5 * i for i in range(len(row["documents"]))]
    return model.inputs.collate(rows, mode="memory")


def safetensors_of(folder):
    from safetensors.torch import load_file
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            if f.endswith(".safetensors"):
                out[os.path.relpath(os.path.join(root, f), folder)] = load_file(os.path.join(root, f))
    return out


def assert_same_tensors(a_folder, b_folder):
    """Every safetensors file of two model folders holds bit-identical tensors (same dtypes)."""
    a, b = safetensors_of(a_folder), safetensors_of(b_folder)
    assert a.keys() == b.keys()
    for file in a:
        assert a[file].keys() == b[file].keys(), file
        for key in a[file]:
            x, y = a[file][key], b[file][key]
            assert x.dtype == y.dtype and torch.equal(x, y), f"{file}:{key}"


def write_config(path, **values):
    data = {"preset": "tiny", "enable_reranking": True, "weight_decay": 0.0}
    data.update(values)
    path.write_text(json.dumps(data))
    return str(path)
