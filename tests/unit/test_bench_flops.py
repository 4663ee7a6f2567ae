# `scaledown bench flops` reproduces OSCAR's Table 1 within 10%; the decode-step interpolation is exact.
import inspect
import json

import pytest
import torch

from scaledown.cli.bench import FLOPS_KEYS
from scaledown.evaluation.flops import PAPER_TFLOPS, count, generation_flops, meta_causal_lm


def test_flops_command_reproduces_oscar_table_1(tmp_path, capsys):
    from scaledown.cli.main import main
    out = tmp_path / "flops.json"
    assert main(["bench", "flops", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text())
    for key in FLOPS_KEYS:   # uncompressed, generation_x16, total_5L, total_8L, total_llama
        assert figures[key] == pytest.approx(PAPER_TFLOPS[key], rel=0.10), key
        assert abs(figures["relative_to_paper"][key]) < 0.10
    assert figures["total_5L"] == pytest.approx(figures["generation_x16"] + figures["compression_5L"])
    assert figures["compression_5L"] < figures["compression_8L"]     # more layers cost more
    assert figures["details"]["compression_5L"]["scaledown_inputs_tflops"] > figures["compression_5L"]
    assert figures["assumptions"] and "counting assumptions" in printed and "20.33" in printed


def test_decode_interpolation_equals_counting_every_step():
    from transformers import DynamicCache, MistralConfig
    from scaledown.models.tiny_models import tiny_generator_config_dict
    lm = meta_causal_lm(MistralConfig(**tiny_generator_config_dict()))
    prompt, new = 40, 6
    counted = generation_flops(lm, prompt, new)
    cache = DynamicCache(config=lm.config)
    name = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"

    def forward(tokens):
        ids = torch.zeros(1, tokens, dtype=torch.long, device="meta")
        lm(input_ids=ids, use_cache=True, logits_to_keep=1, **{name: cache})

    every = count(lambda: forward(prompt)) + sum(count(lambda: forward(1)) for _ in range(new - 1))
    assert counted["total"] == pytest.approx(every, rel=1e-9)
    # lm_head only at the last prompt position: logits over the whole prompt would add (prompt - 1) rows
    full = count(lambda: lm(input_ids=torch.zeros(1, prompt, dtype=torch.long, device="meta")))
    hidden, vocab = lm.config.hidden_size, lm.config.vocab_size
    assert full - counted["prefill"] == 2 * (prompt - 1) * hidden * vocab
