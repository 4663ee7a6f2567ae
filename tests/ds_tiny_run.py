# Real ZeRO-3 runs of the tiny ScaleDownModel for the converter tests (started by the `deepspeed` launcher).
"""Modes:
  train  --out DIR   fp32: 2 steps, save DIR/global_step2, probe loss, a 3rd step, probe loss again;
                     then a fresh bf16 engine: 1 step, save DIR_bf16/global_step1 (the zero_to_fp32 oracle).
  start  --load TAG  build the model from another seed, load a `scaledown convert --to deepspeed` checkpoint
                     with load_universal_checkpoint, probe loss, then (with --step) the 3rd step and probe again;
                     with --native also load it with DeepSpeed's own universal loader into a model whose frozen
                     weights already match (seed 42: it restores trainable parameters only) and probe.
Every step uses the same global batch of 4 examples whatever the world size (micro-batch 2, accumulation
4 / (2 x ranks)); the probe batch is evaluated whole on every rank. Rank 0 writes --result (JSON).
"""
import argparse
import json
import os

import torch

GLOBAL, MICRO = 4, 2


def build(seed, bf16=False, universal=False):
    import deepspeed
    from scaledown import ScaleDownConfig, ScaleDownModel
    config = ScaleDownConfig(preset="tiny", enable_reranking=True, seed=seed, weight_decay=0.0)
    model = ScaleDownModel(config)
    model.set_trainable("finetune")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    groups = [{**g, "params": list(g["params"])} for g in model.parameter_groups() if g["params"]]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    ds_config = {"train_micro_batch_size_per_gpu": MICRO, "gradient_accumulation_steps": GLOBAL // (MICRO * world),
                 "gradient_clipping": 0.0, "zero_optimization": {"stage": 3}, "bf16": {"enabled": bf16},
                 "zero_allow_untested_optimizer": True, "checkpoint": {"load_universal": universal}}
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    return model, engine


def train_step(model, engine, rows):
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    mine = rows[rank * GLOBAL // world:(rank + 1) * GLOBAL // world]
    losses = []
    for start in range(0, len(mine), MICRO):
        out = engine(model.inputs.collate(mine[start:start + MICRO], mode="memory"))
        engine.backward(out.loss)
        engine.step()
        losses.append(float(out.loss))
    return losses


@torch.no_grad()
def probe(model, engine, rows):
    return float(engine(model.inputs.collate(rows, mode="memory")).loss)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--local_rank", type=int, default=0)
    ap.add_argument("mode", choices=["train", "start"])
    ap.add_argument("--out")
    ap.add_argument("--load")
    ap.add_argument("--step", action="store_true")
    ap.add_argument("--native", action="store_true")
    ap.add_argument("--result", required=True)
    args = ap.parse_args()
    from scaledown.data.synthetic import generate_examples
    batches = [generate_examples(GLOBAL, seed=100 + i) for i in range(3)]
    probe_rows = generate_examples(4, seed=99)
    result = {}
    if args.mode == "train":
        model, engine = build(seed=42)
        for rows in batches[:2]:
            train_step(model, engine, rows)
        engine.save_checkpoint(args.out, tag="global_step2")
        result["probe_before"] = probe(model, engine, probe_rows)
        result["step3_losses"] = train_step(model, engine, batches[2])
        result["probe_after"] = probe(model, engine, probe_rows)
        model, engine = build(seed=7, bf16=True)
        train_step(model, engine, batches[0])
        engine.save_checkpoint(args.out + "_bf16", tag="global_step1")
    else:
        from scaledown.checkpoint.deepspeed_engine import load_universal_checkpoint
        model, engine = build(seed=123)
        result["trainer_state"] = load_universal_checkpoint(engine, args.load)
        result["probe_before"] = probe(model, engine, probe_rows)
        if args.step:
            result["step3_losses"] = train_step(model, engine, batches[2])
            result["probe_after"] = probe(model, engine, probe_rows)
        if args.native:
            model, engine = build(seed=42, universal=True)
            engine.load_checkpoint(os.path.dirname(args.load), tag=os.path.basename(args.load))
            result["native_probe"] = probe(model, engine, probe_rows)
    if torch.distributed.get_rank() == 0:
        with open(args.result, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
