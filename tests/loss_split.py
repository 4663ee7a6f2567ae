# A global batch whose loss depends on its split unless it is token-weighted: rows, flags and readers for every backend.
"""Four rows in a fixed order (shuffle off): two with a 1-word answer and ONE scored document first, then two with a
~30-word answer and five scored documents. Micro-batch 2 (or 2 ranks x micro 2) puts both short rows in the first
micro-batch / on rank 0 alone, micro-batch 1 gives each its own: a per-micro-batch mean would weigh their few tokens
(and documents) more than the long rows' many. The token- and document-weighted global objective does not change.
"""
from __future__ import annotations

import json
import os

SHORT, LONG = 2, 2   # rows of each kind, short ones first


def split_rows() -> list[dict]:
    from scaledown.data.synthetic import generate_examples
    rows = generate_examples(SHORT + LONG, seed=11)
    out = []
    for i, row in enumerate(rows):
        short = i < SHORT
        documents = list(row["documents"])[:1] if short else (list(row["documents"]) * 5)[:5]
        answer = "Pelmar" if short else " ".join(f"word{j % 7} and {row['answer']}" for j in range(10))
        out.append({"query": row["query"], "documents": documents, "answer": answer,
                    "reranking_scores": [0.9 if short else 0.1 * (j + 1) for j in range(len(documents))]})
    return out


def write_split_data(path: str) -> str:
    with open(path, "w") as f:
        for row in split_rows():
            f.write(json.dumps(row) + "\n")
    return path


def split_flags(data: str, steps: int = 1, warmup: str = "0") -> list[str]:
    """train.py flags of the issue's run (reranking on: its document weighting is checked too); add the split."""
    return ["--preset", "tiny", "--train_data", data, "--eval_data", data, "--batch_size", "4", "--max_steps",
            str(steps), "--generator_warmup_ratio", warmup, "--enable_reranking", "true", "--lora_dropout", "0",
            "--seed", "3", "--shuffle_data", "false", "--logging_steps", "1", "--save_steps", "0", "--eval_steps", "0",
            "--eval_max_examples", "0", "--use_bf16", "false", "--gradient_checkpointing", "false", "--num_documents_train",
            "5", "--num_documents_eval", "5"]


def trained_weights(final_dir: str) -> dict:
    """Every tensor of an exported model (compressor, LoRA adapter, base generator if saved) by part/key."""
    from safetensors.torch import load_file
    found = {}
    for part, file in (("compressor", "model.safetensors"), ("generator_adapter", "adapter_model.safetensors"),
                       ("generator_base", "model.safetensors")):
        path = os.path.join(final_dir, part, file)
        if os.path.exists(path):
            found.update({f"{part}/{k}": v for k, v in load_file(path).items()})
    return found


def assert_same_weights(ours: dict, reference: dict, lr: float, steps: int) -> None:
    """Trained weights equal up to rounding. Adam divides each gradient entry by its own RMS: where an entry is
    rounding noise (~0) its sign can flip between two runs and the weight moves up to ~lr per step the other way.
    So nearly every entry equal to 1e-6 and none further apart than 2 lr per step (as tests/test_neuron_training.py);
    a weighting error flips the sign of many entries whose gradient is not noise."""
    import torch
    assert ours.keys() == reference.keys()
    diffs = torch.cat([(ours[k].float() - v.float()).abs().flatten() for k, v in reference.items()])
    assert float((diffs > 1e-6).float().mean()) < 1e-3, float((diffs > 1e-6).float().mean())
    assert float(diffs.max()) <= 2 * lr * steps


def make_tied_generator(path: str, seed: int = 0) -> str:
    """A tiny random Llama saved with tie_word_embeddings=True (as Llama-3.2-1B, Qwen2.5 and Gemma ship), plus the
    tiny tokenizer: a generator folder whose lm_head and input embedding are one weight."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig
    from scaledown.models import tiny_models
    from scaledown.models.tiny_tokenizer import load_tiny_tokenizer
    torch.manual_seed(seed)
    config = LlamaConfig(**{**tiny_models.tiny_llama_config_dict(), "tie_word_embeddings": True})
    model = AutoModelForCausalLM.from_config(config)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(path)
    load_tiny_tokenizer().save_pretrained(path)
    return path
