# Text -> tensors: compressor inputs, the generator prompt with memory slots, answers, and batch padding.
"""The generator prompt follows OSCAR (Fig. 14): an optional system message and the user turn
"Background:\\n{doc1}\\n{doc2}...\\nQuestion: {question}", rendered with the generator's chat template
when it has one. Each document is `num_memory_tokens` slots whose input embeddings are replaced
by the compressor's memory embeddings (`memory_slots` says which). In "text" mode the documents'
tokens stand there instead (uncompressed RAG); in "none" mode the background is empty.

Pretraining rows (`"task"` in PRETRAINING_TASKS) use the same rendering with the task's instruction
in place of the question (as COCOM/PISCO tell the decoder which task it does): the generator
reproduces the compressed chunk ("autoencode") or writes the text that follows it ("continuation").
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Optional, Sequence

import torch

from scaledown.config import ScaleDownConfig

_DOC = "\x00SDDOC{}\x00"
_QUERY = "\x00SDQUERY\x00"
_MARK = re.compile("(\x00SDDOC\\d+\x00|\x00SDQUERY\x00)")
MODES = ("memory", "text", "none")
# pretraining task -> the instruction that replaces the question (row["answer"] holds the target text)
PRETRAINING_TASKS = {
    "autoencode": "Repeat the background text word for word.",
    "continuation": "Continue the background text.",
}


class InputBuilder:
    """Tokenises rows for one model; shared by the collator, inference and every backend."""

    def __init__(self, config: ScaleDownConfig, tokenizer, compressor_tokenizer=None):
        self.config = config
        self.tokenizer = tokenizer
        self.compressor_tokenizer = compressor_tokenizer or tokenizer
        self.bidirectional = config.compressor_type == "modernbert"
        self.l = config.num_memory_tokens
        self.pad_id = tokenizer.pad_token_id
        self.compressor_pad_id = self.compressor_tokenizer.pad_token_id
        self._segments = lru_cache(maxsize=256)(self._prompt_segments)  # (num_docs, task) -> segments
        self._answer_prefix = self._compute_answer_prefix()

    # ---- tokenising pieces --------------------------------------------------------------------
    def _ids(self, text: str, tokenizer=None) -> list[int]:
        """Template text: its special-token strings ([INST], <|eot_id|>, ...) are the template's own tokens."""
        return (tokenizer or self.tokenizer)(text, add_special_tokens=False)["input_ids"]

    def _text_ids(self, text: str, tokenizer=None) -> list[int]:
        """User text (queries, documents, answers, pretraining text): see text_ids."""
        return text_ids(tokenizer or self.tokenizer, text)

    def query_ids(self, query: str, tokenizer=None) -> list[int]:
        return self._text_ids(" " + query.strip(), tokenizer)[: self.config.query_max_length]

    def document_ids(self, document: str, tokenizer=None) -> list[int]:
        return self._text_ids(" " + document.strip(), tokenizer)[: self.config.doc_max_length]

    def compressor_ids(self, query: Optional[str], document: str) -> list[int]:
        """ids the compressor reads before its memory tokens; query=None for query-independent use."""
        tok = self.compressor_tokenizer
        doc = self.document_ids(document, tok)
        if self.bidirectional:  # [CLS] query [SEP] document [SEP]
            cls = [tok.cls_token_id] if tok.cls_token_id is not None else []
            sep = [tok.sep_token_id] if tok.sep_token_id is not None else []
            q = self.query_ids(query, tok) + sep if query else []
            return cls + q + doc + sep
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        q = self._ids("Query:", tok) + self.query_ids(query, tok) + self._ids("\n", tok) if query else []
        return bos + q + self._ids("Document:", tok) + doc

    def _render(self, user: str, assistant: Optional[str] = None) -> str:
        messages = []
        if self.config.system_prompt:
            messages.append({"role": "system", "content": self.config.system_prompt})
        messages.append({"role": "user", "content": user})
        if assistant is not None:
            messages.append({"role": "assistant", "content": assistant})
        if getattr(self.tokenizer, "chat_template", None):
            system = (self.config.system_prompt or "").strip()
            try:
                text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                          add_generation_prompt=assistant is None)
                if system in text:
                    return text
                # the template dropped the system message silently (Phi-3-mini): fold it in as below
            except Exception:  # templates without a system role (Mistral v0.1, Gemma-2) raise on one
                if not system:
                    raise
            # a family without a system role: fold it into the user turn, as Gemma-3's own template does
            merged = [{"role": "user", "content": self.config.system_prompt + "\n\n" + user}] + messages[2:]
            return self.tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=assistant is None)
        bos = self.tokenizer.bos_token or ""
        system = self.config.system_prompt + "\n\n" if self.config.system_prompt else ""
        text = f"{bos}{system}{user}\nAnswer:"
        return text if assistant is None else text + " " + assistant

    def _prompt_segments(self, num_docs: int, task: Optional[str] = None) -> tuple:
        background = "\n".join(_DOC.format(i) for i in range(num_docs))
        request = f"Question:{_QUERY}" if task is None else PRETRAINING_TASKS[task]
        text = self._render(f"Background:\n{background}\n{request}")
        segments = []
        for piece in _MARK.split(text):
            if not piece:
                continue
            if piece == _QUERY:
                segments.append("Q")
            elif piece.startswith("\x00SDDOC"):
                segments.append(int(piece[6:-1]))
            else:
                segments.append(tuple(self._ids(piece)))
        return tuple(segments)

    def _compute_answer_prefix(self) -> str:
        """Text the template writes between the generation prompt and the answer (e.g. a space)."""
        probe = "ANSWERPROBE"
        prompt = self._render("x")
        full = self._render("x", assistant=probe)
        tail = full[len(prompt):] if full.startswith(prompt) else " " + probe
        return tail.partition(probe)[0]

    def _answer_text_ids(self, answer: str) -> list[int]:
        """The template's text before an answer (often a space) and the answer, the answer's special-token
        strings kept as text; a prefix holding the template's own special tokens is tokenised apart."""
        prefix = self._answer_prefix
        specials = getattr(self.tokenizer, "all_special_tokens", None) or []
        if any(s and s in prefix for s in specials):
            return self._ids(prefix) + self._text_ids(answer)
        return self._text_ids(prefix + answer)

    def answer_ids(self, answer: str, max_length: Optional[int] = None) -> list[int]:
        """Answer tokens + EOS (the generator learns to stop), at most max_length (default answer_max_length)."""
        ids = self._answer_text_ids(answer.strip())[: (max_length or self.config.answer_max_length) - 1]
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def target_ids(self, row: dict[str, Any]) -> list[int]:
        """What the generator learns to write: the answer, or a pretraining row's chunk (up to doc_max_length)."""
        if row.get("task") is None:
            return self.answer_ids(row_answer(row))
        return self.answer_ids(row_answer(row), self.config.doc_max_length + 1)

    def prompt(self, query: str, documents: Sequence[str], mode: str = "memory",
               task: Optional[str] = None) -> tuple[list[int], list[int]]:
        """Prompt ids and memory slots (-1: ordinary token; j: memory vector j = doc j//l, slot j%l).

        task: None for question answering, or a PRETRAINING_TASKS key (the query is then unused).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if task is not None and task not in PRETRAINING_TASKS:
            raise ValueError(f"task must be one of {sorted(PRETRAINING_TASKS)} or None, not {task!r}")
        num_docs = 0 if mode == "none" else len(documents)
        ids: list[int] = []
        slots: list[int] = []
        for seg in self._segments(num_docs, task):
            if seg == "Q":
                piece = self.query_ids(query)
                ids += piece
                slots += [-1] * len(piece)
            elif isinstance(seg, int):
                if mode == "memory":
                    ids += [self.pad_id] * self.l
                    slots += list(range(seg * self.l, (seg + 1) * self.l))
                else:
                    piece = self.document_ids(documents[seg])
                    ids += piece
                    slots += [-1] * len(piece)
            else:
                ids += list(seg)
                slots += [-1] * len(seg)
        return ids, slots

    # ---- batching -----------------------------------------------------------------------------
    def collate(self, rows: Sequence[dict[str, Any]], mode: str = "memory", with_answers: bool = True,
                max_documents: Optional[int] = None, pad_documents_to: Optional[int] = None,
                padding_side: Optional[str] = None, compress_query: bool = True) -> dict[str, torch.Tensor]:
        """Pad a list of rows into a batch. Documents: (B, K, T) with K the most documents in the batch."""
        side = padding_side or ("right" if with_answers else "left")
        docs = [list(r["documents"])[:max_documents] if max_documents else list(r["documents"]) for r in rows]
        k = max([len(d) for d in docs] + [pad_documents_to or 0, 1])
        batch: dict[str, torch.Tensor] = {}
        if mode == "memory":
            comp = [[self.compressor_ids(r.get("query") if compress_query else None, d) for d in ds]
                    for r, ds in zip(rows, docs)]
            t = max(len(c) for cs in comp for c in cs) if any(comp) else 1
            ids = torch.full((len(rows), k, t), self.compressor_pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), k, t), dtype=torch.long)
            for b, cs in enumerate(comp):
                for j, c in enumerate(cs):  # left padding: memory tokens follow the text directly
                    ids[b, j, t - len(c):] = torch.tensor(c)
                    mask[b, j, t - len(c):] = 1
            batch["compressor_input_ids"], batch["compressor_attention_mask"] = ids, mask
        batch["document_mask"] = torch.tensor([[j < len(ds) for j in range(k)] for ds in docs], dtype=torch.bool)
        scores = torch.zeros(len(rows), k)
        has_scores = torch.zeros(len(rows), k, dtype=torch.bool)
        for b, r in enumerate(rows):
            rs = r.get("reranking_scores")
            if rs is not None:
                n = len(docs[b])
                scores[b, :n] = torch.tensor([float(s) for s in list(rs)[:n]])
                has_scores[b, :n] = True
        batch["reranking_scores"], batch["reranking_mask"] = scores, has_scores

        seqs, slot_seqs, label_seqs = [], [], []
        for r, ds in zip(rows, docs):
            ids, slots = self.prompt(r.get("query", ""), ds, mode, task=r.get("task"))
            labels = [-100] * len(ids)
            if with_answers:
                answer = self.target_ids(r)
                ids, slots, labels = ids + answer, slots + [-1] * len(answer), labels + answer
            seqs.append(ids), slot_seqs.append(slots), label_seqs.append(labels)
        t = max(len(s) for s in seqs)
        input_ids = torch.full((len(rows), t), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), t), dtype=torch.long)
        memory_slots = torch.full((len(rows), t), -1, dtype=torch.long)
        labels = torch.full((len(rows), t), -100, dtype=torch.long)
        for b, (ids, slots, labs) in enumerate(zip(seqs, slot_seqs, label_seqs)):
            span = slice(0, len(ids)) if side == "right" else slice(t - len(ids), t)
            input_ids[b, span], attention[b, span] = torch.tensor(ids), 1
            memory_slots[b, span], labels[b, span] = torch.tensor(slots), torch.tensor(labs)
        batch.update(input_ids=input_ids, attention_mask=attention, memory_slots=memory_slots)
        if with_answers:
            batch["labels"] = labels
        return batch

    def collate_pretraining(self, rows: Sequence[dict[str, Any]], mode: str = "memory",
                            **options: Any) -> dict[str, torch.Tensor]:
        """Pretraining rows {"documents": [chunk], "task", "answer": target}: query-independent compression,
        the task's instruction as prompt, the target chunk as labels (see data/pretraining.py)."""
        for row in rows:
            if row.get("task") not in PRETRAINING_TASKS:
                raise ValueError(f"a pretraining row needs task in {sorted(PRETRAINING_TASKS)}, got {row.get('task')!r}")
        return self.collate(rows, mode=mode, compress_query=False, **options)


def text_ids(tokenizer, text):
    """ids of user text (a string or a list of strings) without added special tokens, and with the strings of
    special tokens ('</s>', '<s>', '[SEP]', '<|eot_id|>', ...) tokenised as the text they are: an answer
    saying '</s>' must not put the EOS id inside the labels (split_special_tokens, transformers)."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def row_answer(row: dict[str, Any]) -> str:
    """The training target of a row: `answer`, else the first of `answers`."""
    if row.get("answer") is not None:
        return str(row["answer"])
    answers = row.get("answers") or [""]
    return str(answers[0])
