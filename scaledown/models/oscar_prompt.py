# prompt_format="oscar": the input formats of NAVER's released OSCAR models (the COCOM remote code), token for token.
"""What the released models were trained on, read from the reference modelling file (COCOM / BertCompressor,
see README "Released OSCAR checkpoints"):

compressor   a separate causal LM (OSCAR-llama): the tokenizer's *pair* encoding (query, document) with
             truncation='only_second' to doc_max_length + 3 tokens and its special tokens; an N-layers
             compressor ('mistral_trimmed'): the text "\\nQuery:\\n{q}Document:\\n{d}" truncated to
             doc_max_length + 8 tokens; without a query: the document alone, doc_max_length + 2 tokens.
             The memory tokens follow the text (the reference left-pads; so does ScaleDown).
generator    chat template of [system: RELEASED_SYSTEM_PROMPT, user: "Background:\\n{docs}\\n\\nQuestion:{q}"]
             with a generation prompt; {docs} is, per document, its memory placeholders (<MEM0>..<MEM{l-1}>,
             or l x <MEM>) then <SEP>, with nothing between documents. A template without a system role gets
             one user turn "{system}\\n{user}". The whole text is tokenized at once, no special tokens added.

The placeholders are real (added) tokens of the generator's tokenizer; their embeddings are replaced by the
memory vectors, the <SEP> embedding is the trained row from decoder_first_last_layers.pth.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from scaledown.errors import ConfigError
from scaledown.models.inputs import PRETRAINING_TASKS, InputBuilder

# The reference's system prompt, verbatim ("answer to questions"; the paper's Fig. 14 says "answer questions").
RELEASED_SYSTEM_PROMPT = ("You are a helpful assistant. Your task is to extract relevant information from provided "
                          "documents and to answer to questions as briefly as possible.")
SEP_TOKEN = "<SEP>"
EXTRA_TOKENS = ("<AE>", "<ENC>", SEP_TOKEN)


def decoder_added_tokens(num_memory_tokens: int, different_mem_tokens: bool) -> list[str]:
    """Tokens the reference adds to the generator's tokenizer, in its order (their ids follow the vocabulary)."""
    mem = [f"<MEM{i}>" for i in range(num_memory_tokens)] if different_mem_tokens else ["<MEM>"]
    return mem + list(EXTRA_TOKENS)


def compressor_memory_tokens(num_memory_tokens: int) -> list[str]:
    """Tokens the reference adds to the compressor's tokenizer (always one per memory slot)."""
    return [f"<MEM{i}>" for i in range(num_memory_tokens)]


def memory_placeholders(tokenizer, num_memory_tokens: int) -> list[str]:
    """The generator tokenizer's memory placeholders: <MEM0>..<MEM{l-1}> if it has them, else l x <MEM>."""
    vocab = tokenizer.get_vocab()
    if "<MEM0>" in vocab:
        return [f"<MEM{i}>" for i in range(num_memory_tokens)]
    if "<MEM>" in vocab:
        return ["<MEM>"] * num_memory_tokens
    raise ConfigError("prompt_format='oscar' needs a generator tokenizer with the released model's added tokens "
                     "(<MEM0>.. or <MEM>, and <SEP>); load the model from a released OSCAR folder or one converted "
                     "from it (scaledown convert --from oscar).")


class OscarInputBuilder(InputBuilder):
    """InputBuilder with the released OSCAR formats (module docstring); batching and padding are inherited."""

    def __init__(self, config, tokenizer, compressor_tokenizer=None):
        self._mem_tokens = memory_placeholders(tokenizer, config.num_memory_tokens)
        self._mem_ids = set(tokenizer.convert_tokens_to_ids(self._mem_tokens))
        super().__init__(config, tokenizer, compressor_tokenizer)

    def _compressor_call(self, query: Optional[str], document: str, padding):
        tok, n = self.compressor_tokenizer, self.config.doc_max_length
        if query is None:
            return tok(document, truncation=True, max_length=n + 2, padding=padding)
        if self.config.compressor_type == "n_layers":
            text = "\nQuery:\n" + query + "Document:\n" + document
            return tok(text, truncation=True, max_length=n + 8, padding=padding)
        return tok(query, document, truncation="only_second", max_length=n + 3, padding=padding)

    def compressor_ids(self, query: Optional[str], document: str) -> list[int]:
        return self._compressor_call(query, document, False)["input_ids"]

    def collate(self, rows, mode: str = "memory", with_answers: bool = True, max_documents=None,
                pad_documents_to=None, padding_side=None, compress_query: bool = True):
        """As InputBuilder.collate, but each compressor input is padded to its fixed length (doc_max_length + 2 /
        + 3 / + 8) on the compressor tokenizer's side, as the reference does: with right padding the memory tokens
        sit after the padding, and the compressor's absolute positions count it."""
        batch = super().collate(rows, mode, with_answers, max_documents, pad_documents_to, padding_side,
                                compress_query)
        if mode != "memory":
            return batch
        b, k = batch["document_mask"].shape
        tok = self.compressor_tokenizer
        side = tok.padding_side
        if self.config.compressor_type != "n_layers":
            tok.padding_side = "left"   # the reference sets it for a separate compressor
        try:
            ids, masks = [], []
            for r in rows:
                docs = list(r["documents"])[:max_documents] if max_documents else list(r["documents"])
                query = r.get("query") if compress_query else None
                for j in range(k):
                    enc = self._compressor_call(query, docs[j] if j < len(docs) else "", "max_length")
                    ids.append(enc["input_ids"])
                    masks.append(enc["attention_mask"] if j < len(docs) else [0] * len(enc["input_ids"]))
        finally:
            tok.padding_side = side
        width = max(len(x) for x in ids)   # an over-long query makes a row longer than the fixed length
        pad = self.compressor_pad_id
        ids = [[pad] * (width - len(x)) + x for x in ids]
        masks = [[0] * (width - len(x)) + x for x in masks]
        batch["compressor_input_ids"] = torch.tensor(ids, dtype=torch.long).view(b, k, width)
        batch["compressor_attention_mask"] = torch.tensor(masks, dtype=torch.long).view(b, k, width)
        return batch

    def _render(self, user: str, assistant: Optional[str] = None) -> str:
        messages = [{"role": "system", "content": RELEASED_SYSTEM_PROMPT}, {"role": "user", "content": user}]
        if assistant is not None:
            messages.append({"role": "assistant", "content": assistant})
        if not getattr(self.tokenizer, "chat_template", None):   # the reference needs one; keep ScaleDown's plain form
            text = f"{self.tokenizer.bos_token or ''}{RELEASED_SYSTEM_PROMPT}\n{user}\nAnswer:"
            return text if assistant is None else text + " " + assistant
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=assistant is None)
        except Exception as exc:   # jinja2 TemplateError: as the reference, only for templates without a system role
            if "System role not supported" not in str(exc):
                raise
            merged = [{"role": "user", "content": RELEASED_SYSTEM_PROMPT + "\n" + user}] + messages[2:]
            return self.tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=assistant is None)

    def prompt(self, query: str, documents: Sequence[str], mode: str = "memory",
               task: Optional[str] = None) -> tuple[list[int], list[int]]:
        """Prompt ids and memory slots (-1: ordinary token; j: memory vector j = doc j//l, slot j%l)."""
        if mode == "memory":
            docs = ("".join(self._mem_tokens) + SEP_TOKEN) * len(documents)
        elif mode == "text":   # uncompressed baseline: the documents' text where the memory would be
            docs = "".join(d.strip() + SEP_TOKEN for d in documents)
        elif mode == "none":
            docs = ""
        else:
            raise ValueError(f"mode must be one of memory, text, none, not {mode!r}")
        question = query if task is None else PRETRAINING_TASKS[task]
        text = self._render(f"Background:\n{docs}\n\nQuestion:{question}")
        ids = self.tokenizer(text, add_special_tokens=False, truncation=True, max_length=2048)["input_ids"]
        slots, j = [], 0
        for token in ids:
            if mode == "memory" and token in self._mem_ids:
                slots.append(j)
                j += 1
            else:
                slots.append(-1)
        if mode == "memory" and j != len(documents) * self.l:
            raise ValueError(f"the prompt holds {j} memory placeholders, expected {len(documents) * self.l} "
                             f"({len(documents)} documents x {self.l}); was it truncated at 2048 tokens?")
        return ids, slots


def make_input_builder(config, tokenizer, compressor_tokenizer=None) -> InputBuilder:
    """The InputBuilder of config.prompt_format."""
    if getattr(config, "prompt_format", "scaledown") == "oscar":
        return OscarInputBuilder(config, tokenizer, compressor_tokenizer)
    return InputBuilder(config, tokenizer, compressor_tokenizer)
