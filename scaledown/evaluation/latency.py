# Wall-clock latency of answering with compressed vs uncompressed documents, same generator, this hardware.
"""Both paths run the public inference path from text rows to answers (`inputs.collate` then
`generate_from_batch`): "compressed" = compressor + generator over query + memory embeddings,
"uncompressed" = the same generator over query + document text. Every generation is forced to the
same length (min_new_tokens = max_new_tokens). At each point of the sweep the two paths are timed
alternately, in one run (the machine may be shared and noisy), and the median of the repeats is kept.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch
from transformers import MistralConfig, MistralForCausalLM

from scaledown.config import ScaleDownConfig
from scaledown.data.synthetic import generate_examples
from scaledown.models import ScaleDownModel, tiny_models
from scaledown.models.generator import base_causal_lm, build_generator


@dataclass
class BenchModelShape:
    """A small Mistral-shaped generator (Mistral-7B's ratios: MLP 3.5 x hidden, 4 query heads per KV head)."""
    hidden_size: int = 256
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int = 2
    intermediate_size: int = 896
    compressor_layers: Optional[int] = None    # None: a quarter of num_layers (OSCAR-8L's 8 of 32)

    def resolved_compressor_layers(self) -> int:
        return self.compressor_layers or max(1, self.num_layers // 4)


@dataclass
class LatencySettings:
    documents: Sequence[int] = (1, 5, 10, 20, 50)
    batch_sizes: Sequence[int] = (8,)
    document_tokens: int = 128
    compression_rate: int = 16
    generated_tokens: int = 32
    repeats: int = 3
    warmup: int = 0         # extra untimed runs per point (one warm-up run of each path starts every sweep)
    seed: int = 0


def build_bench_model(shape: BenchModelShape, settings: LatencySettings):
    """A random ScaleDownModel of `shape` with the tiny offline tokenizer, LoRA merged (as deployed)."""

    gen = dict(tiny_models.tiny_generator_config_dict(), hidden_size=shape.hidden_size,
               num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
               num_key_value_heads=shape.num_kv_heads, head_dim=shape.hidden_size // shape.num_heads,
               intermediate_size=shape.intermediate_size, max_position_embeddings=16384)
    config = ScaleDownConfig.from_preset("tiny", doc_max_length=settings.document_tokens,
                                         compression_rate=settings.compression_rate, query_max_length=64,
                                         num_compressor_layers=shape.resolved_compressor_layers(),
                                         max_new_tokens=settings.generated_tokens)
    torch.manual_seed(settings.seed)
    generator = build_generator(config, base=MistralForCausalLM(MistralConfig(**gen)))
    model = ScaleDownModel(config, generator=generator)
    return merge_lora(model)


def merge_lora(model):
    """Fold the LoRA adapters into the generator's weights: deployment runs one matmul per linear layer."""
    merge = getattr(model.generator, "merge_and_unload", None)
    if callable(merge):
        model.generator = merge()
    return model.eval()


def bench_rows(model, num_queries: int, num_documents: int, seed: int = 0) -> list[dict]:
    """Short synthetic questions, each with `num_documents` documents of at least doc_max_length tokens."""
    examples = generate_examples(num_queries * (num_documents + 1) + 8, seed=seed)
    sentences = [s for ex in examples for d in ex["documents"] for s in d.split(". ")]
    limit = model.config.doc_max_length
    rows, cursor = [], 0
    for q in range(num_queries):
        docs = []
        for _ in range(num_documents):
            text = ""
            while len(model.inputs.document_ids(text)) < limit:  # truncated back to exactly `limit` tokens
                text += sentences[cursor % len(sentences)].rstrip(".") + ". "
                cursor += 1
            docs.append(text.strip())
        rows.append({"query": examples[q]["query"], "documents": docs})
    return rows


def synchronize(device: torch.device) -> None:
    """Wait until `device` has finished its queued work (CUDA kernels run asynchronously to the host)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def answer_seconds(model, rows: Sequence[dict], mode: str, new_tokens: int,
                   sync: Callable[[torch.device], None] = synchronize) -> float:
    """Seconds from text rows to answers. The device is synchronised before the clock starts (earlier work is not
    charged to this call) and before it stops (all of this call's kernels are)."""
    device = model.device
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        batch = model.inputs.collate(rows, mode=mode, with_answers=False)
        answers = model.generate_from_batch(batch, mode, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    sync(device)
    seconds = time.perf_counter() - start
    assert len(answers) == len(rows)
    return seconds


def measure_point(model, rows: Sequence[dict], settings: LatencySettings) -> dict:
    """Median seconds of both paths over the repeats, alternating which runs first."""
    times: dict[str, list[float]] = {"compressed": [], "uncompressed": []}
    modes = {"compressed": "memory", "uncompressed": "text"}
    for _ in range(settings.warmup):
        for name in times:
            answer_seconds(model, rows, modes[name], settings.generated_tokens)
    for r in range(settings.repeats):
        order = ("compressed", "uncompressed") if r % 2 == 0 else ("uncompressed", "compressed")
        for name in order:
            times[name].append(answer_seconds(model, rows, modes[name], settings.generated_tokens))
    point: dict = {}
    for name, values in times.items():
        median = statistics.median(values)
        point[name] = {"seconds_per_batch": median, "ms_per_query": 1000 * median / len(rows),
                       "queries_per_second": len(rows) / median, "runs": values}
    point["speedup"] = point["uncompressed"]["seconds_per_batch"] / point["compressed"]["seconds_per_batch"]
    return point


def prompt_lengths(model, rows: Sequence[dict]) -> dict[str, int]:
    """Generator prompt tokens of the first row in each mode (what the generator reads)."""
    return {mode: len(model.inputs.prompt(rows[0]["query"], rows[0]["documents"], mode)[0])
            for mode in ("memory", "text")}


def run_sweep(model, settings: LatencySettings, say: Callable[[str], None] = print) -> list[dict]:
    results = []
    warm = bench_rows(model, 1, 1, settings.seed)
    for mode in ("memory", "text"):  # first calls pay one-off costs (allocations, lazy imports)
        answer_seconds(model, warm, mode, settings.generated_tokens)
    for batch_size in settings.batch_sizes:
        for num_documents in settings.documents:
            rows = bench_rows(model, batch_size, num_documents, settings.seed)
            point = measure_point(model, rows, settings)
            point.update(documents=num_documents, batch_size=batch_size, prompt_tokens=prompt_lengths(model, rows))
            say(f"batch {batch_size:>3}  docs {num_documents:>3}  compressed "
                f"{point['compressed']['ms_per_query']:8.1f} ms/query  uncompressed "
                f"{point['uncompressed']['ms_per_query']:8.1f} ms/query  speed-up {point['speedup']:.2f}x")
            results.append(point)
    return results


def describe_model(model) -> dict:
    gen = base_causal_lm(model.generator)
    cfg = gen.config
    return {"generator_parameters": sum(p.numel() for p in gen.parameters()),
            "compressor_parameters": sum(p.numel() for p in model.compressor.parameters()),
            "generator": {k: getattr(cfg, k, None) for k in ("model_type", "hidden_size", "num_hidden_layers",
                                                             "num_attention_heads", "num_key_value_heads",
                                                             "intermediate_size", "vocab_size")},
            "compressor_type": model.config.compressor_type,
            # the backbone's own depth: num_compressor_layers only sizes an n_layers compressor
            "compressor_layers": getattr(model.compressor.backbone.config, "num_hidden_layers", None),
            "num_memory_tokens": model.config.num_memory_tokens,
            "doc_max_length": model.config.doc_max_length}


def environment(model) -> dict:
    device = model.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": str(device), "device_name": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count()}


def report(model, settings: LatencySettings, results: list[dict]) -> dict:
    return {"model": describe_model(model), "settings": asdict(settings), "environment": environment(model),
            "results": results}
