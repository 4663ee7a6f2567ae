# Periodic evaluation inside training: eval loss and answer accuracy, sharded evenly over data-parallel ranks.
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from scaledown.evaluation.answers import score_predictions
from scaledown.training import tags


def even_shard(rows: Sequence[dict], dp_rank: int, dp_size: int) -> tuple[list[dict], int]:
    """This rank's rows, padded by repetition so every rank runs the same number of batches.

    Under ZeRO-3 every forward call gathers parameters collectively: ranks with fewer batches would
    deadlock the others. Returns (rows, how many of them are real).
    """
    per_rank = -(-len(rows) // dp_size)
    mine = list(rows[dp_rank * per_rank:(dp_rank + 1) * per_rank])
    real = len(mine)
    filler = list(rows[:per_rank]) or list(rows[:1])
    while len(mine) < per_rank:
        mine.append(filler[len(mine) % len(filler)])
    return mine, real


@torch.no_grad()
def evaluate(backend, rows: Sequence[dict], documents_as: str, micro_batch: int, max_generate: int,
             max_documents: int, collate: Optional[Callable] = None) -> dict[str, float]:
    """Eval loss and teacher-forced token accuracy over all `rows`, answer accuracy over the first `max_generate`
    (0: none), averaged over ranks. `collate(inputs, rows, **options)` builds a loss batch (default: QA rows)."""
    model = backend.model
    was_training = model.training
    model.eval()
    try:
        mine, real = even_shard(rows, backend.dp_rank, backend.dp_size)
        # [ce summed over answer tokens, tokens, squared reranking error summed over scored documents, correct tokens,
        #  scored documents]: eval losses are token- (document-) weighted over all rows, like the training objective
        loss_sum = torch.zeros(5, dtype=torch.float64)
        counted = True  # every batch reported num_correct (vocabulary-sharded logits do not)
        collate = collate or (lambda inputs, chunk, **options: inputs.collate(chunk, mode=documents_as, **options))
        for start in range(0, len(mine), micro_batch):
            chunk = mine[start:start + micro_batch]
            real_rows = max(0, min(len(chunk), real - start))
            batch = collate(model.inputs, chunk, max_documents=max_documents, **backend.collate_options(max_documents))
            # padded repeats run forward (lockstep) but count no answer token: the loss is exact at any rank count
            batch["labels"][real_rows:] = -100
            batch["reranking_mask"][real_rows:] = False
            out = backend.eval_forward(backend.to_device(batch), documents_as)
            loss_sum[0] += float(out.ce_sum)
            loss_sum[1] += float(out.num_tokens)
            if out.rerank_sum is not None:
                loss_sum[2] += float(out.rerank_sum)
                loss_sum[4] += float(out.num_scored)
            if out.num_correct is None:
                counted = False
            else:
                loss_sum[3] += float(out.num_correct)
        gen_rows, gen_real = even_shard(rows[:max_generate], backend.dp_rank, backend.dp_size)
        predictions: list[str] = []
        for start in range(0, len(gen_rows), micro_batch):
            batch = model.inputs.collate(gen_rows[start:start + micro_batch], mode=documents_as,
                                         with_answers=False, max_documents=max_documents)
            answers = backend.generate(batch, documents_as)
            if answers is None:  # this backend cannot decode (pipeline stages): loss only
                gen_rows, gen_real = [], 0
                break
            predictions += answers
        scores = (score_predictions(predictions[:gen_real], gen_rows[:gen_real]) if gen_real
                  else {"accuracy": 0.0, "exact_match": 0.0})
        totals = torch.tensor([loss_sum[0], loss_sum[1], loss_sum[2], scores["accuracy"] * gen_real,
                               scores["exact_match"] * gen_real, gen_real, loss_sum[3], loss_sum[4]],
                              dtype=torch.float64)
        totals = backend.all_reduce_sum(totals)
        result = {tags.EVAL_LOSS: float(totals[0] / totals[1].clamp(min=1))}
        if counted:
            result[tags.EVAL_TOKEN_ACCURACY] = float(totals[6] / totals[1].clamp(min=1))
        if totals[5] > 0:
            result.update({tags.EVAL_ACCURACY: float(totals[3] / totals[5]), tags.EVAL_EM: float(totals[4] / totals[5])})
        if model.config.enable_reranking and documents_as == "memory":
            result[tags.EVAL_RERANK_LOSS] = float(totals[2] / totals[7].clamp(min=1))
        return result
    finally:
        model.train(was_training)
