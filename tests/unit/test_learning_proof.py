# The learning proof's flags (--generator, --long_documents, the fair baseline) in a few tiny steps, and its long documents.
import json
import os
import re
import subprocess
import sys

import pytest

from scaledown.data.synthetic import LONG_RELATIONS, RELATIONS, SyntheticSpec, generate_examples

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROOF = os.path.join(ROOT, "benchmarks", "learning_proof.py")
TINY_RUN = ["--eval_examples", "8", "--set", "max_steps=2", "batch_size=4", "micro_batch_size=4"]


def run_proof(tmp_path, *flags: str) -> dict:
    out = tmp_path / "proof.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, PROOF, "--json", str(out), "--output_dir", str(tmp_path / "run"),
                           *flags, *TINY_RUN], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def test_long_documents_hold_the_answer_once_and_reach_x16():
    from scaledown.models.tiny_tokenizer import load_tiny_tokenizer
    tok = load_tiny_tokenizer()
    spec = SyntheticSpec(facts_per_document=9, long_documents=True)
    rows = generate_examples(60, seed=3, spec=spec)
    lengths = []
    for row in rows:
        assert len(row["documents"]) == 3
        relevant = row["documents"][row["reranking_scores"].index(1.0)]
        assert f" {row['answer']}" in f" {relevant}"
        for doc in row["documents"]:
            assert doc.count(".") == 9
            lengths.append(len(tok(" " + doc, add_special_tokens=False)["input_ids"]))
    # the benchmark's --long_documents: doc_max_length 80 (nothing truncated), 4 memory vectors, >= 16 tokens each
    assert max(lengths) <= 80 and sum(lengths) / len(lengths) / 4 >= 16
    # questions ask the six new relations too
    patterns = [re.escape(q).replace(re.escape("{e}"), r"\w+") for _, _, q in LONG_RELATIONS.values()]
    assert sum(any(re.fullmatch(p, row["query"]) for p in patterns) for row in rows) >= 10


def test_default_documents_use_the_six_short_relations_only():
    words = {w for _, sentence, _ in LONG_RELATIONS.values() for w in ("visited", "mother", "door", "afraid", "never",
                                                                      "learning") if w in sentence}
    assert len(words) == 6
    for row in generate_examples(200, seed=0):
        assert not any(w in doc for doc in row["documents"] for w in words)
        assert all(doc.count(".") == 3 for doc in row["documents"])
    with pytest.raises(ValueError, match="facts_per_document=7 must be 1..6"):
        generate_examples(1, spec=SyntheticSpec(facts_per_document=7))
    assert len(RELATIONS) + len(LONG_RELATIONS) == 12


def test_proof_runs_a_zoo_family_on_long_documents_with_the_fair_baseline(tmp_path):
    report = run_proof(tmp_path, "--generator", "llama3", "--long_documents")
    assert report["generator"] == "llama3" and report["generator_model_type"] == "llama"
    assert report["tied_embeddings"] is True
    assert report["long_documents"] is True and report["facts_per_document"] == 9
    assert report["compression_rate"] == 20 and report["memory_vectors_per_document"] == 4
    assert report["documents_truncated"] == 0
    assert 16 <= report["tokens_per_memory_vector"] <= 20
    assert report["steps"] == 2 and report["fair_steps"] == 2
    assert report["interrupted"] is False and report["fair_interrupted"] is False
    for key in ("acc_with_docs", "acc_no_docs", "acc_uncompressed", "acc_fair_uncompressed"):
        assert 0.0 <= report[key] <= 1.0
    assert report["fair_train_seconds"] > 0 and report["fair_final_train_loss"] > 0
    assert report["settings"]["generator_model_name"].endswith("generator")
    # the generator the proof trained was built from the zoo's Llama-3 family at the proof's sizes
    with open(os.path.join(report["settings"]["generator_model_name"], "config.json")) as f:
        config = json.load(f)
    assert config["rope_parameters"]["rope_type"] == "llama3" and config["hidden_size"] == 128
    assert config["num_hidden_layers"] == 4 and config["tie_word_embeddings"] is True


def test_proof_default_keeps_the_short_documents_and_can_skip_the_baseline(tmp_path):
    report = run_proof(tmp_path, "--no-fair_baseline")
    assert report["generator"] == "tiny" and report["tied_embeddings"] is False
    assert report["long_documents"] is False and report["compression_rate"] == 8
    assert 3.5 <= report["tokens_per_memory_vector"] <= 6
    assert "acc_fair_uncompressed" not in report
