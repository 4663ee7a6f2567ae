# TensorBoard tag names shared by every backend, so GPU and Trainium curves compare tag by tag.
from __future__ import annotations

LOSS = "train/loss"                        # total loss (CE + lambda * rerank MSE), mean over the global batch
CE_LOSS = "train/ce_loss"                  # answer-token cross-entropy
RERANK_LOSS = "train/rerank_loss"          # MSE to the teacher's reranking scores (reranking runs only)
GRAD_NORM = "train/grad_norm"              # global gradient norm before clipping
LR_PREFIX = "train/lr_"                    # + parameter-group name: train/lr_generator, train/lr_compressor
TOKENS_PER_SEC = "perf/tokens_per_sec"     # real (unpadded) compressor + generator tokens, all ranks
EXAMPLES_PER_SEC = "perf/examples_per_sec"
STEP_TIME = "perf/step_seconds"
MFU = "perf/mfu"                           # model FLOPs utilisation, only where the device peak is known
MEMORY_GB = "perf/memory_gb"               # peak device (or host) memory of the logging rank
EVAL_LOSS = "eval/loss"
EVAL_ACCURACY = "eval/accuracy"            # Match: normalised gold answer contained in the generated answer
EVAL_EM = "eval/exact_match"
EVAL_RERANK_LOSS = "eval/rerank_loss"
EVAL_TOKEN_ACCURACY = "eval/token_accuracy"  # teacher-forced: answer tokens the generator's argmax gets right
RECONSTRUCTION_ACCURACY = "eval/reconstruction_accuracy"  # stage pretrain: the same over held-out chunks it
                                                          # reproduces from their memory embeddings
PHASE = "train/phase"                      # 0: generator warm-up on uncompressed documents, 1: compression

COMMON = (LOSS, CE_LOSS, GRAD_NORM, TOKENS_PER_SEC, EXAMPLES_PER_SEC, EVAL_LOSS, EVAL_ACCURACY)


def lr_tag(group_name: str) -> str:
    return LR_PREFIX + group_name
