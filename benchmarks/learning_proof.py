#!/usr/bin/env python
# Proof that compression carries the facts: train the tiny preset on CPU, then held-out accuracy with and without documents.
"""Trains the tiny preset (offline, random init) on the built-in synthetic task and writes:

  acc_with_docs           held-out accuracy reading the compressed documents (memory embeddings)
  acc_no_docs             the same trained model with the documents removed (chance-level if facts flow only via docs)
  acc_uncompressed        the same generator reading the documents as text (its warm-up never saw distractors)
  acc_fair_uncompressed   the fair baseline: the same initial generator fine-tuned in full for the same steps on the
                          same rows, reading the documents as text (--no-fair_baseline skips this second training)
  train_seconds           wall-clock training time, plus every setting used

Facts are drawn afresh for every example (nothing to memorise), 3 documents per query (1 relevant +
2 distractors about other invented entities). `tokens_per_memory_vector` is the measured mean of real
document tokens per memory embedding (the default short documents: about 4.6 at x8 nominal;
--long_documents: 9 facts from 12 relations, doc_max_length 80, compression_rate 20: about 17.6).

--generator picks the generator: 'tiny' (the preset's Mistral-shaped model) or a family of tests/model_zoo.py
(e.g. llama3: tied embeddings, llama3 RoPE, BOS, Llama-3 chat template) built at the tiny preset's sizes.

SIGTERM (kill PID) ends the training at the current step; the proof then evaluates what was trained and says so
(`steps`, `interrupted` / `fair_interrupted` in the JSON).

    python benchmarks/learning_proof.py --json learning_proof.json
    python benchmarks/learning_proof.py --generator llama3 --long_documents --json proof_llama3_x16.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


# the tiny preset generator's sizes (models/tiny_models.py tiny_generator_config_dict), so a zoo family differs only by its quirks
PROOF_SIZES = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=8,
                   num_key_value_heads=2, head_dim=16, max_position_embeddings=1024)
# --long_documents: 9 facts (62-77 tokens, mean ~70) -> 4 memory vectors of a doc_max_length of 80 (x20 nominal)
LONG = dict(facts_per_document=9, doc_max_length=80, compression_rate=20)


def build_generator(family: str, folder: str) -> str:
    """A zoo family (tests/model_zoo.py) at PROOF_SIZES, saved to folder; returns the folder."""
    from tests.model_zoo import FAMILIES, GENERATORS, build
    if family not in GENERATORS:
        raise SystemExit(f"--generator {family!r} is not a zoo generator; use 'tiny' or one of {', '.join(GENERATORS)}")
    sizes = dict(PROOF_SIZES)
    if FAMILIES[family].config.get("sliding_window"):
        sizes["sliding_window"] = None if family == "mistral" else FAMILIES[family].config["sliding_window"]
    return build(family, folder, seed=0, sizes=sizes)


def fair_baseline(config, train, held_out, trainer_cls, model_cls, answer_accuracy) -> dict:
    """The same initial generator, fine-tuned in full for all the run's steps on the same rows, reading the
    documents as text (one warm-up phase as long as the whole run); held-out accuracy reading text."""
    from scaledown.training.trainer import Phase

    class TextOnlyTrainer(trainer_cls):
        def phases(self, steps_per_epoch):
            total = self.config.max_steps
            return [Phase("warmup", 0, total, "text")]

    model = model_cls(config)  # same seed: the same initial weights as the compressed run
    start = time.perf_counter()
    result = TextOnlyTrainer(model, config, train, progress=True, export_final=False).train()
    seconds = time.perf_counter() - start
    acc = answer_accuracy(model, held_out, documents_as="text", batch_size=64,
                          max_documents=config.num_documents_eval)["accuracy"]
    return {"acc_fair_uncompressed": acc, "fair_train_seconds": round(seconds, 1), "fair_steps": result.steps,
            "fair_interrupted": result.interrupted,
            "fair_final_train_loss": result.losses[-1] if result.losses else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="where to write the figures")
    parser.add_argument("--eval_examples", type=int, default=500, help="held-out examples (>= 500 for the proof)")
    parser.add_argument("--output_dir", default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--generator", default="tiny",
                        help="'tiny' (the preset's Mistral-shaped generator) or a tests/model_zoo.py generator family, "
                             "e.g. llama3, qwen2, gemma2 (built at the tiny preset's sizes, random init)")
    parser.add_argument("--long_documents", action="store_true",
                        help="9 facts per document from 12 relations with doc_max_length=80, compression_rate=20 "
                             "(about 17.6 real tokens per memory vector instead of 4.6)")
    parser.add_argument("--fair_baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also train the fair uncompressed baseline (doubles the run time)")
    parser.add_argument("--only_fair_baseline", action="store_true",
                        help="train only the fair baseline (e.g. in a second process beside a --no-fair_baseline run)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="ScaleDownConfig overrides on top of the tiny preset, e.g. max_steps=600")
    args = parser.parse_args()

    import torch
    from scaledown import ScaleDownConfig, ScaleDownModel
    from scaledown.data import ScaleDownDataset
    from scaledown.data.synthetic import SyntheticSpec, builtin_training_rows, curriculum, generate_examples
    from scaledown.evaluation.answers import answer_accuracy
    from scaledown.training import ScaleDownTrainer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="scaledown-proof-")
    values = {"preset": "tiny", "output_dir": os.path.join(output_dir, "compressed"), "eval_steps": 0,
              "save_steps": 0, "device_type": "cpu", "micro_batch_size": 32,
              "shuffle_data": False}  # one forward per step; the curriculum in order
    spec = SyntheticSpec()  # the full task: 3 documents (1 relevant + 2 distractors), 3 facts each
    if args.long_documents:
        spec = SyntheticSpec(facts_per_document=LONG["facts_per_document"], long_documents=True)
        values.update(doc_max_length=LONG["doc_max_length"], compression_rate=LONG["compression_rate"])
    if args.generator != "tiny":
        values["generator_model_name"] = build_generator(args.generator, os.path.join(output_dir, "generator"))
    values.update(parse_overrides(args.set))
    config = ScaleDownConfig.from_dict(values)
    train = ScaleDownDataset(builtin_training_rows(config, spec), config)
    warm = config.generator_warmup_steps(config.max_steps)
    held_out = generate_examples(args.eval_examples, seed=config.seed + 10_000, spec=spec)

    def write(report: dict) -> None:  # after each training, so a stopped run keeps what it measured
        report["settings"] = {k: v for k, v in config.to_dict().items() if k != "output_dir"}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)

    report = {"generator": args.generator, "eval_examples": len(held_out), "documents_per_query": spec.num_documents,
              "facts_per_document": spec.facts_per_document, "long_documents": spec.long_documents,
              "memory_vectors_per_document": config.num_memory_tokens, "compression_rate": config.compression_rate,
              "doc_max_length": config.doc_max_length, "cpu_threads": torch.get_num_threads(),
              "curriculum": [{"steps": n, "documents": sp.num_documents, "facts": sp.facts_per_document}
                             for n, sp in curriculum(warm, config.max_steps - warm, spec)]}
    if not args.only_fair_baseline:
        model = ScaleDownModel(config)
        start = time.perf_counter()
        result = ScaleDownTrainer(model, config, train, progress=True, export_final=False).train()
        train_seconds = time.perf_counter() - start
        acc = {mode: answer_accuracy(model, held_out, documents_as=mode, batch_size=64,
                                     max_documents=config.num_documents_eval)["accuracy"]
               for mode in ("memory", "none", "text")}
        report.update(acc_with_docs=acc["memory"], acc_no_docs=acc["none"], acc_uncompressed=acc["text"],
                      train_seconds=round(train_seconds, 1), steps=result.steps, interrupted=result.interrupted,
                      final_train_loss=result.losses[-1] if result.losses else None)
    else:
        model = ScaleDownModel(config)  # only for its tokenizer and generator config
    doc_tokens = [len(model.inputs.document_ids(d)) for r in held_out for d in r["documents"]]
    raw_tokens = [len(model.inputs._text_ids(" " + d.strip(), None)) for r in held_out for d in r["documents"]]
    report.update(generator_model_type=model.generator.config.model_type,
                  tied_embeddings=bool(getattr(model.generator.config, "tie_word_embeddings", False)),
                  document_tokens_mean=round(sum(doc_tokens) / len(doc_tokens), 2),
                  documents_truncated=sum(r > config.doc_max_length for r in raw_tokens),
                  tokens_per_memory_vector=round(sum(doc_tokens) / len(doc_tokens) / config.num_memory_tokens, 2))
    write(report)
    if args.fair_baseline or args.only_fair_baseline:
        del model
        fair_config = ScaleDownConfig.from_dict({**values, "output_dir": os.path.join(output_dir, "fair")})
        report.update(fair_baseline(fair_config, train, held_out, ScaleDownTrainer, ScaleDownModel, answer_accuracy))
        write(report)
    print(json.dumps({k: v for k, v in report.items() if k != "settings"}, indent=2))
    if "acc_with_docs" in report and "acc_fair_uncompressed" in report:
        print(f"compressed (x{config.compression_rate} nominal, {report['tokens_per_memory_vector']} tokens per memory "
              f"vector): {report['acc_with_docs']:.3f}   fair uncompressed (documents as text, same steps): "
              f"{report['acc_fair_uncompressed']:.3f}   gap: {report['acc_with_docs'] - report['acc_fair_uncompressed']:+.3f}")
    if "acc_with_docs" in report:
        target = report["acc_with_docs"] >= 0.6 and report["acc_with_docs"] - report["acc_no_docs"] >= 0.4
        print(f"target (acc_with_docs >= 0.6 and >= 0.4 above acc_no_docs): {'met' if target else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
