# Reranking needs teacher scores: switch it off (with a note) when only a preset asked for it, else stop early.
from __future__ import annotations

import logging

from scaledown.errors import DataError

logger = logging.getLogger(__name__)


def check_reranking_scores(config, dataset) -> None:
    """Before training: with enable_reranking on and no row of `dataset` carrying reranking_scores, the RR head
    would be trained towards nothing (OSCAR §3 distils the teacher's scores). If the preset turned reranking on
    (config.preset_fields), turn it off and say so; if the user asked for it, raise DataError naming the fix."""
    if not config.enable_reranking or any(r.get("reranking_scores") is not None for r in dataset.rows):
        return
    if "enable_reranking" in getattr(config, "preset_fields", ()):
        config.enable_reranking = False
        logger.warning("%s: no row has reranking_scores, so reranking (turned on by preset %s) is switched off for "
                       "this run. Add reranking_scores to the rows to train the reranking head.",
                       dataset.source, config.preset)
        return
    raise DataError(f"enable_reranking is on but no row of {dataset.source} has 'reranking_scores' (one teacher "
                    f"score per document) to learn from. Add them (prepare_dataset writes them), or pass "
                    f"--enable_reranking false.")
