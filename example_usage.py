#!/usr/bin/env python
# The quick start's Python API, offline and non-interactive on the tiny preset (about a minute on a CPU).
import tempfile

from scaledown import ScaleDownConfig, ScaleDownModel
from scaledown.data import ScaleDownDataset
from scaledown.data.synthetic import generate_examples
from scaledown.training import ScaleDownTrainer


def main() -> None:
    output_dir = tempfile.mkdtemp(prefix="scaledown-example-")
    # 1. Configure: the tiny preset is a small random Mistral-shaped model and an offline tokenizer
    config = ScaleDownConfig(preset="tiny", compressor_type="n_layers", num_compressor_layers=2,
                             max_steps=60, generator_warmup_ratio=0.34, output_dir=output_dir,
                             eval_steps=0, save_steps=0)
    # 2. Data in the quick start's format: query, documents, answer (+ optional reranking_scores)
    data = [
        {"query": "What is the capital of France?",
         "documents": ["Paris is the capital of France.", "France is in Western Europe."],
         "answer": "Paris"},
    ] + generate_examples(config.batch_size * 60, seed=0)
    dataset = ScaleDownDataset(data, config)
    # 3. Model and training
    model = ScaleDownModel(config)
    trainer = ScaleDownTrainer(model, config, dataset)
    result = trainer.train()
    print(f"trained {result.steps} steps in {result.train_seconds:.0f}s; model saved to {result.final_dir}")
    # 4. Inference: compress documents and answer, then reload the saved model
    queries = ["Where was Dravok born?"]
    documents = [["Dravok was born in Pelmar. Dravok plays the harp.", "Kesil works as a baker."]]
    compressed = model.compress(queries, documents)
    print(f"memory embeddings per query: {tuple(compressed.memory.shape)} (queries, documents, vectors, width)")
    answers = model.answer(queries, documents, max_new_tokens=4)
    print("answer:", answers)
    reloaded = ScaleDownModel.from_pretrained(result.final_dir)
    print("reloaded answer:", reloaded.answer(queries, documents, max_new_tokens=4))
    print(explain(answers, result.steps))


def explain(answers: list, steps: int) -> str:
    """What the answers of this short demo run mean (an empty one is expected, not a fault)."""
    if all(a.strip() for a in answers):
        return f"after {steps} steps the model answers from the compressed documents (expected: Pelmar)."
    return (f"an empty answer ('') is what this {steps}-step demo model says: a randomly initialised tiny "
            f"generator first learns to end its answer (the end-of-answer token) and only later to copy the fact "
            f"out of the compressed documents. The full recipe, `python train.py --output_dir runs/tiny` "
            f"(1,600 steps, ~12 min on a CPU), answers 0.96 of held-out questions (README).")


if __name__ == "__main__":
    main()
