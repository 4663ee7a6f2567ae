#!/usr/bin/env python
# Proof that compressor pretraining pays: a tiny ModernBERT compressor pretrained vs fine-tuned from scratch, side by side.
"""One run, tiny preset on CPU, both arms from the same generator, data and seeds:

  1. pretraining run (`--stage pretrain`, as `train.py --stage pretrain` runs it): a generator
     warm-up (the random tiny generator stands in for an LLM that can read: it learns to repeat and
     continue a chunk shown as text), then compressor pretraining on synthetic plain text
     (auto-encoding + continuation, ratio 0.5) against that generator, frozen. Reported on held-out
     chunks (auto-encoding), at the end of the warm-up (= untrained compressor) and after
     pretraining: reconstruction loss and token accuracy, with the same generator given no
     background (its prior) and the chunk as text (ceiling).
  2. fine-tuning on the built-in synthetic QA task (the tiny preset's recipe: a generator warm-up
     on uncompressed documents, then LoRA + compressor), same steps, rows and seed for both arms;
     by default one document with one fact per question (the curriculum's first stage: longer
     tasks stay at chance for both arms within this budget, see --facts / --documents).
     Both start from the same generator (frozen during pretraining by default, --pretrain_generator);
     only the compressor differs:
       scratch     the end of the warm-up checkpoint (compressor untrained)
       pretrained  the pretraining run's OUTPUT_DIR/final (what `--init_from` loads)
     Reported: held-out answer accuracy reading compressed documents, and each arm's seconds.

    python benchmarks/pretraining_proof.py --json pretraining_proof.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def reconstruction(model, config, rows, mode: str) -> dict[str, float]:
    """Held-out reconstruction loss and token accuracy (teacher-forced) of `rows` read as `mode`."""
    from scaledown.models.inputs import InputBuilder
    from scaledown.training import tags
    from scaledown.training.backends.local import LocalBackend
    from scaledown.training.evaluate import evaluate
    backend = LocalBackend(config)
    backend.setup(model)
    values = evaluate(backend, rows, mode, 32, 0, 1,
                      collate=lambda inputs, chunk, **options: InputBuilder.collate_pretraining(inputs, chunk, mode=mode,
                                                                                          **options))
    return {"loss": round(values[tags.EVAL_LOSS], 4), "token_accuracy": round(values[tags.EVAL_TOKEN_ACCURACY], 4)}


def reconstruction_report(model, config, rows) -> dict[str, dict]:
    return {"compressed": reconstruction(model, config, rows, "memory"),
            "no_background": reconstruction(model, config, rows, "none"),
            "as_text": reconstruction(model, config, rows, "text")}


def load_training_state(model, checkpoint: str) -> None:
    """Model weights of a one-process training checkpoint (the trainer's own files)."""
    from safetensors.torch import load_file
    missing, unexpected = model.load_state_dict(load_file(os.path.join(checkpoint, "model.safetensors")), strict=False)
    assert not unexpected and not missing, (missing[:3], unexpected[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="where to write the figures")
    parser.add_argument("--compressor_type", default="modernbert", choices=["modernbert", "causal_lm"])
    parser.add_argument("--warmup_steps", type=int, default=600, help="generator warm-up (reading) steps")
    parser.add_argument("--pretrain_steps", type=int, default=900, help="compressor pretraining steps")
    parser.add_argument("--pretrain_generator", default="frozen", choices=["frozen", "lora"],
                        help="what of the generator pretraining trains beside the compressor (config pretrain_generator)")
    parser.add_argument("--pretrain_lr", type=float, default=None, help="compressor learning rate in pretraining "
                        "(default: the tiny preset's)")
    parser.add_argument("--qa_warmup_steps", type=int, default=100,
                        help="fine-tuning's own generator warm-up (uncompressed QA) before compression, both arms")
    parser.add_argument("--finetune_steps", type=int, default=500, help="compression fine-tuning steps, each arm")
    parser.add_argument("--documents", type=int, default=1, help="documents per question in fine-tuning "
                        "(1: the relevant one only; 3: with two distractors)")
    parser.add_argument("--facts", type=int, default=1, help="facts per document in fine-tuning (1: the curriculum's "
                        "first stage)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--eval_examples", type=int, default=500, help="held-out questions per arm")
    parser.add_argument("--seed", type=int, default=42, help="seed of models, data and order (both arms share it)")
    parser.add_argument("--output_dir", default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args()

    import torch
    from scaledown import ScaleDownConfig, ScaleDownModel
    from scaledown.config import MODEL_FIELDS
    from scaledown.data import ScaleDownDataset
    from scaledown.data.pretraining import load_pretraining_data
    from scaledown.data.synthetic import SyntheticSpec, generate_examples
    from scaledown.evaluation.answers import answer_accuracy
    from scaledown.checkpoint import folder_protocol as checkpoint_dirs
    from scaledown.training import ScaleDownTrainer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    root = args.output_dir or tempfile.mkdtemp(prefix="scaledown-pretraining-proof-")
    common = {"preset": "tiny", "compressor_type": args.compressor_type, "batch_size": args.batch_size,
              "device_type": "cpu", "eval_steps": 0, "logging_steps": 50, "seed": args.seed}

    total_pre = args.warmup_steps + args.pretrain_steps
    # ---- 1. pretraining run: generator warm-up (reading), then compressor pretraining ---------------------
    lr_field = {"modernbert": "learning_rate_compressor_modernbert", "causal_lm": "learning_rate_compressor_llama"}
    pre_lr = {lr_field[args.compressor_type]: args.pretrain_lr} if args.pretrain_lr else {}
    pre_config = ScaleDownConfig.from_dict({**common, **pre_lr, "stage": "pretrain", "output_dir": os.path.join(root, "pre"),
                                            "generator_warmup_ratio": args.warmup_steps / total_pre,
                                            "pretrain_generator": args.pretrain_generator,
                                            "max_steps": total_pre, "save_steps": args.warmup_steps,
                                            "save_total_limit": 1000})
    model = ScaleDownModel(pre_config)
    train_text, held_text = load_pretraining_data(pre_config, model.inputs.compressor_tokenizer,
                                                  pre_config.compressor_tokenizer_name)
    held_text = list(held_text)
    start = time.perf_counter()
    pre = ScaleDownTrainer(model, pre_config, train_text, progress=True).train()
    pretrain_seconds = time.perf_counter() - start
    warmed = os.path.join(checkpoint_dirs.checkpoints_root(pre_config.output_dir),
                          checkpoint_dirs.tag_for(args.warmup_steps))
    before = ScaleDownModel(pre_config)
    load_training_state(before, warmed)   # the end of the warm-up: generator reads, compressor untrained
    recon = {"after_warmup": reconstruction_report(before, pre_config, held_text),
             "after_pretraining": reconstruction_report(model, pre_config, held_text)}
    print(json.dumps(recon, indent=2), flush=True)

    # ---- 2. fine-tuning, both arms side by side ------------------------------------------------------------
    spec = SyntheticSpec(num_documents=args.documents, facts_per_document=args.facts)
    steps = args.qa_warmup_steps + args.finetune_steps
    rows = generate_examples(args.batch_size * steps, seed=pre_config.seed, spec=spec)
    held_out = generate_examples(args.eval_examples, seed=pre_config.seed + 10_000, spec=spec)
    arms = {}
    for arm in ("scratch", "pretrained"):
        values = {**common, "stage": "finetune", "output_dir": os.path.join(root, arm), "save_steps": 0,
                  "generator_warmup_ratio": args.qa_warmup_steps / steps, "max_steps": steps,
                  "num_documents_train": args.documents, "num_documents_eval": args.documents}
        if arm == "pretrained":   # what `train.py --init_from PRE/final` does
            overrides = {k: v for k, v in ScaleDownConfig.from_dict(values).to_dict().items()
                         if k != "preset" and k not in MODEL_FIELDS}
            model = ScaleDownModel.from_pretrained(pre.final_dir, **overrides)
            config = model.config
        else:
            config = ScaleDownConfig.from_dict(values)
            model = ScaleDownModel(config)
            load_training_state(model, warmed)
        train = ScaleDownDataset(rows, config)
        start = time.perf_counter()
        result = ScaleDownTrainer(model, config, train, progress=True, export_final=False).train()
        seconds = time.perf_counter() - start
        arms[arm] = {"accuracy": answer_accuracy(model, held_out, "memory", 64, args.documents)["accuracy"],
                     "accuracy_no_documents": answer_accuracy(model, held_out, "none", 64)["accuracy"],
                     "final_train_loss": round(result.losses[-1], 4), "train_seconds": round(seconds, 1)}
        print(arm, json.dumps(arms[arm]), flush=True)

    report = {
        "reconstruction_held_out_chunks": len(held_text), "reconstruction": recon,
        "finetune_accuracy": {arm: v["accuracy"] for arm, v in arms.items()},
        "finetune_accuracy_gain": round(arms["pretrained"]["accuracy"] - arms["scratch"]["accuracy"], 4),
        "arms": arms, "eval_examples": len(held_out), "pretraining_run_seconds": round(pretrain_seconds, 1),
        "steps": {"generator_warmup": args.warmup_steps, "pretraining": args.pretrain_steps,
                  "finetune_qa_warmup": args.qa_warmup_steps, "finetune_compression": args.finetune_steps},
        "batch_size": args.batch_size, "documents_per_question": args.documents,
        "facts_per_document": args.facts, "pretrain_generator": args.pretrain_generator,
        "compressor_type": args.compressor_type, "cpu_threads": torch.get_num_threads(),
        "pretraining_settings": {k: v for k, v in pre_config.to_dict().items() if k != "output_dir"},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    r = recon["after_warmup"]["compressed"], recon["after_pretraining"]["compressed"]
    print(f"reconstruction (held-out chunks, compressed): loss {r[0]['loss']:.3f} -> {r[1]['loss']:.3f}, "
          f"token accuracy {r[0]['token_accuracy']:.3f} -> {r[1]['token_accuracy']:.3f}")
    print(f"fine-tuned {args.finetune_steps} steps, held-out accuracy: scratch {arms['scratch']['accuracy']:.3f} "
          f"vs pretrained {arms['pretrained']['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
