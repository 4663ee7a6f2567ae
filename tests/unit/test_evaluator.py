# The evaluator and `scaledown eval` on a tiny model trained a few steps: outputs, keys, baselines, consistency.
import json
import os
import subprocess
import sys

import pytest

from conftest import tiny_config

KEYS = {"em", "f1", "rouge_l", "match"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model with the reranking head, trained 4 steps and saved (accuracy is low; shapes are what count)."""
    from scaledown import ScaleDownModel
    from scaledown.data import ScaleDownDataset
    from scaledown.data.synthetic import generate_examples
    from scaledown.training import ScaleDownTrainer
    out = tmp_path_factory.mktemp("trained")
    config = tiny_config(output_dir=str(out), enable_reranking=True, eval_max_examples=4)
    train = ScaleDownDataset(generate_examples(32, seed=1), config)
    result = ScaleDownTrainer(ScaleDownModel(config), config, train, progress=False).train()
    return result.final_dir


@pytest.fixture(scope="module")
def model(trained):
    from scaledown import ScaleDownModel
    return ScaleDownModel.from_pretrained(trained).eval()


def eval_rows():
    from scaledown.data.synthetic import generate_examples
    rows = generate_examples(5, seed=3)
    rows[1]["answers"] = [rows[1].pop("answer"), "another gold"]   # several golds, no `answer`
    return rows


def test_systems_side_by_side_are_consistent(model):
    from scaledown.evaluation.evaluator import evaluate_systems
    from scaledown.evaluation.judge import LLMJudge
    from scaledown.evaluation.metrics import answer_scores, gold_answers
    import torch
    rows = eval_rows()
    forced = {"max_new_tokens": 3, "min_new_tokens": 2}   # non-empty answers from an untrained model
    judge = LLMJudge.load("tiny", torch.device("cpu"), batch_size=2)
    result = evaluate_systems(model, rows, ("scaledown", "uncompressed", "no_docs"), batch_size=2,
                              generation_kwargs=forced, judge=judge, progress=False)
    assert set(result.metrics) == {"scaledown", "uncompressed", "no_docs"}
    assert len(result.records) == len(rows)
    queries, docs = [r["query"] for r in rows], [r["documents"] for r in rows]
    # the evaluator's answers are the public API's answers, system by system
    for system, mode in (("scaledown", "memory"), ("uncompressed", "text"), ("no_docs", "none")):
        answers = model.answer(queries, docs, batch_size=3, documents_as=mode, **forced)
        assert [r["predictions"][system] for r in result.records] == answers
        assert any(a for a in answers)   # forced tokens: not all empty
        metrics = result.metrics[system]
        assert KEYS | {"judge", "n", "seconds"} <= set(metrics) and metrics["n"] == len(rows)
        for key in KEYS | {"judge"}:   # the means are the means of the per-example scores written out
            values = [r["scores"][system][key] for r in result.records]
            assert metrics[key] == pytest.approx(sum(values) / len(values))
            assert all(0.0 <= v <= 1.0 for v in values)
        for record, row in zip(result.records, rows):
            scores = dict(record["scores"][system])
            scores.pop("judge")
            assert scores == answer_scores(record["predictions"][system], gold_answers(row))
    assert result.records[1]["answers"] == rows[1]["answers"]
    # the reranking head: scores are model.rerank's, compared with the rows' teacher scores
    for record, expected in zip(result.records, model.rerank(queries, docs)):
        assert record["rerank_scores"] == pytest.approx(expected, abs=1e-5)
    assert {"ndcg@10_teacher", "mrr_teacher"} <= set(result.metrics["scaledown"])
    assert "ndcg@10_teacher" not in result.metrics["uncompressed"]


def test_scaledown_eval_command_writes_predictions_and_metrics(trained, tmp_path, subprocess_env):
    rows = eval_rows()
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "scaledown.cli.main", "eval", "--model", trained, "--data", str(data),
                           "--output", str(out), "--baselines", "--batch_size", "2", "--no_progress"],
                          env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"scaledown", "uncompressed", "no_docs"}
    for system in metrics.values():
        assert KEYS <= set(system) and system["n"] == len(rows)
    assert "ndcg@10_teacher" in metrics["scaledown"]
    lines = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert [l["query"] for l in lines] == [r["query"] for r in rows]
    assert all(set(l["predictions"]) == set(metrics) for l in lines)
    assert "uncompressed" in proc.stdout and "no_docs" in proc.stdout
    assert not [f for f in os.listdir(out) if ".tmp" in f]   # no half-written files left behind
    # a second evaluation into the same folder does not replace these results unless told (--overwrite)
    again = subprocess.run([sys.executable, "-m", "scaledown.cli.main", "eval", "--model", trained, "--data", str(data),
                            "--output", str(out), "--batch_size", "2", "--no_progress"],
                           env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    assert json.loads((out / "metrics.json").read_text()) == metrics


def test_rows_without_gold_answers_stop_before_the_model_loads(tmp_path, capsys):
    from scaledown.cli.main import main
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"query": "q?", "documents": ["d"], "answer": "a"}) + "\n" +
                    json.dumps({"query": "q2?", "documents": ["d"]}) + "\n")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "scaledown_config.json").write_text(json.dumps(
        {"format": "scaledown-model", "config": tiny_config().to_dict()}))   # config only: weights never read
    code = main(["eval", "--model", str(model_dir), "--data", str(data), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "row 2" in err and "answer" in err
    code = main(["eval", "--model", str(model_dir), "--data", str(data), "--output", str(tmp_path / "o"),
                 "--batch_size", "0"])
    assert code == 2 and "--batch_size" in capsys.readouterr().err


def test_kilt_benchmarks_give_a_table_beside_oscar(trained, tmp_path, capsys):
    from scaledown.cli.main import main
    assets = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "kilt")
    out = tmp_path / "bench"
    code = main(["eval", "--model", trained, "--benchmark", "nq,popqa,asqa", "--data_dir", assets,
                 "--corpus", os.path.join(assets, "corpus.jsonl"), "--num_documents", "3", "--max_examples", "3",
                 "--output", str(out), "--no_progress"])
    printed = capsys.readouterr().out
    assert code == 0
    for name in ("nq", "popqa", "asqa"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert KEYS <= set(metrics["scaledown"]) and metrics["scaledown"]["n"] == 3
        # retrieval labelled each document (KILT provenance / gold answer in it): label-based ranking metrics
        assert "ndcg@10" in metrics["scaledown"] and "mrr" in metrics["scaledown"]
        lines = (out / name / "predictions.jsonl").read_text().splitlines()
        assert len(lines) == 3
    table = (out / "table.md").read_text()
    assert "OSCAR-llama" in table and "20.33" in table and "your model (compressed)" in table
    header = table.splitlines()[0]
    assert header.index("ASQA") < header.index("HotpotQA") < header.index("NQ") < header.index("PopQA")
    assert table in printed
    summary = json.loads((out / "benchmarks.json").read_text())
    assert set(summary["metrics"]) == {"nq", "popqa", "asqa"} and summary["tflops"]["scaledown"] > 0
