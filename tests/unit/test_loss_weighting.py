# One process: the step objective, its gradient and the logged losses do not depend on how a global batch is split.
import pytest
import torch

from conftest import tiny_config
from loss_split import assert_same_weights, split_rows
from scaledown import ScaleDownModel
from scaledown.data import ScaleDownDataset
from scaledown.training import ScaleDownTrainer
from scaledown.training.compare_runs import read_scalars

# Same rows, same weights, another summation order: float32 rounding only; weights: see assert_same_weights.
RTOL = 1e-5
TAGS = ("train/loss", "train/ce_loss", "train/rerank_loss", "train/grad_norm")


def split_config(tmp_path, micro: int, **overrides):
    values = dict(output_dir=str(tmp_path / f"micro{micro}"), batch_size=4, micro_batch_size=micro, max_steps=1,
                  enable_reranking=True, lora_dropout=0.0, seed=3, shuffle_data=False, logging_steps=1,
                  use_bf16=False, gradient_checkpointing=False, eval_max_examples=0, num_documents_train=5,
                  num_documents_eval=5)
    return tiny_config(**{**values, **overrides})


def run(tmp_path, micro: int, **overrides):
    config = split_config(tmp_path, micro, **overrides)
    rows = split_rows()
    model = ScaleDownModel(config)
    result = ScaleDownTrainer(model, config, ScaleDownDataset(rows, config), rows + rows[:1], progress=False,
                              export_final=False).train()
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    return read_scalars(config.output_dir), result, weights


@pytest.mark.parametrize("warmup", [0.0, 0.5], ids=["finetune", "warmup_then_finetune"])
def test_micro_batch_split_gives_the_same_step(tmp_path, warmup):
    """Micro-batch 4 / 2 / 1 of the same 4 rows (the 1-word answers alone in micro-batch 1 at micro 2): same loss,
    CE, reranking loss, gradient norm at steps 1 and 2 and trained weights, in the generator warm-up and in
    fine-tuning (step 2 starts from step 1's weights: a different first update shows there too)."""
    steps = 2
    runs = {m: run(tmp_path, m, max_steps=steps, generator_warmup_ratio=warmup) for m in (4, 2, 1)}
    reference, _, ref_weights = runs[4]
    for micro in (2, 1):
        scalars, _, weights = runs[micro]
        for tag in TAGS:
            if tag not in reference:
                continue
            assert sorted(scalars[tag]) == sorted(reference[tag]), tag
            for step, value in reference[tag].items():
                assert scalars[tag][step] == pytest.approx(value, rel=RTOL), (micro, tag, step)
        lr = max(v for tag in reference if tag.startswith("train/lr_") for v in reference[tag].values())
        assert_same_weights(weights, ref_weights, lr, steps)
    assert "train/rerank_loss" in reference and len(reference["train/grad_norm"]) == steps


def test_logged_loss_is_the_global_token_weighted_mean(tmp_path):
    """train/ce_loss of one step is sum(CE over all answer tokens) / tokens, eval/loss likewise over all eval
    rows (5 rows: eval micro-batches of 2 hold 2, 2 and 1 rows); eval/rerank_loss is weighted per scored document."""
    scalars, result, _ = run(tmp_path, 2)
    model = ScaleDownModel(split_config(tmp_path, 2))
    model.eval()
    rows = split_rows()
    with torch.no_grad():
        whole = model(model.inputs.collate(rows + rows[:1], mode="memory", max_documents=5))
        train = model(model.inputs.collate(rows, mode="memory", max_documents=5))
    assert scalars["train/ce_loss"][1] == pytest.approx(float(train.ce_loss), rel=RTOL)
    assert scalars["train/rerank_loss"][1] == pytest.approx(float(train.rerank_loss), rel=RTOL)
    assert scalars["train/loss"][1] == pytest.approx(float(train.loss), rel=RTOL)
    assert result.eval_before["eval/loss"] == pytest.approx(float(whole.ce_loss), rel=RTOL)
    assert result.eval_before["eval/rerank_loss"] == pytest.approx(float(whole.rerank_loss), rel=RTOL)
    # the mean of the micro-batches' means is far outside the tolerance here: a per-batch average would fail above
    with torch.no_grad():
        per_batch = [model(model.inputs.collate(c, mode="memory", max_documents=5)) for c in (rows[:2], rows[2:])]
    for part, total in (("ce_loss", train.ce_loss), ("rerank_loss", train.rerank_loss)):
        mean_of_means = sum(float(getattr(out, part)) for out in per_batch) / 2
        assert abs(mean_of_means - float(total)) > 100 * RTOL * float(total), part


def test_forward_reports_sums_and_counts_behind_its_means(model):
    rows = split_rows()
    batch = model.inputs.collate(rows, mode="memory")
    out = model(batch)
    assert float(out.ce_sum) == pytest.approx(float(out.ce_loss) * int(out.num_tokens), rel=1e-6)
    assert float(out.rerank_sum) == pytest.approx(float(out.rerank_loss) * int(out.num_scored), rel=1e-6)
    from scaledown.models.scaledown_model import loss_counts
    assert loss_counts(batch) == (int(out.num_tokens), int(out.num_scored)) and int(out.num_scored) == 12
