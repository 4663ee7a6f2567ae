# LLM judge: any causal LM grades answers against the golds with OSCAR's rubric (1 / 0.5 / 0).
"""OSCAR's primary metric (App. E) is BERGEN's LLM evaluation: a judge LLM (SOLAR-10.7B-Instruct in the
paper) reads the question, the golden answer and the generated answer and grades it correct (1),
partially correct (0.5) or wrong (0). As in BERGEN (use_logits), the grade is read from the judge's
next-token distribution restricted to the options' first tokens: score = sum p(option) x value,
one forward pass per batch and no parsing of free text.

`LLMJudge.load("tiny")` builds the offline tiny random causal LM: its grades mean nothing, but the
whole path runs on this machine (tests); pass a real instruction model for real grades.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from scaledown.errors import ConfigError
from scaledown.models import loading
from scaledown.models.inputs import text_ids
from scaledown.presets import TINY_GENERATOR
from scaledown.progress import show_progress

OPTIONS = (("correct", 1.0), ("partial", 0.5), ("wrong", 0.0))
SYSTEM = "You are an evaluation tool. You grade an AI-generated answer against the golden answer of a question."
INSTRUCTION = ("Question: {question}\nGolden answer: {golds}\nGenerated answer: {prediction}\n\n"
               "Grade the generated answer. Reply 'correct' if it gives the golden answer (1 point), 'partial' "
               "if it is partly right or incomplete (0.5 point), 'wrong' if it is wrong or gives no answer "
               "(0 points). Reply with one word.")


class LLMJudge:
    def __init__(self, model, tokenizer, name: str, batch_size: int = 8):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        first = [tokenizer(label, add_special_tokens=False)["input_ids"][0] for label, _ in OPTIONS]
        if len(set(first)) != len(first):
            raise ConfigError(f"judge {name}: its tokenizer starts the grade words {[o for o, _ in OPTIONS]} with the "
                              f"same token, so their probabilities cannot be told apart; use another judge model.")
        self.option_ids = torch.tensor(first)
        self.values = torch.tensor([v for _, v in OPTIONS])

    @classmethod
    def load(cls, name: str, device: torch.device, batch_size: int = 8, dtype: Optional[torch.dtype] = None,
             trust_remote_code: bool = False, seed: int = 0) -> "LLMJudge":
        """'tiny' (offline random tiny LM), a hub name or a local folder of a causal LM."""
        model_name = TINY_GENERATOR if name == "tiny" else name
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the tiny judge is random: the same one every run
            model = loading.load_causal_lm(model_name, trust_remote_code, dtype=dtype)
        tokenizer = loading.load_tokenizer(model_name, trust_remote_code)
        return cls(model.to(device), tokenizer, name, batch_size)

    def prompt(self, question: str, golds: Sequence[str], prediction: str) -> str:
        user = INSTRUCTION.format(question=question, golds=" | ".join(golds), prediction=prediction or "(empty)")
        if getattr(self.tokenizer, "chat_template", None):
            try:
                return self.tokenizer.apply_chat_template(
                    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
                    tokenize=False, add_generation_prompt=True)
            except Exception:  # templates without a system role
                return self.tokenizer.apply_chat_template([{"role": "user", "content": SYSTEM + "\n\n" + user}],
                                                          tokenize=False, add_generation_prompt=True)
        return f"{SYSTEM}\n\n{user}\nGrade:"

    def prompt_ids(self, question: str, golds: Sequence[str], prediction: str) -> list[int]:
        """Token ids of the judge prompt; the question, gold answers and prediction are user text, so their
        special-token strings ('</s>', '<|eot_id|>', ...) stay text; only the template's are special."""
        marks = ("\x00SDJQ\x00", "\x00SDJG\x00", "\x00SDJP\x00")
        texts = dict(zip(marks, (question, " | ".join(golds), prediction or "(empty)")))
        ids: list[int] = []
        template = self.prompt(marks[0], [marks[1]], marks[2])
        for piece in re.split("(" + "|".join(re.escape(m) for m in marks) + ")", template):
            if piece in texts:
                ids += text_ids(self.tokenizer, texts[piece])
            elif piece:
                ids += self.tokenizer(piece, add_special_tokens=False)["input_ids"]
        return ids

    @torch.no_grad()
    def score(self, questions: Sequence[str], golds: Sequence[Sequence[str]], predictions: Sequence[str],
              progress: bool = False) -> list[float]:
        """Expected grade in [0, 1] of each prediction."""
        prompts = [self.prompt_ids(q, g, p) for q, g, p in zip(questions, golds, predictions)]
        device = next(self.model.parameters()).device
        scores: list[float] = []
        starts = range(0, len(prompts), self.batch_size)
        if show_progress(progress):
            starts = tqdm(starts, desc=f"judging ({self.name})", unit="batch")
        for start in starts:
            enc = _left_padded(prompts[start:start + self.batch_size], self.tokenizer.pad_token_id, device)
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # left padding: last position = next
            logits = self.model(**enc, position_ids=positions, logits_to_keep=1).logits[:, -1].float()
            probs = logits[:, self.option_ids.to(device)].softmax(-1).cpu()
            scores += (probs @ self.values).tolist()
        return scores


def _left_padded(rows: Sequence[Sequence[int]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask of id lists, padded on the left (the next token follows every prompt)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id if pad_id is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, width - len(row):], mask[b, width - len(row):] = torch.tensor(row, dtype=torch.long), 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
