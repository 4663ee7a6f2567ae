# ScaleDownModel: compressor + LoRA generator; training loss, compression, answering, reranking.
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scaledown.config import ScaleDownConfig
from scaledown.models import loading
from scaledown.models.api_checks import check_api_inputs, check_generation_kwargs, check_vocabulary
from scaledown.models.compressor import Compressor
from scaledown.models.compressor_builders import (build_compressor, copy_generator_layers, decoder_base,
                                                  token_embedding_rms)
from scaledown.models.compressor_reuse import model_with_saved_compressor
from scaledown.models.fresh_weights import use_fresh_maker
from scaledown.models.generator import base_causal_lm, base_parameters, build_generator, lora_parameters, splice_memory
from scaledown.models.oscar_format import is_released_folder, load_released
from scaledown.models.oscar_prompt import make_input_builder
from scaledown.models.serialization import load_pretrained, save_pretrained
from scaledown.models.sharded_weights import full_weights


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy in float32; positions labelled -100 give 0."""
    return F.cross_entropy(logits.float().flatten(0, -2), labels.flatten(), reduction="none",
                           ignore_index=-100).view(labels.shape)


def argmax_hits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """True where the highest logit is the label's (teacher-forced token accuracy)."""
    return logits.argmax(-1) == labels


def loss_counts(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(answer tokens, scored documents) of a collated batch: the denominators of ScaleDownModel.forward's means.

    The trainer sums them over the micro-batches and data-parallel ranks of a step before any backward, so a
    global batch's loss is the token-weighted (document-weighted) mean whatever its split (training/base.py).
    """
    tokens = int((batch["labels"][:, 1:] != -100).sum()) if "labels" in batch else 0
    scored = int((batch["reranking_mask"] & batch["document_mask"]).sum()) if "reranking_mask" in batch else 0
    return tokens, scored


def add_gather_indices(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch plus the flat positions forward gathers, computed where the batch is built (on the host).

    document_index: (D,) long, indices into the B*K document slots that hold a real document (document_mask);
    answer_index: (A,) long, answer_positions(labels): the flat (B*T) positions whose next token is an answer.
    With them, forward selects by integer index instead of a boolean mask or nonzero() on the device, which
    would make the host wait for the GPU (a device-to-host sync) in every micro-batch. Without them forward
    computes the same indices itself (API callers, evaluation).
    """
    out = dict(batch)
    if "document_mask" in batch:
        out["document_index"] = batch["document_mask"].reshape(-1).nonzero().squeeze(-1)
    if "labels" in batch:
        out["answer_index"] = answer_positions(batch["labels"])
    return out


def generator_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded (B, T) generator input: counted from each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """(A,) long: flat indices b*T + t of the (B, T) positions whose NEXT token is an answer token (labels[b, t+1]
    != -100): where the logits that predict the answer are read; their targets sit at index + 1."""
    predicts = torch.cat([labels[:, 1:] != -100, torch.zeros_like(labels[:, :1], dtype=torch.bool)], dim=1)
    return predicts.reshape(-1).nonzero().squeeze(-1)


@dataclass
class ScaleDownOutput:
    loss: torch.Tensor                      # ce_loss + reranking_loss_weight * rerank_loss
    ce_loss: torch.Tensor                   # mean cross-entropy over answer tokens
    rerank_loss: Optional[torch.Tensor]     # MSE(score, teacher score) over scored documents, if reranking
    num_tokens: torch.Tensor                # answer tokens in the batch (for token-weighted averages)
    scores: Optional[torch.Tensor] = None   # (B, K) reranking scores
    num_correct: Optional[torch.Tensor] = None  # answer tokens the generator's argmax predicts (teacher-forced)
    ce_sum: Optional[torch.Tensor] = None       # summed cross-entropy (nats) over the answer tokens: ce_loss * num_tokens
    rerank_sum: Optional[torch.Tensor] = None   # summed squared score error over scored documents, if reranking
    num_scored: Optional[torch.Tensor] = None   # documents with a teacher score (the rerank_loss denominator)


@dataclass
class CompressedDocuments:
    memory: torch.Tensor                    # (B, K, l, H): l memory embeddings per document
    document_mask: torch.Tensor             # (B, K): which documents are real
    scores: Optional[torch.Tensor] = None   # (B, K) reranking scores, if the head is on


@contextlib.contextmanager
def loading_saved_weights() -> Iterator[None]:
    """Saved weights load into the model built here: a backend's meta build neither defers a folder's weights
    (loading.deferred_weights) nor draws fresh ones shard by shard (fresh_weights), which would replace them."""
    with loading.deferred_weights(None), use_fresh_maker(None):
        yield


class ScaleDownModel(nn.Module):
    """OSCAR-style online soft compression: `ScaleDownModel(config)` builds (or loads) every part.

    >>> model = ScaleDownModel(ScaleDownConfig(preset="tiny"))
    >>> model.answer(["Where was Dravok born?"], [["Dravok was born in Pelmar."]])
    """

    def __init__(self, config: ScaleDownConfig, generator: Optional[nn.Module] = None,
                 compressor: Optional[Compressor] = None, tokenizer=None, compressor_tokenizer=None,
                 compressor_backbone: Optional[nn.Module] = None):
        """`compressor_backbone`: build the compressor around this backbone instead of loading one by name
        (a saved compressor's architecture, its weights loaded afterwards: models/compressor_reuse.py)."""
        super().__init__()
        self.config = config
        random_init = config.base_is_random and generator is None
        self.tokenizer = tokenizer or loading.load_tokenizer(config.tokenizer_name or config.generator_model_name,
                                                             config.trust_remote_code)
        if compressor_tokenizer is None and config.compressor_type != "n_layers":
            compressor_tokenizer = loading.load_tokenizer(config.resolved_compressor_model_name,
                                                          config.trust_remote_code)
        if generator is None:  # before any weights load
            loading.check_tokenizer_fits(self.tokenizer, config.generator_model_name, config.trust_remote_code)
        if compressor is None and compressor_backbone is None and config.compressor_type != "n_layers":
            loading.check_tokenizer_fits(compressor_tokenizer, config.resolved_compressor_model_name,
                                         config.trust_remote_code, role="compressor")
        with torch.random.fork_rng(devices=[]):
            # the same random weights on every rank and every backend: the tiny sentinels, and for loaded models
            # the fresh parts (LoRA A, memory tokens, heads), each drawn from its own seed after loading (the tiny
            # sentinels keep their one stream: the README's measured figures were made with it)
            torch.manual_seed(config.seed)
            fresh = None if random_init else config.seed
            self.generator = generator if generator is not None else build_generator(config, seed=fresh)
            self.compressor = compressor if compressor is not None else build_compressor(
                config, base_causal_lm(self.generator), backbone=compressor_backbone,
                seed=None if fresh is None else fresh + 1)
        self.compressor_tokenizer = compressor_tokenizer
        check_vocabulary(self.tokenizer, self.generator.get_input_embeddings(),
                         config.tokenizer_name or config.generator_model_name, config.generator_model_name)
        if compressor_tokenizer is not None and config.compressor_type != "n_layers":
            check_vocabulary(compressor_tokenizer, self.compressor.backbone.get_input_embeddings(),
                             config.compressor_tokenizer_name, config.resolved_compressor_model_name)
        self.inputs = make_input_builder(config, self.tokenizer, compressor_tokenizer)
        self.compressor.absolute_positions = config.prompt_format == "oscar"   # see models/oscar_prompt.py
        # the base generator's weights differ from its hub checkpoint (random init or warm-up): save them
        self.generator_base_modified = random_init
        # XLA backends need fixed shapes: compress every document slot, padding included, and score every position
        self.static_shapes = False
        # per-token cross-entropy (logits, labels with -100 ignored) -> losses; a tensor-parallel backend swaps in
        # its vocabulary-parallel loss here (the model never imports a backend)
        self.token_loss = masked_cross_entropy
        # (logits, labels) -> which tokens the argmax predicts (eval token accuracy); swapped alongside token_loss
        self.token_hits = argmax_hits
        # the compressor's weights were trained (loaded from a saved model or pretrained compressor), not fresh
        self.compressor_pretrained = compressor is not None

    # ---- parameters ---------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        """OSCAR's two optimizer groups with separate learning rates: generator LoRA and compressor.

        Only trainable parameters count; a group left empty (the generator frozen in pretraining) is dropped.
        """
        groups = [
            {"name": "generator", "params": [p for p in lora_parameters(self.generator) if p.requires_grad],
             "lr": self.config.learning_rate_generator},
            {"name": "compressor", "params": [p for p in self.compressor.parameters() if p.requires_grad],
             "lr": self.config.compressor_learning_rate},
        ]
        return [g for g in groups if g["params"]]

    def warmup_parameter_groups(self) -> list[dict[str, Any]]:
        """The generator warm-up trains the whole base generator (uncompressed RAG), nothing else."""
        return [{"name": "generator", "params": base_parameters(self.generator),
                 "lr": self.config.learning_rate_generator_warmup}]

    def set_trainable(self, phase: str) -> None:
        """'warmup': only base generator weights; 'finetune': LoRA + compressor (base generator frozen);
        'pretrain': the compressor, plus the LoRA when config.pretrain_generator == 'lora'."""
        warm = phase == "warmup"
        lora = not warm and (phase != "pretrain" or self.config.pretrain_generator == "lora")
        for p in base_parameters(self.generator):
            p.requires_grad_(warm)
        for p in lora_parameters(self.generator):
            p.requires_grad_(lora)
        for p in self.compressor.parameters():
            p.requires_grad_(not warm)
        if warm:
            self.generator_base_modified = True

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in backward (generator and compressor backbone) to save memory."""
        kwargs = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
        base_causal_lm(self.generator).gradient_checkpointing_enable(**kwargs)
        backbone = self.compressor.backbone
        if getattr(backbone, "supports_gradient_checkpointing", False):
            backbone.gradient_checkpointing_enable(**kwargs)

    @torch.no_grad()
    def reinit_compressor_from_generator(self) -> None:
        """OSCAR-N-Layers starts as a copy of the generator's first N layers; recopy after a warm-up."""
        if self.config.compressor_type == "n_layers":
            copy_generator_layers(decoder_base(base_causal_lm(self.generator)), self.compressor.backbone)
            if self.compressor.memory_norm is not None:
                weight = self.compressor.memory_norm.weight
                scale = token_embedding_rms(self.generator)
                with full_weights([weight], modify=True):
                    weight.fill_(scale)

    # ---- forward ------------------------------------------------------------------------------
    def compress_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Memory (B, K*l, H) and scores (B, K) for the collated documents of a batch."""
        ids, mask = batch["compressor_input_ids"], batch["compressor_attention_mask"]
        b, k, t = ids.shape
        flat_ids, flat_mask = ids.view(b * k, t), mask.view(b * k, t)
        if self.static_shapes:
            memory, scores = self.compressor(flat_ids, flat_mask)
            memory = memory.reshape(b, k * self.config.num_memory_tokens, -1)  # a strided slice of the states
            return memory, (None if scores is None else scores.view(b, k))
        real = self.document_index(batch)
        return self.place_documents(*self.compressor(flat_ids[real], flat_mask[real]), real, b, k)

    @staticmethod
    def document_index(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(D,) flat indices of the real document slots (from the host when the batch brings them: no device sync)."""
        real = batch.get("document_index")
        return batch["document_mask"].view(-1).nonzero().squeeze(-1) if real is None else real

    def place_documents(self, mem: torch.Tensor, sc: Optional[torch.Tensor], real: torch.Tensor, b: int, k: int
                        ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Memory (D, l, H) and scores (D,) of the real documents -> (B, K*l, H) and (B, K), zeros at padding slots."""
        memory = mem.new_zeros((b * k,) + mem.shape[1:]).index_copy(0, real, mem)
        scores = None if sc is None else sc.new_zeros(b * k).index_copy(0, real, sc)
        return memory.reshape(b, k * self.config.num_memory_tokens, -1), (None if scores is None else scores.view(b, k))

    def input_embeddings(self, batch: dict[str, torch.Tensor], documents_as: str = "memory"
                         ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        embeds = self.generator.get_input_embeddings()(batch["input_ids"])
        scores = None
        if documents_as == "memory":
            memory, scores = self.compress_batch(batch)
            embeds = splice_memory(embeds, memory, batch["memory_slots"])
        return embeds, scores

    def forward(self, batch: dict[str, torch.Tensor], documents_as: str = "memory") -> ScaleDownOutput:
        """Distillation loss: CE on the (teacher's) answer tokens + lambda * MSE on reranking scores.

        loss / ce_loss / rerank_loss are this batch's means; ce_sum, num_tokens, rerank_sum, num_scored are the
        sums and counts behind them, which training normalises by the whole global batch's counts instead.
        """
        embeds, scores = self.input_embeddings(batch, documents_as)
        lm = base_causal_lm(self.generator)
        mask = batch["attention_mask"]
        hidden = decoder_base(lm)(inputs_embeds=embeds, attention_mask=mask, position_ids=generator_positions(mask),
                                  use_cache=False).last_hidden_state   # a training loss needs no KV cache
        return self.loss_from_hidden(batch, hidden, scores)

    def loss_from_hidden(self, batch: dict[str, torch.Tensor], hidden: torch.Tensor, scores: Optional[torch.Tensor]
                         ) -> ScaleDownOutput:
        """forward's loss from the generator decoder's last states (B, T, H) and the reranking scores (B, K)."""
        lm = base_causal_lm(self.generator)
        labels = batch["labels"][:, 1:]
        selected = labels != -100
        num_tokens = selected.sum()
        if self.static_shapes:  # every position (fixed shapes); ignored labels contribute 0
            logits, targets = lm.get_output_embeddings()(hidden[:, :-1]), labels
        else:  # logits only where there is an answer token: the full (B, T, V) tensor is mostly wasted
            answers = batch.get("answer_index")   # from the host (add_gather_indices): no boolean-mask sync
            if answers is None:
                answers = answer_positions(batch["labels"])
            picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, answers)   # a view: no copy of hidden
            logits = lm.get_output_embeddings()(picked)
            targets = batch["labels"].reshape(-1).index_select(0, answers + 1)   # the next token of each position
        cap = getattr(lm.config, "final_logit_softcapping", None)
        if cap:  # Gemma-2/3 soft-cap their logits inside the LM's forward, which this loss bypasses: do it here too
            logits = torch.tanh(logits / cap) * cap
        ce_sum = self.token_loss(logits, targets).sum()
        ce = ce_sum / num_tokens.clamp(min=1)
        num_correct = None  # teacher-forced argmax hits, counted in evaluation only
        if not self.training:
            num_correct = (self.token_hits(logits.detach(), targets) & (targets != -100)).sum()
        loss, rerank, rerank_sum, num_scored = ce, None, None, None
        if scores is not None and self.config.enable_reranking:
            scored = batch["reranking_mask"] & batch["document_mask"]
            diff = (scores - batch["reranking_scores"].to(scores.dtype)) * scored
            rerank_sum, num_scored = diff.pow(2).sum(), scored.sum()
            rerank = rerank_sum / num_scored.clamp(min=1)
            loss = ce + self.config.reranking_loss_weight * rerank
        return ScaleDownOutput(loss=loss, ce_loss=ce, rerank_loss=rerank, num_tokens=num_tokens, scores=scores,
                               num_correct=num_correct, ce_sum=ce_sum, rerank_sum=rerank_sum, num_scored=num_scored)

    # ---- inference ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.generator.get_input_embeddings().weight.device

    def _rows(self, queries: Sequence[str], documents: Sequence[Sequence[str]],
              allow_no_documents: bool = False) -> list[dict[str, Any]]:
        return check_api_inputs(queries, documents, allow_no_documents)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.no_grad()
    def compress(self, queries: Sequence[str], documents: Sequence[Sequence[str]]) -> CompressedDocuments:
        """Memory embeddings of each (query, document) pair; documents may differ in number per query.

        queries: list of B strings; documents: B lists of document strings (at least one each). Runs in eval
        mode (no dropout) and restores the previous mode. Returns memory (B, K, l, H)."""
        rows = self._rows(queries, documents)
        was_training = self.training
        self.eval()
        try:
            batch = self._to_device(self.inputs.collate(rows, with_answers=False))
            memory, scores = self.compress_batch(batch)
        finally:
            self.train(was_training)
        b, k = batch["document_mask"].shape
        return CompressedDocuments(memory.view(b, k, self.config.num_memory_tokens, -1),
                                   batch["document_mask"], scores)

    @torch.no_grad()
    def rerank(self, queries: Sequence[str], documents: Sequence[Sequence[str]]) -> list[list[float]]:
        """The RR head's score of every document (needs enable_reranking)."""
        if not self.config.enable_reranking:
            raise ValueError("this model has no reranking head; train it with enable_reranking=True")
        out = self.compress(queries, documents)
        return [[float(s) for s, real in zip(row, mask) if real] for row, mask in zip(out.scores, out.document_mask)]

    @torch.no_grad()
    def generate_from_batch(self, batch: dict[str, torch.Tensor], documents_as: str = "memory",
                            **generation_kwargs: Any) -> list[str]:
        """Decode answers for a left-padded prompt batch (collate(..., with_answers=False))."""
        check_generation_kwargs(generation_kwargs)
        batch = self._to_device(batch)
        embeds, _ = self.input_embeddings(batch, documents_as)
        kwargs = {"max_new_tokens": self.config.max_new_tokens, "do_sample": False,
                  "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id}
        kwargs.update(generation_kwargs)
        if not kwargs.get("do_sample"):
            for key in ("temperature", "top_p", "top_k"):  # silence "flag ignored" warnings under greedy
                kwargs.pop(key, None)
        out = self.generator.generate(inputs_embeds=embeds, attention_mask=batch["attention_mask"], **kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    @torch.no_grad()
    def answer(self, queries: Sequence[str], documents: Sequence[Sequence[str]], batch_size: int = 16,
               documents_as: str = "memory", **generation_kwargs: Any) -> list[str]:
        """Answer each query from its documents (compressed by default). Greedy unless do_sample=True.

        documents_as="text" reads the documents uncompressed, "none" ignores them (baselines; document lists may
        then be empty). Answers are at most max_new_tokens tokens (the config's, or the keyword); max_length is
        refused, as the prompt's length (memory slots included) is not the user's to count.
        Raises DataError for a string where a list of documents belongs, or an empty document list.
        """
        check_generation_kwargs(generation_kwargs)
        rows = self._rows(queries, documents, allow_no_documents=documents_as == "none")
        was_training = self.training
        self.eval()
        try:
            answers: list[str] = []
            for start in range(0, len(rows), batch_size):
                batch = self.inputs.collate(rows[start:start + batch_size], mode=documents_as, with_answers=False)
                answers += self.generate_from_batch(batch, documents_as, **generation_kwargs)
            return answers
        finally:
            self.train(was_training)

    # ---- persistence --------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str, include_base: Optional[bool] = None) -> None:
        """Hugging Face folder: config, PEFT adapter, compressor folder, tokenizer(s), base weights if changed."""
        save_pretrained(self, save_directory, include_base=include_base)

    @classmethod
    def from_pretrained(cls, directory: str, **config_overrides: Any) -> "ScaleDownModel":
        """A ScaleDown folder, or a folder in NAVER's released OSCAR format (read natively, no remote code:
        models/oscar_format.py; its base models by the names in its config.json)."""
        with loading_saved_weights():
            if is_released_folder(directory):
                return load_released(cls, directory, **config_overrides).eval()
            return load_pretrained(cls, directory, **config_overrides).eval()

    @classmethod
    def with_pretrained_compressor(cls, directory: str, config: ScaleDownConfig) -> "ScaleDownModel":
        """A new model of `config` (generator, fresh LoRA) whose compressor is the one saved in `directory`
        (e.g. a pretraining run's OUTPUT_DIR/final); mismatches raise before any weights load."""
        with loading_saved_weights():   # the saved compressor's weights load into the built one
            return model_with_saved_compressor(cls, directory, config)
