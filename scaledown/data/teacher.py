# Teacher answers (OSCAR: Mistral-7B-Instruct-v0.2 reading the uncompressed passages), batched, greedy, bounded.
"""The prompt is the generator's own uncompressed-RAG prompt (models/inputs.py, mode "text"):
OSCAR's system message and "Background: {docs} Question: {q}" in the teacher's chat template,
so the student is trained on answers to exactly the prompt it imitates. Answers are greedy and at
most --max_answer_tokens tokens (OSCAR: 128). vLLM is used when it is installed and a GPU is
present (--teacher_backend auto); otherwise transformers' generate on length-sorted batches.
"""
from __future__ import annotations

import importlib.util
from typing import Optional, Sequence

import torch

from scaledown.config import ScaleDownConfig
from scaledown.data.prep_models import (DEFAULT_TEACHER, is_offline, load_teacher_lm, pick_device, teacher_model_name,
                                        tokenizer_for)
from scaledown.errors import ConfigError
from scaledown.models.inputs import InputBuilder

BACKENDS = ("auto", "transformers", "vllm")


def choose_backend(requested: str, name: str) -> str:
    if requested not in BACKENDS:
        raise ConfigError(f"--teacher_backend {requested}: use one of {', '.join(BACKENDS)}.")
    if requested != "auto":
        return requested
    usable = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
    return "vllm" if usable and not is_offline(name) else "transformers"


class Teacher:
    def __init__(self, model: Optional[str] = None, device: str = "auto", batch_size: int = 8,
                 max_answer_tokens: int = 128, doc_max_tokens: int = 256, query_max_tokens: int = 128,
                 backend: str = "auto", trust_remote_code: bool = False):
        self.name = model or DEFAULT_TEACHER
        self.batch_size = batch_size
        self.max_answer_tokens = max_answer_tokens
        self.backend = choose_backend(backend, self.name)
        self.device = pick_device(device)
        resolved = teacher_model_name(self.name)
        if self.backend == "vllm":
            self.model, self.tokenizer = None, tokenizer_for(resolved, trust_remote_code)
            self._vllm = _VLLMGenerator(resolved, max_answer_tokens, trust_remote_code)
        else:
            self.model, self.tokenizer = load_teacher_lm(self.name, self.device, trust_remote_code)
        # compression settings are unused in "text" mode; doc/query limits only guard against runaway inputs
        prompt_config = ScaleDownConfig(generator_model_name=resolved, doc_max_length=doc_max_tokens,
                                        compression_rate=doc_max_tokens, query_max_length=query_max_tokens,
                                        trust_remote_code=trust_remote_code)
        self.inputs = InputBuilder(prompt_config, self.tokenizer)

    def prompt_ids(self, query: str, documents: Sequence[str]) -> list[int]:
        return self.inputs.prompt(query, documents, mode="text")[0]

    def answer(self, queries: Sequence[str], documents: Sequence[Sequence[str]]) -> list[str]:
        """One answer per query, in order."""
        prompts = [self.prompt_ids(q, docs) for q, docs in zip(queries, documents)]
        if self.backend == "vllm":
            return self._vllm.generate(prompts)
        order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))  # less padding per batch
        answers: list[str] = [""] * len(prompts)
        for offset in range(0, len(order), self.batch_size):
            chosen = order[offset:offset + self.batch_size]
            for i, text in zip(chosen, self._generate([prompts[i] for i in chosen])):
                answers[i] = text
        return answers

    def _generate(self, prompts: list[list[int]]) -> list[str]:
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):   # left padding: generation continues right after each prompt
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      max_new_tokens=self.max_answer_tokens, do_sample=False, num_beams=1,
                                      pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id)
        return [text.strip() for text in self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]


class _VLLMGenerator:
    """Greedy generation from token-id prompts through vLLM (continuous batching on the GPU)."""

    def __init__(self, name: str, max_answer_tokens: int, trust_remote_code: bool):
        from vllm import LLM, SamplingParams
        self.llm = LLM(model=name, trust_remote_code=trust_remote_code, seed=0)
        self.params = SamplingParams(temperature=0.0, max_tokens=max_answer_tokens)

    def generate(self, prompts: list[list[int]]) -> list[str]:
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], self.params, use_tqdm=False)
        return [output.outputs[0].text.strip() for output in outputs]
